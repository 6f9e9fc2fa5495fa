//! `chunkmill compute`: assignments over input arrays, computed into a new Zarr group in
//! bounded memory. The expression language, checking and planning are
//! [`chunkmill_compute`]'s; this job opens the inputs, places the outputs and intermediates,
//! and hands the plan to the job layer like every other job.

use std::collections::BTreeMap;

use chunkmill_compute::{InputSpec, Target};
use chunkmill_exec::budget::{max_mem_for, Budget};
use chunkmill_exec::Event;
use chunkmill_plan::Plan;
use chunkmill_store::zarr::{Compressor, GroupInfo};
use chunkmill_store::Store;

use crate::job::plan::{default_work_dir, temp_store};
use crate::job::{human, run_job, Job, JobOptions, JobReport};
use crate::{safety, OpsError};

/// Everything `chunkmill compute` is asked.
#[derive(Clone, Debug)]
pub struct ComputeOptions {
    /// `--input NAME=URL[#ARRAY]`, in order.
    pub inputs: Vec<InputSpec>,
    /// The assignments, one statement per line.
    pub script: String,
    /// Output chunks by dimension name.
    pub chunks: BTreeMap<String, u64>,
    /// Output codec (default zstd level 1).
    pub codec: Option<Compressor>,
    /// Output Zarr format, 2 or 3.
    pub zarr_format: u8,
    /// Target, budget, executor and the rest of the run.
    pub job: JobOptions,
}

/// A planned computation: the job and what `plan compute` shows of it.
#[derive(Clone, Debug)]
pub struct ComputeJob {
    pub job: Job,
    /// Per output, the operations an unfused plan would run as stages.
    pub unfused: Vec<(String, Vec<String>)>,
    /// Arrays written (outputs, then coordinates).
    pub outputs: Vec<String>,
}

/// Parse, check and plan a computation without writing anything.
///
/// # Errors
/// [`OpsError::Usage`] for a script that does not parse or check (line:column: what);
/// [`OpsError::Refused`] for missing inputs or a task that cannot fit the budget.
pub fn plan_compute(options: &ComputeOptions) -> Result<ComputeJob, OpsError> {
    if options.zarr_format != 2 && options.zarr_format != 3 {
        return Err(OpsError::Usage(format!(
            "--zarr-format must be 2 or 3, got {}",
            options.zarr_format
        )));
    }
    let script = chunkmill_compute::parse(&options.script)?;
    if script.is_empty() {
        return Err(OpsError::Usage(
            "compute: no assignment given (NAME = EXPRESSION)".into(),
        ));
    }
    let inputs = chunkmill_compute::open_inputs(&options.inputs).map_err(OpsError::Refused)?;
    let outputs = chunkmill_compute::check(&script, &inputs, &chunkmill_compute::read_coordinate)?;
    for name in options.chunks.keys() {
        if !outputs.iter().any(|(_, l)| l.dims.contains(name)) {
            return Err(OpsError::Usage(format!(
                "--chunks: no output has a dimension '{name}'"
            )));
        }
    }
    let work_dir = options
        .job
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&options.job.target));
    let input_urls: Vec<String> = options.inputs.iter().map(|i| i.url.clone()).collect();
    let write_url = safety::staged_write_url(options.job.paths(), &work_dir, &input_urls)?;
    let work = Store::open(&work_dir)?;
    let (temp_url, _) = temp_store(&options.job, &work)?;
    let budget = Budget::for_max_mem(options.job.max_mem);
    let target = Target {
        write_url: crate::work::absolute_url(&write_url),
        temp_url: crate::work::absolute_url(&temp_url),
        zarr_format: options.zarr_format,
        chunks: options.chunks.clone(),
        codec: options.codec.clone(),
        task_budget: budget.task_budget,
        workers: options.job.workers as u64,
    };
    let planned = chunkmill_compute::plan(&outputs, &inputs, &target).map_err(|e| match e {
        chunkmill_compute::PlanError::TooLarge { what, need, budget: task } => {
            OpsError::Refused(format!(
                "compute: {what}: one task needs {}, --max-mem {} lets a task hold {}; --max-mem {}MB would fit (or choose smaller --chunks)",
                human(need),
                human(options.job.max_mem),
                human(task),
                max_mem_for(need, budget.baseline) / 1_000_000
            ))
        }
        other => OpsError::from(other),
    })?;
    let plan = Plan::new(
        "compute",
        options.job.max_mem,
        planned.stages,
        planned.cleanup,
    )
    .with_urls(crate::work::absolute_url);
    let names: Vec<String> = planned.specs.iter().map(|s| s.path.clone()).collect();
    let source = options
        .inputs
        .iter()
        .map(|i| i.url.clone())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(ComputeJob {
        job: Job {
            plan,
            source,
            zarr_format: options.zarr_format,
            arrays: Vec::new(),
            groups: vec![GroupInfo {
                path: String::new(),
                zarr_format: options.zarr_format,
                attributes: serde_json::Map::new(),
            }],
            specs: planned.specs,
            task_budget: budget.task_budget,
            baseline: budget.baseline,
            work_dir,
            temp: temp_url,
            existing_target: false,
            resize: Vec::new(),
            work_files: Vec::new(),
            write_url,
            inputs: input_urls,
            left_out: Vec::new(),
        },
        unfused: planned.unfused,
        outputs: names,
    })
}

/// Plan and run a computation.
///
/// # Errors
/// As [`plan_compute`] and [`run_job`].
pub fn run_compute(
    options: &ComputeOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<JobReport, OpsError> {
    let planned = plan_compute(options)?;
    run_job(&planned.job, &options.job, on_event)
}
