//! `chunkmill convert --append DIM`: new files added to an existing cache along a dimension.
//!
//! The new data is resolved exactly as a conversion is (the same flags must be given), then
//! checked against the cache: the same arrays, data types and other dimensions, equal
//! coordinates elsewhere, the same units and calendar along DIM, and new coordinate values
//! that all come after the cache's last one. Data that the cache already holds (the same
//! append run again) changes nothing; overlapping or earlier values are refused.
//!
//! Each appended array grows in place: its metadata gets the new shape, then tasks write
//! whole chunks from the chunk that holds the cache's last element on (that chunk is read
//! back and completed, so every task still owns whole chunks). Consolidated metadata keeps
//! the old shapes until every task is done, so readers see the old cache until then. The old
//! length is recorded in the work dir first (`append.json`), so `--resume` plans the same
//! tasks after the arrays have grown.

use chunkmill_exec::budget::Budget;
use chunkmill_grid::{AxisChunks, Grid};
use chunkmill_plan::{AxisWindow, Endpoint, Plan};
use chunkmill_store::zarr::ArrayInfo;
use chunkmill_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::selection::element_values;
use super::sources::{self, Source, SourceArray};
use super::{budget, prepare, ConvertJob, ConvertOptions, OutputArray};
use crate::job::plan::{medium_cost, plan_array, ArrayJob, PlanContext};
use crate::job::{Job, WorkFile};
use crate::{Context, OpsError};

/// What an append adds: kept in the work dir so that a resumed append plans the same tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRecord {
    /// The dimension appended along.
    pub dim: String,
    /// The cache's length along it before the append.
    pub old_len: u64,
    /// Its length after.
    pub new_len: u64,
}

/// Where the record lives in the work dir.
pub(crate) const RECORD_KEY: &str = crate::work_files::APPEND_KEY;

fn refused(message: String) -> OpsError {
    OpsError::Refused(message)
}

fn f64_values(bytes: &[u8], dtype: &chunkmill_store::DataType) -> Result<Vec<f64>, OpsError> {
    element_values(bytes, dtype).map_err(refused)
}

/// The values of a 1-d output array (a coordinate) as the target will hold them.
fn output_values(
    source: &Source,
    array: &SourceArray,
    output: &OutputArray,
) -> Result<Vec<f64>, OpsError> {
    let all = f64_values(&source.read_all(array)?, &array.info.dtype)?;
    let window = match &output.input {
        Endpoint::Window { axes, .. } => axes.first().cloned(),
        _ => None,
    }
    .unwrap_or(AxisWindow {
        start: 0,
        len: all.len() as u64,
        reverse: false,
    });
    let mut picked: Vec<f64> =
        all[window.start as usize..(window.start + window.len) as usize].to_vec();
    if window.reverse {
        picked.reverse();
    }
    Ok(picked)
}

fn text_of(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or("").to_string()
}

/// Plans an append (see the module docs).
///
/// # Errors
/// [`OpsError::Refused`] when there is no cache, when the new data does not fit it (naming the
/// array and the difference), or when its coordinate values overlap or precede the cache's.
#[allow(clippy::too_many_lines)]
pub fn plan_append(options: &ConvertOptions) -> Result<ConvertJob, OpsError> {
    let run = &options.job;
    let dim = options.append.clone().unwrap_or_default();
    let target = Store::open(&run.target)?;
    if target.is_empty()? {
        return Err(refused(format!(
            "{}: --append {dim}: no cache to append to; convert without --append first",
            target.url()
        )));
    }
    let (cache, _) = sources::open(
        std::slice::from_ref(&run.target),
        &chunkmill_manifest::CombineOptions::default(),
        &[],
        None, // the cache's root is what was converted, whatever group it came from
    )?;
    let cache_arrays = cache.arrays();
    let prepared = prepare(options)?;
    let work = crate::work_files::open_checked(&prepared.work_dir)?;
    let record: Option<AppendRecord> = if run.resume {
        work.get_json(RECORD_KEY)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value(v).ok())
            .filter(|r: &AppendRecord| r.dim == dim)
    } else {
        None
    };
    let source_arrays = &prepared.arrays;
    let source_array = |key: &str| source_arrays.iter().find(|a| a.key == key);
    let cached = |path: &str| cache_arrays.iter().find(|a| a.key == path);
    let renamed_dim = options
        .rename
        .iter()
        .find(|(old, _)| *old == dim)
        .map_or_else(|| dim.clone(), |(_, new)| new.clone());

    // The coordinate along DIM: units, calendar and values decide what is new.
    let (new_coord, old_coord) =
        coordinates(&dim, &renamed_dim, &prepared, &cache_arrays, &target)?;
    let old_len = match &record {
        Some(r) => r.old_len,
        None => old_coord.info.shape[0],
    };
    // Checked once, before the cache grows; a resumed append trusts its record.
    if record.is_none() {
        if let Some(message) = check_new_values(
            options, &dim, &prepared, &cache, new_coord, old_coord, &target,
        )? {
            return Ok(ConvertJob {
                job: empty_job(&prepared.work_dir, options),
                misaligned: Vec::new(),
                nothing_new: Some(message),
                costs: None,
                notes: prepared.notes.clone(),
            });
        }
    }
    let appended = new_coord.info.shape[0];
    let new_len = old_len + appended;

    let (budget_parts, temp) = budget(options, &prepared)?;
    // The cache's chunks are kept (each array is planned with its own), and its shards.
    let mut keep_chunks = options.layout.clone();
    keep_chunks.shards = None;
    let context = PlanContext::new(budget_parts, &keep_chunks, run, &target, &temp, &work)?;
    let mut stages = Vec::new();
    let mut cleanup = Vec::new();
    let mut summaries = Vec::new();
    let mut resize = Vec::new();
    for (index, output) in prepared.outputs.iter().enumerate() {
        let path = &output.info.path;
        let old = cached(path).ok_or_else(|| {
            refused(format!(
                "{}: --append {dim}: the cache has no array '{path}' (the inputs do)",
                target.url()
            ))
        })?;
        let old_info = &old.info;
        let axis = check_fits(&dim, &renamed_dim, output, old_info)?;
        let Some(axis) = axis else {
            // Not along DIM: it must be what the cache holds, and is not written again.
            if output.info.shape.len() == 1 {
                let source = source_array(&output.source_key)
                    .ok_or_else(|| refused(format!("--append {dim}: cannot read '{path}'")))?;
                let new = output_values(&prepared.source, source, output)?;
                let was = f64_values(&cache.read_all(old)?, &old_info.dtype)?;
                if new != was {
                    return Err(refused(format!(
                        "--append {dim}: coordinate '{path}' of the inputs differs from the cache's"
                    )));
                }
            }
            continue;
        };
        refuse_other_chunks(options, output, &old_info.chunks, axis, old_len)?;
        let chunk = old_info.chunks[axis];
        let aligned_start = old_len / chunk * chunk;
        let mut full_shape = old_info.shape.clone();
        full_shape[axis] = new_len;
        let mut part_shape = full_shape.clone();
        part_shape[axis] = new_len - aligned_start;

        // The cache's last, partial chunk along DIM is read back and completed.
        let input = if aligned_start < old_len {
            completed_input(target.url(), output, old_info, axis, old_len, &part_shape)?
        } else {
            output.input.clone()
        };
        let info = ArrayInfo {
            shape: part_shape.clone(),
            chunks: old_info.chunks.clone(),
            ..output.info.clone()
        };
        let mut chunk_offset = vec![0; full_shape.len()];
        chunk_offset[axis] = aligned_start / chunk;
        let full_grid = Grid::regular(&full_shape, &old_info.chunks).about(path)?;
        let planned = plan_array(
            &context,
            &ArrayJob {
                index,
                info: &info,
                input,
                source_cost: medium_cost(None, prepared.source.kind()),
                extra_task_mem: output.extra_task_mem,
                read_factor: output.read_factor,
                chunks: Some(old_info.chunks.clone()),
                write_at: Some((chunk_offset, full_grid)),
                piece_media: Vec::new(),
            },
        )?;
        stages.extend(planned.stages);
        cleanup.extend(planned.cleanup);
        summaries.push(planned.summary);
        resize.push((path.clone(), full_shape));
    }
    let record = AppendRecord {
        dim,
        old_len,
        new_len,
    };
    let grown = Grown {
        stages,
        cleanup,
        summaries,
        resize,
        cores_record: context.cores_record(),
    };
    append_job(options, prepared, record, grown, budget_parts, &temp)
}

/// What planning the arrays that grow gave.
struct Grown {
    stages: Vec<chunkmill_plan::Stage>,
    cleanup: Vec<(String, String)>,
    summaries: Vec<crate::job::ArrayPlan>,
    resize: Vec<(String, Vec<u64>)>,
    /// The cores its plan kinds were compared at, recorded for a resume.
    cores_record: WorkFile,
}

/// The job of an append: its stages, the arrays to resize, and its record written first.
fn append_job(
    options: &ConvertOptions,
    prepared: super::Prepared,
    record: AppendRecord,
    grown: Grown,
    budget_parts: Budget,
    temp: &Store,
) -> Result<ConvertJob, OpsError> {
    let run = &options.job;
    let Grown {
        stages,
        cleanup,
        summaries,
        resize,
        cores_record,
    } = grown;
    let plan =
        Plan::new("append", run.max_mem, stages, cleanup).with_urls(crate::work::absolute_url);
    // The record before the arrays grow: a resumed append reads the old length from it.
    let mut work_files = vec![WorkFile::Json(
        RECORD_KEY.to_string(),
        serde_json::to_value(&record).about("the append record")?,
    )];
    work_files.push(cores_record);
    work_files.extend(prepared.references());
    let inputs = super::inputs_of(options, &prepared.source);
    Ok(ConvertJob {
        job: Job {
            plan,
            source: sources::describe(&options.inputs),
            zarr_format: options.layout.zarr_format,
            arrays: summaries,
            groups: Vec::new(),
            specs: Vec::new(),
            task_budget: budget_parts.task_budget,
            baseline: budget_parts.baseline,
            work_dir: prepared.work_dir.clone(),
            temp: temp.url().to_string(),
            existing_target: true,
            resize,
            work_files,
            write_url: crate::safety::write_url(run.paths(), &prepared.work_dir, &inputs, true)?,
            inputs,
            left_out: Vec::new(),
        },
        misaligned: prepared.misaligned,
        nothing_new: None,
        costs: None,
        notes: prepared.notes,
    })
}

/// The step of evenly spaced `values` (at least two), if they are.
fn regular_step(values: &[f64]) -> Option<f64> {
    let step = values.get(1)? - values.first()?;
    let close = |d: f64| (d - step).abs() <= 1e-9 * step.abs().max(1.0);
    (step != 0.0 && values.windows(2).all(|w| close(w[1] - w[0]))).then_some(step)
}

/// Refuses new data that does not start one step after the cache's last value when the
/// coordinate is evenly spaced (in the cache, or else in the new data): a gap, or a step
/// that changes, would otherwise be appended in silence.
fn refuse_gap(dim: &str, units: &str, old: &[f64], new: &[f64]) -> Result<(), OpsError> {
    let (Some(&last), Some(&first)) = (old.last(), new.first()) else {
        return Ok(());
    };
    let Some(step) = regular_step(old).or_else(|| regular_step(new)) else {
        return Ok(());
    };
    let expected = last + step;
    if (first - expected).abs() <= 1e-9 * step.abs().max(1.0) {
        return Ok(());
    }
    let missing = ((first - last) / step).round() - 1.0;
    let what = if missing >= 1.0 {
        format!("{missing} steps are missing between them (a gap)")
    } else {
        "the step changes between them".to_string()
    };
    Err(refused(format!(
        "--append {dim}: the cache's {dim} ends at {last} and goes in steps of {step} ({units}), but the new data \
         starts at {first}, not {expected}: {what}; give --allow-gap to append anyway"
    )))
}

/// Refuses `--chunks` that give an appended data array other chunks than the cache's: the
/// cache keeps its own, so other chunks would be ignored in silence. Along the append axis, a
/// cache that is one chunk (its length when made: a request capped to it) accepts any
/// request at least that long.
fn refuse_other_chunks(
    options: &ConvertOptions,
    output: &OutputArray,
    cache_chunks: &[u64],
    axis: usize,
    old_len: u64,
) -> Result<(), OpsError> {
    // Tiles fix their own chunks, and a coordinate is written as one chunk whatever --chunks.
    if output.chunks.is_some() || crate::job::plan::is_coordinate(&output.info) {
        return Ok(());
    }
    let mut info = output.info.clone();
    if let Some(len) = info.shape.get_mut(axis) {
        *len += old_len;
    }
    let Some(asked) = crate::job::plan::resolve(&options.layout.chunks, &info, cache_chunks)?
    else {
        return Ok(());
    };
    let fits = asked
        .iter()
        .zip(cache_chunks)
        .enumerate()
        .all(|(a, (&r, &c))| r == c || (a == axis && c == old_len.max(1) && r >= c));
    if fits {
        return Ok(());
    }
    Err(refused(format!(
        "--append: '{}' is chunked {cache_chunks:?} in the cache, but --chunks gives {asked:?}: an append \
         keeps the cache's chunks; give the --chunks the cache was made with",
        output.info.path
    )))
}

/// A job with nothing to run.
fn empty_job(work_dir: &str, options: &ConvertOptions) -> Job {
    Job {
        plan: Plan::new("append", 0, Vec::new(), Vec::new()),
        source: sources::describe(&options.inputs),
        zarr_format: options.layout.zarr_format,
        arrays: Vec::new(),
        groups: Vec::new(),
        specs: Vec::new(),
        task_budget: 0,
        baseline: 0,
        work_dir: work_dir.to_string(),
        temp: String::new(),
        existing_target: true,
        resize: Vec::new(),
        work_files: Vec::new(),
        write_url: String::new(),
        inputs: Vec::new(),
        left_out: Vec::new(),
    }
}

/// What the first stage of an array growing along `axis` reads: the cache's last, partial
/// chunk along it (read back from the target at `target_url`), then the new data.
fn completed_input(
    target_url: &str,
    output: &OutputArray,
    old_info: &ArrayInfo,
    axis: usize,
    old_len: u64,
    part_shape: &[u64],
) -> Result<Endpoint, OpsError> {
    let path = &output.info.path;
    let chunk = old_info.chunks[axis];
    let aligned_start = old_len / chunk * chunk;
    let mut old_shape = old_info.shape.clone();
    old_shape[axis] = old_len;
    let cache_grid = Grid::regular(&old_shape, &old_info.chunks).about(path)?;
    let axes: Vec<AxisWindow> = old_shape
        .iter()
        .enumerate()
        .map(|(a, &len)| {
            if a == axis {
                AxisWindow {
                    start: aligned_start,
                    len: old_len - aligned_start,
                    reverse: false,
                }
            } else {
                AxisWindow {
                    start: 0,
                    len,
                    reverse: false,
                }
            }
        })
        .collect();
    let mut tail_shape = old_shape.clone();
    tail_shape[axis] = old_len - aligned_start;
    let tail_grid = Grid::regular(&tail_shape, &old_info.chunks).about(path)?;
    let tail = Endpoint::Window {
        source: Box::new(Endpoint::Zarr {
            url: target_url.to_string(),
            path: path.clone(),
            grid: cache_grid,
        }),
        axes,
        values: None,
        grid: tail_grid.clone(),
    };
    let new_grid = output.input.grid();
    let concat_axes: Vec<AxisChunks> = (0..part_shape.len())
        .map(|a| {
            if a == axis {
                let mut bounds = tail_grid.axes()[a].bounds();
                let shift = *bounds.last().unwrap_or(&0);
                bounds.extend(
                    new_grid.axes()[a]
                        .bounds()
                        .iter()
                        .skip(1)
                        .map(|b| b + shift),
                );
                AxisChunks::rectilinear(bounds)
            } else {
                // The new data's chunks, so each of its source chunks is decoded once
                // (the cache's one chunk row is read into whatever pieces need it).
                Ok(new_grid.axes()[a].clone())
            }
        })
        .collect::<Result<_, _>>()
        .about(path)?;
    Ok(Endpoint::Concat {
        axis,
        parts: vec![tail, output.input.clone()],
        grid: Grid::new(concat_axes),
    })
}

/// Refuses an output array that does not fit its array in the cache (another data type,
/// shards, another shape but along `dim`); the axis of `dim` in it, if any.
fn check_fits(
    dim: &str,
    renamed_dim: &str,
    output: &OutputArray,
    old_info: &ArrayInfo,
) -> Result<Option<usize>, OpsError> {
    let path = &output.info.path;
    if old_info.dtype != output.info.dtype {
        return Err(refused(format!(
            "--append {dim}: '{path}' is {} in the inputs but {} in the cache",
            output.info.dtype, old_info.dtype
        )));
    }
    if old_info.inner_chunks.is_some() {
        return Err(refused(format!(
            "--append {dim}: '{path}' is sharded in the cache; appending to shards is not supported"
        )));
    }
    let dims = output.info.dimension_names.clone().unwrap_or_default();
    let axis = dims.iter().position(|d| d.as_deref() == Some(renamed_dim));
    for (a, (&new, &was)) in output.info.shape.iter().zip(&old_info.shape).enumerate() {
        if Some(a) != axis && new != was {
            return Err(refused(format!(
                "--append {dim}: '{path}' has {new} along {} in the inputs but {was} in the cache",
                dims[a].clone().unwrap_or_default()
            )));
        }
    }
    if output.info.shape.len() != old_info.shape.len() {
        return Err(refused(format!(
            "--append {dim}: '{path}' has {} dimensions in the inputs but {} in the cache",
            output.info.shape.len(),
            old_info.shape.len()
        )));
    }
    Ok(axis)
}

/// Refuses new `dim` values that overlap or precede the cache's, or leave a gap (unless
/// `--allow-gap`); the message saying so when every new value is already in the cache.
fn check_new_values(
    options: &ConvertOptions,
    dim: &str,
    prepared: &super::Prepared,
    cache: &Source,
    new_coord: &OutputArray,
    old_coord: &SourceArray,
    target: &Store,
) -> Result<Option<String>, OpsError> {
    let coord_source = prepared
        .arrays
        .iter()
        .find(|a| a.key == new_coord.source_key)
        .ok_or_else(|| refused(format!("--append {dim}: cannot read the new {dim}")))?;
    let new_values = output_values(&prepared.source, coord_source, new_coord)?;
    let old_values = f64_values(&cache.read_all(old_coord)?, &old_coord.info.dtype)?;
    let last = old_values.last().copied().unwrap_or(f64::NEG_INFINITY);
    let units = text_of(old_coord.attributes.get("units"));
    if new_values.iter().all(|v| old_values.contains(v)) {
        return Ok(Some(format!(
            "{}: all {} {dim} values of the inputs are already in the cache; nothing appended",
            target.url(),
            new_values.len()
        )));
    }
    if new_values.first().is_some_and(|&first| first <= last) {
        return Err(refused(format!(
            "--append {dim}: the new data starts at {dim} = {} {units}, not after the cache's last {dim} = {last}: overlapping or out-of-order data is not appended",
            new_values[0]
        )));
    }
    if !options.allow_gap {
        refuse_gap(dim, &units, &old_values, &new_values)?;
    }
    Ok(None)
}

/// The coordinate along `dim` in the new data and in the cache, refused when either is missing
/// or their units or calendars differ.
fn coordinates<'a>(
    dim: &str,
    renamed_dim: &str,
    prepared: &'a super::Prepared,
    cache_arrays: &'a [SourceArray],
    target: &Store,
) -> Result<(&'a OutputArray, &'a SourceArray), OpsError> {
    let new_coord = prepared
        .outputs
        .iter()
        .find(|o| o.info.path == renamed_dim && o.info.shape.len() == 1)
        .ok_or_else(|| {
            refused(format!(
                "--append {dim}: the inputs have no coordinate variable '{dim}' to order the new data by"
            ))
        })?;
    let old_coord = cache_arrays
        .iter()
        .find(|a| a.key == renamed_dim)
        .ok_or_else(|| {
            refused(format!(
                "{}: --append {dim}: the cache has no coordinate '{renamed_dim}'",
                target.url()
            ))
        })?;
    for attribute in ["units", "calendar"] {
        let (new, old) = (
            text_of(new_coord.info.attributes.get(attribute)),
            text_of(old_coord.attributes.get(attribute)),
        );
        if new != old {
            return Err(refused(format!(
                "--append {dim}: the new data's {dim} {attribute} '{new}' differ from the cache's '{old}'"
            )));
        }
    }
    Ok((new_coord, old_coord))
}
