//! The job layer: what every job shares once it has a plan. A job (`rechunk`, `convert`,
//! virtualize on executors) builds a [`Job`]: its stages, the target's metadata, what it reads
//! and what the run writes first; [`run_job`] then checks the paths, takes the locks, decides
//! between a fresh start and a resume, writes the work files and the target's metadata, runs
//! every stage on the chosen executor, writes consolidated metadata, deletes the intermediates
//! and reports.

pub mod costs;
pub mod options;
pub(crate) mod plan;
pub mod report;

use chunkmill_exec::budget::Budget;
use chunkmill_exec::processes::{run_plan_processes, WorkerCommand};
use chunkmill_exec::slurm::{run_plan_slurm, SlurmOptions};
use chunkmill_exec::{memory, run_plan, Event, RunOptions, RunSummary};
use chunkmill_plan::Plan;
use chunkmill_store::markers::Markers;
use chunkmill_store::zarr::{self, ArraySpec, GroupInfo};
use chunkmill_store::{Store, StoreKind};
use serde::Serialize;

pub use options::{Executor, JobOptions, SlurmExecutor, TargetLayout};
pub use plan::{describe_strategy, plan_strategy, Alternative, ArrayPlan};

use crate::tasks::StageRunner;
use crate::{safety, Context, OpsError};

/// A planned job: the plan and what the target will hold, as every job hands it to
/// [`run_job`].
#[derive(Clone, Debug)]
pub struct Job {
    /// The plan.
    pub plan: Plan,
    /// What the job reads, as messages, the lock and the report name it.
    pub source: String,
    /// The Zarr format of the groups the run creates.
    pub zarr_format: u8,
    /// Per-array summary.
    pub arrays: Vec<ArrayPlan>,
    /// Groups to create in the target.
    pub groups: Vec<GroupInfo>,
    /// Arrays to create in the target.
    pub specs: Vec<ArraySpec>,
    /// Bytes the tasks may hold together.
    pub task_budget: u64,
    /// Process memory before any task.
    pub baseline: u64,
    /// Work dir URL.
    pub work_dir: String,
    /// Intermediate URL.
    pub temp: String,
    /// The target exists and the job writes into it (an append): it is neither refused nor
    /// erased, and its arrays are resized instead of created.
    pub existing_target: bool,
    /// Arrays of an existing target to give a new shape before any task runs.
    pub resize: Vec<(String, Vec<u64>)>,
    /// What the run writes before it touches the target, once its checks have passed.
    pub work_files: Vec<WorkFile>,
    /// Where the tasks and metadata write: the target, or the staging store beside it that
    /// replaces it once complete (`--overwrite` of an existing local target).
    pub write_url: String,
    /// What the job reads (paths or URLs), which it must never write, replace or delete.
    pub inputs: Vec<String>,
    /// Arrays of the source the job leaves out (it cannot read them), one warning line each.
    pub left_out: Vec<String>,
}

impl Job {
    /// The runner of this job's tasks on threads: the references its tasks read are handed
    /// over in memory, not read back from the work dir where [`run_job`] wrote them for
    /// worker processes and resumed runs.
    fn runner(&self) -> StageRunner {
        // Only this process runs copies of a task on threads (the processes and SLURM
        // executors run theirs in workers, which keep what they read until the job's cleanup).
        let runner = StageRunner::for_plan(&self.plan, true);
        for file in &self.work_files {
            if let WorkFile::References(dataset, url) = file {
                runner.preload_references(url, dataset.clone());
            }
        }
        runner
    }
}

/// Something a job's tasks or a resumed run read, written by [`run_job`] after its checks
/// (an existing target, another plan in the work dir) and before the target changes.
#[derive(Clone, Debug)]
pub enum WorkFile {
    /// A JSON document under a key of the work dir (an append's record).
    Json(String, serde_json::Value),
    /// The virtual dataset the plan's reference endpoints read, as kerchunk JSON at a URL.
    References(std::sync::Arc<chunkmill_manifest::VirtualDataset>, String),
}

/// What a finished job did.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// The plan id.
    pub plan_id: String,
    /// Arrays rechunked.
    pub arrays: usize,
    /// Tasks run now.
    pub tasks_run: u64,
    /// Tasks skipped (already done).
    pub tasks_skipped: u64,
    /// Failed attempts retried.
    pub retries: u64,
    /// Straggling slices whose backup copy finished first.
    pub backups: u64,
    /// Decoded bytes of all target arrays.
    pub bytes: u64,
    /// Decoded bytes the tasks run now read from their inputs (every source chunk counted each
    /// time it is decoded); known for the threads executor, `None` where the tasks ran in other
    /// processes.
    pub bytes_read: Option<u64>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Peak resident memory of any one process of the run (this one or, with the `processes`
    /// executor, a worker), bytes.
    pub peak_rss: u64,
    /// The budget, bytes.
    pub max_mem: u64,
    /// True when the run found the job already complete.
    pub already_complete: bool,
}

impl JobReport {
    /// The report of a run that ran no task: the job was already complete, or only prepared.
    pub(crate) fn without_tasks(
        plan_id: &str,
        arrays: usize,
        bytes: u64,
        max_mem: u64,
        already_complete: bool,
    ) -> Self {
        Self {
            plan_id: plan_id.to_string(),
            arrays,
            tasks_run: 0,
            tasks_skipped: 0,
            retries: 0,
            backups: 0,
            bytes,
            bytes_read: Some(0),
            seconds: 0.0,
            peak_rss: memory::peak_rss(),
            max_mem,
            already_complete,
        }
    }
}

/// How much an executor may run at once.
pub(crate) struct ExecutorLimits {
    pub workers: usize,
    pub retries: u32,
    pub max_mem: u64,
    /// Bytes the tasks of this process may hold together (threads executor).
    pub capacity: u64,
    /// Stops the threads and processes executors between tasks ([`JobOptions::interrupt`]).
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Runs every stage of `plan` on `executor`, markers in `work`; `runner` runs the tasks on the
/// threads executor (the other executors start `chunkmill worker` processes, which read the
/// plan and its work files).
///
/// # Errors
/// [`OpsError::Failed`] when tasks fail after retries; [`OpsError::Interrupted`] on Ctrl-C.
pub(crate) fn run_on_executor(
    plan: &Plan,
    executor: &Executor,
    work: &Store,
    markers: &Markers,
    limits: &ExecutorLimits,
    runner: &StageRunner,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, OpsError> {
    let mut run_options = RunOptions::new(limits.workers, limits.capacity);
    run_options.retries = limits.retries;
    run_options.interrupt = limits.interrupt.clone();
    match executor {
        Executor::Threads => run_plan(plan, runner, markers, &run_options, on_event),
        Executor::Processes { program } => {
            let command = WorkerCommand {
                program: program.clone(),
                plan_url: work.join("plan.json"),
            };
            run_plan_processes(
                plan,
                &command,
                markers,
                limits.workers,
                limits.retries,
                limits.interrupt.as_deref(),
                on_event,
            )
        }
        Executor::Slurm(slurm) => {
            let log_dir = slurm.log_dir.clone().unwrap_or_else(|| match work.kind() {
                StoreKind::Local => {
                    let url = work.url();
                    std::path::PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
                        .join("slurm-logs")
                }
                _ => std::path::PathBuf::from("chunkmill-slurm-logs"),
            });
            let slurm_options = SlurmOptions {
                program: slurm.program.clone(),
                plan_url: work.join("plan.json"),
                memory_mib: limits.max_mem.div_ceil(1 << 20),
                concurrent: limits.workers,
                retries: limits.retries,
                tasks_per_job: slurm.tasks_per_job,
                sbatch_options: slurm.sbatch_options.clone(),
                log_dir,
                poll: std::time::Duration::from_millis(500),
            };
            run_plan_slurm(
                plan,
                &slurm_options,
                markers,
                work,
                &slurm.interrupted,
                on_event,
            )
        }
    }
    .map_err(OpsError::from)
}

/// Bytes as a person reads them (`512.0 MB`).
#[must_use]
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// The memory split this process runs `plan` under (the [`chunkmill_exec::budget`] model,
/// the baseline measured now): the run calls it before its first write, and `plan` after
/// planning, so both accept the same plans and refuse the others alike (exit 3, naming the
/// budget that fits).
///
/// # Errors
/// [`OpsError::Refused`] when the plan's largest task does not fit what `--max-mem` leaves.
pub fn admit(plan: &Plan) -> Result<Budget, OpsError> {
    let budget = Budget::measured(plan.max_mem);
    budget
        .admit(plan.max_projected_mem())
        .map_err(|e| OpsError::Refused(format!("{}: {e}", plan.job)))?;
    Ok(budget)
}

/// Run a job planned by a job (rechunk, convert) with the same options.
///
/// Before the first write the job takes its locks (a second job on the same target or work
/// dir is refused, naming the first) and checks its paths again (see [`crate::safety`]). An
/// existing local target replaced by `--overwrite` is written beside it and swapped in only
/// once complete; a resumed run first sweeps the temporary files a killed run left.
///
/// # Errors
/// [`OpsError::Refused`] when the target exists (without `--overwrite`) or the work dir belongs
/// to another plan; [`OpsError::Failed`] when tasks fail after retries.
pub fn run_job(
    job: &Job,
    options: &JobOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<JobReport, OpsError> {
    let plan = &job.plan;
    let target = Store::open(&options.target)?;
    let write = Store::open(&job.write_url)?;
    let work = Store::open(&job.work_dir)?;
    safety::check_paths(options.paths(), &job.work_dir, &job.inputs)?;
    // Checked before anything is written: a refusal (exit 3) means nothing was.
    let budget = if options.prepare_only {
        Budget::for_max_mem(options.max_mem)
    } else {
        admit(plan)?
    };
    let capacity = budget.task_budget;
    let locks = safety::lock(
        &options.target,
        &work,
        &format!("{} {} → {}", plan.job, job.source, options.target),
    )?;
    let staging = safety::staging(&target, &job.write_url);
    let markers = Markers::new(work.clone(), &plan.plan_id);
    let resuming = is_resuming(job, options)?;
    // From here on the job may change its target: whatever fails is a failure of the run.
    let touched = |e: OpsError| e.after_write(&options.target);
    if resuming && work.exists(&complete_key(plan))? {
        let mut report = JobReport::without_tasks(
            &plan.plan_id,
            job.specs.len(),
            job.arrays.iter().map(|a| a.nbytes).sum(),
            options.max_mem,
            true,
        );
        report.tasks_skipped = plan.total_tasks();
        return Ok(report);
    }
    if resuming && work.exists(safety::SWAP_KEY)? {
        // Killed while the new target was being swapped in: finish that, write nothing else.
        if let Some(staging) = &staging {
            // A refusal here ("the new store is gone") comes before this run writes anything.
            safety::swap(&work, &target, staging)?;
        }
        let mut report = JobReport::without_tasks(
            &plan.plan_id,
            job.specs.len(),
            job.arrays.iter().map(|a| a.nbytes).sum(),
            options.max_mem,
            false,
        );
        report.tasks_skipped = plan.total_tasks();
        close(job, options, &work, &markers, &report, locks).map_err(touched)?;
        return Ok(report);
    }
    if resuming {
        safety::sweep(&[&job.write_url, &job.work_dir, &job.temp]).map_err(touched)?;
        crate::tasks::forget_lost_pieces(plan, &markers)
            .map_err(|e| touched(OpsError::Failed(e)))?;
    } else {
        start_afresh(job, options, &target, staging.as_deref(), &work, &markers)?;
        safety::record_created_temp(&work, options.temp.as_deref())?;
    }
    write_job_files(job, &work, &write).map_err(touched)?;
    if options.prepare_only {
        return Ok(JobReport::without_tasks(
            &plan.plan_id,
            job.specs.len(),
            job.arrays.iter().map(|a| a.nbytes).sum(),
            options.max_mem,
            false,
        ));
    }
    let summary = run_on_executor(
        plan,
        &options.executor,
        &work,
        &markers,
        &ExecutorLimits {
            workers: options.workers,
            retries: options.retries,
            max_mem: options.max_mem,
            capacity,
            interrupt: options.interrupt.clone(),
        },
        &job.runner(),
        on_event,
    )
    .map_err(touched)?;

    if let Some(path) = &options.report {
        write_html_report(job, options, &budget, &markers, &summary, path).map_err(touched)?;
    }
    zarr::write_consolidated(&write)
        .about("consolidated metadata")
        .map_err(touched)?;
    for (url, prefix) in &plan.cleanup {
        Store::open(url)
            .and_then(|s| s.erase_prefix(prefix))
            .about("removing the intermediates")
            .map_err(touched)?;
    }
    // Killed backup copies of slow tasks (processes, SLURM) may have left temporary files.
    safety::sweep(&[&job.write_url, &job.temp]).map_err(touched)?;
    safety::remove_created_temp(&work, &job.temp).map_err(touched)?;
    // Everything written is on disk before the target is swapped in or reported done.
    chunkmill_store::sync_pending()
        .about("syncing what was written")
        .map_err(touched)?;
    if let Some(staging) = &staging {
        safety::swap(&work, &target, staging).map_err(touched)?;
    }
    let report = JobReport {
        plan_id: plan.plan_id.clone(),
        arrays: job.arrays.len(),
        tasks_run: summary.tasks_run,
        tasks_skipped: summary.tasks_skipped,
        retries: summary.retries,
        backups: summary.backups,
        bytes: job.arrays.iter().map(|a| a.nbytes).sum(),
        bytes_read: matches!(options.executor, Executor::Threads).then_some(summary.bytes_read),
        seconds: summary.seconds,
        peak_rss: run_peak_rss(&options.executor),
        max_mem: options.max_mem,
        already_complete: false,
    };
    close(job, options, &work, &markers, &report, locks).map_err(touched)?;
    Ok(report)
}

fn complete_key(plan: &Plan) -> String {
    format!("{}/complete.json", plan.plan_id)
}

/// Whether this run continues the one recorded in the work dir; refuses a `--resume` into a
/// work dir of another job (without `--overwrite`).
fn is_resuming(job: &Job, options: &JobOptions) -> Result<bool, OpsError> {
    let work = Store::open(&job.work_dir)?;
    let previous = match work.get("plan.json")? {
        Some(bytes) => {
            Some(Plan::from_json(&String::from_utf8_lossy(&bytes)).about(work.join("plan.json"))?)
        }
        None => None,
    };
    let plan_id = &job.plan.plan_id;
    if options.resume {
        if let Some(p) = &previous {
            if &p.plan_id != plan_id && !options.overwrite {
                return Err(OpsError::Refused(format!(
                    "{}: the work dir holds plan {} of another job (this one is {plan_id}); use another --work-dir, or --overwrite to start over",
                    job.work_dir, p.plan_id
                )));
            }
        }
    }
    Ok(options.resume && previous.as_ref().is_some_and(|p| &p.plan_id == plan_id))
}

/// A run that does not resume: refuses an existing target without `--overwrite`, clears
/// what an earlier run left (the staging store, or on object stores the old target itself)
/// and the markers of an earlier run of the same plan.
fn start_afresh(
    job: &Job,
    options: &JobOptions,
    target: &Store,
    staging: Option<&std::path::Path>,
    work: &Store,
    markers: &Markers,
) -> Result<(), OpsError> {
    if !job.existing_target {
        let target_has_data = !target.is_empty()?;
        if target_has_data && !options.overwrite {
            return Err(OpsError::Refused(if options.resume {
                format!(
                    "{}: target exists and {} holds no run of this job to resume (a finished job removes its work dir unless --keep-work or --work-dir); use --overwrite to replace it",
                    target.url(),
                    job.work_dir
                )
            } else {
                format!(
                    "{}: target exists; use --overwrite to replace it",
                    target.url()
                )
            }));
        }
        match staging {
            Some(staging) => safety::clear_staging(staging)?,
            // An object store cannot swap a prefix in: the old target goes first (documented).
            None if target_has_data => target
                .erase_prefix("")
                .map_err(|e| OpsError::from(e).after_write(target.url()))?,
            None => {}
        }
    }
    markers.clear()?;
    work.erase(&complete_key(&job.plan))?;
    work.erase(safety::SWAP_KEY)?;
    // The job's own intermediates dir holds only what earlier runs of a job on this target
    // left (another plan's pieces, which no run would erase): a fresh start abandons them.
    if !job.temp.is_empty() {
        Store::open(&job.temp)?.erase_prefix("")?;
    }
    Ok(())
}

/// The plan and what the tasks read go to the work dir, then the target's metadata to where
/// the job writes, so a crash leaves a store whose arrays read as fill values (an append
/// grows the arrays; consolidated metadata, which readers use, keeps the old shapes until the
/// last task is done).
fn write_job_files(job: &Job, work: &Store, write: &Store) -> Result<(), OpsError> {
    let plan = job.plan.to_json().about("the plan")?;
    work.put("plan.json", plan.into_bytes())?;
    for file in &job.work_files {
        match file {
            WorkFile::Json(key, value) => work.put_json(key, value)?,
            WorkFile::References(dataset, url) => {
                crate::tasks::references::write_references(dataset, url)?
            }
        }
    }
    for (path, shape) in &job.resize {
        // The target may already be changed by now: a failure, not a refusal.
        zarr::resize(write, path, shape)?;
    }
    for group in &job.groups {
        zarr::create_group(write, &group.path, job.zarr_format, &group.attributes)?;
    }
    for spec in &job.specs {
        zarr::create_array(write, spec)?;
    }
    Ok(())
}

/// The highest peak resident memory of any one process of the run: this one, or with the
/// `processes` executor its workers too (each within `--max-mem`, which the report checks).
fn run_peak_rss(executor: &Executor) -> u64 {
    match executor {
        Executor::Processes { .. } => memory::peak_rss().max(memory::peak_rss_of_children()),
        _ => memory::peak_rss(),
    }
}

fn write_html_report(
    job: &Job,
    options: &JobOptions,
    budget: &Budget,
    markers: &Markers,
    summary: &RunSummary,
    path: &std::path::Path,
) -> Result<(), OpsError> {
    let plan = &job.plan;
    let mut records = Vec::new();
    for (i, stage) in plan.stages.iter().enumerate() {
        for (task, value) in markers.records(&stage.name)? {
            records.push(report::TaskRecord::from_marker(i, task, &value));
        }
    }
    let title = format!("{} {} → {}", plan.job, job.source, options.target);
    let view = report::PlanView::of_plan(plan, Some(budget.task_budget), Some(budget.baseline));
    // A worker's marker may carry a higher peak than this process ever had.
    let peak = records
        .iter()
        .map(|r| r.peak_rss)
        .fold(run_peak_rss(&options.executor), u64::max);
    let page = report::html(&view, &title, &records, summary.seconds, peak);
    std::fs::write(path, page).about(format_args!("{}: cannot write the report", path.display()))
}

/// The end of a complete run: the markers go; the work dir keeps the plan and a record of
/// completion when it was given (`--work-dir`) or `--keep-work` asks, and is removed
/// otherwise; the locks are released.
fn close(
    job: &Job,
    options: &JobOptions,
    work: &Store,
    markers: &Markers,
    report: &JobReport,
    locks: Vec<chunkmill_store::guard::Lock>,
) -> Result<(), OpsError> {
    markers.clear()?;
    if options.work_dir.is_none() && !options.keep_work {
        return safety::remove_work_dir(work, locks);
    }
    work.put(
        &complete_key(&job.plan),
        serde_json::to_vec_pretty(report).about("the record of completion")?,
    )?;
    work.erase(safety::SWAP_KEY)?;
    safety::sweep(&[&job.work_dir])?;
    drop(locks);
    Ok(())
}
