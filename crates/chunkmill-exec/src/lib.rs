//! Executors: run a [`Plan`]'s stages, stage after stage, each stage's tasks in parallel, with
//! memory admission ([`memory`]), retries with exponential backoff, and task markers so that a
//! killed run resumes where it stopped.
//!
//! The executor knows nothing of what a task does: a [`TaskRunner`] (from `chunkmill-ops`)
//! runs task `i` of a stage; the executor decides when, how often and whether it is done.
//!
//! ```
//! use chunkmill_exec::{run_plan, RunOptions, TaskRunner, TaskStats};
//! use chunkmill_grid::Grid;
//! use chunkmill_plan::{CopyStage, Endpoint, Plan, Stage, StageKind};
//! use chunkmill_store::{markers::Markers, Store};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! struct Count(AtomicU64);
//! impl TaskRunner for Count {
//!     fn run(&self, _stage: &Stage, _task: u64) -> Result<TaskStats, String> {
//!         self.0.fetch_add(1, Ordering::SeqCst);
//!         Ok(TaskStats::default())
//!     }
//! }
//! let grid = Grid::regular(&[100], &[10]).unwrap();
//! let endpoint = Endpoint::Zarr { url: "memory://x".into(), path: "a".into(), grid: grid.clone() };
//! let stage = Stage {
//!     name: "s".into(), label: "s".into(), projected_mem: 10, bytes_read: 0, bytes_written: 0,
//!     kind: StageKind::Copy(CopyStage { input: endpoint.clone(), output: endpoint, blocks: grid, item_size: 4 }),
//! };
//! let plan = Plan::new("test", 100, vec![stage], vec![]);
//! let markers = Markers::new(Store::open("memory://exec-doc").unwrap(), &plan.plan_id);
//! let runner = Count(AtomicU64::new(0));
//! let summary = run_plan(&plan, &runner, &markers, &RunOptions::new(2, 100), &|_| {}).unwrap();
//! assert_eq!((summary.tasks_run, runner.0.load(Ordering::SeqCst)), (10, 10));
//! // Run again: every task has its marker, nothing runs.
//! let summary = run_plan(&plan, &runner, &markers, &RunOptions::new(2, 100), &|_| {}).unwrap();
//! assert_eq!((summary.tasks_run, summary.tasks_skipped), (0, 10));
//! ```

pub mod memory;
pub mod processes;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chunkmill_plan::{Plan, Stage};
use chunkmill_store::markers::Markers;
use chunkmill_store::StoreError;
use parking_lot::Mutex;

pub use memory::MemoryPool;

/// What a task reports when it is done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Decoded bytes the task read.
    pub bytes_read: u64,
    /// Decoded bytes the task wrote.
    pub bytes_written: u64,
}

/// Runs one task of a stage. Must be idempotent: a task may run again after a crash, a retry or
/// a backup, and must then write the same bytes.
pub trait TaskRunner: Send + Sync {
    /// Run task `task` of `stage`.
    ///
    /// # Errors
    /// A message saying what failed; the executor retries and then reports it.
    fn run(&self, stage: &Stage, task: u64) -> Result<TaskStats, String>;

    /// Give back whatever the calling thread keeps between its tasks (reused buffers). The
    /// executor calls it before a thread waits for memory and when the thread ends, so
    /// memory kept for reuse never stands in the way of another task's reservation.
    fn release_idle(&self) {}
}

/// What happens during a run, for progress bars and reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// A stage begins; `done_before` tasks already had markers.
    StageStarted {
        index: usize,
        name: String,
        label: String,
        tasks: u64,
        done_before: u64,
        decoded_bytes: u64,
    },
    /// A task finished and its marker is written.
    TaskFinished {
        stage: usize,
        task: u64,
        stats: TaskStats,
        seconds: f64,
        decoded_bytes: u64,
    },
    /// A task failed and will be tried again.
    TaskRetrying {
        stage: usize,
        task: u64,
        attempt: u32,
        error: String,
    },
    /// A stage is complete.
    StageFinished { index: usize },
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Most tasks at once.
    pub workers: usize,
    /// Bytes the tasks together may hold.
    pub memory: u64,
    /// Extra attempts per task after a failure.
    pub retries: u32,
    /// First backoff; doubles with each attempt.
    pub backoff: Duration,
}

impl RunOptions {
    /// `workers` threads sharing `memory` bytes, 2 retries, 200 ms first backoff.
    #[must_use]
    pub fn new(workers: usize, memory: u64) -> Self {
        Self {
            workers: workers.max(1),
            memory,
            retries: 2,
            backoff: Duration::from_millis(200),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Tasks run now.
    pub tasks_run: u64,
    /// Tasks skipped because their markers said done.
    pub tasks_skipped: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Straggling slices whose backup copy finished first (processes executor).
    pub backups: u64,
    /// Decoded bytes read.
    pub bytes_read: u64,
    /// Decoded bytes written.
    pub bytes_written: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// Tasks failed after every retry.
    #[error("{failed} task(s) of stage '{stage}' failed after {attempts} attempt(s); first: task {task}: {message}")]
    TaskFailed {
        stage: String,
        task: u64,
        failed: u64,
        attempts: u32,
        message: String,
    },
    /// A stage or task range that the plan does not have.
    #[error("{0}")]
    NoSuchTasks(String),
    /// The work dir could not be read or written.
    #[error("work dir: {0}")]
    Markers(#[from] StoreError),
}

/// Run every stage of `plan` in order on a pool of threads, skipping tasks whose markers exist.
///
/// # Errors
/// [`ExecError::TaskFailed`] once a stage ends with failed tasks (the other tasks of that stage
/// still run and keep their markers), [`ExecError::Markers`] when the work dir fails.
pub fn run_plan(
    plan: &Plan,
    runner: &dyn TaskRunner,
    markers: &Markers,
    options: &RunOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, ExecError> {
    let started = Instant::now();
    let pool = MemoryPool::new(options.memory);
    let mut summary = RunSummary::default();
    for (index, stage) in plan.stages.iter().enumerate() {
        run_stage(
            index,
            stage,
            0..stage.tasks(),
            &pool,
            runner,
            markers,
            options,
            on_event,
            &mut summary,
        )?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Run tasks `tasks` of stage `index` only (what `chunkmill worker` does for a batch engine),
/// skipping those whose markers exist.
///
/// # Errors
/// As [`run_plan`]; [`ExecError::NoSuchTasks`] when the stage or the range is not in the plan.
pub fn run_stage_slice(
    plan: &Plan,
    index: usize,
    tasks: Range<u64>,
    runner: &dyn TaskRunner,
    markers: &Markers,
    options: &RunOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, ExecError> {
    let stage = plan.stages.get(index).ok_or_else(|| {
        ExecError::NoSuchTasks(format!(
            "stage {index}: the plan has {} stages",
            plan.stages.len()
        ))
    })?;
    if tasks.start > tasks.end || tasks.end > stage.tasks() {
        return Err(ExecError::NoSuchTasks(format!(
            "tasks {}..{} of stage '{}': it has tasks 0..{}",
            tasks.start,
            tasks.end,
            stage.name,
            stage.tasks()
        )));
    }
    let started = Instant::now();
    let pool = MemoryPool::new(options.memory);
    let mut summary = RunSummary::default();
    run_stage(
        index,
        stage,
        tasks,
        &pool,
        runner,
        markers,
        options,
        on_event,
        &mut summary,
    )?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Environment variable of the fault hook: a fraction of task attempts (0 to 1) that fail
/// before they start, chosen by a hash of stage, task and attempt so that a run is
/// reproducible. For tests of retries only; nothing else sets it.
pub const FAULT_RATE_VAR: &str = "CHUNKMILL_TEST_FAULT_RATE";

/// Environment variable of the straggler hook: `TASK:PATH` makes the first process that
/// creates the file PATH (exclusively) sleep 60 s before it runs task TASK of any stage, so
/// tests can make one worker process straggle. For tests only; nothing else sets it.
pub const SLOW_TASK_VAR: &str = "CHUNKMILL_TEST_SLOW_TASK";

fn injected_delay(task: u64) {
    let Ok(spec) = std::env::var(SLOW_TASK_VAR) else {
        return;
    };
    let Some((which, path)) = spec.split_once(':') else {
        return;
    };
    if which.parse::<u64>().ok() != Some(task) {
        return;
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .is_ok()
    {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn injected_fault(stage: &Stage, task: u64, attempt: u32) -> Option<String> {
    injected_delay(task);
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let rate = *RATE.get_or_init(|| {
        std::env::var(FAULT_RATE_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    });
    if rate <= 0.0 {
        return None;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stage
        .name
        .bytes()
        .chain(task.to_le_bytes())
        .chain(attempt.to_le_bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let draw = (h >> 11) as f64 / (1u64 << 53) as f64;
    (draw < rate).then(|| format!("injected fault ({FAULT_RATE_VAR})"))
}

#[allow(clippy::too_many_arguments)]
fn run_stage(
    index: usize,
    stage: &Stage,
    tasks: Range<u64>,
    pool: &MemoryPool,
    runner: &dyn TaskRunner,
    markers: &Markers,
    options: &RunOptions,
    on_event: &(dyn Fn(&Event) + Sync),
    summary: &mut RunSummary,
) -> Result<(), ExecError> {
    let stage_start = Instant::now();
    let done = markers.marked(&stage.name)?;
    let pending: Vec<u64> = tasks.clone().filter(|t| !done.contains(t)).collect();
    on_event(&Event::StageStarted {
        index,
        name: stage.name.clone(),
        label: stage.label.clone(),
        tasks: tasks.end - tasks.start,
        done_before: tasks.end - tasks.start - pending.len() as u64,
        decoded_bytes: stage.bytes_written,
    });
    summary.tasks_skipped += tasks.end - tasks.start - pending.len() as u64;
    let decoded_per_task = stage.bytes_written / stage.tasks().max(1);
    let next = AtomicUsize::new(0);
    let retries = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let written = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let marker_error: Mutex<Option<StoreError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let threads = options.workers.min(pending.len()).max(1);
    let run_tasks = || loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(&task) = pending.get(next.fetch_add(1, Ordering::Relaxed)) else {
            return;
        };
        let reservation = match pool.try_reserve(stage.projected_mem) {
            Some(r) => r,
            None => {
                runner.release_idle();
                pool.reserve(stage.projected_mem)
            }
        };
        let task_start = Instant::now();
        let mut attempt = 0;
        let outcome = loop {
            match injected_fault(stage, task, attempt).map_or_else(|| runner.run(stage, task), Err)
            {
                Ok(stats) => break Ok(stats),
                Err(error) if attempt < options.retries => {
                    attempt += 1;
                    retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(stage = %stage.name, task, attempt, %error, "task failed, retrying");
                    on_event(&Event::TaskRetrying {
                        stage: index,
                        task,
                        attempt,
                        error,
                    });
                    std::thread::sleep(options.backoff * 2u32.pow(attempt - 1));
                }
                Err(error) => break Err(error),
            }
        };
        drop(reservation);
        match outcome {
            Ok(stats) => {
                let seconds = task_start.elapsed().as_secs_f64();
                let started_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
                    - seconds * 1000.0;
                let record = serde_json::json!({
                    "started_ms": started_ms,
                    "seconds": seconds,
                    "attempts": attempt + 1,
                    "bytes_read": stats.bytes_read,
                    "bytes_written": stats.bytes_written,
                    "peak_rss": memory::peak_rss(),
                    "projected_mem": stage.projected_mem,
                });
                if let Err(e) = markers.mark(&stage.name, task, &record) {
                    *marker_error.lock() = Some(e);
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                read.fetch_add(stats.bytes_read, Ordering::Relaxed);
                written.fetch_add(stats.bytes_written, Ordering::Relaxed);
                on_event(&Event::TaskFinished {
                    stage: index,
                    task,
                    stats,
                    seconds,
                    decoded_bytes: decoded_per_task,
                });
            }
            Err(message) => failures.lock().push((task, message)),
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                run_tasks();
                runner.release_idle();
            });
        }
    });
    if let Some(e) = marker_error.into_inner() {
        return Err(ExecError::Markers(e));
    }
    summary.tasks_run += pending.len() as u64;
    summary.retries += retries.into_inner();
    summary.bytes_read += read.into_inner();
    summary.bytes_written += written.into_inner();
    let mut failures = failures.into_inner();
    if !failures.is_empty() {
        failures.sort_by_key(|f| f.0);
        let (task, message) = failures[0].clone();
        return Err(ExecError::TaskFailed {
            stage: stage.label.clone(),
            task,
            failed: failures.len() as u64,
            attempts: options.retries + 1,
            message,
        });
    }
    tracing::info!(stage = %stage.name, label = %stage.label, tasks = pending.len(), seconds = stage_start.elapsed().as_secs_f64(), "stage finished");
    on_event(&Event::StageFinished { index });
    Ok(())
}
