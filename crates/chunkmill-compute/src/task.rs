//! Running one task of a compute stage: read the blocks its expression names, evaluate,
//! reduce or merge, write its output chunk or state piece.

use chunkmill_exec::{Cancel, TaskError, TaskStats};
use chunkmill_grid::{Grid, Region};
use chunkmill_plan::{ComputeStage, Endpoint};
use chunkmill_store::zarr::ZarrArray;
use chunkmill_store::Store;

use crate::dtype::DType;
use crate::kernel::{eval, Kernel, Read, ReadAxis, Reduce, NO_INDEX};

mod group;

/// The key of piece `coords` of an intermediate `grid` under `prefix`.
#[must_use]
pub fn piece_key(prefix: &str, grid: &Grid, coords: &[u64]) -> String {
    format!("{prefix}/{}", grid.ravel(coords))
}

fn failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::failed(e.to_string())
}

/// Decoded values of chunk `coords` of `endpoint` and the region they cover (a Zarr chunk at
/// its nominal shape, a piece at its exact one).
fn read_chunk(
    endpoint: &Endpoint,
    dtype: DType,
    coords: &[u64],
) -> Result<(Vec<f64>, Region), String> {
    let grid = endpoint.grid();
    let exact = grid.chunk_region(coords);
    let mut values = Vec::new();
    match endpoint {
        Endpoint::Zarr { url, path, .. } => {
            let store = Store::open(url).map_err(|e| e.to_string())?;
            let array = ZarrArray::open(&store, path).map_err(|e| e.to_string())?;
            let bytes = array.read_chunk(coords).map_err(|e| e.to_string())?;
            dtype.decode(&bytes, &mut values);
            let nominal: Vec<std::ops::Range<u64>> = exact
                .ranges()
                .iter()
                .zip(grid.axes())
                .map(|(r, a)| r.start..r.start + a.chunk(0).end.max(1))
                .collect();
            Ok((values, Region::new(nominal)))
        }
        Endpoint::Pieces { url, prefix, .. } => {
            let store = Store::open(url).map_err(|e| e.to_string())?;
            let key = piece_key(prefix, grid, coords);
            let bytes = store
                .get(&key)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{url}/{key}: intermediate piece missing"))?;
            dtype.decode(&bytes, &mut values);
            Ok((values, exact))
        }
        other => Err(format!(
            "{}: compute cannot read this endpoint yet",
            other.describe()
        )),
    }
}

fn strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The values of `read` over the domain `region` (broadcast along the axes it lacks).
///
/// # Errors
/// When a chunk cannot be read.
pub fn read_block(endpoint: &Endpoint, read: &Read, region: &Region) -> Result<Vec<f64>, String> {
    let dom = region.ranges();
    // The bounding box of the source indices this block needs.
    let bbox: Vec<std::ops::Range<u64>> = read
        .axes
        .iter()
        .map(|a| match (a.to, &a.index) {
            (None, _) => a.start..a.start + 1,
            (Some(d), Some(index)) => indexed_range(a, index, &dom[d]),
            (Some(d), None) => {
                let r = &dom[d];
                let first = a.start as i64 + a.step * r.start as i64;
                let last = a.start as i64 + a.step * (r.end as i64 - 1).max(r.start as i64);
                (first.min(last) as u64)..(first.max(last) as u64 + 1)
            }
        })
        .collect();
    let bbox = Region::new(bbox);
    let bshape = bbox.shape();
    let bstr = strides(&bshape);
    let mut buf = vec![f64::NAN; bbox.num_elements() as usize];
    for coords in endpoint.grid().chunks_in(&bbox) {
        let (mut values, covers) = read_chunk(endpoint, read.dtype, &coords)?;
        if !read.missing.is_empty() {
            for v in &mut values {
                if read.missing.contains(v) {
                    *v = f64::NAN;
                }
            }
        }
        let Some(both) = covers.intersect(&bbox) else {
            continue;
        };
        let cstr = strides(&covers.shape());
        for idx in chunkmill_grid::CoordIter::new(both.ranges().to_vec()) {
            let (mut src, mut dst) = (0u64, 0u64);
            for (k, &i) in idx.iter().enumerate() {
                src += (i - covers.ranges()[k].start) * cstr[k];
                dst += (i - bbox.ranges()[k].start) * bstr[k];
            }
            buf[dst as usize] = values[src as usize];
        }
    }
    // A read in the domain's own axes, forwards, is its bounding box: no gather, no copy.
    let identity = read.axes.len() == dom.len()
        && read
            .axes
            .iter()
            .enumerate()
            .all(|(k, a)| a.to == Some(k) && a.step == 1 && a.index.is_none());
    if identity {
        return Ok(buf);
    }
    // Gather: each domain axis moves the source offset by the source axes mapped onto it.
    let shape = region.shape();
    let mut moves: Vec<Vec<i64>> = shape.iter().map(|&n| vec![0; n as usize]).collect();
    let mut base = 0i64;
    for (k, a) in read.axes.iter().enumerate() {
        if let Some(d) = a.to {
            for (i, m) in moves[d].iter_mut().enumerate() {
                let at = dom[d].start + i as u64;
                let t = match &a.index {
                    Some(index) => match index.get(at as usize) {
                        Some(&t) if t != NO_INDEX => t as i64,
                        _ => {
                            *m = MISSING;
                            continue;
                        }
                    },
                    None => at as i64,
                };
                if *m != MISSING {
                    let src = a.start as i64 + a.step * t;
                    *m += (src - bbox.ranges()[k].start as i64) * bstr[k] as i64;
                }
            }
        } else {
            base += (a.start - bbox.ranges()[k].start) as i64 * bstr[k] as i64;
        }
    }
    let n = region.num_elements() as usize;
    let mut out = Vec::with_capacity(n);
    for idx in chunkmill_grid::CoordIter::new(shape.iter().map(|&n| 0..n).collect()) {
        let mut off = base;
        let mut missing = false;
        for (d, &i) in idx.iter().enumerate() {
            let m = moves[d][i as usize];
            missing |= m == MISSING;
            off += if m == MISSING { 0 } else { m };
        }
        out.push(if missing { f64::NAN } else { buf[off as usize] });
    }
    if shape.is_empty() {
        out.truncate(1);
        if out.is_empty() {
            out.push(buf.first().copied().unwrap_or(f64::NAN));
        }
    }
    Ok(out)
}

/// A domain offset that reads NaN (an index of [`NO_INDEX`]).
const MISSING: i64 = i64::MIN;

/// The source indices an indexed read axis needs over domain range `range`.
fn indexed_range(
    a: &ReadAxis,
    index: &[u64],
    range: &std::ops::Range<u64>,
) -> std::ops::Range<u64> {
    let sources = index
        .get(range.start as usize..(range.end as usize).min(index.len()))
        .unwrap_or(&[])
        .iter()
        .filter(|&&t| t != NO_INDEX)
        .map(|&t| (a.start as i64 + a.step * t as i64) as u64);
    let (lo, hi) = sources.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
    if lo > hi {
        a.start..a.start + 1
    } else {
        lo..hi + 1
    }
}

/// Write `values` (the exact `region` of `endpoint`, one chunk of it) as `dtype`.
fn write(
    endpoint: &Endpoint,
    dtype: DType,
    region: &Region,
    values: &[f64],
) -> Result<u64, String> {
    let grid = endpoint.grid();
    let coords: Vec<u64> = grid
        .chunks_in(region)
        .next()
        .ok_or_else(|| "an empty block".to_string())?;
    match endpoint {
        Endpoint::Zarr { url, path, .. } => {
            let store = Store::open(url).map_err(|e| e.to_string())?;
            let array = ZarrArray::open(&store, path).map_err(|e| e.to_string())?;
            let nominal: Vec<u64> = grid.axes().iter().map(|a| a.chunk(0).end.max(1)).collect();
            let exact = region.shape();
            let bytes = if nominal == exact {
                dtype.encode(values)
            } else {
                let mut full = vec![0.0; nominal.iter().product::<u64>() as usize];
                let (ns, es) = (strides(&nominal), strides(&exact));
                for idx in chunkmill_grid::CoordIter::new(exact.iter().map(|&n| 0..n).collect()) {
                    let d: u64 = idx.iter().zip(&ns).map(|(i, s)| i * s).sum();
                    let s: u64 = idx.iter().zip(&es).map(|(i, s)| i * s).sum();
                    full[d as usize] = values[s as usize];
                }
                dtype.encode(&full)
            };
            let n = bytes.len() as u64;
            array
                .write_chunk(&coords, bytes)
                .map_err(|e| e.to_string())?;
            Ok(n)
        }
        Endpoint::Pieces { url, prefix, .. } => {
            let store = Store::open(url).map_err(|e| e.to_string())?;
            let bytes = dtype.encode(values);
            let n = bytes.len() as u64;
            store
                .put(&piece_key(prefix, grid, &coords), bytes)
                .map_err(|e| e.to_string())?;
            Ok(n)
        }
        other => Err(format!("{}: compute cannot write here", other.describe())),
    }
}

/// Run the task of `stage` whose block is `region`.
///
/// # Errors
/// [`TaskError::Superseded`] when cancelled; [`TaskError::Failed`] when the kernel is not one
/// this build knows or a read or write fails.
pub fn run_task(
    stage: &ComputeStage,
    region: &Region,
    cancel: &Cancel,
) -> Result<TaskStats, TaskError> {
    let kernel: Kernel = serde_json::from_value(stage.kernel.clone())
        .map_err(|e| failed(format!("not a compute kernel of this chunkmill: {e}")))?;
    let mut stats = TaskStats::default();
    let n = region.num_elements() as usize;
    let mut reader = |r: &Read| -> Result<Vec<f64>, String> {
        if cancel.is_cancelled() {
            return Err("superseded".into());
        }
        let endpoint = stage
            .inputs
            .get(r.input)
            .ok_or("a read of an input the stage lacks")?;
        let block = read_block(endpoint, r, region)?;
        stats.bytes_read += (block.len() * r.dtype.size()) as u64;
        Ok(block)
    };
    let written = match &kernel {
        Kernel::Map { expr, dtype } => {
            let values = eval(expr, n, &mut reader).map_err(failed)?;
            write(&stage.output, *dtype, region, &values).map_err(failed)?
        }
        Kernel::Partial {
            expr,
            reduce,
            axes,
            finish,
        } => {
            let values = eval(expr, n, &mut reader).map_err(failed)?;
            partial(stage, region, &values, reduce, axes, *finish).map_err(failed)?
        }
        Kernel::Combine {
            reduce,
            axes,
            fan_in,
            finish,
        } => combine(stage, region, reduce, axes, fan_in, *finish, &mut stats).map_err(failed)?,
        Kernel::Group { step } => group::run(stage, region, step, &mut reader).map_err(failed)?,
    };
    // Blocks are freed here; give the pages back so the next task's admission holds.
    chunkmill_exec::memory::return_free_heap();
    if cancel.is_cancelled() {
        return Err(TaskError::Superseded);
    }
    stats.bytes_written += written;
    Ok(stats)
}

/// The kept part of a domain region (the reduced axes dropped).
fn kept(region: &Region, axes: &[usize]) -> Region {
    Region::new(
        region
            .ranges()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, r)| r.clone())
            .collect(),
    )
}

/// Where a state goes: the piece grid has the domain's axes (one piece per block along the
/// reduced ones) and a last axis of fields.
fn state_coords(blocks_coords: &[u64]) -> Vec<u64> {
    let mut c = blocks_coords.to_vec();
    c.push(0);
    c
}

fn partial(
    stage: &ComputeStage,
    region: &Region,
    values: &[f64],
    reduce: &Reduce,
    axes: &[usize],
    finish: Option<DType>,
) -> Result<u64, String> {
    let keep = kept(region, axes);
    let m = keep.num_elements() as usize;
    let kshape = keep.shape();
    let kstr = strides(&kshape);
    let mut state = reduce.empty(m);
    let shape = region.shape();
    for (e, idx) in
        chunkmill_grid::CoordIter::new(shape.iter().map(|&n| 0..n).collect()).enumerate()
    {
        let (mut j, mut k, mut index) = (0u64, 0usize, 0u64);
        for (d, &i) in idx.iter().enumerate() {
            if axes.contains(&d) {
                index = region.ranges()[d].start + i;
            } else {
                j += i * kstr[k];
                k += 1;
            }
        }
        reduce.add(&mut state, m, j as usize, values[e], index);
    }
    store_state(stage, region, reduce, axes, finish, &state, m)
}

fn store_state(
    stage: &ComputeStage,
    region: &Region,
    reduce: &Reduce,
    axes: &[usize],
    finish: Option<DType>,
    state: &[f64],
    m: usize,
) -> Result<u64, String> {
    match finish {
        Some(dtype) => {
            let values: Vec<f64> = (0..m)
                .map(|j| dtype.round(reduce.finish(state, m, j)))
                .collect();
            write(&stage.output, dtype, &kept(region, axes), &values)
        }
        None => {
            let Endpoint::Pieces { url, prefix, grid } = &stage.output else {
                return Err("a reduction state goes to intermediate pieces".into());
            };
            let coords = stage
                .blocks
                .chunks_in(region)
                .next()
                .ok_or("an empty block")?;
            let store = Store::open(url).map_err(|e| e.to_string())?;
            let bytes = DType::Float64.encode(state);
            let n = bytes.len() as u64;
            store
                .put(&piece_key(prefix, grid, &state_coords(&coords)), bytes)
                .map_err(|e| e.to_string())?;
            Ok(n)
        }
    }
}

fn combine(
    stage: &ComputeStage,
    region: &Region,
    reduce: &Reduce,
    axes: &[usize],
    fan_in: &[u64],
    finish: Option<DType>,
    stats: &mut TaskStats,
) -> Result<u64, String> {
    let Some(Endpoint::Pieces { url, prefix, grid }) = stage.inputs.first() else {
        return Err("a combine reads intermediate state pieces".into());
    };
    let store = Store::open(url).map_err(|e| e.to_string())?;
    let out = stage
        .blocks
        .chunks_in(region)
        .next()
        .ok_or("an empty block")?;
    let keep = kept(region, axes);
    let m = keep.num_elements() as usize;
    let counts = grid.counts();
    // The input pieces this task merges: `fan_in` of them along each reduced axis.
    let ranges: Vec<std::ops::Range<u64>> = out
        .iter()
        .enumerate()
        .map(|(d, &c)| match axes.iter().position(|&a| a == d) {
            Some(k) => c * fan_in[k]..((c + 1) * fan_in[k]).min(counts[d]),
            None => c..c + 1,
        })
        .collect();
    let mut state = reduce.empty(m);
    let mut part = Vec::new();
    for coords in chunkmill_grid::CoordIter::new(ranges) {
        let key = piece_key(prefix, grid, &state_coords(&coords));
        let bytes = store
            .get(&key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{url}/{key}: intermediate piece missing"))?;
        stats.bytes_read += bytes.len() as u64;
        DType::Float64.decode(&bytes, &mut part);
        reduce.merge(&mut state, &part, m);
    }
    store_state(stage, region, reduce, axes, finish, &state, m)
}
