//! `chunkmill convert`: archival files, references or Zarr → an analysis-ready Zarr store with
//! new chunks, a selection and transforms, in parallel and within a memory budget.
//!
//! The job, top-down:
//! 1. open the inputs ([`crate::sources`]): files are scanned and combined as `virtualize`
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
use chunkmill_store::zarr::{ArrayInfo, Compressor, GroupInfo};
use chunkmill_store::Store;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::rechunk::{
    display_path, is_coordinate, last_segment, medium_cost, plan_array, run_job, temp_store,
    ArrayJob, Budget, RechunkJob, RechunkOptions, RechunkReport, WorkFile,
};
use crate::selection::{
    aligned_range, axis_read, cf_time_value, element_values, index_range, value_range, window_axis,
};
pub use crate::selection::{IndexSelection, ValueSelection};
use crate::sources::{self, Source, SourceArray};
use crate::tiles::Tiling;
use crate::values::Numeric;
use crate::OpsError;

/// CF attributes that `--decode-cf` applies and then removes.
const PACKING_ATTRIBUTES: [&str; 4] = ["scale_factor", "add_offset", "_FillValue", "missing_value"];

/// Everything `chunkmill convert` is asked.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Inputs: paths, globs, `s3://` URLs, `@lists`; or one reference file or Zarr store.
    pub inputs: Vec<String>,
    /// Target, chunks, codec, budget, executor and the rest, as for rechunk (`source` only
    /// names the inputs in reports, as [`sources::describe`] does; `arrays` unused).
    pub run: RechunkOptions,
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
    pub job: RechunkJob,
    /// Selections that cut through source chunks.
    pub misaligned: Vec<Misalignment>,
    /// Set when an append finds every input value already in the cache: nothing runs.
    pub nothing_new: Option<String>,
    /// Decisions taken for the user (an inferred concat dimension), one line each.
    pub notes: Vec<String>,
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        other => other.as_f64(),
    }
}

fn numbers(value: Option<&Value>) -> Vec<f64> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(number).collect(),
        Some(v) => number(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Whether a JSON number read from a file attribute was a float32 there (it round-trips).
fn looks_float32(v: f64) -> bool {
    f64::from(v as f32) == v
}

/// The float type xarray's CF decoding gives a packed or masked variable of type `dtype`.
fn decoded_dtype(dtype: Numeric, scale: Option<f64>, offset: Option<f64>) -> &'static str {
    let small_int =
        matches!(dtype, Numeric::Int(s) | Numeric::UInt(s) if s <= 2) || dtype == Numeric::Bool;
    match (scale, offset) {
        (None, None) if dtype == Numeric::Float(4) || small_int => "float32",
        (None, None) => "float64",
        (Some(s), Some(o)) if looks_float32(s) && looks_float32(o) && small_int => "float32",
        (Some(s), None) if looks_float32(s) && (small_int || dtype == Numeric::Float(4)) => {
            "float32"
        }
        _ => "float64",
    }
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
        return crate::append::plan_append(options);
    }
    let prepared = prepare(options)?;
    let run = &options.run;
    let (context_parts, temp) = budget(options, &prepared)?;
    let target = Store::open(&run.target).map_err(|e| OpsError::Usage(e.to_string()))?;
    let context = context_parts.context(run, &target, &temp);
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
    let mut summaries = Vec::new();
    let mut specs = Vec::new();
    for (index, output) in prepared.outputs.iter().enumerate() {
        let planned = plan_array(
            &context,
            &ArrayJob {
                index,
                info: &output.info,
                input: output.input.clone(),
                source_cost: medium_cost(None, prepared.source.kind()),
                extra_task_mem: output.extra_task_mem,
                read_factor: output.read_factor,
                chunks: output.chunks.clone(),
                write_at: None,
            },
        )?;
        stages.extend(planned.stages);
        cleanup.extend(planned.cleanup);
        summaries.push(planned.summary);
        specs.push(planned.spec);
    }
    let plan = Plan::new("convert", run.max_mem, stages, cleanup);
    let groups = vec![GroupInfo {
        path: String::new(),
        zarr_format: run.zarr_format,
        attributes: prepared.source.root_attributes(),
    }];
    Ok(ConvertJob {
        job: RechunkJob {
            plan,
            arrays: summaries,
            groups,
            specs,
            task_budget: context_parts.task_budget,
            baseline: context_parts.baseline,
            work_dir: prepared.work_dir.clone(),
            temp: temp.url().to_string(),
            existing_target: false,
            resize: Vec::new(),
            work_files: prepared.references().into_iter().collect(),
        },
        misaligned: prepared.misaligned.clone(),
        nothing_new: None,
        notes: prepared.notes.clone(),
    })
}

/// The budget and the intermediate store of a conversion.
pub(crate) fn budget(
    options: &ConvertOptions,
    prepared: &Prepared,
) -> Result<(Budget, Store), OpsError> {
    let work = Store::open(&prepared.work_dir).map_err(|e| OpsError::Usage(e.to_string()))?;
    let (_, temp) = temp_store(&options.run, &work)?;
    Ok((Budget::for_max_mem(options.run.max_mem), temp))
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
#[allow(clippy::too_many_lines)]
pub(crate) fn prepare(options: &ConvertOptions) -> Result<Prepared, OpsError> {
    let run = &options.run;
    crate::rechunk::check_format(run)?;
    let target = Store::open(&run.target).map_err(|e| OpsError::Usage(e.to_string()))?;
    let (source, notes) = sources::open(
        &options.inputs,
        &chunkmill_manifest::CombineOptions {
            concat_dim: options.concat_dim.clone(),
            stack: options.stack,
            identical_dims: options.identical_dims.clone(),
            compat: options.compat,
            dropped: Some(options.drop.clone()),
            threads: 0,
        },
        &options.allow_refs,
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
    let find = |name: &str| {
        all.iter()
            .find(|a| a.key == name.trim_matches('/') || last_segment(&a.key) == name)
    };
    let names = || {
        all.iter()
            .map(|a| a.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in options.variables.iter().chain(&options.drop) {
        if find(name).is_none() {
            return Err(OpsError::Refused(format!(
                "{source_name}: no variable '{name}'; variables: {}",
                names()
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
        for a in &all {
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

    // Dimension lengths, and each selected dimension's window.
    let mut dim_len: BTreeMap<String, u64> = BTreeMap::new();
    for a in &all {
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
    let known = |dim: &str, flag: &str| -> Result<u64, OpsError> {
        dim_len.get(dim).copied().ok_or_else(|| {
            OpsError::Usage(format!(
                "{flag} {dim}: no dimension '{dim}' in {source_name}; dimensions: {}",
                dim_len.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let mut ranges: BTreeMap<String, std::ops::Range<u64>> = BTreeMap::new();
    for sel in &options.isel {
        let len = known(&sel.dim, "--isel")?;
        let range = index_range(len, sel.start, sel.stop);
        if range.is_empty() {
            return Err(OpsError::Refused(format!(
                "--isel {}: selects nothing of {len} indices",
                sel.dim
            )));
        }
        ranges.insert(sel.dim.clone(), range);
    }
    let mut coordinate_values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for sel in &options.select {
        let len = known(&sel.dim, "--select")?;
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
        let values = element_values(&bytes, &coordinate.info.dtype)
            .map_err(|e| OpsError::Refused(format!("--select {}: {e}", sel.dim)))?;
        let units = coordinate.attributes.get("units").and_then(Value::as_str);
        let calendar = coordinate
            .attributes
            .get("calendar")
            .and_then(Value::as_str)
            .unwrap_or("standard");
        let parse = |text: &Option<String>| -> Result<Option<f64>, OpsError> {
            let Some(text) = text else { return Ok(None) };
            if let Ok(v) = text.parse::<f64>() {
                return Ok(Some(v));
            }
            match units {
                Some(u) if u.contains(" since ") => cf_time_value(text, u, calendar)
                    .map(Some)
                    .map_err(|e| OpsError::Usage(format!("--select {}: {e}", sel.dim))),
                _ => Err(OpsError::Usage(format!(
                    "--select {}: '{text}' is not a number, and '{}' is not a CF time coordinate",
                    sel.dim, sel.dim
                ))),
            }
        };
        let (start, stop) = (parse(&sel.start)?, parse(&sel.stop)?);
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
    for dim in &options.reverse {
        known(dim, "--reverse")?;
    }
    for (old, _) in &options.rename {
        if find(old).is_none() && !dim_len.contains_key(old) {
            return Err(OpsError::Usage(format!(
                "--rename {old}: no variable or dimension '{old}'; variables: {}",
                names()
            )));
        }
    }
    for (name, dtype) in &options.cast {
        if find(name).is_none() {
            return Err(OpsError::Refused(format!(
                "--cast {name}: no variable '{name}'; variables: {}",
                names()
            )));
        }
        Numeric::parse(dtype).map_err(|e| OpsError::Usage(format!("--cast {name}: {e}")))?;
    }

    let renames = Renames(&options.rename);
    let work_dir = run
        .work_dir
        .clone()
        .unwrap_or_else(|| crate::rechunk::default_work_dir(target.url()));
    let work = Store::open(&work_dir).map_err(|e| OpsError::Usage(e.to_string()))?;
    let references_url = work.join("sources.json");
    let tiling = if options.tile.is_empty() {
        None
    } else {
        Some(Tiling::new(&options.tile, &dim_len, &ranges)?)
    };
    let mut outputs = Vec::new();
    let mut misaligned = Vec::new();
    for array in &chosen {
        let info = &array.info;
        let dims: Vec<Option<String>> = info
            .dimension_names
            .clone()
            .unwrap_or_else(|| vec![None; info.shape.len()]);
        let axes: Vec<AxisWindow> = dims
            .iter()
            .zip(&info.shape)
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
            .collect();

        // Values: CF decoding, then a cast.
        let source_type = Numeric::parse(&info.dtype)
            .map_err(|e| OpsError::Refused(format!("{}: {e}", array.key)))?;
        let mut attributes = array.attributes.clone();
        let decode = options.decode_cf
            && PACKING_ATTRIBUTES
                .iter()
                .any(|a| attributes.contains_key(*a))
            && !is_time_like(&attributes);
        let mut values = None;
        let mut out_dtype = info.dtype.clone();
        if decode {
            let scale = attributes.get("scale_factor").and_then(number);
            let offset = attributes.get("add_offset").and_then(number);
            let mut missing = numbers(attributes.get("_FillValue"));
            missing.extend(numbers(attributes.get("missing_value")));
            out_dtype = decoded_dtype(source_type, scale, offset).to_string();
            for a in PACKING_ATTRIBUTES {
                attributes.remove(a);
            }
            values = Some(ValueMap {
                from: info.dtype.clone(),
                to: out_dtype.clone(),
                missing,
                scale,
                offset,
            });
        }
        if let Some((_, to)) = options
            .cast
            .iter()
            .find(|(name, _)| find(name).is_some_and(|f| f.key == array.key))
        {
            out_dtype = to.clone();
            values = Some(match values {
                Some(mut map) => {
                    map.to = to.clone();
                    map
                }
                None => ValueMap {
                    from: info.dtype.clone(),
                    to: to.clone(),
                    missing: Vec::new(),
                    scale: None,
                    offset: None,
                },
            });
        }
        let out_type = Numeric::parse(&out_dtype).map_err(OpsError::Usage)?;

        let windowed = axes
            .iter()
            .zip(&info.shape)
            .any(|(w, &len)| w.start != 0 || w.len != len || w.reverse)
            || values.is_some();
        let plain = source.endpoint(array, &references_url)?;
        let input = if windowed {
            let grid = Grid::new(
                axes.iter()
                    .zip(&info.chunks)
                    .map(|(w, &size)| window_axis(size, w))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| OpsError::Refused(format!("{}: {e}", array.key)))?,
            );
            Endpoint::Window {
                source: Box::new(plain),
                axes: axes.clone(),
                values: values.clone(),
                grid,
            }
        } else {
            plain
        };

        // Read amplification, and the nearest aligned selection.
        let kept: u64 = axes.iter().map(|w| w.len).product();
        let read: u64 = axes
            .iter()
            .zip(&info.chunks)
            .zip(&info.shape)
            .map(|((w, &size), &len)| axis_read(size, len, w))
            .product();
        if kept > 0 && read > kept && !is_coordinate(info) {
            let suggestion: Vec<String> = axes
                .iter()
                .zip(&info.chunks)
                .zip(&info.shape)
                .zip(&dims)
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
            misaligned.push(Misalignment {
                array: array.key.clone(),
                amplification: read as f64 / kept as f64,
                suggestion: suggestion.join(" "),
            });
        }

        let out_dims: Vec<Option<String>> = dims
            .iter()
            .map(|d| d.as_ref().map(|d| renames.apply(d)))
            .collect();
        let (fill_value, zarr_format) = if decode && out_type.is_float() {
            (Value::String("NaN".into()), run.zarr_format)
        } else if decode {
            // Unpacked, then cast to integers (masked values written as 0): the packing
            // attributes stay removed, or readers would unpack the values a second time.
            (Value::from(0), run.zarr_format)
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
            item_size: out_type.size(),
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
            info.chunks.iter().product::<u64>() * info.item_size.max(out_type.size()) as u64;
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
                (read * info.item_size as u64) as f64 / (kept * out_type.size() as u64) as f64
            },
            chunks: None,
        };
        let tiled = tiling
            .as_ref()
            .map(|t| t.apply(output.clone(), &dims, &options.run.chunks, &renames))
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
) -> Result<RechunkReport, OpsError> {
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
) -> Result<RechunkReport, OpsError> {
    if job.nothing_new.is_some() {
        return Ok(RechunkReport::without_tasks(
            &job.job.plan.plan_id,
            0,
            0,
            options.run.max_mem,
            true,
        ));
    }
    run_job(&job.job, &options.run, on_event)
}

/// The compressor a conversion writes when none is asked for.
#[must_use]
pub fn default_codec() -> Compressor {
    Compressor::Zstd(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_types_follow_xarray() {
        assert_eq!(
            decoded_dtype(Numeric::Int(2), Some(0.5), Some(10.0)),
            "float32"
        );
        assert_eq!(
            decoded_dtype(Numeric::Int(2), Some(0.1), Some(10.0)),
            "float64"
        );
        assert_eq!(
            decoded_dtype(Numeric::Int(4), Some(0.5), Some(1.0)),
            "float64"
        );
        assert_eq!(decoded_dtype(Numeric::Float(4), None, None), "float32");
        assert_eq!(decoded_dtype(Numeric::Int(4), None, None), "float64");
    }
}
