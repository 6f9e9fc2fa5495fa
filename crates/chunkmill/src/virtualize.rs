//! `chunkmill virtualize`: references to every chunk of many NetCDF/HDF5 files, no data copied.

use std::sync::Arc;

use chunkmill_exec::Event;
use chunkmill_manifest::{virtualize, OutputFormat, SkippedVariable, VirtualizeOptions};
use chunkmill_ops::virtualize::ExecutorScanner;
use indicatif::ProgressBar;
use serde_json::json;

use crate::args::VirtualizeArgs;
use crate::failure::Footprint;
use crate::Failure;

/// One warning for every variable left out: each once, with the reason the first file gave
/// and how many files it was left out of, and the flag that leaves it out on purpose.
fn skipped_variables_warning(skipped: &[SkippedVariable]) -> Option<String> {
    let mut by_variable: Vec<(&SkippedVariable, usize)> = Vec::new();
    for s in skipped {
        match by_variable
            .iter_mut()
            .find(|(v, _)| v.variable == s.variable)
        {
            Some((_, n)) => *n += 1,
            None => by_variable.push((s, 1)),
        }
    }
    if by_variable.is_empty() {
        return None;
    }
    let mut text = format!(
        "chunkmill: warning: {} variable(s) left out of the references (neither referenceable nor small enough to inline; raise --inline-threshold to inline them, or leave them out on purpose with --drop NAME):",
        by_variable.len()
    );
    for (s, files) in &by_variable {
        let more = match files {
            1 => String::new(),
            n => format!(" (and {} more file(s))", n - 1),
        };
        text.push_str(&format!(
            "\n  --drop {}: {}{more}: {}",
            s.variable, s.file, s.reason
        ));
    }
    Some(text)
}

/// Scan, combine, write.
pub fn run(a: &VirtualizeArgs) -> Result<(), Failure> {
    if a.output.contains("://") {
        return Err(Failure::usage(format!(
            "--output {}: references are written to a local path (inputs may be s3:// URLs)",
            a.output
        )));
    }
    // Icechunk and kerchunk Parquet are directories, kerchunk JSON a file.
    chunkmill_ops::job::report::check_output_path(
        "--output",
        std::path::Path::new(a.output.trim_end_matches('/')),
        a.format != "kerchunk-json",
    )?;
    let mut options = VirtualizeOptions::new(&a.output);
    options.format = match a.format.as_str() {
        "kerchunk-json" => OutputFormat::KerchunkJson,
        "kerchunk-parquet" => OutputFormat::KerchunkParquet,
        "icechunk" => OutputFormat::Icechunk,
        other => {
            return Err(Failure::usage(format!(
                "--format {other}: expected kerchunk-json, kerchunk-parquet or icechunk"
            )))
        }
    };
    options.record_size = usize::try_from(a.record_size)
        .map_err(|_| Failure::usage(format!("--record-size {}: too large", a.record_size)))?;
    options.concat_dim.clone_from(&a.concat_dim);
    options.stack = a.stack;
    options.compat = crate::resolve::compat(a.compat.as_deref())?;
    options.identical_dims = crate::resolve::list(a.identical_dims.as_deref());
    if let Some(t) = a.inline_threshold {
        options.inline_threshold = t;
    }
    options.drop.clone_from(&a.drop);
    options.group.clone_from(&a.group);
    options.skip_bad = a.skip_bad;
    options.overwrite = a.overwrite;
    options.threads = a.workers.unwrap_or(0);
    let show = !(a.report.no_progress || a.report.quiet || a.report.json);
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    let progress_bar = bar.clone();
    options.progress = Some(Arc::new(move |done, total| {
        progress_bar.set_length(total as u64);
        progress_bar.set_position(done as u64);
    }));
    if a.run.executor != "threads" {
        let tasks_bar = bar.clone();
        options.scanner = Some(Arc::new(ExecutorScanner {
            executor: {
                let mut executor = crate::resolve::executor(&a.run)?;
                crate::resolve::watch_interrupts(&mut executor, None)?;
                executor
            },
            work_dir: a
                .work_dir
                .clone()
                .unwrap_or_else(|| format!("{}.work", a.output.trim_end_matches('/'))),
            workers: a.workers.unwrap_or_else(crate::default_workers),
            retries: a.run.retries,
            // A scan holds one file's manifest at a time; SLURM gets this as --mem.
            max_mem: 1 << 30,
            files_per_task: a.files_per_task,
            on_event: Some(Box::new(move |event| match event {
                Event::StageStarted {
                    tasks, done_before, ..
                } => {
                    tasks_bar.set_length(*tasks);
                    tasks_bar.set_position(*done_before);
                }
                Event::TaskFinished { .. } => tasks_bar.inc(1),
                _ => {}
            })),
        }));
    }
    let output = a.output.trim_end_matches('/');
    let footprint = Footprint::before(&[
        output,
        &a.work_dir
            .clone()
            .unwrap_or_else(|| format!("{output}.work")),
    ]);
    let report = virtualize(&a.inputs, &options);
    bar.finish_and_clear();
    let report = report.map_err(|e| footprint.judge(Failure::from(e)))?;
    for skipped in &report.skipped {
        eprintln!("chunkmill: skipped {}: {}", skipped.file, skipped.reason);
    }
    for warning in &report.warnings {
        eprintln!("chunkmill: warning: {warning}");
    }
    if let Some(text) = skipped_variables_warning(&report.skipped_variables) {
        eprintln!("{text}");
    }
    if !a.report.quiet {
        for note in &report.notes {
            eprintln!("chunkmill: {note}");
        }
    }
    let seconds = report.scan_seconds + report.combine_seconds + report.write_seconds;
    if a.report.json {
        let value = json!({
            "output": report.output, "files": report.files.len(),
            "skipped": report.skipped.iter().map(|s| json!({"file": s.file, "reason": s.reason})).collect::<Vec<_>>(),
            "warnings": report.warnings, "reordered": report.reordered,
            "skipped_variables": report.skipped_variables.iter().map(|s| json!({"file": s.file, "variable": s.variable, "reason": s.reason})).collect::<Vec<_>>(),
            "concat_dim": report.concat_dim, "notes": report.notes,
            "arrays": report.stats.arrays, "references": report.stats.references,
            "inlined": report.stats.inlined, "missing": report.stats.missing,
            "bytes_written": report.bytes_written, "seconds": seconds,
            "scan_seconds": report.scan_seconds, "combine_seconds": report.combine_seconds,
            "write_seconds": report.write_seconds,
        });
        crate::print_json(&value)?;
    } else if !a.report.quiet {
        println!(
            "{}: {} file(s), {} array(s), {} references, {} inlined, in {:.3} s ({:.0} files/s){}",
            report.output.display(),
            report.files.len(),
            report.stats.arrays,
            report.stats.references,
            report.stats.inlined,
            seconds,
            report.files.len() as f64 / seconds.max(1e-9),
            if report.skipped.is_empty() {
                String::new()
            } else {
                format!("; {} skipped", report.skipped.len())
            }
        );
    }
    Ok(())
}
