//! `virtualize` and the in-memory combine of `open_virtual_mfdataset`: chunkmill-manifest's
//! scan and combine, on threads of this process, stopping between files on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chunkmill_manifest::{
    scan_files, Compat, Error, Input, OutputFormat, ScanExecutor, ScanOptions, ScanResults,
    VirtualizeOptions,
};
use pyo3::prelude::*;
use serde_json::json;

use crate::cancel::interruptible;
use crate::dataset::{from_combined, NativeDataset};
use crate::errors;

/// chunkmill-manifest's scan on threads of this process, with a cancel flag looked at before
/// each file: after Ctrl-C no new file is started and the job fails before anything is
/// written.
struct CancellableScanner {
    threads: usize,
    skip_bad: bool,
    cancel: Arc<AtomicBool>,
}

impl ScanExecutor for CancellableScanner {
    fn scan(
        &self,
        files: &[Input],
        options: &ScanOptions,
    ) -> chunkmill_manifest::Result<ScanResults> {
        let results = scan_files(
            files,
            options,
            self.threads,
            self.skip_bad,
            None,
            Some(&self.cancel),
        );
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Executor(
                "interrupted (Ctrl-C): nothing was written".into(),
            ));
        }
        Ok(results)
    }
}

/// The options both calls share, from the Python arguments.
#[allow(clippy::too_many_arguments)]
fn options(
    output: &str,
    concat_dim: Option<String>,
    stack: bool,
    identical_dims: Vec<String>,
    compat: &str,
    drop: Vec<String>,
    skip_bad: bool,
    threads: usize,
    cancel: &Arc<AtomicBool>,
) -> PyResult<VirtualizeOptions> {
    let mut o = VirtualizeOptions::new(output);
    o.concat_dim = concat_dim;
    o.stack = stack;
    o.identical_dims = identical_dims;
    o.compat = compat.parse::<Compat>().map_err(errors::usage)?;
    o.drop = drop;
    o.skip_bad = skip_bad;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        t => t,
    };
    o.threads = threads;
    o.scanner = Some(Arc::new(CancellableScanner {
        threads,
        skip_bad,
        cancel: cancel.clone(),
    }));
    Ok(o)
}

/// Writes references to `paths` at `output` (see `chunkmill.virtualize`); returns the report
/// as JSON.
#[pyfunction]
#[pyo3(signature = (paths, output, format, concat_dim, stack, identical_dims, compat,
    inline_threshold, record_size, drop, skip_bad, overwrite, threads))]
#[allow(clippy::too_many_arguments)]
pub fn virtualize(
    py: Python<'_>,
    paths: Vec<String>,
    output: &str,
    format: &str,
    concat_dim: Option<String>,
    stack: bool,
    identical_dims: Vec<String>,
    compat: &str,
    inline_threshold: u64,
    record_size: usize,
    drop: Vec<String>,
    skip_bad: bool,
    overwrite: bool,
    threads: usize,
) -> PyResult<String> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut o = options(
        output,
        concat_dim,
        stack,
        identical_dims,
        compat,
        drop,
        skip_bad,
        threads,
        &cancel,
    )?;
    o.format = match format {
        "kerchunk-json" => OutputFormat::KerchunkJson,
        "kerchunk-parquet" => OutputFormat::KerchunkParquet,
        "icechunk" => OutputFormat::Icechunk,
        other => {
            return Err(errors::usage(format!(
                "format '{other}': one of kerchunk-json, kerchunk-parquet, icechunk"
            )))
        }
    };
    o.inline_threshold = inline_threshold;
    o.record_size = record_size;
    o.overwrite = overwrite;
    let report = interruptible(py, &cancel, || {
        chunkmill_manifest::virtualize(&paths, &o).map_err(errors::manifest)
    })??;
    Ok(json!({
        "output": report.output,
        "files": report.files,
        "skipped": report.skipped.iter().map(|s| json!({"file": s.file, "reason": s.reason})).collect::<Vec<_>>(),
        "warnings": report.warnings,
        "skipped_variables": report.skipped_variables.iter().map(|s| json!({"file": s.file, "variable": s.variable, "reason": s.reason})).collect::<Vec<_>>(),
        "reordered": report.reordered,
        "concat_dim": report.concat_dim,
        "notes": report.notes,
        "arrays": report.stats.arrays,
        "references": report.stats.references,
        "inlined": report.stats.inlined,
        "missing": report.stats.missing,
        "bytes_written": report.bytes_written,
        "scan_seconds": report.scan_seconds,
        "combine_seconds": report.combine_seconds,
        "write_seconds": report.write_seconds,
    })
    .to_string())
}

/// Scans and combines `paths` in memory, as `virtualize` does before it writes, and opens the
/// result for reading.
#[pyfunction]
#[pyo3(signature = (paths, concat_dim, stack, identical_dims, compat, drop, skip_bad, threads))]
#[allow(clippy::too_many_arguments)]
pub fn combine(
    py: Python<'_>,
    paths: Vec<String>,
    concat_dim: Option<String>,
    stack: bool,
    identical_dims: Vec<String>,
    compat: &str,
    drop: Vec<String>,
    skip_bad: bool,
    threads: usize,
) -> PyResult<NativeDataset> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut o = options(
        "",
        concat_dim,
        stack,
        identical_dims,
        compat,
        drop,
        skip_bad,
        threads,
        &cancel,
    )?;
    // Nothing is written; nothing needs inlining but what the combine loads.
    o.inline_threshold = 0;
    o.native_filters = true;
    let (dataset, report) = interruptible(py, &cancel, || {
        chunkmill_manifest::build(&paths, &o).map_err(errors::manifest)
    })??;
    let mut notes = report.notes;
    notes.extend(report.warnings);
    Ok(from_combined(dataset, notes))
}
