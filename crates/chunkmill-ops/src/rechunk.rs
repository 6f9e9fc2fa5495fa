//! `chunkmill rechunk`: a Zarr array or group, rechunked into a new Zarr store with bounded
//! memory.
//!
//! The job: read the source hierarchy; decide each array's target chunks (by dimension name or
//! axis; 1-d coordinates whole; arrays without the named dimensions copied as they are); plan
//! each array with [`chunkmill_grid::rechunk`]; lay the stages end to end in one
//! [`Plan`]; create the target metadata; run; write consolidated metadata; delete the
//! intermediates.

use chunkmill_exec::processes::{run_plan_processes, WorkerCommand};
use chunkmill_exec::slurm::{run_plan_slurm, SlurmOptions};
use chunkmill_exec::{memory, run_plan, Event, RunOptions, RunSummary};
use chunkmill_grid::rechunk::{MediumCost, RechunkPlan, RechunkProblem, Strategy};
use chunkmill_grid::{Grid, GridError};
use chunkmill_plan::{CopyStage, Endpoint, Plan, Stage, StageKind};
use chunkmill_store::markers::Markers;
use chunkmill_store::zarr::{self, ArrayInfo, ArraySpec, Compressor, Encoding, GroupInfo, Node};
use chunkmill_store::{Store, StoreKind};
use serde::Serialize;

use crate::copy::StageRunner;
use crate::spec::ChunkSpec;
use crate::{safety, OpsError};

/// Bytes kept free of task reservations for what no task owns: allocator slack, progress,
/// listing buffers; plus [`RESERVE_SHARE`] of the budget.
pub(crate) const RESERVE_FIXED: u64 = 24 << 20;
/// The share of `--max-mem` (1/32) kept free besides [`RESERVE_FIXED`].
const RESERVE_SHARE: u64 = 32;

/// Bytes of `max_mem` kept free of task reservations.
fn reserve(max_mem: u64) -> u64 {
    RESERVE_FIXED + max_mem / RESERVE_SHARE
}

/// The smallest budget that leaves `held` bytes (baseline and tasks) beside its reserve.
fn budget_for(held: u64) -> u64 {
    (held + RESERVE_FIXED) * RESERVE_SHARE / (RESERVE_SHARE - 1) + 1
}
/// What the planner assumes the process holds before any task (code, runtime, thread stacks).
/// A fixed figure, not the measured one, so the same request always gives the same plan (and
/// plan id, which `--resume` relies on); the run measures the real baseline and admits tasks
/// within what is really left.
pub(crate) const BASELINE_ALLOWANCE: u64 = 32 << 20;
/// Bytes a task holds besides its buffers: codec contexts, bookkeeping.
const TASK_OVERHEAD: u64 = 1 << 20;

/// Where the tasks run.
#[derive(Clone, Debug, Default)]
pub enum Executor {
    /// Threads of this process.
    #[default]
    Threads,
    /// Child `chunkmill worker` processes of this program, so a crash in one task never takes
    /// the run down.
    Processes { program: std::path::PathBuf },
    /// SLURM job arrays of `chunkmill worker`, one per stage, chained with `afterok`.
    Slurm(SlurmExecutor),
}

/// What the SLURM executor needs besides the plan.
#[derive(Clone, Debug)]
pub struct SlurmExecutor {
    /// The `chunkmill` executable, at a path the compute nodes see.
    pub program: std::path::PathBuf,
    /// Options for every `sbatch` (`--account=x --partition=y --time=00:30:00`).
    pub sbatch_options: Vec<String>,
    /// Tasks per array element (default: about four elements per concurrent slot).
    pub tasks_per_job: Option<u64>,
    /// Where the elements' logs go (default: `slurm-logs` in a local work dir, else
    /// `chunkmill-slurm-logs` in the current directory).
    pub log_dir: Option<std::path::PathBuf>,
    /// Set by a Ctrl-C handler: the run cancels its jobs and stops.
    pub interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Everything `chunkmill rechunk` is asked.
#[derive(Clone, Debug)]
pub struct RechunkOptions {
    /// Source store URL.
    pub source: String,
    /// Target store URL.
    pub target: String,
    /// Target chunks.
    pub chunks: ChunkSpec,
    /// Memory budget of the process, bytes.
    pub max_mem: u64,
    /// Where intermediates go (default: under the work dir).
    pub temp: Option<String>,
    /// Only these arrays (and their coordinates).
    pub arrays: Vec<String>,
    /// Target compressor; `None` keeps the source's.
    pub codec: Option<Compressor>,
    /// Target shard shape (v3 only).
    pub shards: Option<ChunkSpec>,
    /// Target Zarr format.
    pub zarr_format: u8,
    /// Most tasks at once.
    pub workers: usize,
    /// Extra attempts per failed task.
    pub retries: u32,
    /// Skip tasks whose markers exist.
    pub resume: bool,
    /// Replace an existing target.
    pub overwrite: bool,
    /// Work dir URL (default `<target>.work`, removed after success).
    pub work_dir: Option<String>,
    /// Keep the default work dir (plan and record of completion) after success.
    pub keep_work: bool,
    /// Where the tasks run.
    pub executor: Executor,
    /// Write a self-contained HTML report of the run here.
    pub report: Option<std::path::PathBuf>,
    /// Stop after writing plan.json and the target's metadata: the tasks are left to
    /// `chunkmill worker` processes of a batch engine.
    pub prepare_only: bool,
}

impl RechunkOptions {
    /// The paths the safety checks judge.
    pub(crate) fn paths(&self) -> crate::safety::JobPaths<'_> {
        crate::safety::JobPaths {
            target: &self.target,
            temp: self.temp.as_deref(),
            overwrite: self.overwrite,
        }
    }
}

/// One array's part of the job, for the plan printout.
#[derive(Clone, Debug, Serialize)]
pub struct ArrayPlan {
    /// Array path (`""` for a root array).
    pub path: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// numpy data type.
    pub dtype: String,
    /// Source chunks.
    pub source_chunks: Vec<u64>,
    /// Target chunks.
    pub target_chunks: Vec<u64>,
    /// Target shards.
    pub target_shards: Option<Vec<u64>>,
    /// Chosen strategy.
    pub strategy: Strategy,
    /// The cost model's estimate, seconds.
    pub estimated_seconds: f64,
    /// Tasks the plan was sized to run at once.
    pub concurrency: u64,
    /// Decoded bytes of the array.
    pub nbytes: u64,
}

/// A planned rechunk: the plan and what the target will hold.
#[derive(Clone, Debug)]
pub struct RechunkJob {
    /// The plan.
    pub plan: Plan,
    /// Per-array summary.
    pub arrays: Vec<ArrayPlan>,
    /// Groups to create in the target.
    pub groups: Vec<GroupInfo>,
    /// Arrays to create in the target.
    pub specs: Vec<ArraySpec>,
    /// Bytes the tasks may hold together.
    pub task_budget: u64,
    /// Process memory before any task.
    pub baseline: u64,
    /// Work dir URL.
    pub work_dir: String,
    /// Intermediate URL.
    pub temp: String,
    /// The target exists and the job writes into it (an append): it is neither refused nor
    /// erased, and its arrays are resized instead of created.
    pub existing_target: bool,
    /// Arrays of an existing target to give a new shape before any task runs.
    pub resize: Vec<(String, Vec<u64>)>,
    /// What the run writes before it touches the target, once its checks have passed.
    pub work_files: Vec<WorkFile>,
    /// Where the tasks and metadata write: the target, or the staging store beside it that
    /// replaces it once complete (`--overwrite` of an existing local target).
    pub write_url: String,
    /// What the job reads (paths or URLs), which it must never write, replace or delete.
    pub inputs: Vec<String>,
    /// Arrays of the source the job leaves out (it cannot read them), one warning line each.
    pub left_out: Vec<String>,
}

/// Something a job's tasks or a resumed run read, written by [`run_job`] after its checks
/// (an existing target, another plan in the work dir) and before the target changes.
#[derive(Clone, Debug)]
pub enum WorkFile {
    /// A JSON document under a key of the work dir (an append's record).
    Json(String, serde_json::Value),
    /// The virtual dataset the plan's reference endpoints read, as kerchunk JSON at a URL.
    References(std::sync::Arc<chunkmill_manifest::VirtualDataset>, String),
}

/// What a finished rechunk did.
#[derive(Clone, Debug, Serialize)]
pub struct RechunkReport {
    /// The plan id.
    pub plan_id: String,
    /// Arrays rechunked.
    pub arrays: usize,
    /// Tasks run now.
    pub tasks_run: u64,
    /// Tasks skipped (already done).
    pub tasks_skipped: u64,
    /// Failed attempts retried.
    pub retries: u64,
    /// Straggling slices whose backup copy finished first.
    pub backups: u64,
    /// Decoded bytes of all target arrays.
    pub bytes: u64,
    /// Decoded bytes the tasks run now read from their inputs (every source chunk counted each
    /// time it is decoded); known for the threads executor, `None` where the tasks ran in other
    /// processes.
    pub bytes_read: Option<u64>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Peak resident memory of this process, bytes.
    pub peak_rss: u64,
    /// The budget, bytes.
    pub max_mem: u64,
    /// True when the run found the job already complete.
    pub already_complete: bool,
}

impl RechunkReport {
    /// The report of a run that ran no task: the job was already complete, or only prepared.
    pub(crate) fn without_tasks(
        plan_id: &str,
        arrays: usize,
        bytes: u64,
        max_mem: u64,
        already_complete: bool,
    ) -> Self {
        Self {
            plan_id: plan_id.to_string(),
            arrays,
            tasks_run: 0,
            tasks_skipped: 0,
            retries: 0,
            backups: 0,
            bytes,
            bytes_read: Some(0),
            seconds: 0.0,
            peak_rss: memory::peak_rss(),
            max_mem,
            already_complete,
        }
    }
}

pub(crate) fn medium_cost(compressor: Option<&Compressor>, kind: StoreKind) -> MediumCost {
    let (read, write) = match compressor {
        Some(Compressor::None) => (0.3, 0.6),
        Some(Compressor::Zstd(level)) => (1.0, 2.5 * (1.0 + f64::from((*level).max(1) - 1) / 3.0)),
        Some(Compressor::Gzip(level)) => (4.0, 6.0 + 3.0 * f64::from(*level)),
        Some(Compressor::Blosc { .. }) => (0.8, 1.6),
        None => (2.0, 5.0),
    };
    MediumCost {
        read_ns_per_byte: read,
        write_ns_per_byte: write,
        ns_per_object: if kind == StoreKind::S3 { 20e6 } else { 40e3 },
    }
}

pub(crate) fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub(crate) fn is_coordinate(info: &ArrayInfo) -> bool {
    info.shape.len() == 1
        && info
            .dimension_names
            .as_ref()
            .and_then(|d| d[0].as_deref())
            .is_some_and(|d| d == last_segment(&info.path))
}

/// Resolve `spec` for one array: `Ok(None)` when the spec names none of its dimensions.
pub(crate) fn resolve(
    spec: &ChunkSpec,
    info: &ArrayInfo,
    base: &[u64],
) -> Result<Option<Vec<u64>>, OpsError> {
    let whole = |len: u64| len.max(1);
    match spec {
        ChunkSpec::ByAxis(sizes) => {
            if sizes.len() != info.shape.len() {
                return Err(OpsError::Usage(format!(
                    "'{}' has {} dimensions but the chunk spec gives {}",
                    display_path(&info.path),
                    info.shape.len(),
                    sizes.len()
                )));
            }
            Ok(Some(
                sizes
                    .iter()
                    .zip(&info.shape)
                    .map(|(s, &len)| s.map_or(whole(len), |s| capped(s, len)))
                    .collect(),
            ))
        }
        ChunkSpec::ByName(named) => {
            let Some(dims) = &info.dimension_names else {
                return Ok(None);
            };
            let mut any = false;
            let chunks = dims
                .iter()
                .zip(&info.shape)
                .zip(base)
                .map(|((d, &len), &b)| {
                    match named.iter().find(|(n, _)| Some(n.as_str()) == d.as_deref()) {
                        Some((_, s)) => {
                            any = true;
                            s.map_or(whole(len), |s| capped(s, len))
                        }
                        None => b,
                    }
                })
                .collect();
            Ok(any.then_some(chunks))
        }
    }
}

/// A requested chunk size no longer than its axis (an empty axis keeps the request).
fn capped(size: u64, len: u64) -> u64 {
    if len == 0 {
        size
    } else {
        size.min(len)
    }
}

pub(crate) fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

pub(crate) fn default_work_dir(target: &str) -> String {
    format!("{}.work", target.trim_end_matches('/'))
}

/// Refuses a Zarr format other than 2 or 3, and shards without v3.
pub(crate) fn check_format(options: &RechunkOptions) -> Result<(), OpsError> {
    if options.zarr_format != 2 && options.zarr_format != 3 {
        return Err(OpsError::Usage(format!(
            "--zarr-format must be 2 or 3, got {}",
            options.zarr_format
        )));
    }
    if options.shards.is_some() && options.zarr_format != 3 {
        return Err(OpsError::Usage(
            "--shards needs Zarr v3 (--zarr-format 3)".into(),
        ));
    }
    Ok(())
}

/// Plan a rechunk without running or writing anything.
///
/// # Errors
/// [`OpsError::Usage`] for a malformed request, [`OpsError::Refused`] for missing or
/// inconsistent inputs or a budget no plan fits.
#[allow(clippy::too_many_lines)]
pub fn plan_rechunk(options: &RechunkOptions) -> Result<RechunkJob, OpsError> {
    check_format(options)?;
    let source = Store::open(&options.source).map_err(|e| OpsError::Usage(e.to_string()))?;
    if source.kind() == StoreKind::Local
        && !std::path::Path::new(source.url().trim_start_matches("file://")).exists()
    {
        return Err(OpsError::Refused(format!(
            "{}: no such file or directory",
            source.url()
        )));
    }
    let nodes = zarr::list_nodes(&source).map_err(|e| OpsError::Refused(e.to_string()))?;
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

    // Which arrays: all, or the named ones plus the coordinates of their dimensions.
    let selected: Vec<ArrayInfo> = if options.arrays.is_empty() {
        all_arrays.clone()
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
        for a in &all_arrays {
            if is_coordinate(a)
                && dims.iter().any(|d| d == last_segment(&a.path))
                && !chosen.iter().any(|c| c.path == a.path)
            {
                chosen.push(a.clone());
            }
        }
        chosen.sort_by(|a, b| a.path.cmp(&b.path));
        chosen
    };

    if let ChunkSpec::ByAxis(_) = options.chunks {
        let data: Vec<&ArrayInfo> = selected.iter().filter(|a| !is_coordinate(a)).collect();
        if data.len() != 1 && selected.len() != 1 {
            return Err(OpsError::Usage(format!(
                "{}: chunks by position need a single array; name the dimensions (time=…,lat=…) or pick one with --array",
                source.url()
            )));
        }
    }
    if let ChunkSpec::ByName(named) = &options.chunks {
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

    let work_dir = options
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&options.target));
    let inputs = vec![options.source.clone()];
    let write_url = safety::write_url(options.paths(), &work_dir, &inputs, false)?;
    let target = Store::open(&write_url).map_err(|e| OpsError::Usage(e.to_string()))?;
    let work = Store::open(&work_dir).map_err(|e| OpsError::Usage(e.to_string()))?;
    let (temp_url, temp) = temp_store(options, &work)?;
    let budget = Budget::for_max_mem(options.max_mem);
    let context = budget.context(options, &target, &temp);
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
    let mut summaries = Vec::new();
    let mut specs = Vec::new();
    for (index, info) in selected.iter().enumerate() {
        let source_grid = Grid::regular(&info.shape, &info.chunks)
            .map_err(|e| OpsError::Refused(format!("'{}': {e}", display_path(&info.path))))?;
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
                chunks: None,
                write_at: None,
            },
        )?;
        stages.extend(planned.stages);
        cleanup.extend(planned.cleanup);
        summaries.push(planned.summary);
        specs.push(planned.spec);
    }
    let plan =
        Plan::new("rechunk", options.max_mem, stages, cleanup).with_urls(crate::work::absolute_url);
    Ok(RechunkJob {
        plan,
        arrays: summaries,
        groups,
        specs,
        task_budget: budget.task_budget,
        baseline: budget.baseline,
        work_dir,
        temp: temp_url,
        existing_target: false,
        resize: Vec::new(),
        work_files: Vec::new(),
        write_url,
        inputs,
        left_out,
    })
}

/// What every array of a job is planned against.
pub(crate) struct PlanContext<'a> {
    pub options: &'a RechunkOptions,
    pub target: &'a Store,
    pub temp: &'a Store,
    pub budget: Budget,
}

/// The memory split of a job: what its tasks may hold together, beside the process baseline
/// and a reserve.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub task_budget: u64,
    pub baseline: u64,
    /// Bytes kept free of task reservations.
    pub reserve: u64,
}

impl Budget {
    /// The split of `max_mem`. The planner counts a fixed baseline allowance, not the
    /// measured one, so the same request always gives the same plan (and plan id).
    pub(crate) fn for_max_mem(max_mem: u64) -> Self {
        let reserve = reserve(max_mem);
        Self {
            task_budget: max_mem.saturating_sub(BASELINE_ALLOWANCE + reserve),
            baseline: baseline(),
            reserve,
        }
    }

    /// What every array of a job writing `target` is planned against.
    pub(crate) fn context<'a>(
        &self,
        options: &'a RechunkOptions,
        target: &'a Store,
        temp: &'a Store,
    ) -> PlanContext<'a> {
        PlanContext {
            options,
            target,
            temp,
            budget: *self,
        }
    }
}

/// What the process counts as held before any task: the planner's allowance, or what it holds
/// now if that is more (anonymous memory, measured once the allocator has given back its free
/// pages). The allowance also covers the executable's resident code, which is not measured
/// because how much of it is resident depends on the page cache.
fn baseline() -> u64 {
    BASELINE_ALLOWANCE.max(memory::held_memory())
}

/// What the tasks of this process may reserve together under `max_mem`: what is left after the
/// [`baseline`], measured now, and the reserve. Returns the baseline too, for the error that
/// refuses a run.
pub(crate) fn task_capacity(max_mem: u64) -> (u64, u64) {
    let baseline = baseline();
    let capacity = max_mem.saturating_sub(baseline + reserve(max_mem));
    (baseline, capacity)
}

/// Where intermediates go: `--temp`, or `intermediate` in the work dir (its URL and store).
pub(crate) fn temp_store(
    options: &RechunkOptions,
    work: &Store,
) -> Result<(String, Store), OpsError> {
    let url = options
        .temp
        .clone()
        .unwrap_or_else(|| work.join("intermediate"));
    let store = Store::open(&url).map_err(|e| OpsError::Usage(e.to_string()))?;
    Ok((url, store))
}

/// One array to plan: what the target holds (`info`: shape, data type, chunks, names) and
/// what the first stage reads (`input`, whose grid is in the target's coordinates).
pub(crate) struct ArrayJob<'a> {
    pub index: usize,
    pub info: &'a ArrayInfo,
    pub input: Endpoint,
    pub source_cost: MediumCost,
    /// Bytes a task of the first stage holds besides what the copy task counts (a source
    /// chunk decoded in another data type, for instance).
    pub extra_task_mem: u64,
    /// Source bytes the first stage decodes per byte it delivers (see
    /// [`crate::convert::OutputArray::read_factor`]); 1 for a plain rechunk.
    pub read_factor: f64,
    /// Exact target chunks, instead of what the chunk spec gives (tiles, appends).
    pub chunks: Option<Vec<u64>>,
    /// Where an append writes: chunks go `chunk_offset` further into the target array, whose
    /// whole grid (after it grows) is `grid`. `None` writes the array planned, from chunk 0.
    pub write_at: Option<(Vec<u64>, Grid)>,
}

/// The stages of one array, what to delete afterwards, its summary and its target metadata.
pub(crate) struct PlannedArray {
    pub stages: Vec<Stage>,
    pub cleanup: Vec<(String, String)>,
    pub summary: ArrayPlan,
    pub spec: ArraySpec,
}

/// Plan one array: target chunks, stages (first one reading `job.input`), metadata.
#[allow(clippy::too_many_lines)]
pub(crate) fn plan_array(
    context: &PlanContext<'_>,
    job: &ArrayJob<'_>,
) -> Result<PlannedArray, OpsError> {
    let PlanContext {
        options,
        target,
        temp,
        budget:
            Budget {
                task_budget,
                baseline,
                reserve,
            },
    } = *context;
    let (index, info) = (job.index, job.info);
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
    let data_chunks = match &job.chunks {
        Some(fixed) => Some(fixed.clone()),
        None => resolve(&options.chunks, info, &info.chunks)?,
    };
    // A coordinate is written as one chunk, which needs no shard around it.
    let whole_coordinate = job.chunks.is_none() && is_coordinate(info) && data_chunks.is_some();
    let chunks = if whole_coordinate {
        vec![info.shape[0].max(1)]
    } else {
        data_chunks.unwrap_or_else(|| info.chunks.clone())
    };
    let shards = match &options.shards {
        Some(spec) if !whole_coordinate => resolve(spec, info, &chunks)?,
        _ => None,
    };
    if let Some(shards) = &shards {
        if shards.iter().zip(&chunks).any(|(&s, &c)| s % c != 0) {
            return Err(OpsError::Usage(format!(
                "'{}': shards {shards:?} must be whole multiples of the chunks {chunks:?}",
                display_path(&info.path)
            )));
        }
    }
    let encoding = match &options.codec {
        Some(c) => Encoding::Compressor(c.clone()),
        None => zarr::inherit_encoding(info, options.zarr_format).map_err(OpsError::Usage)?,
    };
    let target_compressor = match &encoding {
        Encoding::Compressor(c) => Some(c.clone()),
        Encoding::Documents(_) => info.compressor.clone(),
    };
    let grid_chunks = shards.clone().unwrap_or_else(|| chunks.clone());
    let source_grid = job.input.grid().clone();
    let problem = RechunkProblem {
        shape: info.shape.clone(),
        item_size: info.item_size as u64,
        source: source_grid.clone(),
        target_chunks: grid_chunks.clone(),
        budget: task_budget,
        workers: options.workers as u64,
        source_cost: job.source_cost,
        target_cost: medium_cost(target_compressor.as_ref(), target.kind()),
        intermediate_cost: medium_cost(Some(&Compressor::None), temp.kind()),
        ns_per_task: 100e3,
        task_overhead: TASK_OVERHEAD + job.extra_task_mem,
        max_stages: 4,
    };
    let plan: RechunkPlan = problem.plan().map_err(|e| match e {
        GridError::DoesNotFit { task_bytes, .. } => OpsError::Refused(format!(
            "'{}': one task needs at least {} but --max-mem {} leaves {} for tasks (process baseline {}, reserve {}); raise --max-mem to at least {} or choose smaller chunks",
            display_path(&info.path),
            human(task_bytes),
            human(options.max_mem),
            human(task_budget),
            human(baseline),
            human(reserve),
            human(budget_for(task_bytes + baseline)),
        )),
        other => OpsError::Refused(format!("'{}': {other}", display_path(&info.path))),
    })?;
    let label_path = if info.path.is_empty() {
        "array".to_string()
    } else {
        info.path.replace('/', ".")
    };
    let last = plan.stages.len() - 1;
    for (j, s) in plan.stages.iter().enumerate() {
        let prefix = format!("a{index}-s{j}");
        let input = if j == 0 {
            job.input.clone()
        } else {
            Endpoint::Pieces {
                url: temp.url().to_string(),
                prefix: format!("a{index}-s{}", j - 1),
                grid: s.input.clone(),
            }
        };
        let output = if j == last {
            let zarr = |grid: Grid| Endpoint::Zarr {
                url: target.url().to_string(),
                path: info.path.clone(),
                grid,
            };
            match &job.write_at {
                None => zarr(s.output.clone()),
                Some((chunk_offset, grid)) => Endpoint::Shifted {
                    inner: Box::new(zarr(grid.clone())),
                    chunk_offset: chunk_offset.clone(),
                    grid: s.output.clone(),
                },
            }
        } else {
            cleanup.push((temp.url().to_string(), format!("{prefix}/")));
            Endpoint::Pieces {
                url: temp.url().to_string(),
                prefix: prefix.clone(),
                grid: s.output.clone(),
            }
        };
        let what = if j == last {
            "to target"
        } else {
            "to intermediate"
        };
        stages.push(Stage {
            name: format!("{index:03}-{j}"),
            label: format!("{label_path} {}/{} {what}", j + 1, plan.stages.len()),
            kind: StageKind::Copy(CopyStage {
                input,
                output,
                blocks: s.blocks.clone(),
                item_size: info.item_size as u64,
            }),
            projected_mem: s.projected_mem,
            bytes_read: if j == 0 {
                (s.bytes_read as f64 * job.read_factor).round() as u64
            } else {
                s.bytes_read
            },
            bytes_written: s.bytes_written,
        });
    }
    let summary = ArrayPlan {
        path: info.path.clone(),
        shape: info.shape.clone(),
        dtype: info.dtype.clone(),
        source_chunks: info.chunks.clone(),
        target_chunks: chunks.clone(),
        target_shards: shards.clone(),
        strategy: plan.strategy,
        estimated_seconds: plan.estimated_seconds,
        concurrency: plan.concurrency,
        nbytes: info.nbytes(),
    };
    let (fill_value, attributes) = zarr::translate_fill(info, options.zarr_format);
    let spec = ArraySpec {
        path: info.path.clone(),
        zarr_format: options.zarr_format,
        shape: info.shape.clone(),
        dtype: info.dtype.clone(),
        chunks: grid_chunks,
        inner_chunks: shards.map(|_| chunks),
        fill_value,
        encoding,
        dimension_names: info.dimension_names.clone(),
        attributes,
    };
    Ok(PlannedArray {
        stages,
        cleanup,
        summary,
        spec,
    })
}

/// How much an executor may run at once.
pub(crate) struct ExecutorLimits {
    pub workers: usize,
    pub retries: u32,
    pub max_mem: u64,
    /// Bytes the tasks of this process may hold together (threads executor).
    pub capacity: u64,
}

/// Runs every stage of `plan` on `executor`, markers in `work`.
///
/// # Errors
/// [`OpsError::Failed`] when tasks fail after retries; [`OpsError::Interrupted`] on Ctrl-C.
pub(crate) fn run_on_executor(
    plan: &Plan,
    executor: &Executor,
    work: &Store,
    markers: &Markers,
    limits: &ExecutorLimits,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RunSummary, OpsError> {
    let mut run_options = RunOptions::new(limits.workers, limits.capacity);
    run_options.retries = limits.retries;
    match executor {
        Executor::Threads => run_plan(plan, &StageRunner::new(), markers, &run_options, on_event),
        Executor::Processes { program } => {
            let command = WorkerCommand {
                program: program.clone(),
                plan_url: work.join("plan.json"),
            };
            run_plan_processes(
                plan,
                &command,
                markers,
                limits.workers,
                limits.retries,
                on_event,
            )
        }
        Executor::Slurm(slurm) => {
            let log_dir = slurm.log_dir.clone().unwrap_or_else(|| match work.kind() {
                StoreKind::Local => {
                    let url = work.url();
                    std::path::PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
                        .join("slurm-logs")
                }
                _ => std::path::PathBuf::from("chunkmill-slurm-logs"),
            });
            let slurm_options = SlurmOptions {
                program: slurm.program.clone(),
                plan_url: work.join("plan.json"),
                memory_mib: limits.max_mem.div_ceil(1 << 20),
                concurrent: limits.workers,
                retries: limits.retries,
                tasks_per_job: slurm.tasks_per_job,
                sbatch_options: slurm.sbatch_options.clone(),
                log_dir,
                poll: std::time::Duration::from_millis(500),
            };
            run_plan_slurm(
                plan,
                &slurm_options,
                markers,
                work,
                &slurm.interrupted,
                on_event,
            )
        }
    }
    .map_err(|e| match e {
        chunkmill_exec::ExecError::Interrupted(m) => OpsError::Interrupted(m),
        other => failed(other),
    })
}

/// Bytes as a person reads them (`512.0 MB`).
#[must_use]
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

fn failed(e: impl std::fmt::Display) -> OpsError {
    OpsError::Failed(e.to_string())
}

/// Plan and run a rechunk.
///
/// # Errors
/// As [`plan_rechunk`]; [`OpsError::Refused`] when the target exists (without `--overwrite`) or
/// the work dir belongs to another plan; [`OpsError::Failed`] when tasks fail after retries.
pub fn run_rechunk(
    options: &RechunkOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RechunkReport, OpsError> {
    run_job(&plan_rechunk(options)?, options, on_event)
}

/// Run a rechunk planned by [`plan_rechunk`] with the same options.
///
/// Before the first write the job takes its locks (a second job on the same target or work
/// dir is refused, naming the first) and checks its paths again (see [`crate::safety`]). An
/// existing local target replaced by `--overwrite` is written beside it and swapped in only
/// once complete; a resumed run first sweeps the temporary files a killed run left.
///
/// # Errors
/// As [`run_rechunk`].
pub fn run_job(
    job: &RechunkJob,
    options: &RechunkOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<RechunkReport, OpsError> {
    let plan = &job.plan;
    let target = Store::open(&options.target).map_err(|e| OpsError::Usage(e.to_string()))?;
    let write = Store::open(&job.write_url).map_err(|e| OpsError::Usage(e.to_string()))?;
    let work = Store::open(&job.work_dir).map_err(|e| OpsError::Usage(e.to_string()))?;
    safety::check_paths(options.paths(), &job.work_dir, &job.inputs)?;
    let locks = safety::lock(
        &options.target,
        &work,
        &format!("{} {} → {}", plan.job, options.source, options.target),
    )?;
    let staging = safety::staging(&target, &job.write_url);
    let markers = Markers::new(work.clone(), &plan.plan_id);
    let resuming = is_resuming(job, options)?;
    if resuming && work.exists(&complete_key(plan)).map_err(failed)? {
        let mut report = RechunkReport::without_tasks(
            &plan.plan_id,
            job.specs.len(),
            job.arrays.iter().map(|a| a.nbytes).sum(),
            options.max_mem,
            true,
        );
        report.tasks_skipped = plan.total_tasks();
        return Ok(report);
    }
    if resuming && work.exists(safety::SWAP_KEY).map_err(failed)? {
        // Killed while the new target was being swapped in: finish that, write nothing else.
        if let Some(staging) = &staging {
            safety::swap(&work, &target, staging)?;
        }
        let mut report = RechunkReport::without_tasks(
            &plan.plan_id,
            job.specs.len(),
            job.arrays.iter().map(|a| a.nbytes).sum(),
            options.max_mem,
            false,
        );
        report.tasks_skipped = plan.total_tasks();
        close(job, options, &work, &markers, &report, locks)?;
        return Ok(report);
    }
    if resuming {
        safety::sweep(&[&job.write_url, &job.work_dir, &job.temp])?;
    } else {
        start_afresh(job, options, &target, staging.as_deref(), &work, &markers)?;
    }
    write_job_files(job, options, &work, &write)?;
    if options.prepare_only {
        return Ok(RechunkReport::without_tasks(
            &plan.plan_id,
            job.specs.len(),
            job.arrays.iter().map(|a| a.nbytes).sum(),
            options.max_mem,
            false,
        ));
    }
    let (baseline, capacity) = task_capacity(options.max_mem);
    if capacity < plan.max_projected_mem() {
        return Err(OpsError::Refused(format!(
            "the process already holds {} before any task; --max-mem {} leaves {} but one task needs {}",
            human(baseline),
            human(options.max_mem),
            human(capacity),
            human(plan.max_projected_mem())
        )));
    }
    let summary = run_on_executor(
        plan,
        &options.executor,
        &work,
        &markers,
        &ExecutorLimits {
            workers: options.workers,
            retries: options.retries,
            max_mem: options.max_mem,
            capacity,
        },
        on_event,
    )?;

    if let Some(path) = &options.report {
        write_html_report(plan, options, &markers, &summary, path)?;
    }
    zarr::write_consolidated(&write).map_err(failed)?;
    for (url, prefix) in &plan.cleanup {
        Store::open(url)
            .and_then(|s| s.erase_prefix(prefix))
            .map_err(failed)?;
    }
    // Killed backup copies of slow tasks (processes, SLURM) may have left temporary files.
    safety::sweep(&[&job.write_url, &job.temp])?;
    if let Some(staging) = &staging {
        safety::swap(&work, &target, staging)?;
    }
    let report = RechunkReport {
        plan_id: plan.plan_id.clone(),
        arrays: job.arrays.len(),
        tasks_run: summary.tasks_run,
        tasks_skipped: summary.tasks_skipped,
        retries: summary.retries,
        backups: summary.backups,
        bytes: job.arrays.iter().map(|a| a.nbytes).sum(),
        bytes_read: matches!(options.executor, Executor::Threads).then_some(summary.bytes_read),
        seconds: summary.seconds,
        peak_rss: memory::peak_rss(),
        max_mem: options.max_mem,
        already_complete: false,
    };
    close(job, options, &work, &markers, &report, locks)?;
    Ok(report)
}

fn complete_key(plan: &Plan) -> String {
    format!("{}/complete.json", plan.plan_id)
}

/// Whether this run continues the one recorded in the work dir; refuses a `--resume` into a
/// work dir of another job (without `--overwrite`).
fn is_resuming(job: &RechunkJob, options: &RechunkOptions) -> Result<bool, OpsError> {
    let work = Store::open(&job.work_dir).map_err(|e| OpsError::Usage(e.to_string()))?;
    let previous = match work.get("plan.json").map_err(failed)? {
        Some(bytes) => Some(
            Plan::from_json(&String::from_utf8_lossy(&bytes))
                .map_err(|e| OpsError::Refused(format!("{}: {e}", work.join("plan.json"))))?,
        ),
        None => None,
    };
    let plan_id = &job.plan.plan_id;
    if options.resume {
        if let Some(p) = &previous {
            if &p.plan_id != plan_id && !options.overwrite {
                return Err(OpsError::Refused(format!(
                    "{}: the work dir holds plan {} of another job (this one is {plan_id}); use another --work-dir, or --overwrite to start over",
                    job.work_dir, p.plan_id
                )));
            }
        }
    }
    Ok(options.resume && previous.as_ref().is_some_and(|p| &p.plan_id == plan_id))
}

/// A run that does not resume: refuses an existing target without `--overwrite`, clears
/// what an earlier run left (the staging store, or on object stores the old target itself)
/// and the markers of an earlier run of the same plan.
fn start_afresh(
    job: &RechunkJob,
    options: &RechunkOptions,
    target: &Store,
    staging: Option<&std::path::Path>,
    work: &Store,
    markers: &Markers,
) -> Result<(), OpsError> {
    if !job.existing_target {
        let target_has_data = !target.is_empty().map_err(failed)?;
        if target_has_data && !options.overwrite {
            return Err(OpsError::Refused(if options.resume {
                format!(
                    "{}: target exists and {} holds no run of this job to resume (a finished job removes its work dir unless --keep-work or --work-dir); use --overwrite to replace it",
                    target.url(),
                    job.work_dir
                )
            } else {
                format!(
                    "{}: target exists; use --overwrite to replace it",
                    target.url()
                )
            }));
        }
        match staging {
            Some(staging) => safety::clear_staging(staging)?,
            // An object store cannot swap a prefix in: the old target goes first (documented).
            None if target_has_data => target.erase_prefix("").map_err(failed)?,
            None => {}
        }
    }
    markers.clear().map_err(failed)?;
    work.erase(&complete_key(&job.plan)).map_err(failed)?;
    work.erase(safety::SWAP_KEY).map_err(failed)?;
    Ok(())
}

/// The plan and what the tasks read go to the work dir, then the target's metadata to where
/// the job writes, so a crash leaves a store whose arrays read as fill values (an append
/// grows the arrays; consolidated metadata, which readers use, keeps the old shapes until the
/// last task is done).
fn write_job_files(
    job: &RechunkJob,
    options: &RechunkOptions,
    work: &Store,
    write: &Store,
) -> Result<(), OpsError> {
    work.put("plan.json", job.plan.to_json().into_bytes())
        .map_err(failed)?;
    for file in &job.work_files {
        match file {
            WorkFile::Json(key, value) => work.put_json(key, value).map_err(failed)?,
            WorkFile::References(dataset, url) => crate::sources::write_references(dataset, url)?,
        }
    }
    for (path, shape) in &job.resize {
        zarr::resize(write, path, shape).map_err(|e| OpsError::Refused(e.to_string()))?;
    }
    for group in &job.groups {
        zarr::create_group(write, &group.path, options.zarr_format, &group.attributes)
            .map_err(failed)?;
    }
    for spec in &job.specs {
        zarr::create_array(write, spec).map_err(|e| OpsError::Refused(e.to_string()))?;
    }
    Ok(())
}

fn write_html_report(
    plan: &Plan,
    options: &RechunkOptions,
    markers: &Markers,
    summary: &RunSummary,
    path: &std::path::Path,
) -> Result<(), OpsError> {
    let mut records = Vec::new();
    for (i, stage) in plan.stages.iter().enumerate() {
        for (task, value) in markers.records(&stage.name).map_err(failed)? {
            records.push(crate::report::TaskRecord::from_marker(i, task, &value));
        }
    }
    let title = format!("rechunk {} → {}", options.source, options.target);
    let page = crate::report::html(plan, &title, &records, summary.seconds, memory::peak_rss());
    std::fs::write(path, page)
        .map_err(|e| OpsError::Failed(format!("{}: cannot write the report: {e}", path.display())))
}

/// The end of a complete run: the markers go; the work dir keeps the plan and a record of
/// completion when it was given (`--work-dir`) or `--keep-work` asks, and is removed
/// otherwise; the locks are released.
fn close(
    job: &RechunkJob,
    options: &RechunkOptions,
    work: &Store,
    markers: &Markers,
    report: &RechunkReport,
    locks: Vec<chunkmill_store::guard::Lock>,
) -> Result<(), OpsError> {
    markers.clear().map_err(failed)?;
    if options.work_dir.is_none() && !options.keep_work {
        return safety::remove_work_dir(work, locks);
    }
    work.put(
        &complete_key(&job.plan),
        serde_json::to_vec_pretty(report).map_err(failed)?,
    )
    .map_err(failed)?;
    work.erase(safety::SWAP_KEY).map_err(failed)?;
    safety::sweep(&[&job.work_dir])?;
    drop(locks);
    Ok(())
}
