//! The `slurm` executor: one job array per stage, stages chained with `afterok`, each array
//! element a `chunkmill worker` that runs a batch of tasks. The markers in the work dir are the
//! only truth: the driver learns progress from them, and when the arrays have left the queue it
//! resubmits the elements whose tasks still lack markers (up to `retries` times per stage). So
//! a worker killed mid-task, a node lost or a driver restarted all end the same way: the missing
//! tasks run again, and their whole-chunk atomic writes make that safe.
//!
//! SLURM's own accounting is not needed (`sacct` is often off on small clusters): a job that has
//! left `squeue` is finished, and the markers say how.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chunkmill_plan::Plan;
use chunkmill_store::markers::Markers;
use chunkmill_store::Store;

use crate::{Event, ExecError, RunSummary, TaskStats};

/// SLURM's default `MaxArraySize`, used when `scontrol` does not say.
const DEFAULT_MAX_ARRAY_SIZE: u64 = 1001;

/// Array elements per concurrent slot when the batch size is not given: enough for the load to
/// even out, few enough that SLURM's per-job start-up (about a second) stays small.
const ELEMENTS_PER_SLOT: u64 = 4;

/// Fewest elements in an array for stragglers to get backups.
const BACKUP_MIN_ELEMENTS: usize = 4;

/// An element is a straggler once it has run this many times the median element time.
const STRAGGLER_FACTOR: f64 = 3.0;

/// How long `squeue` may keep failing (controller restarting) before the run gives up.
const SQUEUE_PATIENCE: Duration = Duration::from_secs(120);

/// How to submit workers to SLURM.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The `chunkmill` executable, at a path the compute nodes see.
    pub program: PathBuf,
    /// The plan's URL (`<work-dir>/plan.json`), reachable from the compute nodes.
    pub plan_url: String,
    /// `--mem` of every array element, in MiB.
    pub memory_mib: u64,
    /// Most array elements running at once (`--array=…%LIMIT`).
    pub concurrent: usize,
    /// Resubmissions of a stage's unfinished elements; also each worker's in-process retries.
    pub retries: u32,
    /// Tasks per array element (default: about four elements per concurrent slot, and never
    /// more elements than the cluster's `MaxArraySize`).
    pub tasks_per_job: Option<u64>,
    /// Options passed to every `sbatch` as they are (`--account`, `--partition`, `--time`, …);
    /// they come after chunkmill's own, so they win.
    pub sbatch_options: Vec<String>,
    /// Where the array elements' logs go (a directory the compute nodes can write).
    pub log_dir: PathBuf,
    /// How often the queue and the markers are read.
    pub poll: Duration,
}

/// A submitted array: which stage, which elements, how many tasks each.
#[derive(Clone, Debug)]
struct Submitted {
    job_id: String,
    stage: usize,
    batch: u64,
    elements: Vec<u64>,
    /// A one-element array that backs up a straggling element of the stage's array.
    backup: bool,
}

impl Submitted {
    /// Whether every task of `element` has its marker.
    fn element_done(&self, element: u64, tasks: u64, done: &HashSet<u64>) -> bool {
        let end = ((element + 1) * self.batch).min(tasks);
        (element * self.batch..end).all(|t| done.contains(&t))
    }
}

/// `squeue`'s elapsed time (`M:SS`, `H:MM:SS` or `D-HH:MM:SS`) in seconds.
fn parse_elapsed(text: &str) -> Option<f64> {
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().ok()?, rest),
        None => (0.0, text),
    };
    let mut seconds = 0.0;
    for part in clock.split(':') {
        seconds = seconds * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(days * 86_400.0 + seconds)
}

/// The running elements of array `job` and how long each has run.
fn running_elements(job: &str) -> Vec<(u64, f64)> {
    let args = ["-h", "-t", "RUNNING", "-o", "%i|%M", "-j", job].map(String::from);
    let Ok((true, out, _)) = run_command("squeue", &args) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|line| {
            let (id, elapsed) = line.trim().split_once('|')?;
            let element = id.rsplit_once('_')?.1.parse().ok()?;
            Some((element, parse_elapsed(elapsed)?))
        })
        .collect()
}

/// Straggler watch over the array of the stage that runs now.
#[derive(Default)]
struct Stragglers {
    stage: Option<usize>,
    /// Longest run seen of each element of the array.
    elapsed: HashMap<u64, f64>,
    /// Run times of the elements that finished.
    finished: HashMap<u64, f64>,
    /// Backed-up elements and their backup's job id; removed once settled.
    backups: HashMap<u64, String>,
    /// Backups that settled with the original still running (the backup won).
    won: u64,
}

/// Quote one word for `sh`.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `0-3,5,7-9`: SLURM's array index list of sorted `indices`.
#[must_use]
pub fn array_spec(indices: &[u64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Tasks per array element for a stage of `tasks` tasks.
#[must_use]
pub fn batch_size(tasks: u64, concurrent: usize, max_array_size: u64, wanted: Option<u64>) -> u64 {
    let fewest = tasks.div_ceil(max_array_size.max(1)).max(1);
    let default = tasks
        .div_ceil((concurrent.max(1) as u64) * ELEMENTS_PER_SLOT)
        .max(1);
    wanted.unwrap_or(default).max(fewest)
}

fn run_command(program: &str, args: &[String]) -> Result<(bool, String, String), ExecError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ExecError::Spawn {
            program: program.to_string(),
            source,
        })?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// A SLURM command's stderr as one line: errors stay one line however many SLURM printed.
fn one_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| {
            let l = l.trim();
            l.split_once(": error: ").map_or(l, |(_, rest)| rest)
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The cluster's `MaxArraySize` (`scontrol show config`), or SLURM's default.
fn max_array_size() -> u64 {
    let Ok((true, out, _)) = run_command("scontrol", &["show".into(), "config".into()]) else {
        return DEFAULT_MAX_ARRAY_SIZE;
    };
    out.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "MaxArraySize")
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_ARRAY_SIZE)
}

/// Job ids of `jobs` that are still queued or running.
fn still_queued(jobs: &[String]) -> Result<HashSet<String>, String> {
    if jobs.is_empty() {
        return Ok(HashSet::new());
    }
    let args = vec![
        "-h".to_string(),
        "-o".to_string(),
        "%F".to_string(),
        "-j".to_string(),
        jobs.join(","),
    ];
    match run_command("squeue", &args) {
        Ok((true, out, _)) => Ok(out.lines().map(|l| l.trim().to_string()).collect()),
        // Jobs that finished long ago are purged, and squeue calls their ids invalid.
        Ok((false, _, err)) if err.contains("Invalid job id") => Ok(HashSet::new()),
        Ok((_, _, err)) => Err(one_line(&err)),
        Err(e) => Err(e.to_string()),
    }
}

fn cancel(jobs: &[String]) {
    if jobs.is_empty() {
        return;
    }
    if let Err(e) = run_command("scancel", jobs) {
        tracing::warn!(error = %e, "scancel failed");
    }
}

/// The key, in the work dir, of the job ids a driver submitted: a restarted driver cancels the
/// ones still queued before it submits what is missing.
fn jobs_key(plan: &Plan) -> String {
    format!("{}/slurm-jobs.json", plan.plan_id)
}

fn record_jobs(work: &Store, plan: &Plan, jobs: &[String]) -> Result<(), ExecError> {
    let doc = serde_json::json!({ "jobs": jobs });
    work.put(&jobs_key(plan), doc.to_string().into_bytes())?;
    Ok(())
}

fn cancel_leftovers(work: &Store, plan: &Plan) -> Result<(), ExecError> {
    let Some(bytes) = work.get(&jobs_key(plan))? else {
        return Ok(());
    };
    let jobs: Vec<String> = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| serde_json::from_value(v["jobs"].clone()).ok())
        .unwrap_or_default();
    if let Ok(queued) = still_queued(&jobs) {
        let left: Vec<String> = jobs.into_iter().filter(|j| queued.contains(j)).collect();
        if !left.is_empty() {
            tracing::info!(jobs = ?left, "cancelling the jobs an earlier driver left queued");
            cancel(&left);
        }
    }
    Ok(())
}

fn log_path(options: &SlurmOptions, stage: &str, job_id: &str, element: u64) -> PathBuf {
    options
        .log_dir
        .join(format!("chunkmill-{stage}-{job_id}_{element}.log"))
}

/// The last line a failed element wrote, as the reason of the failure.
fn failure_reason(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(|l| l.trim_start_matches("chunkmill: ").to_string())
        })
        .unwrap_or_else(|| format!("no log at {}", path.display()))
}

fn submit(
    plan: &Plan,
    options: &SlurmOptions,
    stage: usize,
    batch: u64,
    elements: &[u64],
    after: Option<&str>,
) -> Result<String, ExecError> {
    let name = &plan.stages[stage].name;
    let script = format!(
        "exec {} worker --plan {} --stage {} --batch {batch} --index-env SLURM_ARRAY_TASK_ID \
         --workers \"${{SLURM_CPUS_PER_TASK:-1}}\" --retries {} --quiet --no-progress",
        shell_quote(&options.program.to_string_lossy()),
        shell_quote(&options.plan_url),
        shell_quote(name),
        options.retries,
    );
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name=chunkmill-{name}"),
        format!(
            "--array={}%{}",
            array_spec(elements),
            options.concurrent.max(1)
        ),
        format!("--mem={}M", options.memory_mib.max(1)),
        format!(
            "--output={}",
            options
                .log_dir
                .join(format!("chunkmill-{name}-%A_%a.log"))
                .display()
        ),
        "--kill-on-invalid-dep=yes".to_string(),
    ];
    if let Some(job) = after {
        args.push(format!("--dependency=afterok:{job}"));
    }
    args.extend(options.sbatch_options.iter().cloned());
    args.push(format!("--wrap={script}"));
    let (ok, out, err) = run_command("sbatch", &args)?;
    let job_id = out.trim().split(';').next().unwrap_or("").to_string();
    if !ok || job_id.is_empty() {
        return Err(ExecError::Engine(format!(
            "sbatch refused stage '{name}': {}",
            one_line(&err)
        )));
    }
    tracing::info!(stage = %name, job = %job_id, elements = elements.len(), batch, "submitted");
    Ok(job_id)
}

/// Progress seen in the markers, turned into events.
struct Progress<'a> {
    plan: &'a Plan,
    markers: &'a Markers,
    on_event: &'a (dyn Fn(&Event) + Sync),
    /// The stage whose tasks are being reported, and the tasks reported of it.
    active: Option<(usize, HashSet<u64>)>,
    /// Each stage's tasks that were done before this run started (a resumed run): skipped,
    /// not run. Tasks marked later were run by this run, however late they are seen.
    done_before_run: Vec<HashSet<u64>>,
    summary: RunSummary,
}

impl Progress<'_> {
    /// The first stage with tasks lacking markers, after reporting what finished since the last
    /// call; `None` when every stage is complete.
    fn advance(&mut self) -> Result<Option<usize>, ExecError> {
        loop {
            let stage_index = self.active.as_ref().map_or(0, |(s, _)| *s);
            let Some(stage) = self.plan.stages.get(stage_index) else {
                return Ok(None);
            };
            let done = self.markers.marked(&stage.name)?;
            match &mut self.active {
                Some((_, seen)) => {
                    let decoded_bytes = stage.bytes_written / stage.tasks().max(1);
                    let mut new: Vec<u64> = done.difference(seen).copied().collect();
                    new.sort_unstable();
                    for task in new {
                        seen.insert(task);
                        self.summary.tasks_run += 1;
                        (self.on_event)(&Event::TaskFinished {
                            stage: stage_index,
                            task,
                            stats: TaskStats::default(),
                            seconds: 0.0,
                            decoded_bytes,
                        });
                    }
                }
                None => {
                    self.start(stage_index);
                    continue;
                }
            }
            if (done.len() as u64) < stage.tasks() {
                return Ok(Some(stage_index));
            }
            (self.on_event)(&Event::StageFinished { index: stage_index });
            let next = stage_index + 1;
            if next >= self.plan.stages.len() {
                self.active = Some((next, HashSet::new()));
                return Ok(None);
            }
            self.start(next);
        }
    }

    /// The stage being reported and the tasks seen done of it.
    fn active(&self) -> Option<(usize, &HashSet<u64>)> {
        self.active
            .as_ref()
            .filter(|(s, _)| *s < self.plan.stages.len())
            .map(|(s, seen)| (*s, seen))
    }

    fn start(&mut self, index: usize) {
        let stage = &self.plan.stages[index];
        let before = self.done_before_run[index].clone();
        self.summary.tasks_skipped += before.len() as u64;
        (self.on_event)(&Event::StageStarted {
            index,
            name: stage.name.clone(),
            label: stage.label.clone(),
            tasks: stage.tasks(),
            done_before: before.len() as u64,
            decoded_bytes: stage.bytes_written,
        });
        self.active = Some((index, before));
    }
}

/// Run every stage of `plan` as SLURM job arrays and wait for them.
///
/// `interrupted` is polled: once it is set (Ctrl-C) every job this run submitted is cancelled
/// and the run returns [`ExecError::Interrupted`]; `--resume` continues it later.
///
/// # Errors
/// [`ExecError::TaskFailed`] when a stage still lacks markers after `retries` resubmissions,
/// [`ExecError::Engine`] when `sbatch` refuses or `squeue` stays unreachable,
/// [`ExecError::Interrupted`], [`ExecError::Markers`] when the work dir cannot be read.
pub fn run_plan_slurm(
    plan: &Plan,
    options: &SlurmOptions,
    markers: &Markers,
    work: &Store,
    interrupted: &AtomicBool,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, ExecError> {
    let started = Instant::now();
    std::fs::create_dir_all(&options.log_dir).map_err(|e| {
        ExecError::Engine(format!(
            "cannot create the SLURM log dir {}: {e}",
            options.log_dir.display()
        ))
    })?;
    cancel_leftovers(work, plan)?;
    let max_array = max_array_size();
    let mut progress = Progress {
        plan,
        markers,
        on_event,
        active: None,
        done_before_run: plan
            .stages
            .iter()
            .map(|s| markers.marked(&s.name))
            .collect::<Result<_, _>>()?,
        summary: RunSummary::default(),
    };
    let mut failed_rounds = vec![0u32; plan.stages.len()];
    let mut all_jobs: Vec<String> = Vec::new();
    let mut round: Vec<Submitted> = Vec::new();
    // Stages whose jobs the driver cancelled itself (behind a backed-up straggler): their
    // resubmission is not a failure.
    let mut cancelled_by_us: HashSet<usize> = HashSet::new();
    let mut backups_won = 0;
    while let Some(first) = progress.advance()? {
        // The previous round ended with `first` unfinished although every stage before it is
        // complete: its elements ran (or were lost) and left tasks without markers.
        if round.iter().any(|s| s.stage == first) && !cancelled_by_us.contains(&first) {
            failed_rounds[first] += 1;
            if failed_rounds[first] > options.retries {
                return Err(stage_failure(plan, options, markers, &round, first));
            }
            progress.summary.retries += 1;
            let stage = &plan.stages[first];
            (on_event)(&Event::TaskRetrying {
                stage: first,
                task: 0,
                attempt: failed_rounds[first],
                error: format!(
                    "resubmitting the unfinished elements of stage '{}'",
                    stage.name
                ),
            });
        }
        round.clear();
        cancelled_by_us.clear();
        let mut after: Option<String> = None;
        for index in first..plan.stages.len() {
            let stage = &plan.stages[index];
            let done = markers.marked(&stage.name)?;
            let batch = batch_size(
                stage.tasks(),
                options.concurrent,
                max_array,
                options.tasks_per_job,
            );
            let elements: Vec<u64> = (0..stage.tasks().div_ceil(batch))
                .filter(|e| {
                    let end = ((e + 1) * batch).min(stage.tasks());
                    (e * batch..end).any(|t| !done.contains(&t))
                })
                .collect();
            if elements.is_empty() {
                continue;
            }
            let job_id = match submit(plan, options, index, batch, &elements, after.as_deref()) {
                Ok(id) => id,
                Err(e) => {
                    cancel(&round.iter().map(|s| s.job_id.clone()).collect::<Vec<_>>());
                    return Err(e);
                }
            };
            after = Some(job_id.clone());
            all_jobs.push(job_id.clone());
            round.push(Submitted {
                job_id,
                stage: index,
                batch,
                elements,
                backup: false,
            });
        }
        record_jobs(work, plan, &all_jobs)?;
        let mut round_state = Round {
            plan,
            options,
            jobs: &mut round,
            all_jobs: &mut all_jobs,
            cancelled_by_us: &mut cancelled_by_us,
            stragglers: Stragglers::default(),
        };
        round_state.wait(interrupted, &mut progress)?;
        backups_won += round_state.stragglers.won;
        record_jobs(work, plan, &all_jobs)?;
    }
    let mut summary = progress.summary;
    summary.backups = backups_won;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// One round of submitted arrays, watched until they have all left the queue.
struct Round<'a> {
    plan: &'a Plan,
    options: &'a SlurmOptions,
    jobs: &'a mut Vec<Submitted>,
    all_jobs: &'a mut Vec<String>,
    cancelled_by_us: &'a mut HashSet<usize>,
    stragglers: Stragglers,
}

impl Round<'_> {
    /// Poll until every job has left the queue, reporting progress from the markers and
    /// backing up stragglers.
    fn wait(
        &mut self,
        interrupted: &AtomicBool,
        progress: &mut Progress<'_>,
    ) -> Result<(), ExecError> {
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let jobs: Vec<String> = self.jobs.iter().map(|s| s.job_id.clone()).collect();
            if interrupted.load(Ordering::Relaxed) {
                cancel(&jobs);
                return Err(ExecError::Interrupted(format!(
                    "cancelled SLURM job(s) {}; --resume continues the run",
                    jobs.join(", ")
                )));
            }
            progress.advance()?;
            if let Some((stage, done)) = progress.active() {
                let done = done.clone();
                self.watch_stragglers(stage, &done)?;
            }
            match still_queued(&jobs) {
                Ok(queued) => {
                    unreachable_since = None;
                    let queued_ids: HashSet<&str> = queued
                        .iter()
                        .map(|j| j.split('_').next().unwrap_or(j))
                        .collect();
                    if !jobs.iter().any(|j| queued_ids.contains(j.as_str())) {
                        return Ok(());
                    }
                }
                Err(message) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > SQUEUE_PATIENCE {
                        return Err(ExecError::Engine(format!(
                            "squeue has failed for {} s: {message}",
                            SQUEUE_PATIENCE.as_secs()
                        )));
                    }
                }
            }
            std::thread::sleep(self.options.poll);
        }
    }

    /// Once half of the stage's elements have finished, an element running for more than 3x
    /// their median gets a one-element backup array; when its tasks are all marked (by either
    /// copy) the other copy is cancelled. The later stages' arrays, chained behind the
    /// straggler with afterok, are cancelled when the backup starts and submitted again by the
    /// next round, so that cancelling the straggler does not count as a failure.
    fn watch_stragglers(&mut self, stage: usize, done: &HashSet<u64>) -> Result<(), ExecError> {
        let Some(array) = self
            .jobs
            .iter()
            .find(|s| s.stage == stage && !s.backup)
            .cloned()
        else {
            return Ok(());
        };
        if let Some(previous) = self.stragglers.stage.filter(|p| *p != stage) {
            // The progress moved on, so that stage is complete: settle its backups.
            let original = self
                .jobs
                .iter()
                .find(|s| s.stage == previous && !s.backup)
                .map(|s| s.job_id.clone());
            let running: HashSet<u64> = original
                .as_deref()
                .map(|job| running_elements(job).into_iter().map(|(e, _)| e).collect())
                .unwrap_or_default();
            for (element, backup_job) in std::mem::take(&mut self.stragglers.backups) {
                if let (true, Some(job)) = (running.contains(&element), &original) {
                    self.stragglers.won += 1;
                    cancel(&[format!("{job}_{element}")]);
                }
                cancel(&[backup_job]);
            }
        }
        if self.stragglers.stage != Some(stage) {
            self.stragglers = Stragglers {
                stage: Some(stage),
                won: self.stragglers.won,
                ..Stragglers::default()
            };
        }
        let tasks = self.plan.stages[stage].tasks();
        let running: HashMap<u64, f64> = running_elements(&array.job_id).into_iter().collect();
        let watch = &mut self.stragglers;
        for (&element, &elapsed) in &running {
            let seen = watch.elapsed.entry(element).or_insert(0.0);
            *seen = seen.max(elapsed);
        }
        // An element that came and went between two polls ran for less than one poll.
        let poll = self.options.poll.as_secs_f64();
        for &element in &array.elements {
            if !running.contains_key(&element) && array.element_done(element, tasks, done) {
                let elapsed = watch.elapsed.get(&element).copied().unwrap_or(poll);
                watch.finished.entry(element).or_insert(elapsed);
            }
        }
        let settled: Vec<(u64, String)> = watch
            .backups
            .iter()
            .filter(|(e, _)| array.element_done(**e, tasks, done))
            .map(|(e, j)| (*e, j.clone()))
            .collect();
        for (element, backup_job) in settled {
            watch.backups.remove(&element);
            if running.contains_key(&element) {
                watch.won += 1;
                cancel(&[format!("{}_{element}", array.job_id)]);
            }
            cancel(&[backup_job]);
        }
        let elements = array.elements.len();
        if elements < BACKUP_MIN_ELEMENTS || watch.finished.len() * 2 < elements {
            return Ok(());
        }
        let mut times: Vec<f64> = watch.finished.values().copied().collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2].max(1.0);
        let stragglers: Vec<u64> = running
            .iter()
            .filter(|(e, t)| **t > STRAGGLER_FACTOR * median && !watch.backups.contains_key(e))
            .filter(|(e, _)| !array.element_done(**e, tasks, done))
            .map(|(e, _)| *e)
            .collect();
        for element in stragglers {
            let later: Vec<String> = self
                .jobs
                .iter()
                .filter(|s| s.stage > stage)
                .map(|s| s.job_id.clone())
                .collect();
            cancel(&later);
            self.cancelled_by_us.extend(
                self.jobs
                    .iter()
                    .filter(|s| s.stage > stage)
                    .map(|s| s.stage),
            );
            let job_id = submit(
                self.plan,
                self.options,
                stage,
                array.batch,
                &[element],
                None,
            )?;
            tracing::info!(stage = %self.plan.stages[stage].name, element, backup = %job_id, "backup of a straggling array element");
            self.stragglers.backups.insert(element, job_id.clone());
            self.all_jobs.push(job_id.clone());
            self.jobs.push(Submitted {
                job_id,
                stage,
                batch: array.batch,
                elements: vec![element],
                backup: true,
            });
        }
        Ok(())
    }
}

fn stage_failure(
    plan: &Plan,
    options: &SlurmOptions,
    markers: &Markers,
    round: &[Submitted],
    stage_index: usize,
) -> ExecError {
    let stage = &plan.stages[stage_index];
    let done = markers.marked(&stage.name).unwrap_or_default();
    let missing: Vec<u64> = (0..stage.tasks()).filter(|t| !done.contains(t)).collect();
    let first = missing.first().copied().unwrap_or(0);
    let message = round.iter().find(|s| s.stage == stage_index).map_or_else(
        || "no marker was written".to_string(),
        |s| {
            let element = first / s.batch.max(1);
            let reason = if s.elements.contains(&element) {
                failure_reason(&log_path(options, &stage.name, &s.job_id, element))
            } else {
                "no marker was written".to_string()
            };
            format!("array job {}_{element}: {reason}", s.job_id)
        },
    );
    ExecError::TaskFailed {
        stage: stage.label.clone(),
        task: first,
        failed: missing.len() as u64,
        attempts: options.retries + 1,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(array_spec(&[4]), "4");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn batches_keep_arrays_under_the_cluster_limit() {
        // 10 000 tasks, 1001 elements at most: 10 per element, 1000 elements.
        assert_eq!(batch_size(10_000, 50, 1001, Some(1)), 10);
        assert_eq!(
            10_000u64.div_ceil(batch_size(10_000, 50, 1001, Some(1))),
            1000
        );
        // Default: four elements per concurrent slot.
        assert_eq!(batch_size(100, 5, 1001, None), 5);
        assert_eq!(batch_size(3, 5, 1001, None), 1);
        // An explicit batch larger than needed is kept.
        assert_eq!(batch_size(100, 5, 8, Some(20)), 20);
        assert_eq!(batch_size(100, 5, 8, Some(2)), 13);
    }

    #[test]
    fn squeue_times_parse() {
        assert_eq!(parse_elapsed("0:07"), Some(7.0));
        assert_eq!(parse_elapsed("1:02:03"), Some(3723.0));
        assert_eq!(parse_elapsed("2-00:00:01"), Some(172_801.0));
        assert_eq!(parse_elapsed("INVALID"), None);
    }

    #[test]
    fn slurm_errors_become_one_line() {
        let err = "sbatch: error: invalid partition specified: p\nsbatch: error: Batch job submission failed: Invalid partition name specified\n";
        assert_eq!(
            one_line(err),
            "invalid partition specified: p; Batch job submission failed: Invalid partition name specified"
        );
    }

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(shell_quote("/usr/bin/chunkmill"), "/usr/bin/chunkmill");
        assert_eq!(shell_quote("s3://b/w/plan.json"), "s3://b/w/plan.json");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
