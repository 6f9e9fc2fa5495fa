//! `chunkmill worker` and `chunkmill status`.

use chunkmill_ops::work::{parse_tasks, run_worker, status as read_status, TaskSelection};

use crate::args::{StatusArgs, WorkerArgs};
use crate::progress::Progress;
use crate::Failure;

/// Run a slice of a stage; exit non-zero when a task fails after its retries.
pub fn worker(a: &WorkerArgs) -> Result<(), Failure> {
    let tasks = match (&a.tasks, a.batch, &a.index_env) {
        (Some(text), _, _) => TaskSelection::Range(parse_tasks(text)?),
        (None, Some(size), Some(var)) => TaskSelection::batch_from_env(size, var)?,
        _ => {
            return Err(Failure::usage(
                "give --tasks A..B, or --batch N with --index-env VAR",
            ))
        }
    };
    let show = !(a.report.no_progress || a.report.quiet || a.report.json);
    let progress = Progress::new(0, show);
    let summary = run_worker(
        &a.plan,
        &a.stage,
        &tasks,
        a.workers.unwrap_or_else(crate::default_workers),
        a.retries,
        &|e| progress.on_event(e),
    );
    progress.finish();
    let summary = summary?;
    if a.report.json {
        let doc = serde_json::json!({"tasks_run": summary.tasks_run, "tasks_skipped": summary.tasks_skipped, "retries": summary.retries, "seconds": summary.seconds});
        println!("{doc}");
    } else if !a.report.quiet {
        println!(
            "stage {} tasks {}: {} run, {} already done, {} retried, {:.2} s",
            a.stage,
            describe(&tasks),
            summary.tasks_run,
            summary.tasks_skipped,
            summary.retries,
            summary.seconds
        );
    }
    Ok(())
}

fn describe(tasks: &TaskSelection) -> String {
    match tasks {
        TaskSelection::Range(r) => format!("{}..{}", r.start, r.end),
        TaskSelection::Batch { size, index } => format!("batch {index} of {size}"),
    }
}

/// Print done / pending per stage.
pub fn status(a: &StatusArgs) -> Result<(), Failure> {
    let st = read_status(&a.work_dir).map_err(|e| status_hint(&a.work_dir, e))?;
    if a.json {
        crate::print_json(&st)?;
        return Ok(());
    }
    println!(
        "plan {} ({}){}",
        st.plan_id,
        st.job,
        if st.complete { ": complete" } else { "" }
    );
    for s in &st.stages {
        println!(
            "  stage {:<8} {:<36} {:>7} done {:>7} pending of {}",
            s.name, s.label, s.done, s.pending, s.tasks
        );
    }
    Ok(())
}

/// `status TARGET` for `status TARGET.work`, the usual slip: the message names the work dir.
fn status_hint(given: &str, e: chunkmill_ops::OpsError) -> Failure {
    let trimmed = given.trim_end_matches('/');
    let failure = Failure::from(e);
    if trimmed.ends_with(".work") {
        return failure;
    }
    failure.with_hint(format!(
        "{trimmed} is not a work dir; the work dir of a job writing {trimmed} is {trimmed}.work (or its --work-dir): `chunkmill status {trimmed}.work`"
    ))
}
