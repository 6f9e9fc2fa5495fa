//! The jobs of the command for a caller in the same process (the Python package's
//! `chunkmill.rechunk` and `chunkmill.convert`): the same command line, parsed by the same
//! clap definitions and recipe reader, resolved and planned by the same code, with the results
//! returned as the JSON the command prints (`plan … --json`, `--json`) instead of printed, and
//! failures returned instead of ending the process.

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chunkmill_exec::Event;
use chunkmill_ops::work::{run_worker, TaskSelection};
use serde_json::{json, Value};

use crate::args::{Command, PlanJob};
use crate::rechunk::Hooks;
use crate::{convert, rechunk, recipe, Failure};

/// The job a command line asks for, once parsed: `rechunk` or `convert` (with or without
/// `plan` before it); any other command is refused.
#[allow(clippy::large_enum_variant)] // one per call
enum JobArgs {
    Rechunk(crate::args::RechunkArgs),
    Convert(crate::args::ConvertArgs),
}

fn job_args(argv: Vec<OsString>, recipe: Option<&Value>) -> Result<JobArgs, Failure> {
    match recipe::try_parse(argv, recipe)?.command {
        Command::Rechunk(a)
        | Command::Plan {
            job: PlanJob::Rechunk(a),
        } => Ok(JobArgs::Rechunk(a)),
        Command::Convert(a)
        | Command::Plan {
            job: PlanJob::Convert(a),
        } => Ok(JobArgs::Convert(a)),
        _ => Err(Failure::usage("only rechunk and convert run here")),
    }
}

/// The plan of the job `argv` asks for (the program name first, then `rechunk …` or `convert
/// …`), as `chunkmill plan … --json` prints it; `recipe` is an inline recipe for convert.
///
/// # Errors
/// The failure the command would report (its exit code is [`Failure::exit_code`]).
pub fn plan(argv: Vec<OsString>, recipe: Option<&Value>) -> Result<Value, Failure> {
    match job_args(argv, recipe)? {
        JobArgs::Rechunk(a) => rechunk::plan_only(&a),
        JobArgs::Convert(a) => convert::plan_only(&a),
    }
}

/// Runs the job `argv` asks for as the command runs it, every event going to `on_event` (no
/// progress bar, no message on stderr); a set `interrupt` stops a run on threads between
/// tasks. Returns the report `--json` prints; a conversion that found nothing new to append
/// returns `{"nothing_new": message}`.
///
/// # Errors
/// The failure the command would report.
pub fn run(
    argv: Vec<OsString>,
    recipe: Option<&Value>,
    interrupt: Arc<AtomicBool>,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<Value, Failure> {
    let hooks = Hooks {
        on_event: Some(on_event),
        interrupt: Some(interrupt),
    };
    let report = match job_args(argv, recipe)? {
        JobArgs::Rechunk(a) => rechunk::execute(&a, &hooks)?,
        JobArgs::Convert(a) => match convert::execute(&a, &hooks)? {
            convert::Converted::Ran { report, .. } => report,
            convert::Converted::NothingNew(message) => return Ok(json!({"nothing_new": message})),
        },
    };
    serde_json::to_value(report).map_err(|e| Failure::failed(format!("the job's report: {e}")))
}

/// Runs tasks `start..end` of stage `stage` of the plan at `plan_url`, as `chunkmill worker
/// --plan PLAN --stage STAGE --tasks START..END` does; returns what it did as that command's
/// `--json` prints it.
///
/// # Errors
/// The failure the command would report.
pub fn worker(
    plan_url: &str,
    stage: &str,
    start: u64,
    end: u64,
    workers: usize,
    retries: u32,
) -> Result<Value, Failure> {
    if workers == 0 {
        return Err(Failure::usage("--workers must be at least 1"));
    }
    let summary = run_worker(
        plan_url,
        stage,
        &TaskSelection::Range(start..end),
        workers,
        retries,
        &|_| {},
    )?;
    Ok(json!({
        "tasks_run": summary.tasks_run,
        "tasks_skipped": summary.tasks_skipped,
        "retries": summary.retries,
        "seconds": summary.seconds,
    }))
}
