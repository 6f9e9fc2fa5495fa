//! `chunkmill rechunk` and `chunkmill plan rechunk`.

use chunkmill_ops::job::{admit, human, run_job, Job, JobReport};
use chunkmill_ops::rechunk::plan_rechunk;
use chunkmill_plan::{Endpoint, StageKind};
use serde_json::json;

use crate::args::{Common, RechunkArgs};
use crate::failure::Footprint;
use crate::progress::Progress;
use crate::resolve::{self, BudgetOrigin};
use crate::Failure;

pub fn plan_json(job: &Job) -> serde_json::Value {
    let plan = &job.plan;
    let stages: Vec<_> = plan
        .stages
        .iter()
        .filter_map(|s| {
            let StageKind::Copy(c) = &s.kind else {
                return None;
            };
            let block = c.blocks.max_chunk_shape();
            Some(json!({
                "name": s.name, "label": s.label, "kind": "copy", "tasks": s.tasks(),
                "projected_mem": s.projected_mem, "read_block": block, "write_block": block,
                "source": c.input.describe(), "target": c.output.describe(),
                "bytes_read": s.bytes_read, "bytes_written": s.bytes_written,
                "output_chunks": c.output.grid().num_chunks(),
            }))
        })
        .collect();
    let intermediate: u64 = plan
        .stages
        .iter()
        .filter(|s| matches!(&s.kind, StageKind::Copy(c) if matches!(c.output, Endpoint::Pieces { .. })))
        .map(|s| s.bytes_written)
        .sum();
    let largest = job.arrays.iter().max_by_key(|a| a.nbytes);
    json!({
        "plan_id": plan.plan_id,
        "strategy": largest.map(|a| a.strategy.to_string()),
        "max_mem": plan.max_mem,
        "task_budget": job.task_budget,
        "baseline_mem": job.baseline,
        "tasks": plan.total_tasks(),
        "max_projected_mem": plan.max_projected_mem(),
        "bytes_read": plan.stages.iter().map(|s| s.bytes_read).sum::<u64>(),
        "bytes_written": plan.stages.iter().map(|s| s.bytes_written).sum::<u64>(),
        "bytes_intermediate": intermediate,
        "work_dir": job.work_dir,
        "temp": job.temp,
        "arrays": job.arrays,
        "left_out": job.left_out,
        "stages": stages,
    })
}

/// The plan as a person reads it; `budget` says where `--max-mem` came from.
pub fn print_plan(job: &Job, budget: BudgetOrigin) {
    let plan = &job.plan;
    println!(
        "plan {}  ({} stages, {} tasks)",
        plan.plan_id,
        plan.stages.len(),
        plan.total_tasks()
    );
    println!(
        "memory: --max-mem {}{} = baseline {} + tasks {} + reserve; largest task {}",
        human(plan.max_mem),
        budget.note(),
        human(job.baseline),
        human(job.task_budget),
        human(plan.max_projected_mem())
    );
    for a in &job.arrays {
        println!(
            "array {:<12} {:?} {} {:?} → {:?}{}: {} (~{:.1} s est., {} at once)",
            if a.path.is_empty() { "/" } else { &a.path },
            a.shape,
            a.dtype,
            a.source_chunks,
            a.target_chunks,
            a.target_shards
                .as_ref()
                .map(|s| format!(" in shards {s:?}"))
                .unwrap_or_default(),
            chunkmill_ops::job::plan_strategy(a),
            a.estimated_seconds,
            a.concurrency,
        );
        if !a.why.is_empty() {
            println!("    why: {}", a.why);
        }
        if !a.alternatives.is_empty() {
            let priced: Vec<String> = a
                .alternatives
                .iter()
                .map(|alt| format!("{} ~{:.1} s", alt.describe(), alt.estimated_seconds))
                .collect();
            println!("    priced: {}", priced.join("; "));
        }
    }
    for s in &plan.stages {
        let StageKind::Copy(c) = &s.kind else {
            continue;
        };
        println!(
            "  stage {:<7} {:<36} {:>7} tasks  block {:?}  {} per task  read {}  write {}",
            s.name,
            s.label,
            s.tasks(),
            c.blocks.max_chunk_shape(),
            human(s.projected_mem),
            human(s.bytes_read),
            human(s.bytes_written)
        );
    }
    let intermediate: u64 = plan
        .stages
        .iter()
        .filter(|s| matches!(&s.kind, StageKind::Copy(c) if matches!(c.output, Endpoint::Pieces { .. })))
        .map(|s| s.bytes_written)
        .sum();
    println!("intermediates: {} at {}", human(intermediate), job.temp);
}

/// `chunkmill plan rechunk`.
pub fn plan(a: &RechunkArgs) -> Result<(), Failure> {
    let (opts, origin) = resolve::rechunk(a)?;
    let job = plan_rechunk(&opts)?;
    // Refused here exactly when the run would refuse it.
    admit(&job.plan)?;
    warn_left_out(&job);
    if a.common.report.json {
        crate::print_json(&plan_value(&job, origin))?;
    } else {
        print_plan(&job, origin);
    }
    Ok(())
}

/// What `chunkmill plan rechunk --json` prints.
pub fn plan_value(job: &Job, origin: BudgetOrigin) -> serde_json::Value {
    let mut value = plan_json(job);
    value["max_mem_origin"] = json!(origin.name());
    value
}

/// The plan of a rechunk as `plan rechunk --json` gives it, without printing anything.
pub fn plan_only(a: &RechunkArgs) -> Result<serde_json::Value, Failure> {
    let (opts, origin) = resolve::rechunk(a)?;
    Ok(plan_value(&plan_rechunk(&opts)?, origin))
}

/// One warning per array of the source the job leaves out because it cannot read it (always
/// shown: the target lacks what the source has).
fn warn_left_out(job: &Job) {
    for line in &job.left_out {
        eprintln!("chunkmill: warning: {line}");
    }
}

/// Says which budget a run uses when the user did not give one (on stderr, so that `--json`
/// output stays one document).
pub fn announce_budget(max_mem: u64, origin: BudgetOrigin, common: &Common) {
    if origin != BudgetOrigin::Given && !common.report.quiet {
        eprintln!("chunkmill: --max-mem {}{}", human(max_mem), origin.note());
    }
}

/// `chunkmill rechunk`.
pub fn run(a: &RechunkArgs) -> Result<(), Failure> {
    let report = execute(a, &Hooks::default())?;
    print_report(&report, "rechunked", &a.target, a.plan.prepare, &a.common)?;
    Ok(())
}

/// Runs a rechunk as the command does; `hooks` may replace the progress bar and stop the run.
pub fn execute(a: &RechunkArgs, hooks: &Hooks<'_>) -> Result<JobReport, Failure> {
    let (mut opts, origin) = resolve::rechunk(a)?;
    opts.job.interrupt = hooks.interrupt.clone();
    resolve::watch_interrupts(&mut opts.job.executor, hooks.interrupt.as_ref())?;
    let job = plan_rechunk(&opts)?;
    if hooks.on_event.is_none() {
        warn_left_out(&job);
        // After planning, so that a refused job prints its one error line only.
        announce_budget(opts.job.max_mem, origin, &a.common);
    }
    let job = crate::resume::reconcile(
        job,
        &opts.job,
        || resolve::stored_plan(&a.target, &a.common),
        |j| &j.plan,
        |w| {
            let mut o = opts.clone();
            o.job.workers = w;
            Ok(plan_rechunk(&o)?)
        },
    )?;
    let footprint = Footprint::before(&[&a.target, &resolve::work_dir(&a.target, &a.common)]);
    run_hooked(&job, &a.common, hooks, |on_event| {
        run_job(&job, &opts.job, on_event)
    })
    .map_err(|e| footprint.judge(e))
}

/// What a caller of the library (the Python package) changes in a run: its own progress
/// instead of the command's bar and messages, and a flag that stops it between tasks.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Every event of the run; when given, the command's progress bar and messages are off.
    pub on_event: Option<&'a (dyn Fn(&chunkmill_exec::Event) + Sync)>,
    /// Set to stop the run between tasks (it then fails as interrupted; resumable).
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Runs `job` through `run`, with a progress bar unless the output flags say otherwise.
pub fn run_with_progress(
    job: &Job,
    common: &Common,
    run: impl FnOnce(
        &(dyn Fn(&chunkmill_exec::Event) + Sync),
    ) -> Result<JobReport, chunkmill_ops::OpsError>,
) -> Result<JobReport, Failure> {
    run_hooked(job, common, &Hooks::default(), run)
}

/// [`run_with_progress`], or with the events going to `hooks` when it takes them.
pub fn run_hooked(
    job: &Job,
    common: &Common,
    hooks: &Hooks<'_>,
    run: impl FnOnce(
        &(dyn Fn(&chunkmill_exec::Event) + Sync),
    ) -> Result<JobReport, chunkmill_ops::OpsError>,
) -> Result<JobReport, Failure> {
    if let Some(on_event) = hooks.on_event {
        return Ok(run(on_event)?);
    }
    let show = !(common.report.no_progress || common.report.quiet || common.report.json);
    let total: u64 = job.plan.stages.iter().map(|s| s.bytes_written).sum();
    let progress = Progress::new(total, show);
    let report = run(&|e| progress.on_event(e));
    progress.finish();
    Ok(report?)
}

/// What a finished job prints: JSON, one line, or nothing.
///
/// # Errors
/// The JSON output cannot be written.
pub fn print_report(
    report: &JobReport,
    verb: &str,
    target: &str,
    prepared: bool,
    common: &Common,
) -> Result<(), Failure> {
    if common.report.json {
        crate::print_json(report)?;
    } else if !common.report.quiet {
        if prepared {
            println!("prepared plan {}: run its stages with `chunkmill worker`, then this command with --resume", report.plan_id);
        } else if report.already_complete {
            println!("{target}: already complete (plan {})", report.plan_id);
        } else {
            println!(
                "{verb} {} array(s), {} in {:.2} s ({}/s); {} tasks run, {} skipped, {} retried; peak RSS {} of {}",
                report.arrays,
                human(report.bytes),
                report.seconds,
                human((report.bytes as f64 / report.seconds.max(1e-9)) as u64),
                report.tasks_run,
                report.tasks_skipped,
                report.retries,
                human(report.peak_rss),
                human(report.max_mem)
            );
        }
    }
    Ok(())
}
