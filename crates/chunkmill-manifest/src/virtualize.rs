//! `virtualize`: inputs (local paths, globs, `@lists`, `s3://` URLs and globs) → parallel scan
//! → strict combine → kerchunk JSON or Parquet, atomically.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chunkmill_store::guard::Lock;

use crate::array::{ManifestStats, VirtualDataset};
use crate::atomic::is_kerchunk_json;
use crate::combine::{combine, infer_concat_dim, order_by_coordinate, CombineOptions, Compat};
use crate::compare;
use crate::error::{Error, Result};
use crate::fold::Fold;
use crate::icechunk::write_icechunk;
use crate::kerchunk::write_kerchunk_json;
use crate::kerchunk_parquet::{write_kerchunk_parquet, DEFAULT_RECORD_SIZE};
use crate::remote;
use crate::scan::{
    scan, scan_path, FileScan, ScanOptions, SkippedVariable, DEFAULT_INLINE_THRESHOLD,
};

/// Scanning threads per core by default when some input is read from an object store.
pub const REMOTE_THREADS_PER_CORE: usize = 4;

/// Called after each file is scanned with (files done, files in total), from the scanning
/// threads (so it must be `Send + Sync`); keep it short.
pub type ProgressFn = dyn Fn(usize, usize) + Send + Sync;

/// The reference format written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutputFormat {
    /// kerchunk JSON, version 1.
    #[default]
    KerchunkJson,
    /// kerchunk Parquet: a directory of `.zmetadata` and `<array>/refs.<i>.parq` files of
    /// [`VirtualizeOptions::record_size`] chunks each (fsspec's `LazyReferenceMapper` layout).
    KerchunkParquet,
    /// An Icechunk repository (a directory): one commit on `main`, every chunk a virtual
    /// reference, a virtual chunk container per input directory.
    Icechunk,
}

/// One input file after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A local file.
    Local(PathBuf),
    /// An object of a store: `s3://bucket/key` (or `memory://name/key`).
    Url(String),
}

impl Input {
    /// The input a line of a list names: a URL with a scheme chunkmill reads (`s3://`,
    /// `memory://`), else a local path.
    pub fn parse(line: &str) -> Self {
        if remote::is_remote(line) {
            Input::Url(line.to_string())
        } else {
            Input::Local(PathBuf::from(line))
        }
    }

    /// What references point at: a local file's absolute path (symlinks resolved), or the
    /// URL.
    pub fn url(&self) -> String {
        match self {
            Input::Local(path) => url_of(path),
            Input::Url(url) => url.clone(),
        }
    }

    /// The path or URL, as shown in messages.
    pub fn name(&self) -> String {
        match self {
            Input::Local(p) => p.display().to_string(),
            Input::Url(u) => u.clone(),
        }
    }
}

/// What [`virtualize`] does.
#[derive(Clone)]
pub struct VirtualizeOptions {
    /// Where the references go.
    pub output: PathBuf,
    /// Their format.
    pub format: OutputFormat,
    /// Chunks per Parquet file ([`OutputFormat::KerchunkParquet`] only).
    pub record_size: usize,
    /// Dimension to concatenate along (or to stack along, with `stack`). `None` for one
    /// input, or to infer it from several (see [`infer_concat_dim`]).
    pub concat_dim: Option<String>,
    /// Stack the files along `concat_dim`, a new dimension (which no file may have).
    pub stack: bool,
    /// Variables that must be equal in every file (compared by value) and are taken once.
    pub identical_dims: Vec<String>,
    /// Whether the other variables without the concat dimension are compared between files
    /// ([`Compat::Equals`], the default) or taken from the first ([`Compat::Override`]).
    pub compat: Compat,
    /// Variables the job leaves out afterwards (`convert --drop`): not compared; `None`
    /// where the job cannot leave variables out (see [`CombineOptions::dropped`]).
    pub dropped: Option<Vec<String>>,
    /// The variables the job asks for (`convert --variables`), `None` for all: see
    /// [`CombineOptions::keep`].
    pub keep: Option<Vec<String>>,
    /// Chunks stored in fewer bytes are inlined (kerchunk's default, 500); so are variables
    /// that cannot be referenced and decode to fewer bytes.
    pub inline_threshold: u64,
    /// Variables (by key: `air`, `group/air`) left out of the output; each must be in some
    /// input.
    pub drop: Vec<String>,
    /// Let the CF encoding of arrays along the concat dimension differ between files, each
    /// recorded for the job to decode (`convert --decode-cf`; see
    /// [`CombineOptions::decode_per_input`]). Never for references.
    pub decode_per_input: bool,
    /// The group of every file to take (`sub`, `a/b`), as xarray's `group=`: its arrays and
    /// subgroups become the output's root. `None` takes every group.
    pub group: Option<String>,
    /// Continue past files that cannot be opened or referenced, listing them in the report.
    /// Files that differ from the others are never skipped: that stays an error.
    pub skip_bad: bool,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Scanning threads; 0 means one per core, or [`REMOTE_THREADS_PER_CORE`] per core when
    /// some input is an object in a store (its reads wait on the network).
    pub threads: usize,
    /// Progress callback, see [`ProgressFn`].
    pub progress: Option<Arc<ProgressFn>>,
    /// Keep filters no Zarr codec expresses as chunkmill's own codec (see
    /// [`ScanOptions::native_filters`]): for `convert` only.
    pub native_filters: bool,
    /// Runs the scans somewhere else than this process's threads (an executor's tasks);
    /// `None` scans on `threads` threads here.
    pub scanner: Option<Arc<dyn ScanExecutor>>,
}

/// What a scan of many files gives back: per input, in order, its scan or its error (`None`
/// for a file not scanned because another one failed first).
pub type ScanResults = Vec<Option<Result<FileScan>>>;

/// Scans files elsewhere: on an executor's tasks (local processes, SLURM array elements),
/// each task scanning a slice of the files with [`scan_input`].
pub trait ScanExecutor: Send + Sync {
    /// Scans `files` with `options`. Files that fail are returned as errors, not raised, so
    /// that `skip_bad` decides.
    ///
    /// # Errors
    /// The executor itself failed (a task could not run), naming why.
    fn scan(&self, files: &[Input], options: &ScanOptions) -> Result<ScanResults>;
}

impl VirtualizeOptions {
    /// Defaults: kerchunk JSON at `output`, no concat dimension, inline threshold 500,
    /// strict (no skipping), no overwrite, one thread per core.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            format: OutputFormat::KerchunkJson,
            record_size: DEFAULT_RECORD_SIZE,
            concat_dim: None,
            stack: false,
            identical_dims: Vec::new(),
            compat: Compat::Equals,
            dropped: None,
            keep: None,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            drop: Vec::new(),
            group: None,
            decode_per_input: false,
            skip_bad: false,
            overwrite: false,
            threads: 0,
            progress: None,
            native_filters: false,
            scanner: None,
        }
    }
}

impl fmt::Debug for VirtualizeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualizeOptions")
            .field("output", &self.output)
            .field("format", &self.format)
            .field("record_size", &self.record_size)
            .field("concat_dim", &self.concat_dim)
            .field("stack", &self.stack)
            .field("identical_dims", &self.identical_dims)
            .field("compat", &self.compat)
            .field("dropped", &self.dropped)
            .field("keep", &self.keep)
            .field("inline_threshold", &self.inline_threshold)
            .field("drop", &self.drop)
            .field("group", &self.group)
            .field("decode_per_input", &self.decode_per_input)
            .field("skip_bad", &self.skip_bad)
            .field("overwrite", &self.overwrite)
            .field("threads", &self.threads)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .field("scanner", &self.scanner.as_ref().map(|_| "executor"))
            .finish()
    }
}

/// An input skipped under `skip_bad`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub file: String,
    /// The error, in one line.
    pub reason: String,
}

/// What [`virtualize`] did.
#[derive(Debug, Clone)]
pub struct VirtualizeReport {
    /// Where the references were written.
    pub output: PathBuf,
    /// Files combined, in the order used.
    pub files: Vec<String>,
    /// Files skipped (only with `skip_bad`).
    pub skipped: Vec<SkippedFile>,
    /// Objects not referenced (virtual datasets, external links), one line each.
    pub warnings: Vec<String>,
    /// Variables left out of the output because some file's could be neither referenced
    /// nor inlined (the variable is left out of every file, so that the files still join).
    pub skipped_variables: Vec<SkippedVariable>,
    /// Whether the files were reordered by their first concat-coordinate value.
    pub reordered: bool,
    /// The concat dimension used (given or inferred).
    pub concat_dim: Option<String>,
    /// What the user should know of decisions taken for them (an inferred concat dimension),
    /// one line each.
    pub notes: Vec<String>,
    /// Arrays, references, inlined chunks and bytes, missing chunks.
    pub stats: ManifestStats,
    /// Size of the output.
    pub bytes_written: u64,
    /// Seconds spent scanning (parallel), combining, writing.
    pub scan_seconds: f64,
    /// See `scan_seconds`.
    pub combine_seconds: f64,
    /// See `scan_seconds`.
    pub write_seconds: f64,
}

/// Expands inputs: paths, globs (`data/*.nc`, sorted), `file://` paths, `s3://bucket/key`
/// URLs and globs (`s3://bucket/data/*.nc`: the objects under `data/` that match, sorted) and
/// `@list` files (one input per line; blank lines and `#` comments skipped). Order is kept.
///
/// # Errors
/// [`Error::Input`] for a glob that matches nothing, an unreadable `@list` or a bucket that
/// cannot be listed; [`Error::Usage`] for a bad pattern or a URL of another scheme.
pub fn expand_inputs(inputs: &[String]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for input in inputs {
        expand_one(input, &mut out, 0)?;
    }
    Ok(out)
}

fn expand_one(input: &str, out: &mut Vec<Input>, depth: usize) -> Result<()> {
    let err = |reason: String| Error::Input {
        input: input.to_string(),
        reason,
    };
    if let Some(list) = input.strip_prefix('@') {
        if depth > 4 {
            return Err(err("@lists nested too deep".into()));
        }
        let text =
            std::fs::read_to_string(list).map_err(|e| err(format!("cannot read the list: {e}")))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            expand_one(line, out, depth + 1)?;
        }
        return Ok(());
    }
    if remote::is_remote(input) {
        let mut urls = Vec::new();
        remote::expand(input, &mut urls)?;
        out.extend(urls.into_iter().map(Input::Url));
        return Ok(());
    }
    let path = input.strip_prefix("file://").unwrap_or(input);
    if path.contains("://") {
        return Err(Error::Usage(format!(
            "{input}: unsupported URL scheme; give local paths, file:// or s3:// URLs"
        )));
    }
    if path.contains(['*', '?', '[']) {
        let mut matched: Vec<PathBuf> = glob::glob(path)
            .map_err(|e| Error::Usage(format!("{input}: bad pattern: {e}")))?
            .filter_map(std::result::Result::ok)
            .filter(|p| p.is_file())
            .collect();
        if matched.is_empty() {
            return Err(err("matches no file".into()));
        }
        matched.sort();
        out.extend(matched.into_iter().map(Input::Local));
        return Ok(());
    }
    out.push(Input::Local(PathBuf::from(path)));
    Ok(())
}

/// The URL written for a local file: its absolute path, symlinks resolved.
fn url_of(path: &Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The checks of [`crate::atomic::guard_output`] for `options.output` against the local
/// inputs; the lock it returns is held until the output is written.
fn guard_output(inputs: &[String], options: &VirtualizeOptions) -> Result<Lock> {
    let local: Vec<String> = inputs
        .iter()
        .filter(|i| !remote::is_remote(i))
        .cloned()
        .collect();
    let files: Vec<String> = expand_inputs(&local)?
        .iter()
        .filter_map(|i| match i {
            Input::Local(path) => Some(path.display().to_string()),
            Input::Url(_) => None,
        })
        .collect();
    let (what, is_ours): (&str, fn(&Path) -> bool) = match options.format {
        OutputFormat::KerchunkJson => ("a kerchunk JSON file", is_kerchunk_json),
        OutputFormat::KerchunkParquet => (
            "a kerchunk Parquet directory",
            crate::kerchunk_parquet::is_kerchunk_parquet,
        ),
        OutputFormat::Icechunk => ("an Icechunk repository", crate::icechunk::is_icechunk),
    };
    crate::atomic::guard_output(&options.output, &files, options.overwrite, what, is_ours)
}

/// Scans one input: a local file by positional reads, an object through a block cache.
///
/// # Errors
/// As [`scan`].
pub fn scan_input(input: &Input, options: &ScanOptions) -> Result<FileScan> {
    match input {
        Input::Local(path) => scan_path(path, &input.url(), options),
        Input::Url(url) => scan(&remote::open(url)?, url, options),
    }
}

/// Scans `files` on `threads` threads of this process. Without `skip_bad`, the first failure
/// stops the others from starting new files; so does `cancel` once set (Ctrl-C in a caller),
/// leaving the files not started without a result.
pub fn scan_files(
    files: &[Input],
    scan_options: &ScanOptions,
    threads: usize,
    skip_bad: bool,
    progress: Option<&ProgressFn>,
    cancel: Option<&AtomicBool>,
) -> ScanResults {
    let scan = |input: &Input| scan_input(input, scan_options);
    scan_each(files, &scan, threads, skip_bad, progress, cancel)
}

/// [`scan_files`] with the scan of one input given: `build` folds each scan as it arrives.
fn scan_each(
    files: &[Input],
    scan: &(dyn Fn(&Input) -> Result<FileScan> + Sync),
    threads: usize,
    skip_bad: bool,
    progress: Option<&ProgressFn>,
    cancel: Option<&AtomicBool>,
) -> ScanResults {
    let n = files.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut results: Vec<Option<Result<FileScan>>> = (0..n).map(|_| None).collect();
    let per_thread: Vec<Vec<(usize, Result<FileScan>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.clamp(1, n.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        if stop.load(Ordering::Relaxed)
                            || cancel.is_some_and(|c| c.load(Ordering::Relaxed))
                        {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let r = scan(&files[i]);
                        if r.is_err() && !skip_bad {
                            stop.store(true, Ordering::Relaxed);
                        }
                        local.push((i, r));
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(p) = progress {
                            p(d, n);
                        }
                    }
                    local
                })
            })
            .collect();
        // A panicking scan loses that thread's results; `build` reports the files left
        // without one.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, r) in per_thread.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
}

/// What identifies a file: its device and inode (hard links, symlinks and every spelling of
/// a path agree).
#[cfg(unix)]
fn file_id(path: &std::path::Path) -> Option<(u64, u64, String)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), String::new()))
}

/// What identifies a file: its canonical path (symlinks and spellings agree).
#[cfg(not(unix))]
fn file_id(path: &std::path::Path) -> Option<(u64, u64, String)> {
    let canonical = std::fs::canonicalize(path).ok()?;
    Some((0, 0, canonical.display().to_string()))
}

/// A file's [`file_id`], or a URL as written.
fn identity(input: &Input) -> Option<(u64, u64, String)> {
    match input {
        Input::Local(path) => file_id(path),
        Input::Url(url) => Some((0, 0, url.clone())),
    }
}

/// Refuses an input list that names one file twice (a repeated path, another spelling of
/// it, a symlink or hard link to it), naming both.
///
/// # Errors
/// [`Error::Refused`] naming the two inputs.
fn refuse_duplicates(files: &[Input]) -> Result<()> {
    // A map, not a list searched for each input: 10 000 inputs are 10 000 look-ups.
    let mut seen: std::collections::HashMap<(u64, u64, String), usize> =
        std::collections::HashMap::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        // A file that cannot be opened is reported by its scan.
        let Some(id) = identity(f) else { continue };
        if let Some(&j) = seen.get(&id) {
            return Err(Error::Refused(format!(
                "{} and {} are the same file, given twice: each input must be a different file",
                files[j].name(),
                f.name()
            )));
        }
        seen.insert(id, i);
    }
    Ok(())
}

/// Scans and combines `inputs` without writing anything: the dataset and a report whose
/// output fields are empty. [`virtualize`] is this plus the write.
///
/// # Errors
/// As [`virtualize`], less the output errors.
pub fn build(
    inputs: &[String],
    options: &VirtualizeOptions,
) -> Result<(VirtualDataset, VirtualizeReport)> {
    let files = expand_inputs(inputs)?;
    if files.is_empty() {
        return Err(Error::Usage("no input file".into()));
    }
    refuse_duplicates(&files)?;
    if options.stack && options.concat_dim.is_none() {
        return Err(Error::Usage(
            "--stack needs --concat-dim NAME: the new dimension to stack the files along".into(),
        ));
    }
    let mut load: Vec<String> = options.identical_dims.clone();
    if let Some(d) = &options.concat_dim {
        load.push(d.clone());
    }
    let scan_options = ScanOptions {
        inline_threshold: options.inline_threshold,
        load,
        native_filters: options.native_filters,
        drop: options.drop.clone(),
    };
    let threads = match options.threads {
        0 => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            // Reads of objects wait on the network, not on a core.
            if files.iter().any(|f| matches!(f, Input::Url(_))) {
                cores * REMOTE_THREADS_PER_CORE
            } else {
                cores
            }
        }
        t => t,
    };
    let t0 = Instant::now();
    let fold = Fold::default();
    // Metadata equal to an earlier scan's is trimmed as each scan arrives (the group is
    // selected first, after the scans, where one is asked for).
    let fold_on_arrival = options.group.is_none() && options.scanner.is_none();
    let results = scan_folding(
        &files,
        &scan_options,
        options,
        threads,
        fold_on_arrival.then_some(&fold),
    )?;
    let scan_seconds = t0.elapsed().as_secs_f64();

    let mut datasets = Vec::with_capacity(files.len());
    let mut unlimited = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    let mut skipped_variables = Vec::new();
    let mut dropped = std::collections::BTreeSet::new();
    let names_scanned: Vec<bool> = results.iter().map(Option::is_some).collect();
    for (path, r) in files.iter().zip(results) {
        match r {
            Some(Ok(scan)) => {
                warnings.extend(scan.warnings);
                skipped_variables.extend(scan.skipped);
                dropped.extend(scan.dropped);
                unlimited.push(scan.unlimited);
                datasets.push(scan.dataset);
            }
            Some(Err(e)) if options.skip_bad => skipped.push(SkippedFile {
                file: path.name(),
                reason: e.to_string(),
            }),
            Some(Err(e)) => return Err(e),
            // Not started because another file failed (only without skip_bad: that failure is
            // returned by this loop), or lost to a panic (reported below).
            None => {}
        }
    }
    if datasets.is_empty() {
        return Err(Error::AllInputsFailed { skipped });
    }
    if let Some((path, _)) = files.iter().zip(&names_scanned).find(|(_, done)| !**done) {
        return Err(Error::Input {
            input: path.name(),
            reason: "its scan did not finish (a scanning thread panicked)".into(),
        });
    }
    if let Some(group) = &options.group {
        for d in &mut datasets {
            d.select_group(group)?;
        }
    }
    if !fold_on_arrival {
        for d in &mut datasets {
            fold.trim(d);
        }
    }
    leave_out(
        &mut datasets,
        &options.drop,
        &skipped_variables,
        &mut dropped,
    );
    if let Some(key) = options.drop.iter().find(|k| !dropped.contains(*k)) {
        return Err(Error::Usage(format!(
            "--drop {key}: no input has a variable {key}"
        )));
    }

    let t1 = Instant::now();
    let mut notes = Vec::new();
    let (concat_dim, reordered) = arrange(&mut datasets, &unlimited, options, threads, &mut notes)?;
    // The combine takes the first input's metadata whole.
    if let Some(first) = datasets.first_mut() {
        fold.restore(first);
    }
    let names: Vec<String> = datasets.iter().map(|d| d.name.clone()).collect();
    let combined = combine(
        datasets,
        &CombineOptions {
            concat_dim: concat_dim.clone(),
            stack: options.stack,
            identical_dims: options.identical_dims.clone(),
            compat: options.compat,
            dropped: options.dropped.clone(),
            keep: options.keep.clone(),
            decode_per_input: options.decode_per_input,
            threads,
        },
    )?;
    let combine_seconds = t1.elapsed().as_secs_f64();
    let report = VirtualizeReport {
        output: PathBuf::new(),
        files: names,
        skipped,
        warnings,
        skipped_variables,
        reordered,
        concat_dim,
        notes,
        stats: combined.stats(),
        bytes_written: 0,
        scan_seconds,
        combine_seconds,
        write_seconds: 0.0,
    };
    Ok((combined, report))
}

/// Scans `files` on `options.scanner` or on `threads` threads here, each scan trimmed by
/// `fold` as it arrives when one is given.
fn scan_folding(
    files: &[Input],
    scan_options: &ScanOptions,
    options: &VirtualizeOptions,
    threads: usize,
    fold: Option<&Fold>,
) -> Result<ScanResults> {
    if let Some(scanner) = &options.scanner {
        return scanner.scan(files, scan_options);
    }
    let scan = |input: &Input| {
        let mut scan = scan_input(input, scan_options)?;
        if let Some(fold) = fold {
            fold.trim(&mut scan.dataset);
        }
        Ok(scan)
    };
    Ok(scan_each(
        files,
        &scan,
        threads,
        options.skip_bad,
        options.progress.as_deref(),
        None,
    ))
}

/// The concat dimension (given, or inferred from several inputs), with the inputs' times
/// re-based to one unit and the inputs ordered by it; returns it and whether the order
/// changed. Decisions taken for the user go to `notes`.
fn arrange(
    datasets: &mut [VirtualDataset],
    unlimited: &[Vec<String>],
    options: &VirtualizeOptions,
    threads: usize,
    notes: &mut Vec<String>,
) -> Result<(Option<String>, bool)> {
    let concat_dim = match &options.concat_dim {
        Some(d) => Some(d.clone()),
        None if datasets.len() > 1 => {
            let inferred = infer_concat_dim(datasets, unlimited, threads)?;
            // The scan loaded the coordinate of a dimension given before it ran; this one is
            // read now, to order and check the files by it.
            for d in datasets.iter_mut() {
                compare::load_values(d, &inferred.dim)?;
            }
            notes.push(format!(
                "concatenating along {} (inferred: {}; name another with --concat-dim)",
                inferred.dim, inferred.why
            ));
            Some(inferred.dim)
        }
        None => None,
    };
    if let Some(d) = concat_dim.as_deref().filter(|_| !options.stack) {
        // Before ordering: files are ordered by their first time in one unit.
        if crate::rebase::rebase_concat_times(datasets, d)? {
            notes.push(format!(
                "the {d} coordinate's units differ between the files: its values (and its bounds') \
                 were re-based to the first file's units"
            ));
        }
    }
    let reordered = match &concat_dim {
        Some(d) if !options.stack => order_by_coordinate(datasets, d),
        _ => false,
    };
    Ok((concat_dim, reordered))
}

/// Removes the dropped variables (a scan on an executor does not drop them itself) and the
/// skipped ones from every dataset; `dropped` gathers the dropped keys found.
fn leave_out(
    datasets: &mut [VirtualDataset],
    drop: &[String],
    skipped: &[SkippedVariable],
    dropped: &mut std::collections::BTreeSet<String>,
) {
    for d in datasets {
        for key in drop {
            if d.arrays.remove(key).is_some() {
                dropped.insert(key.clone());
            }
        }
        for s in skipped {
            d.arrays.remove(&s.variable);
        }
    }
}

/// Virtualizes `inputs` (paths, globs, `s3://` URLs, `@list` files) into one reference output: scans them in
/// parallel on threads, joins them strictly along `concat_dim` (or takes the single file),
/// and writes `options.output` atomically.
///
/// # Errors
/// - [`Error::Input`] / [`Error::Usage`]: inputs that do not expand, several files without a
///   concat dimension;
/// - [`Error::OutputExists`] (checked before scanning) unless `overwrite`;
/// - [`Error::Guard`] (checked before scanning): an output that is, holds or lies inside an
///   input, is the current directory or a parent of it, exists and is not references of the
///   format asked for, or is being written by another job;
/// - the first file error in input order ([`Error::Source`], [`Error::UnsupportedFilter`],
///   [`Error::FilterMask`], [`Error::Unsupported`], …) unless `skip_bad`, and
///   [`Error::AllInputsFailed`] when every file was skipped;
/// - [`Error::Mismatch`] / [`Error::Combine`]: files that differ or cannot be joined;
/// - [`Error::Write`]: the output could not be written (nothing is left at its path).
pub fn virtualize(inputs: &[String], options: &VirtualizeOptions) -> Result<VirtualizeReport> {
    if options.format == OutputFormat::KerchunkParquet && options.record_size == 0 {
        return Err(Error::Usage("the record size must be at least 1".into()));
    }
    let _lock = guard_output(inputs, options)?;
    let (dataset, mut report) = build(inputs, options)?;
    let t = Instant::now();
    report.bytes_written = match options.format {
        OutputFormat::KerchunkJson => {
            write_kerchunk_json(&dataset, &options.output, options.overwrite)?
        }
        OutputFormat::KerchunkParquet => write_kerchunk_parquet(
            &dataset,
            &options.output,
            options.record_size,
            options.overwrite,
        )?,
        OutputFormat::Icechunk => write_icechunk(&dataset, &options.output, options.overwrite)?,
    };
    report.write_seconds = t.elapsed().as_secs_f64();
    report.output = options.output.clone();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_inputs_are_refused_naming_both() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("chunkmill-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let a = dir.join("a.nc");
        std::fs::write(&a, b"x")?;
        std::fs::write(dir.join("b.nc"), b"y")?;
        let spelled = dir.join(".").join("a.nc");
        let files = vec![
            Input::Local(a.clone()),
            Input::Local(dir.join("b.nc")),
            Input::Local(spelled.clone()),
        ];
        let err = refuse_duplicates(&files).err().map(|e| e.to_string());
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(
            err,
            Some(format!(
                "{} and {} are the same file, given twice: each input must be a different file",
                a.display(),
                spelled.display()
            ))
        );
        Ok(())
    }
}
