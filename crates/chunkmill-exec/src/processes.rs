//! The `processes` executor: each stage's pending tasks, in contiguous slices, run by child
//! processes of `chunkmill worker`, at most `workers` at once. A crash, an abort or the kernel's
//! OOM killer in one task takes down one child, never the run: the slice is run again (its done
//! tasks are skipped through their markers) up to `retries` times.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chunkmill_plan::{Plan, Stage};
use chunkmill_store::markers::Markers;

use crate::{Event, ExecError, RunSummary, TaskStats};

/// How to start one worker process.
#[derive(Clone, Debug)]
pub struct WorkerCommand {
    /// The `chunkmill` executable.
    pub program: std::path::PathBuf,
    /// The plan's URL, as `chunkmill worker --plan` takes it.
    pub plan_url: String,
}

struct Running {
    child: Child,
    start: u64,
    end: u64,
    attempt: u32,
    started: Instant,
    /// A second copy of this slice runs (or this is that copy).
    backed_up: bool,
}

/// Fewest slices in a stage for stragglers to get backups.
const BACKUP_MIN_SLICES: usize = 4;

fn spawn(
    cmd: &WorkerCommand,
    stage: &str,
    start: u64,
    end: u64,
    retries: u32,
) -> std::io::Result<Child> {
    Command::new(&cmd.program)
        .args(["worker", "--plan", &cmd.plan_url, "--stage", stage])
        .arg("--tasks")
        .arg(format!("{start}..{end}"))
        .args(["--workers", "1", "--retries"])
        .arg(retries.to_string())
        .args(["--quiet", "--no-progress"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
}

/// Run every stage of `plan` with child worker processes. A set `interrupt` (Ctrl-C in the
/// Python package, whose children do not get the terminal's SIGINT) kills the running
/// workers: their finished tasks keep their markers and a task cut short has none, so
/// `--resume` reruns it.
///
/// # Errors
/// [`ExecError::TaskFailed`] when a slice still fails after `retries` new processes,
/// [`ExecError::Markers`] when the work dir cannot be read, [`ExecError::Interrupted`].
pub fn run_plan_processes(
    plan: &Plan,
    command: &WorkerCommand,
    markers: &Markers,
    workers: usize,
    retries: u32,
    interrupt: Option<&AtomicBool>,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, ExecError> {
    let started = Instant::now();
    let mut summary = RunSummary::default();
    for (index, stage) in plan.stages.iter().enumerate() {
        let slots = Slots {
            command,
            markers,
            workers,
            retries,
            interrupt,
        };
        slots.run_stage(index, stage, on_event, &mut summary)?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What every stage run on worker processes shares.
struct Slots<'a> {
    command: &'a WorkerCommand,
    markers: &'a Markers,
    workers: usize,
    retries: u32,
    interrupt: Option<&'a AtomicBool>,
}

impl Slots<'_> {
    /// Runs the pending tasks of one stage in slices, one process per slice, retried and
    /// backed up as the module docs say.
    fn run_stage(
        &self,
        index: usize,
        stage: &Stage,
        on_event: &(dyn Fn(&Event) + Sync),
        summary: &mut RunSummary,
    ) -> Result<(), ExecError> {
        let Slots {
            command,
            markers,
            workers,
            retries,
            ..
        } = *self;
        let done = markers.marked(&stage.name)?;
        let pending: Vec<u64> = (0..stage.tasks()).filter(|t| !done.contains(t)).collect();
        on_event(&Event::StageStarted {
            index,
            name: stage.name.clone(),
            label: stage.label.clone(),
            tasks: stage.tasks(),
            done_before: stage.tasks() - pending.len() as u64,
            decoded_bytes: stage.bytes_written,
        });
        summary.tasks_skipped += stage.tasks() - pending.len() as u64;
        // Contiguous slices of pending tasks, about four per process so that the load evens out.
        let per_slice = pending.len().div_ceil(workers.max(1) * 4).max(1);
        let mut slices: Vec<(u64, u64, u32)> = pending
            .chunks(per_slice)
            .map(|c| (c[0], c[c.len() - 1] + 1, 0))
            .collect();
        slices.reverse();
        let decoded_per_task = stage.bytes_written / stage.tasks().max(1);
        let total_slices = slices.len();
        let mut durations: Vec<f64> = Vec::new();
        let mut running: Vec<Running> = Vec::new();
        let mut failure: Option<(u64, String, u32)> = None;
        while !slices.is_empty() || !running.is_empty() {
            while running.len() < workers.max(1) && failure.is_none() {
                let Some((start, end, attempt)) = slices.pop() else {
                    break;
                };
                let child = spawn(command, &stage.name, start, end, retries).map_err(|e| {
                    ExecError::TaskFailed {
                        stage: stage.label.clone(),
                        task: start,
                        failed: end - start,
                        attempts: attempt + 1,
                        message: format!("cannot start {}: {e}", command.program.display()),
                    }
                })?;
                running.push(Running {
                    child,
                    start,
                    end,
                    attempt,
                    started: Instant::now(),
                    backed_up: false,
                });
            }
            // Straggler backups: with nothing left to start and half the slices done, a slice
            // running for more than 3x the median gets a second process; the first to finish
            // wins and the other is killed. Safe: whole-chunk atomic writes, same bytes.
            if slices.is_empty()
                && running.len() < workers.max(1)
                && failure.is_none()
                && total_slices >= BACKUP_MIN_SLICES
                && durations.len() * 2 >= total_slices
            {
                self.back_up_straggler(stage, &mut running, &durations);
            }
            std::thread::sleep(Duration::from_millis(5));
            if self.interrupt.is_some_and(|f| f.load(Ordering::Relaxed)) {
                return Err(stop_workers(stage, &mut running));
            }
            let mut i = 0;
            while i < running.len() {
                let status = running[i]
                    .child
                    .try_wait()
                    .map_err(|e| ExecError::TaskFailed {
                        stage: stage.label.clone(),
                        task: running[i].start,
                        failed: 1,
                        attempts: 1,
                        message: e.to_string(),
                    })?;
                let Some(status) = status else {
                    i += 1;
                    continue;
                };
                let finished = running.swap_remove(i);
                let mut stderr = String::new();
                if let Some(mut pipe) = finished.child.stderr {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                // The partner copy of this slice, if any, is no longer needed or no longer alone.
                let partner = running
                    .iter()
                    .position(|r| r.start == finished.start && r.end == finished.end);
                if status.success() {
                    durations.push(finished.started.elapsed().as_secs_f64());
                    if let Some(p) = partner {
                        let mut other = running.swap_remove(p);
                        let _ = other.child.kill();
                        let _ = other.child.wait();
                        summary.backups += 1;
                    }
                    for task in finished.start..finished.end {
                        on_event(&Event::TaskFinished {
                            stage: index,
                            task,
                            stats: TaskStats::default(),
                            seconds: 0.0,
                            decoded_bytes: decoded_per_task,
                        });
                    }
                    continue;
                }
                let reason = failure_reason(&stderr, status);
                if partner.is_some() {
                    // Its twin still runs and may finish the slice.
                    continue;
                }
                if finished.attempt < retries {
                    summary.retries += 1;
                    on_event(&Event::TaskRetrying {
                        stage: index,
                        task: finished.start,
                        attempt: finished.attempt + 1,
                        error: reason,
                    });
                    slices.push((finished.start, finished.end, finished.attempt + 1));
                } else if failure.is_none() {
                    failure = Some((finished.start, reason, finished.attempt + 1));
                }
            }
            if failure.is_some() && running.is_empty() {
                break;
            }
        }
        summary.tasks_run += pending.len() as u64;
        if let Some((task, message, attempts)) = failure {
            return Err(self.stage_failed(stage, task, message, attempts));
        }
        on_event(&Event::StageFinished { index });
        Ok(())
    }

    /// The error of a stage whose slice `task` failed after `attempts`: how many of its tasks
    /// still lack a marker.
    fn stage_failed(&self, stage: &Stage, task: u64, message: String, attempts: u32) -> ExecError {
        let still = (0..stage.tasks())
            .filter(|t| !self.markers.is_marked(&stage.name, *t).unwrap_or(false))
            .count();
        ExecError::TaskFailed {
            stage: stage.label.clone(),
            task,
            failed: still as u64,
            attempts,
            message,
        }
    }

    /// With nothing left to start and half the slices done, a slice running for more than 3x
    /// the median gets a second process; the first to finish wins and the other is killed.
    /// Safe: whole-chunk atomic writes, same bytes.
    fn back_up_straggler(&self, stage: &Stage, running: &mut Vec<Running>, durations: &[f64]) {
        let mut sorted = durations.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2].max(0.05);
        if let Some(slow) = running
            .iter_mut()
            .find(|r| !r.backed_up && r.started.elapsed().as_secs_f64() > 3.0 * median)
        {
            slow.backed_up = true;
            let (start, end, attempt) = (slow.start, slow.end, slow.attempt);
            if let Ok(child) = spawn(self.command, &stage.name, start, end, self.retries) {
                tracing::info!(stage = %stage.name, start, end, "backup of a straggling slice");
                running.push(Running {
                    child,
                    start,
                    end,
                    attempt,
                    started: Instant::now(),
                    backed_up: true,
                });
            }
        }
    }
}

/// Kills and reaps every running worker of `stage` (interrupted): none is left behind.
fn stop_workers(stage: &Stage, running: &mut Vec<Running>) -> ExecError {
    let count = running.len();
    for mut worker in running.drain(..) {
        // Already gone is fine: it is reaped either way.
        let _ = worker.child.kill();
        let _ = worker.child.wait();
    }
    ExecError::Interrupted(format!(
        "stage '{}': stopped {count} worker process(es); the tasks they finished are marked done, so a resumed run continues from there",
        stage.label
    ))
}

/// Why a worker process failed: the last line of its error output, else its exit status.
fn failure_reason(stderr: &str, status: std::process::ExitStatus) -> String {
    let reason = stderr
        .lines()
        .last()
        .unwrap_or("")
        .trim_start_matches("chunkmill: ")
        .to_string();
    if reason.is_empty() {
        format!("worker process ended with {status}")
    } else {
        reason
    }
}
