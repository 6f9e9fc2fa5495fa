//! `chunkmill convert`: archival files, references or Zarr → an analysis-ready Zarr store with
//! new chunks, a selection and transforms, in parallel and within a memory budget.
//!
//! The job, top-down:
//! 1. open the inputs ([`sources`]): files are scanned and combined as `virtualize`
//!    does (every check included), references read, or a Zarr store listed;
//! 2. choose the arrays (`--variables`, `--drop`, and the coordinates of the chosen ones);
//! 3. resolve the selection per dimension (`--select` by coordinate value, CF times
//!    included; `--isel` by index) and `--reverse`, into one window per axis;
//! 4. describe each output array: renamed, its shape the window's, its values unpacked
//!    (`--decode-cf`) or cast (`--cast`), its attributes adjusted;
//! 5. plan each array exactly as `rechunk` does, its first stage reading the source through
//!    an [`Endpoint::Window`] whose chunks are cut at the source's chunk boundaries, so every
//!    task owns whole, aligned output regions and reads each source chunk once;
//! 6. run it with the same executor, markers, retries and resume as `rechunk`.
//!
//! A selection that cuts through source chunks reads more than it keeps: the plan shows the
//! read amplification, a warning names the nearest aligned selection, and
//! `--strict-alignment` refuses instead.

use std::collections::BTreeMap;

use chunkmill_exec::Event;
use chunkmill_grid::Grid;
use chunkmill_plan::{AxisWindow, Endpoint, Plan, ValueMap};
use chunkmill_store::zarr::{ArrayInfo, Compressor};
use chunkmill_store::Store;
use serde::Serialize;
use serde_json::{Map, Value};

pub mod append;
mod cf;
mod selection;
pub mod sources;
mod text;
mod tiles;

use chunkmill_exec::budget::Budget;

use crate::job::plan::{
    display_path, is_coordinate, last_segment, medium_cost, plan_array, temp_store, ArrayJob,
    PlanContext,
};
use crate::job::{run_job, Job, JobOptions, JobReport, TargetLayout, WorkFile};
use crate::values::numeric;
use crate::OpsError;
use cf::{numbers, typed_attribute, PartDecoding};
use chunkmill_grid::rechunk::Strategy;
use chunkmill_store::DataType;
use selection::{
    aligned_range, axis_read, cf_time_period, datetime64_seconds, element_values, index_range,
    is_descending, missing_day, value_range, window_axis, Bound, DATETIME64_CALENDAR,
    DATETIME64_UNITS,
};
pub use selection::{IndexSelection, ValueSelection};
use sources::{Source, SourceArray};
use tiles::Tiling;

/// CF attributes that `--decode-cf` applies and then removes.
const PACKING_ATTRIBUTES: [&str; 4] = ["scale_factor", "add_offset", "_FillValue", "missing_value"];

/// Everything `chunkmill convert` is asked.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Inputs: paths, globs, `s3://` URLs, `@lists`; or one reference file or Zarr store.
    pub inputs: Vec<String>,
    /// Target chunks, shards, codec and format.
    pub layout: TargetLayout,
    /// Target, budget, executor and the rest of the run.
    pub job: JobOptions,
    /// The group of the inputs to convert (`sub`, `a/b`), as xarray's `group=`: it becomes
    /// the target's root. `None` converts every group.
    pub group: Option<String>,
    /// Only these variables (and their coordinates); all when empty.
    pub variables: Vec<String>,
    /// Variables left out.
    pub drop: Vec<String>,
    /// Selections by coordinate value.
    pub select: Vec<ValueSelection>,
    /// Selections by index.
    pub isel: Vec<IndexSelection>,
    /// Dimensions read backwards (descending latitudes become ascending).
    pub reverse: Vec<String>,
    /// New names of variables and dimensions.
    pub rename: Vec<(String, String)>,
    /// Unpack CF-packed values (`scale_factor`, `add_offset`) and mask `_FillValue` and
    /// `missing_value` as NaN.
    pub decode_cf: bool,
    /// Data type per variable.
    pub cast: Vec<(String, String)>,
    /// Concatenate input files along this dimension.
    pub concat_dim: Option<String>,
    /// Variables that must be equal in every input file.
    pub identical_dims: Vec<String>,
    /// Stack the input files along `concat_dim`, a new dimension.
    pub stack: bool,
    /// Whether variables without the concat dimension are compared between input files.
    pub compat: chunkmill_manifest::Compat,
    /// Refuse a selection that cuts through source chunks.
    pub strict_alignment: bool,
    /// Add the inputs to the existing target along this dimension.
    pub append: Option<String>,
    /// Append even when the new data does not start one step after the cache's end.
    pub allow_gap: bool,
    /// Prefixes (paths or URLs) a reference input's chunks may point into, besides the
    /// directory holding the reference file ([`chunkmill_manifest::ReferenceAccess`]).
    pub allow_refs: Vec<String>,
    /// Cut these dimensions in tiles of these sizes, stacked along a new first dimension
    /// `tile`, one tile per chunk; a remainder shorter than a tile is left out.
    pub tile: Vec<(String, u64)>,
}

/// A selection that reads more than it keeps.
#[derive(Clone, Debug, Serialize)]
pub struct Misalignment {
    /// The array.
    pub array: String,
    /// Bytes decoded / bytes kept.
    pub amplification: f64,
    /// The nearest selection on source chunk boundaries, as flags.
    pub suggestion: String,
}

/// A planned conversion.
#[derive(Clone, Debug)]
pub struct ConvertJob {
    /// The plan and the target's metadata, run as a rechunk is.
    pub job: Job,
    /// Selections that cut through source chunks.
    pub misaligned: Vec<Misalignment>,
    /// Set when an append finds every input value already in the cache: nothing runs.
    pub nothing_new: Option<String>,
    /// Decisions taken for the user (an inferred concat dimension), one line each.
    pub notes: Vec<String>,
    /// The cost model's coefficients and where they came from (none for an append).
    pub costs: Option<(crate::job::costs::Coefficients, crate::job::costs::Origin)>,
}

/// The stored types of a virtual array's attributes (none for a Zarr source).
fn attribute_types<'a>(source: &'a Source, key: &str) -> Option<&'a BTreeMap<String, String>> {
    match source {
        Source::Virtual(dataset) => dataset.arrays.get(key).map(|a| &a.metadata.attribute_types),
        Source::Zarr { .. } => None,
    }
}

/// What `--decode-cf` and `--cast` do to one array's values: the value map, the output type
/// and the attributes left. `None` when the values are read as stored.
struct Values {
    map: Option<ValueMap>,
    /// With inputs that encode the array differently: each input's part and its map (which
    /// replace `map`).
    parts: Option<Vec<PartDecoding>>,
    out_dtype: DataType,
    /// Whether the CF packing was applied (its attributes removed).
    decoded: bool,
}

/// How each input encodes `key`, when the inputs differ (see
/// [`chunkmill_manifest::CombineOptions::decode_per_input`]).
fn input_encodings<'a>(
    source: &'a Source,
    key: &str,
) -> Option<&'a [chunkmill_manifest::InputEncoding]> {
    match source {
        Source::Virtual(dataset) => dataset.encodings.get(key).map(Vec::as_slice),
        Source::Zarr { .. } => None,
    }
}

/// Decides the values of `array` under `--decode-cf`/`--cast`, refusing before anything is
/// written a cast into an integer type that could not hold every value the array may have.
fn array_values(
    options: &ConvertOptions,
    source: &Source,
    array: &SourceArray,
    cast: Option<&str>,
    attributes: &mut Map<String, Value>,
) -> Result<Values, OpsError> {
    let info = &array.info;
    let source_type = info.dtype.clone();
    // Text, datetimes and complex numbers are copied as they are unless a cast asks more.
    if !source_type.is_numeric() && cast.is_none() {
        return Ok(Values {
            map: None,
            parts: None,
            out_dtype: source_type,
            decoded: false,
        });
    }
    let source_range = source_type.range().ok_or_else(|| {
        OpsError::Refused(format!(
            "--cast {}: '{}' holds {}, which cannot be cast; cast numbers and booleans only",
            last_segment(&array.key),
            array.key,
            source_type
        ))
    })?;
    let encodings = input_encodings(source, &array.key).filter(|_| options.decode_cf);
    let decode = options.decode_cf
        && (encodings.is_some()
            || PACKING_ATTRIBUTES
                .iter()
                .any(|a| attributes.contains_key(*a)))
        && !is_time_like(attributes);
    let mut map = None;
    let mut parts = None;
    let mut out_dtype = info.dtype.clone();
    // The values before a cast could be anything in this range.
    let mut range = range_attribute(attributes, &["valid_range", "actual_range"])
        .or_else(|| {
            let min = typed_attribute(attributes, None, "valid_min")?.0;
            let max = typed_attribute(attributes, None, "valid_max")?.0;
            Some((min, max))
        })
        .unwrap_or(source_range);
    if decode {
        let types = attribute_types(source, &array.key);
        // CF's valid_range is in packed units (actual_range in unpacked ones, but xarray
        // leaves both as they are): the bounds are unpacked as the values are.
        let unpacked = attributes.contains_key("actual_range");
        if let Some(encodings) = encodings {
            let decodings =
                cf::per_input(&array.key, &source_type, encodings, types, range, unpacked)?;
            out_dtype = decodings.out;
            range = decodings.range;
            parts = Some(decodings.parts);
        } else {
            let d = cf::decoding(&array.key, &source_type, attributes, types, range, unpacked)?;
            out_dtype = d.compute;
            range = d.range;
            map = Some(d.map);
        }
        for a in PACKING_ATTRIBUTES {
            attributes.remove(a);
        }
    }
    if let Some(to) = cast {
        let to_type =
            numeric(to).map_err(|e| OpsError::Usage(format!("--cast {}: {e}", array.key)))?;
        if !to_type.holds(range.0, range.1) {
            return Err(OpsError::Refused(format!(
                "--cast {}={to}: '{}' may hold values from {} to {}{}, which {to} cannot store (numpy's astype would wrap them around silently); cast to a wider type{}",
                last_segment(&array.key),
                array.key,
                range.0,
                range.1,
                if decode { " once unpacked" } else { "" },
                if source_type.is_float() && !decode {
                    ", or give the variable a valid_range or actual_range attribute that shows its values fit"
                } else {
                    ""
                }
            )));
        }
        out_dtype = to_type.clone();
        for p in parts.iter_mut().flatten() {
            p.map.to = to.to_string();
        }
        map = match (map, &parts) {
            (Some(mut map), _) => {
                map.to = to.to_string();
                Some(map)
            }
            (None, Some(_)) => None,
            (None, None) => Some(ValueMap {
                from: info.dtype.to_string(),
                to: to.to_string(),
                missing: Vec::new(),
                scale: None,
                offset: None,
                compute: None,
            }),
        };
    }
    Ok(Values {
        map,
        parts,
        out_dtype,
        decoded: decode,
    })
}

/// What an output array reads: `plain` itself, or seen through the window `axes` (cut at the
/// source's chunk boundaries) with its values converted, by one map or per input part.
fn read_through(
    plain: Endpoint,
    axes: &[AxisWindow],
    info: &ArrayInfo,
    values: Option<&ValueMap>,
    parts: Option<&[PartDecoding]>,
) -> Result<Endpoint, String> {
    if let Some(parts) = parts {
        return cf::windows_per_input(&plain, axes, &info.chunks, parts);
    }
    let windowed = axes
        .iter()
        .zip(&info.shape)
        .any(|(w, &len)| w.start != 0 || w.len != len || w.reverse)
        || values.is_some();
    if !windowed {
        return Ok(plain);
    }
    let grid = Grid::new(
        axes.iter()
            .zip(&info.chunks)
            .map(|(w, &size)| window_axis(size, w))
            .collect::<Result<Vec<_>, _>>()?,
    );
    Ok(Endpoint::Window {
        source: Box::new(plain),
        axes: axes.to_vec(),
        values: values.cloned(),
        grid,
    })
}

/// The two numbers of a range attribute (`valid_range`, `actual_range`), the first found.
fn range_attribute(attributes: &Map<String, Value>, names: &[&str]) -> Option<(f64, f64)> {
    names
        .iter()
        .find_map(|name| match numbers(attributes.get(*name)).as_slice() {
            [a, b] if a <= b => Some((*a, *b)),
            _ => None,
        })
}

pub(crate) struct Renames<'a>(&'a [(String, String)]);

impl Renames<'_> {
    pub(crate) fn apply(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(old, _)| old == name)
            .map_or_else(|| name.to_string(), |(_, new)| new.clone())
    }

    pub(crate) fn apply_path(&self, key: &str) -> String {
        match key.rsplit_once('/') {
            Some((group, last)) => format!("{group}/{}", self.apply(last)),
            None => self.apply(key),
        }
    }
}

/// Plan a conversion without writing anything.
///
/// # Errors
/// [`OpsError::Usage`] for a malformed request; [`OpsError::Refused`] for inputs that are
/// missing or inconsistent, a selection outside the data, a misaligned selection under
/// `--strict-alignment`, or a budget no plan fits.
pub fn plan_convert(options: &ConvertOptions) -> Result<ConvertJob, OpsError> {
    if options.append.is_some() {
        return append::plan_append(options);
    }
    let prepared = prepare(options)?;
    let run = &options.job;
    let (context_parts, temp) = budget(options, &prepared)?;
    let inputs = inputs_of(options, &prepared.source);
    let write_url = crate::safety::write_url(run.paths(), &prepared.work_dir, &inputs, false)?;
    let target = Store::open(&write_url)?;
    let work = Store::open(&prepared.work_dir)?;
    let context = PlanContext::new(context_parts, &options.layout, run, &target, &temp, &work)?;
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
    let mut summaries = Vec::new();
    let mut specs = Vec::new();
    let mut costs = None;
    for (index, output) in prepared.outputs.iter().enumerate() {
        let mut job = ArrayJob {
            index,
            info: &output.info,
            input: output.input.clone(),
            source_cost: medium_cost(None, prepared.source.kind()),
            extra_task_mem: output.extra_task_mem,
            read_factor: output.read_factor,
            chunks: output.chunks.clone(),
            write_at: None,
            piece_media: Vec::new(),
        };
        let mut planned = plan_array(&context, &job)?;
        // Priced with measured coefficients only where the data may be read twice or go
        // through an intermediate: a direct plan decodes each source chunk once, whatever
        // the coefficients, so small jobs never measure anything.
        if planned.summary.strategy != Strategy::Direct {
            if costs.is_none() {
                costs = Some(job_coefficients(options, &work, &temp)?);
            }
            if let Some((coefficients, _)) = &costs {
                priced(&mut job, &prepared, output, coefficients, temp.kind());
                planned = plan_array(&context, &job)?;
            }
        }
        stages.extend(planned.stages);
        cleanup.extend(planned.cleanup);
        summaries.push(planned.summary);
        specs.push(planned.spec);
    }
    let plan =
        Plan::new("convert", run.max_mem, stages, cleanup).with_urls(crate::work::absolute_url);
    let keys: Vec<&str> = specs.iter().map(|s| s.path.as_str()).collect();
    let groups = prepared
        .source
        .groups_for(&keys, options.layout.zarr_format);
    let mut work_files: Vec<WorkFile> = prepared.references().into_iter().collect();
    work_files.push(context.cores_record());
    if let Some((coefficients, _)) = &costs {
        let record = crate::job::costs::record(coefficients);
        work_files.push(WorkFile::Json(crate::job::costs::RECORD_KEY.into(), record));
    }
    Ok(ConvertJob {
        job: Job {
            plan,
            source: sources::describe(&options.inputs),
            zarr_format: options.layout.zarr_format,
            arrays: summaries,
            groups,
            specs,
            task_budget: context_parts.task_budget,
            baseline: context_parts.baseline,
            work_dir: prepared.work_dir.clone(),
            temp: temp.url().to_string(),
            existing_target: false,
            resize: Vec::new(),
            work_files,
            write_url,
            inputs,
            left_out: Vec::new(),
        },
        misaligned: prepared.misaligned.clone(),
        nothing_new: None,
        notes: prepared.notes.clone(),
        costs,
    })
}

/// The cost model's coefficients: on `--resume`, those the resumed run recorded in its work
/// dir (so the plan, and its id, come out the same although the cache was deleted or
/// measures differently now), else the cached, measured or given ones.
fn job_coefficients(
    options: &ConvertOptions,
    work: &Store,
    temp: &Store,
) -> Result<(crate::job::costs::Coefficients, crate::job::costs::Origin), OpsError> {
    if options.job.resume {
        if let Some(found) = crate::job::costs::recorded(work)? {
            return Ok(found);
        }
    }
    crate::job::costs::coefficients(temp)
}

/// `job` priced with measured coefficients: its source by the codecs its chunks go through,
/// its intermediates raw or compressed at the ratios one source chunk of it gives.
fn priced(
    job: &mut ArrayJob<'_>,
    prepared: &Prepared,
    output: &OutputArray,
    coefficients: &crate::job::costs::Coefficients,
    temp_kind: chunkmill_store::StoreKind,
) {
    use crate::job::costs;
    let codecs: Vec<String> = match &prepared.source {
        Source::Virtual(dataset) => dataset
            .arrays
            .get(&output.source_key)
            .map(|a| a.metadata.codecs.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
        Source::Zarr { .. } => {
            let compressor = prepared
                .arrays
                .iter()
                .find(|a| a.key == output.source_key)
                .and_then(|a| a.info.compressor.clone());
            match compressor {
                Some(Compressor::Zstd(_)) => vec!["zstd".into()],
                Some(Compressor::Gzip(_)) => vec!["gzip".into()],
                Some(Compressor::Blosc { cname, .. }) => vec!["shuffle".into(), cname],
                Some(Compressor::None) => vec!["bytes".into()],
                None => Vec::new(),
            }
        }
    };
    if !codecs.is_empty() {
        job.source_cost = costs::source_cost(coefficients, &codecs, prepared.source.kind());
    }
    // The references are written to the work dir only when the job runs: the runner gets
    // them from memory, so planning reads the same chunks whether or not they are there yet.
    let runner = crate::tasks::StageRunner::new();
    if let Source::Virtual(dataset) = &prepared.source {
        runner.preload_references(&prepared.references_url, dataset.clone());
    }
    let ratios = sample_ratios(&runner, &output.input, output.info.item_size)
        .unwrap_or(costs::Ratios::TYPICAL);
    job.piece_media = costs::piece_media(coefficients, ratios, temp_kind);
}

/// How much LZ4 and Zstandard-1 shrink the first chunk the array's first stage reads: one
/// source chunk decoded, a millisecond or so.
fn sample_ratios(
    runner: &crate::tasks::StageRunner,
    input: &Endpoint,
    item: usize,
) -> Option<crate::job::costs::Ratios> {
    use chunkmill_plan::PieceCodec;
    let grid = input.grid();
    if grid.num_chunks() == 0 || item == 0 {
        return None;
    }
    let region = grid.chunk_region(&vec![0; grid.ndim()]);
    let raw = runner.read_region(input, &region, item).ok()?;
    if raw.is_empty() {
        return None;
    }
    let mut stored = Vec::new();
    let mut ratio = |codec| {
        crate::tasks::pieces::encode_piece(codec, &raw, &mut stored).ok()?;
        Some(raw.len() as f64 / stored.len().max(1) as f64)
    };
    Some(crate::job::costs::Ratios {
        lz4: ratio(PieceCodec::Lz4)?,
        zstd1: ratio(PieceCodec::Zstd1)?,
    })
}

/// The budget and the intermediate store of a conversion.
pub(crate) fn budget(
    options: &ConvertOptions,
    prepared: &Prepared,
) -> Result<(Budget, Store), OpsError> {
    let work = Store::open(&prepared.work_dir)?;
    let (_, temp) = temp_store(&options.job, &work)?;
    Ok((Budget::for_max_mem(options.job.max_mem), temp))
}

/// One array of the target: what it holds and how the first stage reads it.
#[derive(Clone, Debug)]
pub(crate) struct OutputArray {
    /// The source array it comes from.
    pub source_key: String,
    /// Shape, data type, chunks (the source's), names, attributes of the target array.
    pub info: ArrayInfo,
    /// What the first stage reads, in the target's coordinates.
    pub input: Endpoint,
    /// Bytes a first-stage task holds besides what the copy task counts.
    pub extra_task_mem: u64,
    /// Source bytes decoded per byte the target keeps: above 1 where a selection or tiles cut
    /// through source chunks, or where the values are converted to another size.
    pub read_factor: f64,
    /// Exact target chunks (tiles: one per chunk), instead of what `--chunks` gives.
    pub chunks: Option<Vec<u64>>,
}

/// A request resolved against the inputs: the arrays to write and how to read them.
pub(crate) struct Prepared {
    pub source: Source,
    /// Every array of the source, as listed once.
    pub arrays: Vec<SourceArray>,
    pub outputs: Vec<OutputArray>,
    pub misaligned: Vec<Misalignment>,
    pub work_dir: String,
    pub references_url: String,
    /// See [`ConvertJob::notes`].
    pub notes: Vec<String>,
}

impl Prepared {
    /// The references the plan's tasks read, to write before they run.
    pub(crate) fn references(&self) -> Option<WorkFile> {
        match &self.source {
            Source::Virtual(dataset) => Some(WorkFile::References(
                dataset.clone(),
                self.references_url.clone(),
            )),
            Source::Zarr { .. } => None,
        }
    }
}

/// Opens the inputs and resolves the selection, transforms and names into output arrays.
pub(crate) fn prepare(options: &ConvertOptions) -> Result<Prepared, OpsError> {
    let run = &options.job;
    crate::job::plan::check_format(&options.layout)?;
    let target = Store::open(&run.target)?;
    let (source, notes) = sources::open(
        &options.inputs,
        &chunkmill_manifest::CombineOptions {
            concat_dim: options.concat_dim.clone(),
            stack: options.stack,
            identical_dims: options.identical_dims.clone(),
            compat: options.compat,
            dropped: Some(options.drop.clone()),
            keep: (!options.variables.is_empty()).then(|| options.variables.clone()),
            decode_per_input: options.decode_cf,
            threads: 0,
        },
        &options.allow_refs,
        options.group.as_deref(),
    )?;
    if let Source::Zarr { store, .. } = &source {
        if store.url() == target.url() {
            return Err(OpsError::Usage(format!(
                "{}: the target is the source; chunkmill never modifies a source",
                target.url()
            )));
        }
    }
    let source_name = sources::describe(&options.inputs);
    let all = source.arrays();
    let chosen = choose_arrays(options, &all, &source_name)?;
    let dim_len = dimension_lengths(&all);
    let ranges = index_ranges(options, &dim_len, &source_name)?;
    let (ranges, coordinate_values) =
        value_ranges(options, &source, &all, &dim_len, &source_name, ranges)?;
    check_names(options, &all, &chosen, &dim_len, &source_name)?;
    let renames = Renames(&options.rename);
    let work_dir = run
        .work_dir
        .clone()
        .unwrap_or_else(|| crate::job::plan::default_work_dir(target.url()));
    let work = Store::open(&work_dir)?;
    let references_url = work.join("sources.json");
    let tiling = if options.tile.is_empty() {
        None
    } else {
        Some(Tiling::new(&options.tile, &dim_len, &ranges)?)
    };
    let mut outputs = Vec::new();
    let mut misaligned = Vec::new();
    let outputs_of = Outputs {
        options,
        source: &source,
        all: &all,
        ranges: &ranges,
        coordinate_values: &coordinate_values,
        renames: &renames,
        tiling: tiling.as_ref(),
        references_url: &references_url,
    };
    for array in &chosen {
        outputs_of.add(array, &mut outputs, &mut misaligned)?;
    }
    if options.strict_alignment && !misaligned.is_empty() {
        let m = &misaligned[0];
        return Err(OpsError::Refused(format!(
            "'{}': the selection cuts through source chunks and reads {:.2}× what it keeps (--strict-alignment); nearest aligned: {}",
            display_path(&m.array),
            m.amplification,
            m.suggestion
        )));
    }
    Ok(Prepared {
        source,
        arrays: all,
        outputs,
        misaligned,
        work_dir,
        references_url,
        notes,
    })
}

/// The source array `name` names (its key, or its last segment).
fn find_array<'a>(all: &'a [SourceArray], name: &str) -> Option<&'a SourceArray> {
    all.iter()
        .find(|a| a.key == name.trim_matches('/') || last_segment(&a.key) == name)
}

/// The source's arrays, for messages.
fn names(all: &[SourceArray]) -> String {
    all.iter()
        .map(|a| a.key.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The arrays to convert: `--variables` (all when empty) and their coordinates, less
/// `--drop`, sorted by key.
fn choose_arrays<'a>(
    options: &ConvertOptions,
    all: &'a [SourceArray],
    source_name: &str,
) -> Result<Vec<&'a SourceArray>, OpsError> {
    let find = |name: &str| find_array(all, name);
    // With --variables, the combine left out what was not asked for: a --drop of one of those
    // has nothing to do.
    let checked_drops = if options.variables.is_empty() {
        options.drop.as_slice()
    } else {
        &[]
    };
    for name in options.variables.iter().chain(checked_drops) {
        if find(name).is_none() {
            return Err(OpsError::Refused(format!(
                "{source_name}: no variable '{name}'; variables: {}",
                names(all)
            )));
        }
    }
    let dropped = |a: &SourceArray| {
        options
            .drop
            .iter()
            .any(|d| find(d).is_some_and(|f| f.key == a.key))
    };
    let mut chosen: Vec<&SourceArray> = if options.variables.is_empty() {
        all.iter().filter(|a| !dropped(a)).collect()
    } else {
        let mut chosen: Vec<&SourceArray> = options
            .variables
            .iter()
            .filter_map(|v| find(v))
            .filter(|a| !dropped(a))
            .collect();
        let dims: Vec<String> = chosen
            .iter()
            .flat_map(|a| a.info.dimension_names.clone().unwrap_or_default())
            .flatten()
            .collect();
        for a in all {
            if is_coordinate(&a.info)
                && dims.iter().any(|d| d == last_segment(&a.key))
                && !dropped(a)
                && !chosen.iter().any(|c| c.key == a.key)
            {
                chosen.push(a);
            }
        }
        chosen
    };
    chosen.sort_by(|a, b| a.key.cmp(&b.key));
    chosen.dedup_by(|a, b| a.key == b.key);
    if let Some(reason) = chosen.iter().find_map(|a| a.unsupported.as_ref()) {
        return Err(OpsError::Refused(reason.clone()));
    }
    if chosen.is_empty() {
        return Err(OpsError::Refused(format!(
            "{source_name}: no variable left to convert"
        )));
    }
    Ok(chosen)
}

/// The length of every named dimension of the source.
fn dimension_lengths(all: &[SourceArray]) -> BTreeMap<String, u64> {
    let mut dim_len: BTreeMap<String, u64> = BTreeMap::new();
    for a in all {
        for (d, &len) in a
            .info
            .dimension_names
            .clone()
            .unwrap_or_default()
            .iter()
            .zip(&a.info.shape)
        {
            if let Some(d) = d {
                dim_len.entry(d.clone()).or_insert(len);
            }
        }
    }
    dim_len
}

/// The length of dimension `dim`, which `flag` names; a usage error naming the dimensions if
/// there is none.
fn known(
    dim_len: &BTreeMap<String, u64>,
    dim: &str,
    flag: &str,
    source_name: &str,
) -> Result<u64, OpsError> {
    dim_len.get(dim).copied().ok_or_else(|| {
        OpsError::Usage(format!(
            "{flag} {dim}: no dimension '{dim}' in {source_name}; dimensions: {}",
            dim_len.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The window of each dimension `--isel` selects.
fn index_ranges(
    options: &ConvertOptions,
    dim_len: &BTreeMap<String, u64>,
    source_name: &str,
) -> Result<BTreeMap<String, std::ops::Range<u64>>, OpsError> {
    let mut ranges: BTreeMap<String, std::ops::Range<u64>> = BTreeMap::new();
    for sel in &options.isel {
        let len = known(dim_len, &sel.dim, "--isel", source_name)?;
        let range = index_range(len, sel.start, sel.stop);
        if range.is_empty() {
            return Err(OpsError::Refused(format!(
                "--isel {}: selects nothing of {len} indices",
                sel.dim
            )));
        }
        ranges.insert(sel.dim.clone(), range);
    }
    Ok(ranges)
}

/// The windows of `ranges` narrowed by `--select` (by coordinate value, CF times included),
/// and the coordinate values read to select by.
#[allow(clippy::type_complexity)]
fn value_ranges(
    options: &ConvertOptions,
    source: &Source,
    all: &[SourceArray],
    dim_len: &BTreeMap<String, u64>,
    source_name: &str,
    mut ranges: BTreeMap<String, std::ops::Range<u64>>,
) -> Result<
    (
        BTreeMap<String, std::ops::Range<u64>>,
        BTreeMap<String, Vec<f64>>,
    ),
    OpsError,
> {
    let mut coordinate_values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for sel in &options.select {
        let len = known(dim_len, &sel.dim, "--select", source_name)?;
        let coordinate = all
            .iter()
            .find(|a| a.key == sel.dim && a.info.shape.len() == 1)
            .ok_or_else(|| {
                OpsError::Refused(format!(
                    "--select {}: {source_name} has no coordinate variable '{}' to select by value; use --isel",
                    sel.dim, sel.dim
                ))
            })?;
        let bytes = source.read_all(coordinate)?;
        let unreadable = |e: String| OpsError::Refused(format!("--select {}: {e}", sel.dim));
        // A datetime64 coordinate holds dates as a CF time coordinate does, in numpy's units.
        let (values, units, calendar) = match &coordinate.info.dtype {
            DataType::DateTime(unit) => (
                datetime64_seconds(&bytes, unit).map_err(unreadable)?,
                Some(DATETIME64_UNITS),
                DATETIME64_CALENDAR,
            ),
            dtype => (
                element_values(&bytes, dtype).map_err(unreadable)?,
                coordinate.attributes.get("units").and_then(Value::as_str),
                coordinate
                    .attributes
                    .get("calendar")
                    .and_then(Value::as_str)
                    .unwrap_or("standard"),
            ),
        };
        // Each end names a period: a number itself, a date string what pandas' partial
        // string indexing reads in it (`2020-01-10` is the whole day).
        let parse = |text: &Option<String>| -> Result<Option<(f64, f64)>, OpsError> {
            let Some(text) = text else { return Ok(None) };
            // On a CF time coordinate, which xarray shows as dates, a bound is a date even
            // when it looks like a number (`2020` is the year).
            match (units, text.parse::<f64>()) {
                (Some(u), _) if u.contains(" since ") => {
                    if let Some(why) = missing_day(text, calendar) {
                        return Err(OpsError::Refused(format!("--select {}: {why}", sel.dim)));
                    }
                    cf_time_period(text, u, calendar)
                        .map(Some)
                        .map_err(|e| OpsError::Usage(format!("--select {}: {e}", sel.dim)))
                }
                (_, Ok(v)) => Ok(Some((v, v))),
                _ => Err(OpsError::Usage(format!(
                    "--select {}: '{text}' is not a number, and '{}' is not a CF time coordinate",
                    sel.dim, sel.dim
                ))),
            }
        };
        let (start, stop) = Bound::periods(
            parse(&sel.start)?,
            parse(&sel.stop)?,
            is_descending(&values),
        );
        let picked = value_range(&values, start, stop).map_err(|e| {
            OpsError::Refused(format!(
                "--select {}={}:{}: {e}",
                sel.dim,
                sel.start.as_deref().unwrap_or(""),
                sel.stop.as_deref().unwrap_or("")
            ))
        })?;
        let picked = match ranges.get(&sel.dim) {
            Some(earlier) => earlier.start.max(picked.start)..earlier.end.min(picked.end),
            None => picked,
        };
        if picked.is_empty() || picked.end > len {
            return Err(OpsError::Refused(format!(
                "--select {} and --isel {} together select nothing",
                sel.dim, sel.dim
            )));
        }
        coordinate_values.insert(sel.dim.clone(), values);
        ranges.insert(sel.dim.clone(), picked);
    }
    Ok((ranges, coordinate_values))
}

/// Refuses `--reverse`, `--rename` and `--cast` of what the source does not have, and casts to
/// unknown data types.
fn check_names(
    options: &ConvertOptions,
    all: &[SourceArray],
    chosen: &[&SourceArray],
    dim_len: &BTreeMap<String, u64>,
    source_name: &str,
) -> Result<(), OpsError> {
    for dim in &options.reverse {
        known(dim_len, dim, "--reverse", source_name)?;
    }
    for (old, _) in &options.rename {
        if find_array(all, old).is_none() && !dim_len.contains_key(old) {
            return Err(OpsError::Usage(format!(
                "--rename {old}: no variable or dimension '{old}'; variables: {}",
                names(all)
            )));
        }
    }
    check_renames(&options.rename, chosen, dim_len)?;
    for (name, dtype) in &options.cast {
        if find_array(all, name).is_none() {
            return Err(OpsError::Refused(format!(
                "--cast {name}: no variable '{name}'; variables: {}",
                names(all)
            )));
        }
        numeric(dtype).map_err(|e| OpsError::Usage(format!("--cast {name}: {e}")))?;
    }
    Ok(())
}

/// What every output array of a conversion is described against.
struct Outputs<'a> {
    options: &'a ConvertOptions,
    source: &'a Source,
    all: &'a [SourceArray],
    ranges: &'a BTreeMap<String, std::ops::Range<u64>>,
    coordinate_values: &'a BTreeMap<String, Vec<f64>>,
    renames: &'a Renames<'a>,
    tiling: Option<&'a Tiling>,
    references_url: &'a str,
}

impl Outputs<'_> {
    /// Describes `array` of the source as an output array (tiled if asked) and notes a
    /// selection that reads more than it keeps.
    #[allow(clippy::too_many_lines)]
    fn add(
        &self,
        array: &SourceArray,
        outputs: &mut Vec<OutputArray>,
        misaligned: &mut Vec<Misalignment>,
    ) -> Result<(), OpsError> {
        let Outputs {
            options,
            source,
            renames,
            tiling,
            references_url,
            ..
        } = *self;
        let info = &array.info;
        let dims: Vec<Option<String>> = info
            .dimension_names
            .clone()
            .unwrap_or_else(|| vec![None; info.shape.len()]);
        let axes = self.axes(&dims, &info.shape);

        // Values: CF decoding, then a cast.
        let mut attributes = array.attributes.clone();
        let cast = options
            .cast
            .iter()
            .find(|(name, _)| find_array(self.all, name).is_some_and(|f| f.key == array.key))
            .map(|(_, to)| to.as_str());
        let Values {
            map: values,
            parts,
            out_dtype,
            decoded: decode,
        } = array_values(options, source, array, cast, &mut attributes)?;
        // Bytes per output element (a measured record for variable-length text).
        let out_size = out_dtype.size().unwrap_or(info.item_size);

        let plain = source.endpoint(array, references_url)?;
        let input = read_through(plain, &axes, info, values.as_ref(), parts.as_deref())
            .map_err(|e| OpsError::Refused(format!("{}: {e}", array.key)))?;
        let windowed = matches!(input, Endpoint::Window { .. } | Endpoint::Concat { .. });

        // Read amplification, and the nearest aligned selection.
        let kept: u64 = axes.iter().map(|w| w.len).product();
        let read: u64 = axes
            .iter()
            .zip(&info.chunks)
            .zip(&info.shape)
            .map(|((w, &size), &len)| axis_read(size, len, w))
            .product();
        if kept > 0 && read > kept && !is_coordinate(info) {
            misaligned.push(self.misalignment(array, &axes, &dims, read as f64 / kept as f64));
        }

        let out_dims: Vec<Option<String>> = dims
            .iter()
            .map(|d| d.as_ref().map(|d| renames.apply(d)))
            .collect();
        let (fill_value, zarr_format) = if decode && out_dtype.is_float() {
            (Value::String("NaN".into()), options.layout.zarr_format)
        } else if decode {
            // Unpacked, then cast to integers (masked values written as 0): the packing
            // attributes stay removed, or readers would unpack the values a second time.
            (Value::from(0), options.layout.zarr_format)
        } else {
            // As the source's Zarr view has them: a virtual array's `_FillValue` is its fill
            // value, which the target's format then carries its own way.
            attributes = info.attributes.clone();
            (info.fill_value.clone(), info.zarr_format)
        };
        let out_info = ArrayInfo {
            path: renames.apply_path(&array.key),
            zarr_format,
            shape: axes.iter().map(|w| w.len).collect(),
            dtype: out_dtype.clone(),
            item_size: out_size,
            chunks: info
                .chunks
                .iter()
                .zip(&axes)
                .map(|(&c, w)| c.min(w.len).max(1))
                .collect(),
            inner_chunks: None,
            dimension_names: Some(out_dims),
            fill_value: if out_dtype == info.dtype || decode {
                fill_value
            } else {
                Value::Null
            },
            attributes,
            compressor: None,
            codecs: Vec::new(),
        };
        let source_chunk_bytes =
            info.chunks.iter().product::<u64>() * info.item_size.max(out_size) as u64;
        let output = OutputArray {
            source_key: array.key.clone(),
            info: out_info,
            input,
            // A window holds a source chunk decoded, the part it keeps, and that part
            // reversed or converted.
            extra_task_mem: if windowed {
                3 * source_chunk_bytes
            } else {
                source_chunk_bytes
            },
            read_factor: if kept == 0 {
                1.0
            } else {
                (read * info.item_size as u64) as f64 / (kept * out_size as u64) as f64
            },
            chunks: None,
        };
        let tiled = tiling
            .as_ref()
            .map(|t| t.apply(output.clone(), &dims, &options.layout.chunks, renames))
            .transpose()?
            .flatten();
        if let Some((tiled, amplification)) = tiled {
            if let Some(m) = amplification {
                misaligned.push(Misalignment {
                    array: array.key.clone(),
                    ..m
                });
            }
            outputs.push(tiled);
        } else {
            outputs.push(output);
        }
        Ok(())
    }

    /// The window of each axis of an array of dimensions `dims` and `shape`.
    fn axes(&self, dims: &[Option<String>], shape: &[u64]) -> Vec<AxisWindow> {
        let (options, ranges) = (self.options, self.ranges);
        dims.iter()
            .zip(shape)
            .map(|(d, &len)| {
                let range = d
                    .as_ref()
                    .and_then(|d| ranges.get(d))
                    .cloned()
                    .unwrap_or(0..len);
                AxisWindow {
                    start: range.start,
                    len: range.end - range.start,
                    reverse: d.as_ref().is_some_and(|d| options.reverse.contains(d)),
                }
            })
            .collect()
    }

    /// A selection of `array` that cuts through its source chunks: the nearest aligned one,
    /// as flags.
    fn misalignment(
        &self,
        array: &SourceArray,
        axes: &[AxisWindow],
        dims: &[Option<String>],
        amplification: f64,
    ) -> Misalignment {
        let (info, coordinate_values) = (&array.info, self.coordinate_values);
        let suggestion: Vec<String> = axes
            .iter()
            .zip(&info.chunks)
            .zip(&info.shape)
            .zip(dims)
            .filter(|(((w, &size), &len), _)| axis_read(size, len, w) > w.len)
            .map(|(((w, &size), &len), d)| {
                let std::ops::Range {
                    start: first,
                    end: last,
                } = aligned_range(size, len, w);
                let name = d.clone().unwrap_or_default();
                match coordinate_values.get(&name) {
                    Some(values) => format!(
                        "--select {name}={}:{} (--isel {name}={first}:{last})",
                        values[first as usize],
                        values[last as usize - 1]
                    ),
                    None => format!("--isel {name}={first}:{last}"),
                }
            })
            .collect();
        Misalignment {
            array: array.key.clone(),
            amplification,
            suggestion: suggestion.join(" "),
        }
    }
}

/// Refuses, before anything is written, renames that would give two variables or two
/// dimensions one name (`--rename air=precip` when `precip` is kept, two renames to one
/// name, a dimension renamed to another's name) or a name that is not a plain name, as
/// xarray's `rename` refuses a name that conflicts.
fn check_renames(
    rename: &[(String, String)],
    chosen: &[&SourceArray],
    dim_len: &BTreeMap<String, u64>,
) -> Result<(), OpsError> {
    for (i, (old, new)) in rename.iter().enumerate() {
        if new.is_empty() || new.contains(['/', '\\', '\0']) || new == "." || new == ".." {
            return Err(OpsError::Usage(format!(
                "--rename {old}={new}: '{new}' is not a plain name (no '/', '\\', '.' or '..')"
            )));
        }
        if rename[..i].iter().any(|(o, _)| o == old) {
            return Err(OpsError::Usage(format!("--rename {old}: renamed twice")));
        }
    }
    let renames = Renames(rename);
    let mut variables: BTreeMap<String, &str> = BTreeMap::new();
    for a in chosen {
        let new = renames.apply_path(&a.key);
        if let Some(other) = variables.insert(new.clone(), &a.key) {
            return Err(OpsError::Refused(format!(
                "--rename: '{other}' and '{}' would both be called '{new}'; drop one with --drop or choose another name",
                a.key
            )));
        }
    }
    let mut dims: BTreeMap<String, &str> = BTreeMap::new();
    for old in dim_len.keys() {
        let new = renames.apply(old);
        if let Some(other) = dims.insert(new.clone(), old) {
            return Err(OpsError::Refused(format!(
                "--rename: dimensions '{other}' and '{old}' would both be called '{new}'"
            )));
        }
        // A dimension may share its name only with its own coordinate.
        if let Some(var) = variables.get(&new) {
            if new != *old && *var != old.as_str() {
                return Err(OpsError::Refused(format!(
                    "--rename {old}={new}: '{new}' is already the variable '{var}'; drop it with --drop {var} or choose another name"
                )));
            }
        }
    }
    Ok(())
}

/// A time coordinate xarray decodes to dates: its packing is left for xarray to apply.
fn is_time_like(attributes: &Map<String, Value>) -> bool {
    attributes
        .get("units")
        .and_then(Value::as_str)
        .is_some_and(|u| u.contains(" since "))
}

/// Plan and run a conversion.
///
/// # Errors
/// As [`plan_convert`] and [`run_job`].
pub fn run_convert(
    options: &ConvertOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<JobReport, OpsError> {
    let job = plan_convert(options)?;
    run_planned(&job, options, on_event)
}

/// Run a conversion planned by [`plan_convert`] with the same options.
///
/// # Errors
/// As [`run_job`]; [`OpsError::Failed`] when the references cannot be written.
pub fn run_planned(
    job: &ConvertJob,
    options: &ConvertOptions,
    on_event: &(dyn Fn(&Event) + Sync),
) -> Result<JobReport, OpsError> {
    if job.nothing_new.is_some() {
        return Ok(JobReport::without_tasks(
            &job.job.plan.plan_id,
            0,
            0,
            options.job.max_mem,
            true,
        ));
    }
    run_job(&job.job, &options.job, on_event)
}

/// The compressor a conversion writes when none is asked for.
#[must_use]
pub fn default_codec() -> Compressor {
    Compressor::Zstd(1)
}

/// Everything a conversion reads (what its target, work dir and temp must stay apart from): its inputs as given (globs and `@lists` expanded) and the
/// files its references point at.
pub(crate) fn inputs_of(options: &ConvertOptions, source: &Source) -> Vec<String> {
    let mut inputs: Vec<String> = match chunkmill_manifest::expand_inputs(&options.inputs) {
        Ok(expanded) => expanded
            .iter()
            .map(chunkmill_manifest::Input::url)
            .collect(),
        // The sources were opened, so this does not happen; the inputs as given still count.
        Err(_) => options.inputs.clone(),
    };
    if let Source::Virtual(dataset) = source {
        inputs.extend(dataset.urls.iter().cloned());
    }
    inputs.sort();
    inputs.dedup();
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_attributes_are_read_in_order() {
        let mut attributes = Map::new();
        attributes.insert("actual_range".into(), serde_json::json!([2.0, 7.5]));
        assert_eq!(
            range_attribute(&attributes, &["valid_range", "actual_range"]),
            Some((2.0, 7.5))
        );
        attributes.insert("valid_range".into(), serde_json::json!([9, 1]));
        // A reversed range says nothing.
        assert_eq!(range_attribute(&attributes, &["valid_range"]), None);
    }
}
