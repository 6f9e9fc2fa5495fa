//! Executors: run a [`Plan`]'s tasks in parallel, each once what it reads is written (see
//! [`run_plan`]; the processes and SLURM executors run stage after stage), with memory
//! admission ([`memory`]), retries with exponential backoff, and task markers so that a
//! killed run resumes where it stopped.
//!
//! The executor knows nothing of what a task does: a [`TaskRunner`] (from `chunkmill-ops`)
//! runs task `i` of a stage; the executor decides when, how often and whether it is done.
//!
//! ```
//! use chunkmill_exec::{run_plan, Cancel, RunOptions, TaskError, TaskRunner, TaskStats};
//! use chunkmill_grid::Grid;
//! use chunkmill_plan::{CopyStage, Endpoint, Plan, Stage, StageKind};
//! use chunkmill_store::{markers::Markers, Store};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! struct Count(AtomicU64);
//! impl TaskRunner for Count {
//!     fn run(&self, _stage: &Stage, _task: u64, _cancel: &Cancel) -> Result<TaskStats, TaskError> {
//!         self.0.fetch_add(1, Ordering::SeqCst);
//!         Ok(TaskStats::default())
//!     }
//! }
//! let grid = Grid::regular(&[100], &[10])?;
//! let endpoint = Endpoint::Zarr { url: "memory://x".into(), path: "a".into(), grid: grid.clone() };
//! let stage = Stage {
//!     name: "s".into(), label: "s".into(), projected_mem: 10, bytes_read: 0, bytes_written: 0,
//!     kind: StageKind::Copy(CopyStage { input: endpoint.clone(), output: endpoint, blocks: grid, item_size: 4 }),
//! };
//! let plan = Plan::new("test", 100, vec![stage], vec![]);
//! let markers = Markers::new(Store::open("memory://exec-doc")?, &plan.plan_id);
//! let runner = Count(AtomicU64::new(0));
//! let summary = run_plan(&plan, &runner, &markers, &RunOptions::new(2, 100), &|_| {})?;
//! assert_eq!((summary.tasks_run, runner.0.load(Ordering::SeqCst)), (10, 10));
//! // Run again: every task has its marker, nothing runs.
//! let summary = run_plan(&plan, &runner, &markers, &RunOptions::new(2, 100), &|_| {})?;
//! assert_eq!((summary.tasks_run, summary.tasks_skipped), (0, 10));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod budget;
pub mod memory;
pub mod order;
pub mod processes;
mod schedule;
pub mod slurm;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Set once another copy of a task finished first: a task that sees it stops part-way.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    /// Not cancelled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the task to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the task was asked to stop.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a task did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// It stopped because another copy of the task (a backup) finished first: not a failure.
    #[error("superseded by a backup copy that finished first")]
    Superseded,
    /// It failed; the executor retries it and then reports the error with its sources.
    #[error("{0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl TaskError {
    /// A failure from any error (its sources kept).
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        TaskError::Failed(error.into())
    }
}

/// `error` and each of its sources, joined with `: ` (what the user reads).
#[must_use]
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        // A wrapper that repeats its source's message adds nothing.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// Runs one task of a stage. Must be idempotent: a task may run again after a crash, a retry or
/// a backup, and must then write the same bytes.
pub trait TaskRunner: Send + Sync {
    /// Run task `task` of `stage`, giving up early once `cancel` is set (another copy of the
    /// task finished first). A runner that cannot stop part-way runs the task to its end.
    ///
    /// # Errors
    /// [`TaskError::Superseded`] when it stopped because of `cancel`; [`TaskError::Failed`]
    /// saying what failed, which the executor retries and then reports.
    fn run(&self, stage: &Stage, task: u64, cancel: &Cancel) -> Result<TaskStats, TaskError>;

    /// Give back whatever the calling thread keeps between its tasks (reused buffers). The
    /// executor calls it when a thread has no task of the stage left (before it gives its
    /// reservation back) and after each backup, so memory kept for reuse is always reserved.
    fn release_idle(&self) {}

    /// The calling thread goes on to a task of another stage whose projected memory is
    /// `bytes`, on a reservation resized to that: keep what it reuses between tasks only
    /// within `bytes` (the executor shrinks the reservation after this call, or grew it
    /// before). By default everything is given back, as [`TaskRunner::release_idle`].
    fn keep_idle_within(&self, _bytes: u64) {
        self.release_idle();
    }

    /// Task `task` of `stage` is complete for good: its marker is written and no copy of it (a
    /// straggler or its backup) still runs in this process, so nothing of this run reads its
    /// inputs again (a resumed run does not run it again either). The scheduler calls it then;
    /// a runner may drop the intermediates only the task read, unless a copy of the task may
    /// run in another process (a batch engine's worker).
    fn task_complete(&self, _stage: &Stage, _task: u64) {}
}

/// Fewest tasks in a stage for stragglers to get backups.
const BACKUP_MIN_TASKS: usize = 4;

/// A task is a straggler once it has run this many times the stage's median task time.
const STRAGGLER_FACTOR: f64 = 3.0;

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
    /// The test hooks, read from the environment once, when the options are made.
    pub hooks: TestHooks,
    /// Set from outside (Ctrl-C in the Python package): no task starts after it, the running
    /// ones finish and keep their markers, and the run returns [`ExecError::Interrupted`].
    pub interrupt: Option<std::sync::Arc<AtomicBool>>,
}

impl RunOptions {
    /// `workers` threads sharing `memory` bytes, 2 retries, 200 ms first backoff, and the
    /// test hooks the environment sets ([`TestHooks::from_env`]).
    #[must_use]
    pub fn new(workers: usize, memory: u64) -> Self {
        Self {
            workers: workers.max(1),
            memory,
            retries: 2,
            backoff: Duration::from_millis(200),
            hooks: TestHooks::from_env(),
            interrupt: None,
        }
    }

    /// Whether [`RunOptions::interrupt`] is set.
    #[must_use]
    pub fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }
}

/// Faults and stragglers that the tests of retries, backups and kills inject; none unless
/// [`FAULT_RATE_VAR`] or [`SLOW_TASK_VAR`] is set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestHooks {
    /// The fraction of task attempts (0 to 1) that fail before they start.
    pub fault_rate: f64,
    /// The task that straggles, and the file whose exclusive creation picks the one process
    /// that makes it straggle.
    pub slow_task: Option<(u64, std::path::PathBuf)>,
}

impl TestHooks {
    /// The hooks [`FAULT_RATE_VAR`] and [`SLOW_TASK_VAR`] set; a value that does not parse
    /// sets none.
    #[must_use]
    pub fn from_env() -> Self {
        let fault_rate = std::env::var(FAULT_RATE_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let slow_task = std::env::var(SLOW_TASK_VAR).ok().and_then(|spec| {
            let (task, path) = spec.split_once(':')?;
            Some((task.parse().ok()?, std::path::PathBuf::from(path)))
        });
        Self {
            fault_rate,
            slow_task,
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
    /// Straggling tasks (or slices, for processes) whose backup copy finished first.
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
    /// The batch engine refused or could not be reached.
    #[error("{0}")]
    Engine(String),
    /// A program of the batch engine (`sbatch`, `squeue`, …) could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The run was interrupted (Ctrl-C) and its jobs cancelled.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// Run every task of `plan` on one pool of threads, skipping tasks whose markers exist. A
/// task starts once the tasks that write what it reads are complete ([`order`]): a task that
/// copies from intermediate pieces waits only for the tasks that write those pieces, and
/// stages that share no data (the arrays of a group) overlap. Every running task holds its
/// stage's projected memory from the shared budget.
///
/// # Errors
/// [`ExecError::TaskFailed`] once no task can run and some failed (every task that does not
/// depend on a failed one still runs and keeps its marker), [`ExecError::Markers`] when the
/// work dir fails.
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
    let mut runs = Vec::with_capacity(plan.stages.len());
    for (index, stage) in plan.stages.iter().enumerate() {
        runs.push(StageRun::new(
            index,
            stage,
            0..stage.tasks(),
            (runner, markers, options, on_event),
            &mut summary,
        )?);
    }
    run_all(
        runs,
        &order::stage_waits(plan),
        &pool,
        runner,
        options,
        &mut summary,
    )?;
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
    let run = StageRun::new(
        index,
        stage,
        tasks,
        (runner, markers, options, on_event),
        &mut summary,
    )?;
    run_all(
        vec![run],
        &[order::StageWaits::default()],
        &pool,
        runner,
        options,
        &mut summary,
    )?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs `runs` (each waiting as `waits` says, by position) to the end, then books them in
/// `summary`: the first stage's failure, a marker error, or an interrupt as the error.
fn run_all(
    runs: Vec<StageRun<'_>>,
    waits: &[order::StageWaits],
    pool: &MemoryPool,
    runner: &dyn TaskRunner,
    options: &RunOptions,
    summary: &mut RunSummary,
) -> Result<(), ExecError> {
    let pending: usize = runs.iter().map(|r| r.state.pending.len()).sum();
    let scheduler = schedule::Scheduler::new(runs, waits, pool, runner);
    scheduler.run(options.workers.min(pending).max(1));
    let (runs, left) = scheduler.into_runs();
    let mut first_error = None;
    let mut interrupted = None;
    for (run, left) in runs.into_iter().zip(left) {
        let label = run.stage.label.clone();
        let booked = run.state.finish(run.stage, options, summary);
        if let Err(e) = booked {
            first_error.get_or_insert(e);
        } else if left > 0 && interrupted.is_none() {
            // Tasks are left only after an interrupt, or behind a failed or unmarked task
            // of an earlier stage (whose error comes first).
            interrupted = Some(format!(
                "stage '{label}': {left} task(s) not run; the others are marked done, so a resumed run continues from there"
            ));
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    match interrupted {
        Some(message) => Err(ExecError::Interrupted(message)),
        None => Ok(()),
    }
}

/// Environment variable of the fault hook: a fraction of task attempts (0 to 1) that fail
/// before they start, chosen by a hash of stage, task and attempt so that a run is
/// reproducible. For tests of retries only; nothing else sets it.
pub const FAULT_RATE_VAR: &str = "CHUNKMILL_TEST_FAULT_RATE";

/// Environment variable of the straggler hook: `TASK:PATH` makes the first process that
/// creates the file PATH (exclusively) write its pid there and sleep 60 s before it runs task
/// TASK of any stage, so tests can make one worker process straggle (or kill it mid-task). For tests only; nothing else sets it.
pub const SLOW_TASK_VAR: &str = "CHUNKMILL_TEST_SLOW_TASK";

fn injected_delay(hooks: &TestHooks, task: u64, cancel: &Cancel) {
    let Some((which, path)) = &hooks.slow_task else {
        return;
    };
    if *which != task {
        return;
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        // The pid lets a test kill exactly the process that straggles.
        let _ = std::io::Write::write_all(&mut file, std::process::id().to_string().as_bytes());
        drop(file);
        // A straggler that yields to its backup, as a copy task does between chunks.
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until && !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn injected_fault(
    hooks: &TestHooks,
    stage: &Stage,
    task: u64,
    attempt: u32,
    cancel: &Cancel,
) -> Option<TaskError> {
    injected_delay(hooks, task, cancel);
    let rate = hooks.fault_rate;
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
    (draw < rate).then(|| TaskError::failed(format!("injected fault ({FAULT_RATE_VAR})")))
}

/// The copies of one task that are running (the first, and a backup once it straggles).
struct Inflight {
    started: Instant,
    backed_up: bool,
    running: u32,
    cancels: Vec<std::sync::Arc<Cancel>>,
}

/// What the threads of one stage share.
struct StageState {
    pending: Vec<u64>,
    inflight: Mutex<std::collections::HashMap<u64, Inflight>>,
    finished: Mutex<std::collections::HashSet<u64>>,
    /// Tasks whose marker is written.
    recorded: Mutex<std::collections::HashSet<u64>>,
    /// Tasks whose readers were let go.
    released: Mutex<std::collections::HashSet<u64>>,
    durations: Mutex<Vec<f64>>,
    retries: AtomicU64,
    backups: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    failures: Mutex<Vec<(u64, String)>>,
    marker_error: Mutex<Option<StoreError>>,
    stop: AtomicBool,
}

impl StageState {
    /// Whether `task` just became complete: its marker written and no copy of it running
    /// (true once per task).
    fn complete(&self, task: u64) -> bool {
        let inflight = self.inflight.lock();
        !inflight.contains_key(&task)
            && self.recorded.lock().contains(&task)
            && self.released.lock().insert(task)
    }

    /// A task to back up: once nothing is left to start and half the tasks are done, the
    /// longest-running task past 3x the median task time, if it has no backup yet, claimed
    /// for a backup only if `reserve` gets the backup its memory (under the same lock, so the
    /// straggler cannot finish between the claim and the reservation). `Ok(None)` means "wait,
    /// one may straggle later, or memory may come free"; `Err(())` means "nothing can".
    #[allow(clippy::result_unit_err)]
    fn straggler<R>(
        &self,
        reserve: impl FnOnce() -> Option<R>,
    ) -> Result<Option<(u64, std::sync::Arc<Cancel>, R)>, ()> {
        let mut inflight = self.inflight.lock();
        if inflight.values().all(|f| f.backed_up) || self.stop.load(Ordering::Relaxed) {
            return Err(());
        }
        let durations = self.durations.lock();
        if self.pending.len() < BACKUP_MIN_TASKS || durations.len() * 2 < self.pending.len() {
            return Ok(None);
        }
        let mut sorted = durations.clone();
        drop(durations);
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2].max(0.01);
        let slowest = inflight
            .iter_mut()
            .filter(|(_, f)| {
                !f.backed_up && f.started.elapsed().as_secs_f64() > STRAGGLER_FACTOR * median
            })
            .max_by_key(|(_, f)| f.started.elapsed());
        let Some((&task, f)) = slowest else {
            return Ok(None);
        };
        let Some(reservation) = reserve() else {
            return Ok(None);
        };
        f.backed_up = true;
        f.running += 1;
        let cancel = std::sync::Arc::new(Cancel::new());
        f.cancels.push(cancel.clone());
        Ok(Some((task, cancel, reservation)))
    }
}

/// What every stage of a run shares: the runner, the markers, the options and the event sink.
type Shared<'a> = (
    &'a dyn TaskRunner,
    &'a Markers,
    &'a RunOptions,
    &'a (dyn Fn(&Event) + Sync),
);

impl StageState {
    /// Adds what the stage did to `summary`; the first failed task, if any, as the error.
    fn finish(
        self,
        stage: &Stage,
        options: &RunOptions,
        summary: &mut RunSummary,
    ) -> Result<(), ExecError> {
        if let Some(e) = self.marker_error.into_inner() {
            return Err(ExecError::Markers(e));
        }
        summary.tasks_run += self.pending.len() as u64;
        summary.retries += self.retries.into_inner();
        summary.backups += self.backups.into_inner();
        summary.bytes_read += self.read.into_inner();
        summary.bytes_written += self.written.into_inner();
        let mut failures = self.failures.into_inner();
        failures.sort_by_key(|f| f.0);
        let failed = failures.len() as u64;
        match failures.into_iter().next() {
            Some((task, message)) => Err(ExecError::TaskFailed {
                stage: stage.label.clone(),
                task,
                failed,
                attempts: options.retries + 1,
                message,
            }),
            None => Ok(()),
        }
    }
}

/// One stage running on this process's threads: what every thread of it shares.
struct StageRun<'a> {
    index: usize,
    stage: &'a Stage,
    runner: &'a dyn TaskRunner,
    markers: &'a Markers,
    options: &'a RunOptions,
    on_event: &'a (dyn Fn(&Event) + Sync),
    decoded_per_task: u64,
    /// When the run that holds this stage began.
    started: Instant,
    /// Tasks of the stage in this run, and how many of them had markers.
    tasks: u64,
    skipped: u64,
    /// Whether [`Event::StageStarted`] was sent.
    announced: AtomicBool,
    state: StageState,
}

impl<'a> StageRun<'a> {
    /// Tasks `tasks` of stage `index`, less those whose markers exist (counted as skipped in
    /// `summary`).
    fn new(
        index: usize,
        stage: &'a Stage,
        tasks: Range<u64>,
        (runner, markers, options, on_event): Shared<'a>,
        summary: &mut RunSummary,
    ) -> Result<Self, ExecError> {
        let done = markers.marked(&stage.name)?;
        let pending: Vec<u64> = tasks.clone().filter(|t| !done.contains(t)).collect();
        let skipped = tasks.end - tasks.start - pending.len() as u64;
        summary.tasks_skipped += skipped;
        Ok(StageRun {
            index,
            stage,
            runner,
            markers,
            options,
            on_event,
            decoded_per_task: stage.bytes_written / stage.tasks().max(1),
            started: Instant::now(),
            tasks: tasks.end - tasks.start,
            skipped,
            announced: AtomicBool::new(false),
            state: StageState {
                pending,
                inflight: Mutex::new(std::collections::HashMap::new()),
                finished: Mutex::new(std::collections::HashSet::new()),
                recorded: Mutex::new(std::collections::HashSet::new()),
                released: Mutex::new(std::collections::HashSet::new()),
                durations: Mutex::new(Vec::new()),
                retries: AtomicU64::new(0),
                backups: AtomicU64::new(0),
                read: AtomicU64::new(0),
                written: AtomicU64::new(0),
                failures: Mutex::new(Vec::new()),
                marker_error: Mutex::new(None),
                stop: AtomicBool::new(false),
            },
        })
    }

    /// Sends [`Event::StageStarted`], before the stage's first task or its end (once).
    fn announce(&self) {
        if self.announced.swap(true, Ordering::Relaxed) {
            return;
        }
        (self.on_event)(&Event::StageStarted {
            index: self.index,
            name: self.stage.name.clone(),
            label: self.stage.label.clone(),
            tasks: self.tasks,
            done_before: self.skipped,
            decoded_bytes: self.stage.bytes_written,
        });
    }

    /// The first copy of `task`, on memory the caller reserved.
    fn start(&self, task: u64) {
        self.announce();
        let cancel = std::sync::Arc::new(Cancel::new());
        self.state.inflight.lock().insert(
            task,
            Inflight {
                started: Instant::now(),
                backed_up: false,
                running: 1,
                cancels: vec![cancel.clone()],
            },
        );
        self.run_copy(task, false, &cancel);
    }

    /// Every task of the stage is complete.
    fn finished(&self) {
        self.announce();
        tracing::info!(stage = %self.stage.name, label = %self.stage.label, tasks = self.state.pending.len(), seconds = self.started.elapsed().as_secs_f64(), "stage finished");
        (self.on_event)(&Event::StageFinished { index: self.index });
    }

    /// One copy of a task, with its retries; the first copy of a task to finish writes the
    /// marker and cancels the other.
    fn run_copy(&self, task: u64, backup: bool, cancel: &Cancel) {
        let task_start = Instant::now();
        let (outcome, attempts) = self.attempt(task, cancel);
        if !self.settle(task, &outcome) {
            return;
        }
        let Ok(stats) = outcome else { return };
        self.record(
            task,
            backup,
            attempts,
            stats,
            task_start.elapsed().as_secs_f64(),
        );
    }

    /// Runs `task` until it succeeds, is superseded or has no retry left; returns how it
    /// ended and after how many attempts.
    fn attempt(&self, task: u64, cancel: &Cancel) -> (Result<TaskStats, TaskError>, u32) {
        let (stage, options) = (self.stage, self.options);
        let mut attempt = 0;
        loop {
            let outcome = match injected_fault(&options.hooks, stage, task, attempt, cancel) {
                Some(error) => Err(error),
                None => self.runner.run(stage, task, cancel),
            };
            match outcome {
                Ok(stats) => return (Ok(stats), attempt + 1),
                Err(TaskError::Superseded) => return (Err(TaskError::Superseded), attempt + 1),
                Err(_) if cancel.is_cancelled() => {
                    return (Err(TaskError::Superseded), attempt + 1)
                }
                Err(error) if attempt < options.retries => {
                    attempt += 1;
                    self.state.retries.fetch_add(1, Ordering::Relaxed);
                    let error = error_chain(&error);
                    tracing::warn!(stage = %stage.name, task, attempt, %error, "task failed, retrying");
                    (self.on_event)(&Event::TaskRetrying {
                        stage: self.index,
                        task,
                        attempt,
                        error,
                    });
                    std::thread::sleep(options.backoff * 2u32.pow(attempt - 1));
                }
                Err(error) => return (Err(error), attempt + 1),
            }
        }
    }

    /// Books the end of one copy of `task`: whether it is the first to succeed (it then cancels
    /// the other copy); a failure counts only if no other copy is still running or succeeded.
    fn settle(&self, task: u64, outcome: &Result<TaskStats, TaskError>) -> bool {
        let state = &self.state;
        let mut inflight = state.inflight.lock();
        let others_running = inflight.get_mut(&task).map_or(0, |f| {
            f.running -= 1;
            f.running
        });
        let won = outcome.is_ok() && state.finished.lock().insert(task);
        if won {
            if let Some(f) = inflight.get(&task) {
                f.cancels.iter().for_each(|c| c.cancel());
            }
        }
        if let Err(error) = outcome {
            let lost =
                matches!(error, TaskError::Superseded) || state.finished.lock().contains(&task);
            if !lost && others_running == 0 {
                state.failures.lock().push((task, error_chain(error)));
            }
        }
        if others_running == 0 {
            inflight.remove(&task);
        }
        won
    }

    /// The marker of a finished task, then its event.
    fn record(&self, task: u64, backup: bool, attempts: u32, stats: TaskStats, seconds: f64) {
        let (stage, state) = (self.stage, &self.state);
        state.durations.lock().push(seconds);
        if backup {
            state.backups.fetch_add(1, Ordering::Relaxed);
            tracing::info!(stage = %stage.name, task, "the backup of a straggling task finished first");
        }
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            - seconds * 1000.0;
        let record = serde_json::json!({
            "started_ms": started_ms,
            "seconds": seconds,
            "attempts": attempts,
            "backup": backup,
            "bytes_read": stats.bytes_read,
            "bytes_written": stats.bytes_written,
            "peak_rss": memory::peak_rss(),
            "projected_mem": stage.projected_mem,
        });
        if let Err(e) = self.markers.mark(&stage.name, task, &record) {
            *state.marker_error.lock() = Some(e);
            state.stop.store(true, Ordering::Relaxed);
            return;
        }
        state.recorded.lock().insert(task);
        state.read.fetch_add(stats.bytes_read, Ordering::Relaxed);
        state
            .written
            .fetch_add(stats.bytes_written, Ordering::Relaxed);
        (self.on_event)(&Event::TaskFinished {
            stage: self.index,
            task,
            stats,
            seconds,
            decoded_bytes: self.decoded_per_task,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;
    use chunkmill_grid::Grid;
    use chunkmill_plan::{CopyStage, Endpoint, StageKind};
    use chunkmill_store::Store;
    use std::collections::HashMap;

    fn plan(tasks: u64) -> Result<Plan, chunkmill_grid::GridError> {
        let grid = Grid::regular(&[tasks * 10], &[10])?;
        let endpoint = Endpoint::Zarr {
            url: "memory://x".into(),
            path: "a".into(),
            grid: grid.clone(),
        };
        let stage = Stage {
            name: "s".into(),
            label: "s".into(),
            projected_mem: 10,
            bytes_read: 0,
            bytes_written: 0,
            kind: StageKind::Copy(CopyStage {
                input: endpoint.clone(),
                output: endpoint,
                blocks: grid,
                item_size: 4,
            }),
        };
        Ok(Plan::new("test", 1000, vec![stage], vec![]))
    }

    /// Task `slow` straggles on its first copy until it is cancelled (or 30 s pass).
    struct Straggler {
        slow: u64,
        /// A task that takes 300 ms instead of 2: still holding memory when the straggler is
        /// found.
        lagging: Option<u64>,
        copies: Mutex<HashMap<u64, u32>>,
        first_copy_cancelled: AtomicBool,
    }

    impl TaskRunner for Straggler {
        fn run(&self, _stage: &Stage, task: u64, cancel: &Cancel) -> Result<TaskStats, TaskError> {
            let copy = {
                let mut copies = self.copies.lock();
                let n = copies.entry(task).or_insert(0);
                *n += 1;
                *n
            };
            if task == self.slow && copy == 1 {
                let until = Instant::now() + Duration::from_secs(30);
                while !cancel.is_cancelled() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if cancel.is_cancelled() {
                    self.first_copy_cancelled.store(true, Ordering::Relaxed);
                    return Err(TaskError::Superseded);
                }
            }
            let pause = if Some(task) == self.lagging { 300 } else { 2 };
            std::thread::sleep(Duration::from_millis(pause));
            Ok(TaskStats::default())
        }
    }

    #[test]
    fn a_backup_waits_for_memory_a_running_task_gives_back() -> TestResult {
        // Memory for two tasks: the straggler holds one share, the last task (lagging) the
        // other when the straggler is found, so its backup can start only once that ends.
        let plan = plan(12)?;
        let markers = Markers::new(Store::open("memory://exec-backup-memory")?, &plan.plan_id);
        let runner = Straggler {
            slow: 2,
            lagging: Some(11),
            copies: Mutex::new(HashMap::new()),
            first_copy_cancelled: AtomicBool::new(false),
        };
        let started = Instant::now();
        let summary = run_plan(&plan, &runner, &markers, &RunOptions::new(4, 20), &|_| {})?;
        assert_eq!(summary.backups, 1);
        assert!(runner.first_copy_cancelled.load(Ordering::Relaxed));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run waited for the straggler, not for memory"
        );
        assert_eq!(markers.marked("s")?.len(), 12);
        Ok(())
    }

    #[test]
    fn a_straggling_task_gets_a_backup_that_wins() -> TestResult {
        let plan = plan(12)?;
        let markers = Markers::new(Store::open("memory://exec-backup")?, &plan.plan_id);
        let runner = Straggler {
            slow: 2,
            lagging: None,
            copies: Mutex::new(HashMap::new()),
            first_copy_cancelled: AtomicBool::new(false),
        };
        let summary = run_plan(&plan, &runner, &markers, &RunOptions::new(4, 1000), &|_| {})?;
        assert_eq!(summary.backups, 1);
        assert_eq!(summary.tasks_run, 12);
        assert!(runner.first_copy_cancelled.load(Ordering::Relaxed));
        let copies = runner.copies.lock();
        assert_eq!(copies[&2], 2);
        assert!((0..12).filter(|&t| t != 2).all(|t| copies[&t] == 1));
        assert_eq!(markers.marked("s")?.len(), 12);
        Ok(())
    }

    #[test]
    fn a_failing_straggler_defers_to_its_backup() -> TestResult {
        // The straggler's first copy fails (instead of being cancelled) after its backup
        // started: the backup's success decides, and the run succeeds.
        struct FailsLate(Straggler);
        impl TaskRunner for FailsLate {
            fn run(
                &self,
                stage: &Stage,
                task: u64,
                cancel: &Cancel,
            ) -> Result<TaskStats, TaskError> {
                let first = task == self.0.slow && !self.0.copies.lock().contains_key(&task);
                if first {
                    self.0.copies.lock().insert(task, 1);
                    std::thread::sleep(Duration::from_millis(300));
                    return Err(TaskError::failed("disk on fire"));
                }
                self.0.run(stage, task, cancel)
            }
        }
        let plan = plan(12)?;
        let markers = Markers::new(Store::open("memory://exec-backup-2")?, &plan.plan_id);
        let runner = FailsLate(Straggler {
            slow: 5,
            lagging: None,
            copies: Mutex::new(HashMap::new()),
            first_copy_cancelled: AtomicBool::new(false),
        });
        let mut options = RunOptions::new(4, 1000);
        options.retries = 0;
        let summary = run_plan(&plan, &runner, &markers, &options, &|_| {})?;
        assert_eq!(summary.backups, 1);
        assert_eq!(markers.marked("s")?.len(), 12);
        Ok(())
    }

    /// The fault hook acts through the run options (read from the environment once, by
    /// `RunOptions::new`), not through a lookup of the environment at each attempt.
    #[test]
    fn test_hooks_act_through_the_run_options() -> TestResult {
        let plan = plan(4)?;
        let runner = Straggler {
            slow: u64::MAX,
            lagging: None,
            copies: Mutex::new(HashMap::new()),
            first_copy_cancelled: AtomicBool::new(false),
        };
        let mut options = RunOptions::new(2, 1000);
        options.retries = 0;
        options.hooks = TestHooks {
            fault_rate: 1.0,
            slow_task: None,
        };
        let markers = Markers::new(Store::open("memory://exec-hooks-1")?, &plan.plan_id);
        let error = run_plan(&plan, &runner, &markers, &options, &|_| {})
            .err()
            .ok_or("a fault rate of 1 let the run succeed")?;
        assert!(error.to_string().contains("injected fault"), "{error}");
        assert!(markers.marked("s")?.is_empty());
        options.hooks = TestHooks::default();
        let markers = Markers::new(Store::open("memory://exec-hooks-2")?, &plan.plan_id);
        run_plan(&plan, &runner, &markers, &options, &|_| {})?;
        assert_eq!(markers.marked("s")?.len(), 4);
        Ok(())
    }

    /// Sets the interrupt flag once `after` tasks have run, as Ctrl-C does from Python.
    struct InterruptAfter {
        ran: AtomicU64,
        after: u64,
        flag: std::sync::Arc<AtomicBool>,
    }

    impl TaskRunner for InterruptAfter {
        fn run(
            &self,
            _stage: &Stage,
            _task: u64,
            _cancel: &Cancel,
        ) -> Result<TaskStats, TaskError> {
            if self.ran.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
                self.flag.store(true, Ordering::SeqCst);
            }
            Ok(TaskStats::default())
        }
    }

    #[test]
    fn an_interrupt_stops_between_tasks_and_a_rerun_finishes() -> TestResult {
        let plan = plan(20)?;
        let markers = Markers::new(Store::open("memory://exec-interrupt")?, &plan.plan_id);
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        let runner = InterruptAfter {
            ran: AtomicU64::new(0),
            after: 5,
            flag: flag.clone(),
        };
        let mut options = RunOptions::new(1, 1000);
        options.interrupt = Some(flag.clone());
        let stopped = run_plan(&plan, &runner, &markers, &options, &|_| {});
        assert!(
            matches!(stopped, Err(ExecError::Interrupted(_))),
            "{stopped:?}"
        );
        assert_eq!(markers.marked("s")?.len(), 5);
        flag.store(false, Ordering::SeqCst);
        let summary = run_plan(&plan, &runner, &markers, &options, &|_| {})?;
        assert_eq!((summary.tasks_run, summary.tasks_skipped), (15, 5));
        Ok(())
    }

    /// Records the threads that ran tasks.
    #[derive(Default)]
    struct Threads(Mutex<std::collections::HashSet<std::thread::ThreadId>>);

    impl TaskRunner for Threads {
        fn run(&self, _: &Stage, _: u64, _: &Cancel) -> Result<TaskStats, TaskError> {
            self.0.lock().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(2));
            Ok(TaskStats::default())
        }
    }

    #[test]
    fn tasks_that_fit_one_at_a_time_run_on_one_thread() -> TestResult {
        // Each thread's allocator arena keeps what its tasks freed: threads taking turns at
        // one task each would leave a task's worth resident per thread, beyond the pool.
        for (memory, most_threads) in [(15, 1), (25, 2), (1000, 4)] {
            let plan = plan(12)?;
            let markers = Markers::new(
                Store::open(&format!("memory://exec-threads-{memory}"))?,
                &plan.plan_id,
            );
            let runner = Threads::default();
            run_plan(
                &plan,
                &runner,
                &markers,
                &RunOptions::new(4, memory),
                &|_| {},
            )?;
            let used = runner.0.lock().len();
            assert!(
                (1..=most_threads).contains(&used),
                "pool {memory}: {used} threads ran tasks"
            );
        }
        Ok(())
    }
}
