//! `chunkmill rechunk` and `chunkmill plan rechunk`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chunkmill_ops::job::{
    human, run_job, Executor, Job, JobOptions, JobReport, SlurmExecutor, TargetLayout,
};
use chunkmill_ops::rechunk::{plan_rechunk, RechunkOptions};
use chunkmill_ops::spec::{parse_size, ChunkSpec};
use chunkmill_plan::{Endpoint, StageKind};
use serde_json::json;

use crate::args::{Common, ExecutorArgs, RechunkArgs, TargetArgs};
use crate::progress::Progress;
use crate::Failure;

fn options(a: &RechunkArgs) -> Result<RechunkOptions, Failure> {
    refuse_duplicates("--array", a.arrays.iter().map(String::as_str))?;
    refuse_data_file(&a.source)?;
    run_options(&a.source, &a.target, &a.arrays, &a.plan, &a.common)
}

/// A flag repeated with the same value means nothing more the second time, and is most often
/// a slip for another value: refused (exit 2) rather than guessed at.
pub fn refuse_duplicates<'a>(
    flag: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(), Failure> {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if seen.contains(&v) {
            return Err(Failure::usage(format!("{flag} {v} is given twice")));
        }
        seen.push(v);
    }
    Ok(())
}

/// `rechunk` reads Zarr only: a NetCDF/HDF5 file is the job of `convert`, which the message
/// names with the command to type.
fn refuse_data_file(source: &str) -> Result<(), Failure> {
    let path = std::path::Path::new(source.strip_prefix("file://").unwrap_or(source));
    let data_ext = [".nc", ".nc4", ".h5", ".hdf5", ".he5", ".cdf", ".hdf"]
        .iter()
        .any(|ext| source.to_ascii_lowercase().ends_with(ext));
    if path.is_file() || (data_ext && !path.is_dir()) {
        return Err(Failure::usage(format!(
            "{source}: rechunk reads a Zarr store, and this is a file; for NetCDF/HDF5 files use `chunkmill convert {source} TARGET.zarr --chunks ...`"
        )));
    }
    Ok(())
}

/// Where `--max-mem` came from, for the plan and the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetOrigin {
    /// The flag (or the recipe).
    Given,
    /// Half of the available memory (`budget::default_max_mem`).
    Default,
    /// The stored plan of the run being resumed.
    Resumed,
}

impl BudgetOrigin {
    /// What the plan summary says after the budget.
    pub fn note(self) -> &'static str {
        match self {
            BudgetOrigin::Given => "",
            BudgetOrigin::Default => {
                " (default: half of the available memory; set it with --max-mem)"
            }
            BudgetOrigin::Resumed => " (from the plan being resumed)",
        }
    }
}

/// The budget: `--max-mem`; on `--resume`, the stored plan's (so that the same plan is found
/// again wherever free memory went meanwhile); else half of the available memory.
pub fn resolve_budget(
    target: &str,
    plan: &TargetArgs,
    common: &Common,
) -> Result<(u64, BudgetOrigin), Failure> {
    if let Some(text) = plan.max_mem.as_deref() {
        let bytes = parse_size(text).map_err(|e| Failure::usage(format!("--max-mem: {e}")))?;
        return Ok((bytes, BudgetOrigin::Given));
    }
    if common.resume {
        if let Some(stored) = stored_plan(target, common) {
            return Ok((stored.max_mem, BudgetOrigin::Resumed));
        }
    }
    crate::budget::default_max_mem()
        .map(|bytes| (bytes, BudgetOrigin::Default))
        .ok_or_else(|| {
            Failure::usage(
                "--max-mem is required here: this system does not say how much memory is available",
            )
        })
}

/// The plan stored in the work dir of a job writing `target`, if it can be read.
pub fn stored_plan(target: &str, common: &Common) -> Option<chunkmill_plan::Plan> {
    let work = common
        .work_dir
        .clone()
        .unwrap_or_else(|| format!("{}.work", target.trim_end_matches('/')));
    let store = chunkmill_store::Store::open(&work).ok()?;
    let bytes = store.get("plan.json").ok()??;
    chunkmill_plan::Plan::from_json(&String::from_utf8_lossy(&bytes)).ok()
}

/// The options of a job that writes `target` as `plan` and `common` say.
pub fn run_options(
    source: &str,
    target: &str,
    arrays: &[String],
    plan: &TargetArgs,
    common: &Common,
) -> Result<RechunkOptions, Failure> {
    // Without --chunks every array keeps its chunks (a copy that changes the codec, shards or
    // format); a spec naming some dimensions keeps the source's chunks along the others.
    let chunks: ChunkSpec = match plan.chunks.as_deref() {
        Some(text) => text.parse().map_err(Failure::usage)?,
        None => ChunkSpec::ByName(Vec::new()),
    };
    let shards = plan
        .shards
        .as_deref()
        .map(str::parse::<ChunkSpec>)
        .transpose()
        .map_err(Failure::usage)?;
    let (max_mem, _) = resolve_budget(target, plan, common)?;
    let codec = plan
        .codec
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| Failure::usage(format!("--codec: {e}")))?;
    if let Some(report) = &common.report_file {
        chunkmill_ops::job::report::check_output_path("--report", Path::new(report), false)?;
    }
    let workers = common.workers.unwrap_or_else(crate::default_workers);
    if workers == 0 {
        return Err(Failure::usage("--workers must be at least 1"));
    }
    Ok(RechunkOptions {
        source: source.to_string(),
        arrays: arrays.to_vec(),
        layout: TargetLayout {
            chunks,
            shards,
            codec,
            zarr_format: plan.zarr_format.unwrap_or(3),
        },
        job: JobOptions {
            target: target.to_string(),
            max_mem,
            temp: plan.temp.clone(),
            workers,
            retries: common.run.retries,
            resume: common.resume,
            overwrite: common.overwrite,
            work_dir: common.work_dir.clone(),
            keep_work: common.keep_work,
            executor: executor_of(&common.run)?,
            report: common.report_file.clone().map(Into::into),
            prepare_only: plan.prepare,
        },
    })
}

/// The executor the flags name.
pub fn executor_of(run: &ExecutorArgs) -> Result<Executor, Failure> {
    Ok(match run.executor.as_str() {
        "processes" => Executor::Processes {
            program: crate::this_program().map_err(|e| {
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
    let program = crate::this_program()
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
    warn_left_out(&job);
    let (_, origin) = resolve_budget(&a.target, &a.plan, &a.common)?;
    if a.common.report.json {
        let mut value = plan_json(&job);
        value["max_mem_origin"] = json!(origin_name(origin));
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print_plan(&job, origin);
    }
    Ok(())
}

/// One warning per array of the source the job leaves out because it cannot read it (always
/// shown: the target lacks what the source has).
fn warn_left_out(job: &Job) {
    for line in &job.left_out {
        eprintln!("chunkmill: warning: {line}");
    }
}

/// How `--json` names where the budget came from.
pub fn origin_name(origin: BudgetOrigin) -> &'static str {
    match origin {
        BudgetOrigin::Given => "given",
        BudgetOrigin::Default => "default",
        BudgetOrigin::Resumed => "resumed",
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
    let opts = options(a)?;
    let (_, origin) = resolve_budget(&a.target, &a.plan, &a.common)?;
    let job = plan_rechunk(&opts)?;
    warn_left_out(&job);
    // After planning, so that a refused job prints its one error line only.
    announce_budget(opts.job.max_mem, origin, &a.common);
    let job = if opts.job.resume && !opts.job.overwrite {
        crate::resume::reconcile(
            job,
            stored_plan(&a.target, &a.common).as_ref(),
            opts.job.workers,
            |j| &j.plan,
            |w| {
                let mut o = opts.clone();
                o.job.workers = w;
                Ok(plan_rechunk(&o)?)
            },
        )?
    } else {
        job
    };
    let report = run_with_progress(&job, &a.common, |on_event| {
        run_job(&job, &opts.job, on_event)
    })?;
    print_report(&report, "rechunked", &a.target, a.plan.prepare, &a.common);
    Ok(())
}

/// Runs `job` through `run`, with a progress bar unless the output flags say otherwise.
pub fn run_with_progress(
    job: &Job,
    common: &Common,
    run: impl FnOnce(
        &(dyn Fn(&chunkmill_exec::Event) + Sync),
    ) -> Result<JobReport, chunkmill_ops::OpsError>,
) -> Result<JobReport, Failure> {
    let show = !(common.report.no_progress || common.report.quiet || common.report.json);
    let total: u64 = job.plan.stages.iter().map(|s| s.bytes_written).sum();
    let progress = Progress::new(total, show);
    let report = run(&|e| progress.on_event(e));
    progress.finish();
    Ok(report?)
}

/// What a finished job prints: JSON, one line, or nothing.
pub fn print_report(report: &JobReport, verb: &str, target: &str, prepared: bool, common: &Common) {
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
