//! `chunkmill rechunk`: a Zarr array or group, rechunked into a new Zarr store with bounded
//! memory.
//!
//! The job: read the source hierarchy; decide each array's target chunks (by dimension name or
//! axis; 1-d coordinates whole; arrays without the named dimensions copied as they are); plan
//! each array with [`chunkmill_grid::rechunk`]; lay the stages end to end in one
//! [`Plan`]; create the target metadata; run; write consolidated metadata; delete the
//! intermediates.

use chunkmill_exec::budget::Budget;
use chunkmill_exec::Event;
use chunkmill_grid::Grid;
use chunkmill_plan::{Endpoint, Plan};
use chunkmill_store::zarr::{self, ArrayInfo, GroupInfo, Node};
use chunkmill_store::{Store, StoreKind};

use crate::job::plan::{
    check_format, default_work_dir, display_path, is_coordinate, last_segment, medium_cost,
    plan_array, resolve, temp_store, ArrayJob, PlanContext,
};
use crate::job::{run_job, Job, JobOptions, JobReport, TargetLayout};
use crate::spec::ChunkSpec;

/// Everything `chunkmill rechunk` is asked.
#[derive(Clone, Debug)]
pub struct RechunkOptions {
    /// Source store URL.
    pub source: String,
    /// Only these arrays (and their coordinates).
    pub arrays: Vec<String>,
    /// Target chunks of single arrays (by path or name), instead of what `layout.chunks` gives
    /// them: exactly these, a coordinate too (rechunker's per-array target chunks).
    pub array_chunks: Vec<(String, ChunkSpec)>,
    /// Target chunks, shards, codec and format.
    pub layout: TargetLayout,
    /// Target, budget, executor and the rest of the run.
    pub job: JobOptions,
}
use crate::{safety, Context, OpsError};

/// Plan a rechunk without running or writing anything.
///
/// # Errors
/// [`OpsError::Usage`] for a malformed request, [`OpsError::Refused`] for missing or
/// inconsistent inputs or a budget no plan fits.
pub fn plan_rechunk(options: &RechunkOptions) -> Result<Job, OpsError> {
    check_format(&options.layout)?;
    let source = Store::open(&options.source)?;
    let (groups, all_arrays, left_out) = list_source(&source, options)?;
    let selected = select_arrays(&source, options, &all_arrays)?;
    check_chunk_spec(&source, options, &selected)?;
    check_array_chunks(&source, options, &selected)?;
    plan_arrays(options, &source, &selected, groups, left_out)
}

/// The groups and arrays of a source, and a warning line for each array left out.
type Listing = (Vec<GroupInfo>, Vec<ArrayInfo>, Vec<String>);

/// The groups and arrays of the source, and a warning line for each array it leaves out (one
/// this build cannot read, when no `--array` chooses it).
fn list_source(source: &Store, options: &RechunkOptions) -> Result<Listing, OpsError> {
    if source.kind() == StoreKind::Local
        && !std::path::Path::new(source.url().trim_start_matches("file://")).exists()
    {
        return Err(OpsError::Refused(format!(
            "{}: no such file or directory",
            source.url()
        )));
    }
    let nodes = zarr::list_nodes(source).of_input()?;
    if nodes.is_empty() {
        return Err(OpsError::Refused(format!(
            "{}: no Zarr array or group found",
            source.url()
        )));
    }
    let mut groups: Vec<GroupInfo> = Vec::new();
    let mut all_arrays: Vec<ArrayInfo> = Vec::new();
    let mut unsupported: Vec<(String, String)> = Vec::new();
    for node in nodes {
        match node {
            Node::Group(g) => groups.push(g),
            Node::Array(a) => all_arrays.push(a),
            Node::Unsupported { path, reason } => unsupported.push((path, reason)),
        }
    }
    // An array this build cannot read blocks the job only when the job chooses it; left out
    // of a whole-store rechunk, it is named in a warning (`left_out`).
    let mut left_out = Vec::new();
    for (path, reason) in &unsupported {
        let chosen = options
            .arrays
            .iter()
            .any(|name| path == name.trim_matches('/') || last_segment(path) == name);
        if chosen {
            return Err(OpsError::Refused(reason.clone()));
        }
        if options.arrays.is_empty() {
            left_out.push(format!(
                "{}: left out, it cannot be rechunked: {reason}; name the arrays to rechunk with --array to leave it out on purpose",
                display_path(path)
            ));
        }
    }
    Ok((groups, all_arrays, left_out))
}

/// The arrays to rechunk: all, or the named ones plus the coordinates of their dimensions.
fn select_arrays(
    source: &Store,
    options: &RechunkOptions,
    all_arrays: &[ArrayInfo],
) -> Result<Vec<ArrayInfo>, OpsError> {
    // Which arrays: all, or the named ones plus the coordinates of their dimensions.
    Ok(if options.arrays.is_empty() {
        all_arrays.to_vec()
    } else {
        let mut chosen: Vec<ArrayInfo> = Vec::new();
        for name in &options.arrays {
            let found = all_arrays
                .iter()
                .find(|a| a.path == name.trim_matches('/') || last_segment(&a.path) == name)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        all_arrays.iter().map(|a| display_path(&a.path)).collect();
                    OpsError::Usage(format!(
                        "{}: no array '{name}'; arrays: {}",
                        source.url(),
                        names.join(", ")
                    ))
                })?;
            chosen.push(found.clone());
        }
        let dims: Vec<String> = chosen
            .iter()
            .flat_map(|a| a.dimension_names.clone().unwrap_or_default())
            .flatten()
            .collect();
        for a in all_arrays {
            if is_coordinate(a)
                && dims.iter().any(|d| d == last_segment(&a.path))
                && !chosen.iter().any(|c| c.path == a.path)
            {
                chosen.push(a.clone());
            }
        }
        chosen.sort_by(|a, b| a.path.cmp(&b.path));
        chosen
    })
}

/// Refuses a chunk spec by position for more than one data array, and one naming a dimension
/// no chosen array has.
fn check_chunk_spec(
    source: &Store,
    options: &RechunkOptions,
    selected: &[ArrayInfo],
) -> Result<(), OpsError> {
    if let ChunkSpec::ByAxis(_) = options.layout.chunks {
        let data: Vec<&ArrayInfo> = selected.iter().filter(|a| !is_coordinate(a)).collect();
        if data.len() != 1 && selected.len() != 1 {
            return Err(OpsError::Usage(format!(
                "{}: chunks by position need a single array; name the dimensions (time=…,lat=…) or pick one with --array",
                source.url()
            )));
        }
    }
    if let ChunkSpec::ByName(named) = &options.layout.chunks {
        let known: Vec<String> = selected
            .iter()
            .flat_map(|a| a.dimension_names.clone().unwrap_or_default())
            .flatten()
            .collect();
        for (name, _) in named {
            if !known.contains(name) {
                let mut dims = known.clone();
                dims.sort();
                dims.dedup();
                return Err(OpsError::Usage(format!(
                    "{}: no dimension '{name}' in the arrays to rechunk; dimensions: {}",
                    source.url(),
                    if dims.is_empty() {
                        "(none named)".to_string()
                    } else {
                        dims.join(", ")
                    }
                )));
            }
        }
    }
    Ok(())
}

fn names_array(name: &str, info: &ArrayInfo) -> bool {
    info.path == name.trim_matches('/') || last_segment(&info.path) == name
}

/// Refuses chunks given for an array the job does not rechunk (a typo, most often).
fn check_array_chunks(
    source: &Store,
    options: &RechunkOptions,
    selected: &[ArrayInfo],
) -> Result<(), OpsError> {
    for (name, _) in &options.array_chunks {
        if !selected.iter().any(|a| names_array(name, a)) {
            let names: Vec<&str> = selected.iter().map(|a| display_path(&a.path)).collect();
            return Err(OpsError::Usage(format!(
                "{}: --array-chunks names no array to rechunk: '{name}'; arrays: {}",
                source.url(),
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// The exact target chunks `--array-chunks` gives `info`, if any.
fn exact_chunks(options: &RechunkOptions, info: &ArrayInfo) -> Result<Option<Vec<u64>>, OpsError> {
    let Some((_, spec)) = options
        .array_chunks
        .iter()
        .find(|(n, _)| names_array(n, info))
    else {
        return Ok(None);
    };
    Ok(Some(
        resolve(spec, info, &info.chunks)?.unwrap_or_else(|| info.chunks.clone()),
    ))
}

/// Plans every chosen array into stages of one plan.
fn plan_arrays(
    options: &RechunkOptions,
    source: &Store,
    selected: &[ArrayInfo],
    groups: Vec<GroupInfo>,
    left_out: Vec<String>,
) -> Result<Job, OpsError> {
    let work_dir = options
        .job
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&options.job.target));
    let inputs = vec![options.source.clone()];
    let write_url = safety::write_url(options.job.paths(), &work_dir, &inputs, false)?;
    let target = Store::open(&write_url)?;
    let work = Store::open(&work_dir)?;
    let (temp_url, temp) = temp_store(&options.job, &work)?;
    let budget = Budget::for_max_mem(options.job.max_mem);
    let context = PlanContext::new(budget, &options.layout, &options.job, &target, &temp, &work)?;
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
    let mut summaries = Vec::new();
    let mut specs = Vec::new();
    for (index, info) in selected.iter().enumerate() {
        let source_grid = Grid::regular(&info.shape, &info.chunks)
            .about(format_args!("'{}'", display_path(&info.path)))?;
        let planned = plan_array(
            &context,
            &ArrayJob {
                index,
                info,
                input: Endpoint::Zarr {
                    url: source.url().to_string(),
                    path: info.path.clone(),
                    grid: source_grid,
                },
                source_cost: medium_cost(info.compressor.as_ref(), source.kind()),
                extra_task_mem: 0,
                read_factor: 1.0,
                chunks: exact_chunks(options, info)?,
                write_at: None,
                piece_media: Vec::new(),
            },
        )?;
        stages.extend(planned.stages);
        cleanup.extend(planned.cleanup);
        summaries.push(planned.summary);
        specs.push(planned.spec);
    }
    let plan = Plan::new("rechunk", options.job.max_mem, stages, cleanup)
        .with_urls(crate::work::absolute_url);
    Ok(Job {
        plan,
        source: options.source.clone(),
        zarr_format: options.layout.zarr_format,
        arrays: summaries,
        groups,
        specs,
        task_budget: budget.task_budget,
        baseline: budget.baseline,
        work_dir,
        temp: temp_url,
        existing_target: false,
        resize: Vec::new(),
        work_files: vec![context.cores_record()],
        write_url,
        inputs,
        left_out,
    })
}

/// Plan and run a rechunk.
///
/// # Errors
/// As [`plan_rechunk`]; [`OpsError::Refused`] when the target exists (without `--overwrite`) or
/// the work dir belongs to another plan; [`OpsError::Failed`] when tasks fail after retries.
pub fn run_rechunk(
    options: &RechunkOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<JobReport, OpsError> {
    run_job(&plan_rechunk(options)?, &options.job, on_event)
}
