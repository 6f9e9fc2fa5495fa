//! `chunkmill virtualize --executor processes|slurm`: the scan of many files as map tasks of a
//! plan, run by the same executors as every other job (retries, markers, `chunkmill worker`),
//! then combined by the driver exactly as a scan on threads is.
//!
//! Task `i` scans a slice of the input list stored in the work dir and writes, for each file,
//! one object `<work>/scan/<index>.json`: the file's references as kerchunk JSON and the
//! warnings of its scan, or the reason it failed. A file that cannot be scanned is a result,
//! not a failed task: retrying would fail the same way, and `--skip-bad` decides in the driver.

use chunkmill_exec::Event;
use chunkmill_manifest::{
    FileScan, Input, ScanExecutor, ScanOptions, ScanResults, SkippedVariable,
};
use chunkmill_plan::{Plan, ScanStage, Stage, StageKind};
use chunkmill_store::guard::{self, Lock, Protected};
use chunkmill_store::markers::Markers;
use chunkmill_store::Store;
use serde_json::Value;

use crate::job::{run_on_executor, Executor, ExecutorLimits};
use crate::tasks::StageRunner;

/// A callback for the executor's events.
pub type EventFn = dyn Fn(&Event) + Send + Sync;

/// Scans on an executor's tasks; see the module docs.
pub struct ExecutorScanner {
    /// Where the tasks run.
    pub executor: Executor,
    /// Work dir: the input list, the plan, markers and results.
    pub work_dir: String,
    /// Most tasks at once.
    pub workers: usize,
    /// Extra attempts of a failed task.
    pub retries: u32,
    /// Memory of one worker process (SLURM `--mem`), bytes.
    pub max_mem: u64,
    /// Files per task (default: enough for about four tasks per worker).
    pub files_per_task: Option<u64>,
    /// Progress of the tasks.
    pub on_event: Option<Box<EventFn>>,
}

impl std::fmt::Debug for ExecutorScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorScanner")
            .field("executor", &self.executor)
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

fn task_error(e: impl std::fmt::Display) -> chunkmill_manifest::Error {
    chunkmill_manifest::Error::Executor(e.to_string())
}

impl ScanExecutor for ExecutorScanner {
    fn scan(
        &self,
        files: &[Input],
        options: &ScanOptions,
    ) -> chunkmill_manifest::Result<ScanResults> {
        let work = Store::open(&self.work_dir).map_err(task_error)?;
        let local: Vec<Protected> = files
            .iter()
            .filter(|f| matches!(f, Input::Local(_)))
            .map(|f| Protected::input(f.url()))
            .collect();
        guard::check_apart("the work dir", &self.work_dir, &local)?;
        crate::work_files::check_work_dir(&self.work_dir).map_err(|e| match e {
            crate::OpsError::Refused(message) => chunkmill_manifest::Error::Refused(message),
            other => task_error(other),
        })?;
        let lock = Lock::acquire(&work, crate::safety::LOCK_KEY, "virtualize scan")?;
        // Local paths absolute, so that a worker started elsewhere finds them.
        let list: String = files.iter().map(|f| format!("{}\n", f.url())).collect();
        work.put("scan-inputs.txt", list.into_bytes())
            .map_err(task_error)?;
        let n = files.len() as u64;
        let per = self
            .files_per_task
            .unwrap_or_else(|| n.div_ceil(4 * self.workers.max(1) as u64))
            .max(1);
        let stage = Stage {
            name: "scan".into(),
            label: format!("scan {n} files"),
            kind: StageKind::Scan(ScanStage {
                inputs_url: work.join("scan-inputs.txt"),
                files: n,
                files_per_task: per,
                output_url: work.join("scan"),
                inline_threshold: options.inline_threshold,
                load: options.load.clone(),
            }),
            // A scan holds one file's manifest: small against any budget.
            projected_mem: 16 << 20,
            bytes_read: 0,
            bytes_written: 0,
        };
        let plan = Plan::new("virtualize", self.max_mem, vec![stage], Vec::new())
            .with_urls(crate::work::absolute_url);
        let text = plan.to_json().map_err(task_error)?;
        work.put("plan.json", text.into_bytes())
            .map_err(task_error)?;
        let markers = Markers::new(work.clone(), &plan.plan_id);
        markers.clear().map_err(task_error)?;
        work.erase_prefix("scan/").map_err(task_error)?;
        let quiet = |_: &Event| {};
        let on_event: &(dyn Fn(&Event) + Sync) = match &self.on_event {
            Some(f) => f.as_ref(),
            None => &quiet,
        };
        run_on_executor(
            &plan,
            &self.executor,
            &work,
            &markers,
            &ExecutorLimits {
                workers: self.workers,
                retries: self.retries,
                max_mem: self.max_mem,
                capacity: self.max_mem,
                interrupt: None,
            },
            &StageRunner::new(),
            on_event,
        )
        .map_err(task_error)?;
        let out = Store::open(&work.join("scan")).map_err(task_error)?;
        let mut results = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            let bytes = out
                .get(&format!("{index}.json"))
                .map_err(task_error)?
                .ok_or_else(|| task_error(format!("{}: its scan left no result", file.name())))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(task_error)?;
            results.push(Some(read_result(&value, file)));
        }
        markers.clear().map_err(task_error)?;
        work.erase_prefix("scan/").map_err(task_error)?;
        // Nothing of the scan is left: the lock goes last, with the directory if it made it.
        for key in ["plan.json", "scan-inputs.txt"] {
            work.erase(key).map_err(task_error)?;
        }
        if let Some(dir) = work.local_path() {
            guard::prune_empty_dirs(&dir).map_err(task_error)?;
        }
        drop(lock);
        Ok(results)
    }
}

#[allow(clippy::result_large_err)] // the manifest crate's error, as its scans return it
fn read_result(value: &Value, file: &Input) -> chunkmill_manifest::Result<FileScan> {
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(chunkmill_manifest::Error::Task(error.to_string()));
    }
    let text = value
        .get("references")
        .and_then(Value::as_str)
        .ok_or_else(|| task_error(format!("{}: a scan result without references", file.name())))?;
    let dataset = chunkmill_manifest::kerchunk::parse_kerchunk_json(text, &file.name())?;
    let strings = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(FileScan {
        dataset,
        warnings: strings("warnings"),
        unlimited: strings("unlimited"),
        skipped: value
            .get("skipped_variables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                Some(SkippedVariable {
                    file: file.name(),
                    variable: v.get("variable")?.as_str()?.to_string(),
                    reason: v.get("reason")?.as_str()?.to_string(),
                })
            })
            .collect(),
        dropped: Vec::new(),
    })
}
