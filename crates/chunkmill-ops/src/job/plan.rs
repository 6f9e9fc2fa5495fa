//! Planning one array of a job into stages: target chunks, the cheapest rechunk plan within
//! the budget, the stages end to end (the first reading the job's input endpoint, the last
//! writing the target), and the target array's metadata.

use chunkmill_exec::budget::{Budget, TASK_OVERHEAD};
use chunkmill_grid::rechunk::{MediumCost, RechunkPlan, RechunkProblem, Strategy};
use chunkmill_grid::{Grid, GridError};
use chunkmill_plan::{CopyStage, Endpoint, PieceCodec, Stage, StageKind};
use chunkmill_store::zarr::{self, ArrayInfo, ArraySpec, Compressor, Encoding};
use chunkmill_store::{Store, StoreKind};
use serde::Serialize;

use super::{human, Executor, JobOptions, TargetLayout, WorkFile};
use crate::spec::ChunkSpec;
use crate::OpsError;

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
    /// Source bytes the first stage decodes per byte of the array.
    pub passes: f64,
    /// How the intermediate pieces are stored, when the plan writes any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PieceCodec>,
    /// The cheapest plan of every other kind that fits, as the model priced it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alternatives: Vec<Alternative>,
    /// Why the chosen plan won, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// A plan the cost model priced and did not choose.
#[derive(Clone, Debug, Serialize)]
pub struct Alternative {
    pub strategy: Strategy,
    /// How its intermediate pieces would be stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PieceCodec>,
    pub estimated_seconds: f64,
    pub concurrency: u64,
    /// Source bytes decoded per byte of the array.
    pub passes: f64,
}

impl Alternative {
    /// `intermediate (lz4 pieces)`, `multipass (3.5 passes)`, `direct`.
    #[must_use]
    pub fn describe(&self) -> String {
        describe_strategy(self.strategy, self.pieces, self.passes)
    }
}

/// The chosen strategy of `array` in words (`intermediate (lz4 pieces)`).
#[must_use]
pub fn plan_strategy(array: &ArrayPlan) -> String {
    describe_strategy(array.strategy, array.pieces, array.passes)
}

/// A strategy in words, with its pieces' codec or its passes over the source.
#[must_use]
pub fn describe_strategy(strategy: Strategy, pieces: Option<PieceCodec>, passes: f64) -> String {
    match (strategy, pieces) {
        (Strategy::Multipass, _) => format!("multipass ({passes:.1} passes)"),
        (Strategy::Intermediate | Strategy::Multistage, Some(codec)) => {
            format!("{strategy} ({codec} pieces)")
        }
        _ => strategy.to_string(),
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
pub(crate) fn check_format(layout: &TargetLayout) -> Result<(), OpsError> {
    if layout.zarr_format != 2 && layout.zarr_format != 3 {
        return Err(OpsError::Usage(format!(
            "--zarr-format must be 2 or 3, got {}",
            layout.zarr_format
        )));
    }
    if layout.shards.is_some() && layout.zarr_format != 3 {
        return Err(OpsError::Usage(
            "--shards needs Zarr v3 (--zarr-format 3)".into(),
        ));
    }
    Ok(())
}

/// What every array of a job is planned against.
pub(crate) struct PlanContext<'a> {
    pub layout: &'a TargetLayout,
    pub options: &'a JobOptions,
    pub target: &'a Store,
    pub temp: &'a Store,
    pub budget: Budget,
    /// The cores a threads job's plan kinds are compared at ([`planning_cores`]).
    pub cores: u64,
}

impl<'a> PlanContext<'a> {
    /// What every array of a job writing `target` is planned against.
    pub(crate) fn new(
        budget: Budget,
        layout: &'a TargetLayout,
        options: &'a JobOptions,
        target: &'a Store,
        temp: &'a Store,
        work: &Store,
    ) -> Result<Self, OpsError> {
        Ok(Self {
            layout,
            options,
            target,
            temp,
            budget,
            cores: planning_cores(options, work)?,
        })
    }

    /// The work-dir record of [`PlanContext::cores`], which a resume of the job plans with.
    pub(crate) fn cores_record(&self) -> WorkFile {
        WorkFile::Json(
            CORES_KEY.to_string(),
            serde_json::json!({ "cores": self.cores }),
        )
    }
}

/// The work-dir key recording the cores a job's plan kinds were compared at.
pub(crate) const CORES_KEY: &str = crate::work_files::CORES_KEY;

/// The cores a threads job's plan kinds are compared at: this machine's, or on `--resume`
/// those the resumed run recorded ([`CORES_KEY`]). The plan, and so its id, depends on them:
/// a run resumed on a node with another core count (a batch job requeued elsewhere) must
/// find the plan its work dir holds, not be refused as another job.
///
/// # Errors
/// [`OpsError`] when the work dir cannot be read.
pub(crate) fn planning_cores(options: &JobOptions, work: &Store) -> Result<u64, OpsError> {
    if options.resume {
        let recorded = work
            .get(CORES_KEY)?
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|record| record.get("cores").and_then(serde_json::Value::as_u64))
            .filter(|&cores| cores > 0);
        if let Some(cores) = recorded {
            return Ok(cores);
        }
    }
    Ok(std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
}

/// The intermediates dir in a work dir, when no `--temp` is given.
pub(crate) const DEFAULT_TEMP: &str = crate::work_files::DEFAULT_TEMP;

/// Where intermediates go (its URL and store): `intermediate` in the work dir, or a directory
/// of this job's own in `--temp` ([`crate::safety::job_temp_name`]), so that jobs sharing one
/// `--temp` never write, read or erase each other's pieces (their keys are alike: `a0-s1/…`).
pub(crate) fn temp_store(options: &JobOptions, work: &Store) -> Result<(String, Store), OpsError> {
    let url = match &options.temp {
        Some(temp) => Store::open(temp)?.join(&crate::safety::job_temp_name(&options.target)),
        None => work.join(DEFAULT_TEMP),
    };
    let store = Store::open(&url)?;
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
    /// The ways an intermediate may be stored, each priced ([`super::costs::piece_media`]);
    /// empty: raw pieces at the default price.
    pub piece_media: Vec<(PieceCodec, MediumCost)>,
}

/// The stages of one array, what to delete afterwards, its summary and its target metadata.
pub(crate) struct PlannedArray {
    pub stages: Vec<Stage>,
    pub cleanup: Vec<(String, String)>,
    pub summary: ArrayPlan,
    pub spec: ArraySpec,
}

/// Plan one array: target chunks, stages (first one reading `job.input`), metadata.
pub(crate) fn plan_array(
    context: &PlanContext<'_>,
    job: &ArrayJob<'_>,
) -> Result<PlannedArray, OpsError> {
    let PlanContext {
        layout,
        options,
        target,
        temp,
        budget: Budget { task_budget, .. },
        cores,
    } = *context;
    let info = job.info;
    let (chunks, shards) = target_chunks(layout, job)?;
    let encoding = match &layout.codec {
        Some(c) => Encoding::Compressor(c.clone()),
        None => zarr::inherit_encoding(info, layout.zarr_format).map_err(OpsError::Usage)?,
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
    let media: Vec<MediumCost> = job.piece_media.iter().map(|(_, m)| *m).collect();
    let codec_of = |m: usize| job.piece_media.get(m).map_or(PieceCodec::Raw, |(c, _)| *c);
    // Threads of this process share its machine's cores; other executors' workers run on
    // their own (the cores of a batch engine are not known here).
    let planned = match options.executor {
        Executor::Threads => problem.plan_among_cores(&media, cores),
        _ => problem.plan_among(&media),
    };
    let plan: RechunkPlan = planned.map_err(|e| match e {
        GridError::DoesNotFit { task_bytes, .. } => {
            let refused = context.budget.admit(task_bytes).err();
            OpsError::Refused(match refused {
                Some(refused) => format!(
                    "'{}': {refused} (or choose smaller chunks)",
                    display_path(&info.path)
                ),
                None => format!(
                    "'{}': no plan fits the task budget {}",
                    display_path(&info.path),
                    human(task_budget)
                ),
            })
        }
        other => OpsError::from(other).about(format_args!("'{}'", display_path(&info.path))),
    })?;
    let pieces = (plan.stages.len() > 1).then(|| codec_of(plan.medium));
    let (stages, cleanup) = lay_stages(target, temp, job, &plan, pieces.unwrap_or_default());
    let alternatives: Vec<Alternative> = plan
        .alternatives
        .iter()
        .map(|a| Alternative {
            strategy: a.strategy,
            pieces: a.medium.map(codec_of),
            estimated_seconds: a.estimated_seconds,
            concurrency: a.concurrency,
            passes: a.passes,
        })
        .collect();
    let why = why_chosen(&problem, &plan, pieces, &alternatives);
    let summary = ArrayPlan {
        path: info.path.clone(),
        shape: info.shape.clone(),
        dtype: info.dtype.to_string(),
        source_chunks: info.chunks.clone(),
        target_chunks: chunks.clone(),
        target_shards: shards.clone(),
        strategy: plan.strategy,
        estimated_seconds: plan.estimated_seconds,
        concurrency: plan.concurrency,
        nbytes: info.nbytes(),
        passes: plan
            .stages
            .first()
            .map_or(1.0, |s| s.bytes_read as f64 / (info.nbytes().max(1) as f64)),
        pieces,
        alternatives,
        why,
    };
    let (fill_value, attributes) = zarr::translate_fill(info, layout.zarr_format);
    let spec = ArraySpec {
        path: info.path.clone(),
        zarr_format: layout.zarr_format,
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

/// The target chunks and shards of one array: exact ones given by the job, or the layout's
/// spec resolved against the array (a coordinate whole, in one chunk).
fn target_chunks(
    layout: &TargetLayout,
    job: &ArrayJob<'_>,
) -> Result<(Vec<u64>, Option<Vec<u64>>), OpsError> {
    let info = job.info;
    let data_chunks = match &job.chunks {
        Some(fixed) => Some(fixed.clone()),
        None => resolve(&layout.chunks, info, &info.chunks)?,
    };
    // A coordinate is written as one chunk, which needs no shard around it.
    let whole_coordinate = job.chunks.is_none() && is_coordinate(info) && data_chunks.is_some();
    let chunks = if whole_coordinate {
        vec![info.shape[0].max(1)]
    } else {
        data_chunks.unwrap_or_else(|| info.chunks.clone())
    };
    let shards = match &layout.shards {
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
    Ok((chunks, shards))
}

/// The stages of `plan` end to end: the first reads `job.input`, each next one the pieces the
/// one before left in `temp`, the last writes the target; the pieces to delete afterwards.
fn lay_stages(
    target: &Store,
    temp: &Store,
    job: &ArrayJob<'_>,
    plan: &RechunkPlan,
    codec: PieceCodec,
) -> (Vec<Stage>, Vec<(String, String)>) {
    let (index, info) = (job.index, job.info);
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
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
                codec,
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
                codec,
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
    (stages, cleanup)
}

/// Why the model chose `plan`: the runner-up and what it would cost, and whether a plan that
/// decodes every source chunk once (direct) fits the budget at all.
fn why_chosen(
    problem: &RechunkProblem,
    plan: &RechunkPlan,
    pieces: Option<PieceCodec>,
    alternatives: &[Alternative],
) -> String {
    if alternatives.is_empty() && plan.strategy == Strategy::Direct {
        return String::new();
    }
    let total = (problem.shape.iter().product::<u64>() * problem.item_size).max(1);
    let passes = plan
        .stages
        .first()
        .map_or(1.0, |s| s.bytes_read as f64 / total as f64);
    let chosen = describe_strategy(plan.strategy, pieces, passes);
    let mut why = match alternatives.first() {
        Some(next) => format!(
            "{chosen} is the cheapest that fits (~{:.1} s); next {} ~{:.1} s",
            plan.estimated_seconds,
            next.describe(),
            next.estimated_seconds
        ),
        None => format!("{chosen} is the only plan that fits"),
    };
    if plan.strategy != Strategy::Direct
        && !alternatives.iter().any(|a| a.strategy == Strategy::Direct)
    {
        if let Some(bytes) = problem.direct_task_memory() {
            why.push_str(&format!(
                "; direct (each source chunk decoded once) needs {} per task, more than the budget gives",
                human(bytes)
            ));
        }
    }
    why
}
