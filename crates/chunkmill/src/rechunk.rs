//! `chunkmill rechunk` and `chunkmill plan rechunk`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chunkmill_ops::rechunk::{
    human, plan_rechunk, run_job, Executor, RechunkJob, RechunkOptions, RechunkReport,
    SlurmExecutor,
};
use chunkmill_ops::spec::{parse_size, ChunkSpec};
use chunkmill_plan::{Endpoint, StageKind};
use serde_json::json;

use crate::args::{Common, ExecutorArgs, RechunkArgs, TargetArgs};
use crate::progress::Progress;
use crate::Failure;

fn options(a: &RechunkArgs) -> Result<RechunkOptions, Failure> {
    run_options(&a.source, &a.target, &a.arrays, &a.plan, &a.common)
}

/// The options of a job that writes `target` as `plan` and `common` say.
pub fn run_options(
    source: &str,
    target: &str,
    arrays: &[String],
    plan: &TargetArgs,
    common: &Common,
) -> Result<RechunkOptions, Failure> {
    let chunks: ChunkSpec = plan
        .chunks
        .as_deref()
        .ok_or_else(|| Failure::usage("--chunks is required"))?
        .parse()
        .map_err(Failure::usage)?;
    let shards = plan
        .shards
        .as_deref()
        .map(str::parse::<ChunkSpec>)
        .transpose()
        .map_err(Failure::usage)?;
    let max_mem = parse_size(
        plan.max_mem
            .as_deref()
            .ok_or_else(|| Failure::usage("--max-mem is required"))?,
    )
    .map_err(|e| Failure::usage(format!("--max-mem: {e}")))?;
    let codec = plan
        .codec
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| Failure::usage(format!("--codec: {e}")))?;
    let workers = common.workers.unwrap_or_else(crate::default_workers);
    if workers == 0 {
        return Err(Failure::usage("--workers must be at least 1"));
    }
    Ok(RechunkOptions {
        source: source.to_string(),
        target: target.to_string(),
        chunks,
        max_mem,
        temp: plan.temp.clone(),
        arrays: arrays.to_vec(),
        codec,
        shards,
        zarr_format: plan.zarr_format.unwrap_or(3),
        workers,
        retries: common.run.retries,
        resume: common.resume,
        overwrite: common.overwrite,
        work_dir: common.work_dir.clone(),
        keep_work: common.keep_work,
        executor: executor_of(&common.run)?,
        report: common.report_file.clone().map(Into::into),
        prepare_only: plan.prepare,
    })
}

/// The executor the flags name.
pub fn executor_of(run: &ExecutorArgs) -> Result<Executor, Failure> {
    Ok(match run.executor.as_str() {
        "processes" => Executor::Processes {
            program: std::env::current_exe().map_err(|e| {
                Failure::usage(format!(
                    "--executor processes: cannot find this program: {e}"
                ))
            })?,
        },
        "slurm" => Executor::Slurm(slurm_executor(run)?),
        _ => Executor::Threads,
    })
}

fn slurm_executor(common: &ExecutorArgs) -> Result<SlurmExecutor, Failure> {
    let program = std::env::current_exe()
        .map_err(|e| Failure::usage(format!("--executor slurm: cannot find this program: {e}")))?;
    let sbatch_options = match &common.slurm_opt {
        Some(text) => shell_words::split(text)
            .map_err(|e| Failure::usage(format!("--slurm-opt '{text}': {e}")))?,
        None => Vec::new(),
    };
    if common.slurm_tasks_per_job == Some(0) {
        return Err(Failure::usage("--slurm-tasks-per-job must be at least 1"));
    }
    // Ctrl-C (or a scheduler's SIGTERM) must reach the executor, which cancels its jobs, rather
    // than kill the driver and leave arrays running with no one waiting for them.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .map_err(|e| Failure::usage(format!("cannot handle signal {signal}: {e}")))?;
    }
    Ok(SlurmExecutor {
        program,
        sbatch_options,
        tasks_per_job: common.slurm_tasks_per_job,
        log_dir: common.slurm_log_dir.clone().map(Into::into),
        interrupted,
    })
}

pub fn plan_json(job: &RechunkJob) -> serde_json::Value {
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
        "stages": stages,
    })
}

pub fn print_plan(job: &RechunkJob) {
    let plan = &job.plan;
    println!(
        "plan {}  ({} stages, {} tasks)",
        plan.plan_id,
        plan.stages.len(),
        plan.total_tasks()
    );
    println!(
        "memory: --max-mem {} = baseline {} + tasks {} + reserve; largest task {}",
        human(plan.max_mem),
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
            a.strategy,
            a.estimated_seconds,
            a.concurrency,
        );
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
    let job = plan_rechunk(&options(a)?)?;
    if a.common.report.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan_json(&job)).unwrap_or_default()
        );
    } else {
        print_plan(&job);
    }
    Ok(())
}

/// `chunkmill rechunk`.
pub fn run(a: &RechunkArgs) -> Result<(), Failure> {
    let opts = options(a)?;
    let job = plan_rechunk(&opts)?;
    let report = run_with_progress(&job, &a.common, |on_event| run_job(&job, &opts, on_event))?;
    print_report(&report, "rechunked", &a.target, a.plan.prepare, &a.common);
    Ok(())
}

/// Runs `job` through `run`, with a progress bar unless the output flags say otherwise.
pub fn run_with_progress(
    job: &RechunkJob,
    common: &Common,
    run: impl FnOnce(
        &(dyn Fn(&chunkmill_exec::Event) + Sync),
    ) -> Result<RechunkReport, chunkmill_ops::OpsError>,
) -> Result<RechunkReport, Failure> {
    let show = !(common.report.no_progress || common.report.quiet || common.report.json);
    let total: u64 = job.plan.stages.iter().map(|s| s.bytes_written).sum();
    let progress = Progress::new(total, show);
    let report = run(&|e| progress.on_event(e));
    progress.finish();
    Ok(report?)
}

/// What a finished job prints: JSON, one line, or nothing.
pub fn print_report(
    report: &RechunkReport,
    verb: &str,
    target: &str,
    prepared: bool,
    common: &Common,
) {
    if common.report.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
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
}
