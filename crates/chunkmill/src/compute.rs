//! `chunkmill compute` and `chunkmill plan compute`.

use chunkmill_ops::compute::{plan_compute, ComputeJob};
use chunkmill_ops::job::{human, run_job};
use chunkmill_plan::StageKind;
use serde_json::json;

use crate::args::ComputeArgs;
use crate::rechunk::{announce_budget, print_report, run_with_progress};
use crate::resolve;
use crate::Failure;

/// `chunkmill compute`.
pub fn run(a: &ComputeArgs) -> Result<(), Failure> {
    let (opts, origin) = resolve::compute(a)?;
    let planned = plan_compute(&opts)?;
    // Blocks follow the workers (by default twice the cores): a run resumed with another
    // count, or on a node with other cores, finds the plan its work dir holds.
    let planned = crate::resume::reconcile(
        planned,
        &opts.job,
        || resolve::stored_plan(&a.output, &a.common),
        |c| &c.job.plan,
        |w| {
            let mut o = opts.clone();
            o.job.workers = w;
            Ok(plan_compute(&o)?)
        },
    )?;
    announce_budget(opts.job.max_mem, origin, &a.common);
    let job = planned.job;
    let mut report = run_with_progress(&job, &a.common, |on_event| {
        run_job(&job, &opts.job, on_event)
    })?;
    report.arrays = planned.outputs.len();
    report.bytes = job
        .specs
        .iter()
        .map(|s| s.shape.iter().product::<u64>() * s.dtype.size().map_or(0, |d| d as u64))
        .sum();
    print_report(&report, "computed", &a.output, a.plan.prepare, &a.common)?;
    Ok(())
}

fn is_pieces(e: &chunkmill_plan::Endpoint) -> bool {
    matches!(e, chunkmill_plan::Endpoint::Pieces { .. })
}

fn plan_value(c: &ComputeJob) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = c
        .job
        .plan
        .stages
        .iter()
        .map(|s| {
            let kernel = match &s.kind {
                StageKind::Compute(k) => k.kernel.get("kind").cloned().unwrap_or_default(),
                StageKind::Copy(_) => json!("rechunk"),
                StageKind::Scan(_) => json!("scan"),
            };
            json!({
                "name": s.name, "label": s.label, "kind": kernel, "tasks": s.tasks(),
                "projected_mem": s.projected_mem, "bytes_read": s.bytes_read,
                "bytes_written": s.bytes_written,
            })
        })
        .collect();
    let intermediate: u64 = c
        .job
        .plan
        .stages
        .iter()
        .filter(|s| match &s.kind {
            StageKind::Compute(k) => k.outputs.iter().any(is_pieces),
            StageKind::Copy(c) => is_pieces(&c.output),
            StageKind::Scan(_) => false,
        })
        .map(|s| s.bytes_written)
        .sum();
    json!({
        "plan_id": c.job.plan.plan_id,
        "max_mem": c.job.plan.max_mem,
        "task_budget": c.job.task_budget,
        "outputs": c.outputs,
        "unfused": c.unfused.iter().map(|(n, ops)| json!({"name": n, "operations": ops})).collect::<Vec<_>>(),
        "stages": stages,
        "tasks": c.job.plan.total_tasks(),
        "max_projected_mem": c.job.plan.max_projected_mem(),
        "bytes_read": c.job.plan.stages.iter().map(|s| s.bytes_read).sum::<u64>(),
        "bytes_written": c.job.plan.stages.iter().map(|s| s.bytes_written).sum::<u64>(),
        "bytes_intermediate": intermediate,
    })
}

/// `chunkmill plan compute`.
pub fn plan(a: &ComputeArgs) -> Result<(), Failure> {
    let planned = plan_compute(&resolve::compute(a)?.0)?;
    // Refused here exactly when the run would refuse it.
    chunkmill_ops::job::admit(&planned.job.plan)?;
    let value = plan_value(&planned);
    if a.common.report.json {
        crate::print_json(&value)?;
        return Ok(());
    }
    let plan = &planned.job.plan;
    println!(
        "plan {} (compute), --max-mem {}, {} per task",
        plan.plan_id,
        human(plan.max_mem),
        human(planned.job.task_budget)
    );
    println!("before fusion (one stage per operation):");
    for (name, ops) in &planned.unfused {
        println!("  {name}: {} operation(s): {}", ops.len(), ops.join(" → "));
    }
    println!(
        "after fusion: {} stage(s), {} task(s)",
        plan.stages.len(),
        plan.total_tasks()
    );
    for s in &plan.stages {
        println!(
            "  {}: {} — {} task(s), {} per task, reads {}, writes {}",
            s.name,
            s.label,
            s.tasks(),
            human(s.projected_mem),
            human(s.bytes_read),
            human(s.bytes_written)
        );
    }
    println!(
        "total: reads {}, writes {}, of which intermediate {}",
        human(value["bytes_read"].as_u64().unwrap_or(0)),
        human(value["bytes_written"].as_u64().unwrap_or(0)),
        human(value["bytes_intermediate"].as_u64().unwrap_or(0))
    );
    Ok(())
}
