//! The second layer of the arguments: what the user typed ([`crate::args`], clap structs) resolved
//! once into the typed options of the jobs (sizes, chunk specs, codecs, selections, tiles, the
//! executor, the budget), with every check that needs no input opened and a usage error (exit 2)
//! that echoes what was typed and the form expected. The command modules take these options
//! and never parse a flag's text themselves.

mod compute;
mod convert;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chunkmill_ops::job::{Executor, JobOptions, SlurmExecutor, TargetLayout};
use chunkmill_ops::rechunk::RechunkOptions;
use chunkmill_ops::spec::{parse_size, ChunkSpec};

use crate::args::{Common, ExecutorArgs, RechunkArgs, TargetArgs};
use crate::Failure;

pub use compute::compute;
pub use convert::{compat, convert};

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

    /// How `--json` names it.
    pub fn name(self) -> &'static str {
        match self {
            BudgetOrigin::Given => "given",
            BudgetOrigin::Default => "default",
            BudgetOrigin::Resumed => "resumed",
        }
    }
}

/// `chunkmill rechunk` resolved: its options and where the budget came from.
pub fn rechunk(a: &RechunkArgs) -> Result<(RechunkOptions, BudgetOrigin), Failure> {
    refuse_duplicates("--array", a.arrays.iter().map(String::as_str))?;
    refuse_data_file(&a.source)?;
    let (layout, job, origin) = run_options(&a.target, &a.plan, &a.common)?;
    let options = RechunkOptions {
        source: a.source.clone(),
        arrays: a.arrays.clone(),
        array_chunks: array_chunks(&a.array_chunks)?,
        layout,
        job,
    };
    Ok((options, origin))
}

/// `--array-chunks NAME:SPEC`, each array named once.
fn array_chunks(given: &[String]) -> Result<Vec<(String, ChunkSpec)>, Failure> {
    let parsed = given
        .iter()
        .map(|text| {
            let (name, spec) = text
                .rsplit_once(':')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "--array-chunks '{text}': expected NAME:SPEC, as air:time=100,lat=5 or air:100,5,5"
                    ))
                })?;
            let spec = spec
                .parse()
                .map_err(|e| Failure::usage(format!("--array-chunks '{text}': {e}")))?;
            Ok((name.to_string(), spec))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    refuse_duplicates("--array-chunks", parsed.iter().map(|(n, _)| n.as_str()))?;
    Ok(parsed)
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
    let path = Path::new(source.strip_prefix("file://").unwrap_or(source));
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

/// `--max-mem SIZE`.
pub fn size(flag: &str, text: &str) -> Result<u64, Failure> {
    parse_size(text).map_err(|e| Failure::usage(format!("{flag}: {e}")))
}

/// The budget: `--max-mem`; on `--resume`, the stored plan's (so that the same plan is found
/// again wherever free memory went meanwhile); else half of the available memory.
pub fn budget(
    target: &str,
    plan: &TargetArgs,
    common: &Common,
) -> Result<(u64, BudgetOrigin), Failure> {
    if let Some(text) = plan.max_mem.as_deref() {
        return Ok((size("--max-mem", text)?, BudgetOrigin::Given));
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
    let dir = work_dir(target, common);
    // A plan.json that is a FIFO would block this read; the job's own check of its work dir
    // refuses it, naming it, before anything is written.
    chunkmill_ops::check_work_dir(&dir).ok()?;
    let store = chunkmill_store::Store::open(&dir).ok()?;
    let bytes = store.get("plan.json").ok()??;
    chunkmill_plan::Plan::from_json(&String::from_utf8_lossy(&bytes)).ok()
}

/// The work dir of a job writing `target`: `--work-dir`, or `<TARGET>.work`.
pub fn work_dir(target: &str, common: &Common) -> String {
    common
        .work_dir
        .clone()
        .unwrap_or_else(|| format!("{}.work", target.trim_end_matches('/')))
}

/// `--chunks SPEC`: absent, every array keeps its chunks (a copy that changes the codec,
/// shards or format); a spec naming some dimensions keeps the source's along the others.
pub fn chunks(text: Option<&str>) -> Result<ChunkSpec, Failure> {
    text.map_or(Ok(ChunkSpec::ByName(Vec::new())), |t| {
        t.parse()
            .map_err(|e| Failure::usage(format!("--chunks: {e}")))
    })
}

/// `--shards SPEC`.
pub fn shards(text: Option<&str>) -> Result<Option<ChunkSpec>, Failure> {
    text.map(|t| {
        t.parse()
            .map_err(|e| Failure::usage(format!("--shards: {e}")))
    })
    .transpose()
}

/// `--codec zstd:1|gzip:5|blosc:zstd:5|none`.
pub fn codec(text: Option<&str>) -> Result<Option<chunkmill_store::zarr::Compressor>, Failure> {
    text.map(|t| {
        t.parse()
            .map_err(|e: String| Failure::usage(format!("--codec: {e}")))
    })
    .transpose()
}

/// `--workers N` (default: twice the CPUs); 0 is refused.
pub fn workers(given: Option<usize>) -> Result<usize, Failure> {
    match given {
        Some(0) => Err(Failure::usage("--workers must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(crate::default_workers()),
    }
}

/// The target layout and job options of a job that writes `target` as `plan` and `common`
/// say, and where its budget came from.
pub fn run_options(
    target: &str,
    plan: &TargetArgs,
    common: &Common,
) -> Result<(TargetLayout, JobOptions, BudgetOrigin), Failure> {
    let chunks = chunks(plan.chunks.as_deref())?;
    let shards = shards(plan.shards.as_deref())?;
    let (max_mem, origin) = budget(target, plan, common)?;
    let codec = codec(plan.codec.as_deref())?;
    if let Some(report) = &common.report_file {
        chunkmill_ops::job::report::check_output_path("--report", Path::new(report), false)?;
    }
    let layout = TargetLayout {
        chunks,
        shards,
        codec,
        zarr_format: plan.zarr_format.unwrap_or(3),
    };
    let job = JobOptions {
        target: target.to_string(),
        max_mem,
        temp: plan.temp.clone(),
        workers: workers(common.workers)?,
        retries: common.run.retries,
        resume: common.resume,
        overwrite: common.overwrite,
        work_dir: common.work_dir.clone(),
        keep_work: common.keep_work,
        executor: executor(&common.run)?,
        report: common.report_file.clone().map(Into::into),
        prepare_only: plan.prepare,
        interrupt: None,
    };
    Ok((layout, job, origin))
}

/// The executor the flags name.
pub fn executor(run: &ExecutorArgs) -> Result<Executor, Failure> {
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
    Ok(SlurmExecutor {
        program,
        sbatch_options,
        tasks_per_job: common.slurm_tasks_per_job,
        log_dir: common.slurm_log_dir.clone().map(Into::into),
        // Set once the run starts: see `watch_interrupts`.
        interrupted: Arc::new(AtomicBool::new(false)),
    })
}

/// Where Ctrl-C reaches a SLURM run, which cancels its jobs rather than leave arrays running
/// with no one waiting for them: the caller's flag when there is one (the Python package,
/// whose own SIGINT handler sets it), else the command's SIGINT and SIGTERM. Installed when
/// the run starts, not when it is planned, and never in a caller's process: a handler left
/// in a Python interpreter would keep SIGTERM from ending it.
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn watch_interrupts(
    executor: &mut Executor,
    caller: Option<&Arc<AtomicBool>>,
) -> Result<(), Failure> {
    let Executor::Slurm(slurm) = executor else {
        return Ok(());
    };
    if let Some(flag) = caller {
        slurm.interrupted = Arc::clone(flag);
        return Ok(());
    }
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&slurm.interrupted))
            .map_err(|e| Failure::failed(format!("cannot handle signal {signal}: {e}")))?;
    }
    Ok(())
}

/// A comma-separated list (`--identical-dims a,b`), empty items left out.
pub fn list(text: Option<&str>) -> Vec<String> {
    text.map(|d| {
        d.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests;
