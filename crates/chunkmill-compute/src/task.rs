//! Running one task of a compute stage: read the blocks its expression names, evaluate,
//! reduce or merge, write its output chunk or state piece.

use chunkmill_exec::{Cancel, TaskError, TaskStats};
use chunkmill_grid::{Grid, Region};
use chunkmill_plan::{ComputeStage, Endpoint};
use chunkmill_store::zarr::ZarrArray;
use chunkmill_store::Store;

use crate::dtype::DType;
use crate::eval::{eval, EvalError, Reader};
use crate::kernel::{Kernel, Part, Read, ReadAxis, Reduce, NO_INDEX};

mod group;

/// The key of piece `coords` of an intermediate `grid` under `prefix`.
#[must_use]
pub fn piece_key(prefix: &str, grid: &Grid, coords: &[u64]) -> String {
    format!("{prefix}/{}", grid.ravel(coords))
}

/// The stored bytes of piece `coords` of the intermediate `grid` at `url`/`prefix`; a piece
/// that is not there is an error (its writer's marker said it was).
fn read_piece(
    url: &str,
    prefix: &str,
    grid: &Grid,
    coords: &[u64],
) -> Result<chunkmill_store::Bytes, String> {
    let store = Store::open(url).map_err(|e| e.to_string())?;
    let key = piece_key(prefix, grid, coords);
    store
        .get(&key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{url}/{key}: intermediate piece missing"))
}

fn failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::failed(e.to_string())
}

/// The stored bytes of chunk `coords` of `endpoint` and the region they cover (a Zarr chunk at
/// its nominal shape, a piece at its exact one).
fn read_chunk(
    endpoint: &Endpoint,
    coords: &[u64],
) -> Result<(chunkmill_store::Bytes, Region), String> {
    let grid = endpoint.grid();
    let exact = grid.chunk_region(coords);
    match endpoint {
        Endpoint::Zarr { url, path, .. } => {
            let store = Store::open(url).map_err(|e| e.to_string())?;
            let array = ZarrArray::open(&store, path).map_err(|e| e.to_string())?;
            let bytes = array.read_chunk(coords).map_err(|e| e.to_string())?;
            let nominal: Vec<std::ops::Range<u64>> = exact
                .ranges()
                .iter()
                .zip(grid.axes())
                .map(|(r, a)| r.start..r.start + a.chunk(0).end.max(1))
                .collect();
            Ok((bytes.into(), Region::new(nominal)))
        }
        Endpoint::Pieces { url, prefix, .. } => {
            let bytes = read_piece(url, prefix, grid, coords)?;
            Ok((bytes, exact))
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

/// Call `run(src, dst, len)` for each run along the last axis of `both`, with its offsets in
/// the row-major elements of regions `from` and `to`.
fn each_run(from: &Region, to: &Region, both: &Region, mut run: impl FnMut(usize, usize, usize)) {
    let (fstr, tstr) = (strides(&from.shape()), strides(&to.shape()));
    let ndim = both.ndim();
    if ndim == 0 {
        run(0, 0, 1);
        return;
    }
    let last = both.ranges()[ndim - 1].clone();
    let len = (last.end - last.start) as usize;
    let mut outer: Vec<std::ops::Range<u64>> = both.ranges()[..ndim - 1].to_vec();
    outer.push(last.start..last.start + 1);
    for idx in chunkmill_grid::CoordIter::new(outer) {
        let (mut s, mut d) = (0u64, 0u64);
        for (k, &i) in idx.iter().enumerate() {
            s += (i - from.ranges()[k].start) * fstr[k];
            d += (i - to.ranges()[k].start) * tstr[k];
        }
        run(s as usize, d as usize, len);
    }
}

/// Copy the elements of `both` from `src` (the values of region `from`, row-major) into `dst`
/// (those of region `to`), a run along the last axis at a time.
fn copy_rows(src: &[f64], from: &Region, dst: &mut [f64], to: &Region, both: &Region) {
    each_run(from, to, both, |s, d, n| {
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    });
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
    // Zeroed pages cost nothing until written; NaN is needed only where no chunk lands.
    let covered = bbox
        .ranges()
        .iter()
        .zip(endpoint.grid().shape())
        .all(|(r, n)| r.end <= n);
    let mut buf = if covered {
        vec![0.0; bbox.num_elements() as usize]
    } else {
        vec![f64::NAN; bbox.num_elements() as usize]
    };
    let size = read.dtype.size();
    for coords in endpoint.grid().chunks_in(&bbox) {
        let (bytes, covers) = read_chunk(endpoint, &coords)?;
        let Some(both) = covers.intersect(&bbox) else {
            continue;
        };
        // Decoded straight into the block: no chunk-sized buffer of values between.
        each_run(&covers, &bbox, &both, |s, d, n| {
            if let Some(src) = bytes.get(s * size..(s + n) * size) {
                read.dtype.decode_into(src, &mut buf[d..d + n]);
            }
        });
    }
    if !read.missing.is_empty() {
        for v in &mut buf {
            if read.missing.contains(v) {
                *v = f64::NAN;
            }
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
                let inside = Region::whole(&exact);
                copy_rows(
                    values,
                    &inside,
                    &mut full,
                    &Region::whole(&nominal),
                    &inside,
                );
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
/// this build knows, a read or write fails, or the data holds a value the operation cannot
/// take (an integer division by zero, an all-NaN slice of `argmin`).
pub fn run_task(
    stage: &ComputeStage,
    region: &Region,
    cancel: &Cancel,
) -> Result<TaskStats, TaskError> {
    let kernel: Kernel = serde_json::from_value(stage.kernel.clone())
        .map_err(|e| failed(format!("not a compute kernel of this chunkmill: {e}")))?;
    let mut stats = TaskStats::default();
    let written = match &kernel {
        Kernel::Map { expr, dtype } => {
            let mut shared = SharedReads::new(std::iter::once(expr));
            let values = map_values(&mut shared, 0, expr, region, &mut |r, sub| {
                read_input(stage, r, sub, cancel, &mut stats)
            })
            .map_err(failed)?;
            write(output(stage, 0).map_err(failed)?, *dtype, region, &values).map_err(failed)?
        }
        Kernel::Maps { parts } => {
            let mut shared = SharedReads::new(parts.iter().map(|p| &p.expr));
            let mut written = 0;
            for (i, part) in parts.iter().enumerate() {
                let values = map_values(&mut shared, i, &part.expr, region, &mut |r, sub| {
                    read_input(stage, r, sub, cancel, &mut stats)
                })
                .map_err(failed)?;
                let out = output(stage, part.output).map_err(failed)?;
                written += write(out, part.dtype, region, &values).map_err(failed)?;
            }
            written
        }
        Kernel::Partial { parts, axes } => {
            partials(stage, region, parts, axes, cancel, &mut stats).map_err(failed)?
        }
        Kernel::Combine {
            reduce,
            axes,
            fan_in,
            finish,
        } => combine(stage, region, reduce, axes, fan_in, *finish, &mut stats).map_err(failed)?,
        Kernel::Group { step } => {
            let mut reader = |r: &Read, sub: &Region| read_input(stage, r, sub, cancel, &mut stats);
            group::run(stage, region, step, &mut reader).map_err(failed)?
        }
    };
    // Blocks are freed here; give the pages back so the next task's admission holds.
    chunkmill_exec::memory::return_free_heap();
    if cancel.is_cancelled() {
        return Err(TaskError::Superseded);
    }
    stats.bytes_written += written;
    Ok(stats)
}

/// The values of expression `i` over the whole `region`, evaluated tile by tile along its
/// first axis into one block.
fn map_values(
    shared: &mut SharedReads<'_>,
    i: usize,
    expr: &crate::kernel::Expr,
    region: &Region,
    read: &mut Reader<'_>,
) -> Result<Vec<f64>, String> {
    let mut out = vec![0.0; region.num_elements() as usize];
    shared.eval(i, expr, (region, 0), read, &mut |tile, values| {
        copy_rows(&values, tile, &mut out, region, tile);
        Ok(())
    })?;
    Ok(out)
}

fn output(stage: &ComputeStage, k: usize) -> Result<&Endpoint, String> {
    stage
        .outputs
        .get(k)
        .ok_or_else(|| format!("the kernel writes output {k}, which the stage lacks"))
}

fn read_input(
    stage: &ComputeStage,
    r: &Read,
    region: &Region,
    cancel: &Cancel,
    stats: &mut TaskStats,
) -> Result<Vec<f64>, String> {
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
}

/// Takes the values of each tile of an expression, in order.
type TileSink<'a> = dyn FnMut(&Region, Vec<f64>) -> Result<(), String> + 'a;

/// Elements of a tile: small enough that an expression's intermediate values stay in cache
/// and are reused by the allocator instead of mapped afresh for each block.
const TILE_ELEMENTS: u64 = 1 << 16;

/// The expressions of a task evaluated one after the other, each tile by tile: every read
/// is read over the whole block once, and kept until the last expression that names it.
struct SharedReads<'e> {
    /// Each distinct read and the last expression that names it.
    last: Vec<(&'e Read, usize)>,
    kept: Vec<(Read, Vec<f64>)>,
}

impl<'e> SharedReads<'e> {
    fn new(exprs: impl Iterator<Item = &'e crate::kernel::Expr>) -> Self {
        let mut last: Vec<(&Read, usize)> = Vec::new();
        for (i, expr) in exprs.enumerate() {
            let mut reads = Vec::new();
            expr.reads(&mut reads);
            for r in reads {
                match last.iter_mut().find(|(x, _)| *x == r) {
                    Some(u) => u.1 = i,
                    None => last.push((r, i)),
                }
            }
        }
        SharedReads {
            last,
            kept: Vec::new(),
        }
    }

    /// Evaluate expression `i` over `region`, giving `sink` the values of each tile (the
    /// region cut along `axis`) in order; what is not kept is read with `read`.
    fn eval(
        &mut self,
        i: usize,
        expr: &crate::kernel::Expr,
        (region, axis): (&Region, usize),
        read: &mut Reader<'_>,
        sink: &mut TileSink<'_>,
    ) -> Result<(), String> {
        let message = |e: EvalError| match e {
            EvalError::Read(m) => m,
            data => data.to_string(),
        };
        if !tileable(expr) {
            // Its parts read regions of their own: read as they ask, over the whole block.
            let values = eval(expr, region, read).map_err(message)?;
            sink(region, values)?;
        } else {
            let mut reads = Vec::new();
            expr.reads(&mut reads);
            for r in reads {
                if !self.kept.iter().any(|(x, _)| x == r) {
                    let block = read(r, region)?;
                    self.kept.push((r.clone(), block));
                }
            }
            for tile in tiles(region, axis) {
                let kept = &self.kept;
                let mut reader = |r: &Read, sub: &Region| -> Result<Vec<f64>, String> {
                    let block = kept
                        .iter()
                        .find(|(x, _)| x == r)
                        .map(|(_, v)| v)
                        .ok_or("a read that was not read")?;
                    let mut values = vec![0.0; sub.num_elements() as usize];
                    copy_rows(block, region, &mut values, sub, sub);
                    Ok(values)
                };
                let values = eval(expr, &tile, &mut reader).map_err(message)?;
                sink(&tile, values)?;
            }
        }
        let last = &self.last;
        self.kept
            .retain(|(r, _)| last.iter().any(|(x, l)| *x == r && *l > i));
        Ok(())
    }
}

/// Whether an expression reads only over its own domain region (a concatenation or a stack
/// evaluates its parts over other regions, so it is evaluated over the whole block).
fn tileable(expr: &crate::kernel::Expr) -> bool {
    use crate::kernel::Expr;
    match expr {
        Expr::Const(_) | Expr::Read(_) => true,
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => tileable(x),
        Expr::Binary { a, b, .. } => tileable(a) && tileable(b),
        Expr::Where { c, a, b, .. } => tileable(c) && tileable(a) && tileable(b),
        Expr::Concat { .. } | Expr::Stack { .. } => false,
    }
}

/// `region` cut along `axis` into tiles of about [`TILE_ELEMENTS`] elements (at least one
/// index of the axis each).
fn tiles(region: &Region, axis: usize) -> Vec<Region> {
    let Some(range) = region.ranges().get(axis).cloned() else {
        return vec![region.clone()];
    };
    let len = range.end - range.start;
    let per_index = region.num_elements() / len.max(1);
    let step = (TILE_ELEMENTS / per_index.max(1)).clamp(1, len.max(1));
    (range.start..range.end)
        .step_by(step as usize)
        .map(|a| {
            let mut ranges = region.ranges().to_vec();
            ranges[axis] = a..(a + step).min(range.end);
            Region::new(ranges)
        })
        .collect()
}

/// The partial step of one or more reductions over the same block, their reads shared.
fn partials(
    stage: &ComputeStage,
    region: &Region,
    parts: &[Part],
    axes: &[usize],
    cancel: &Cancel,
    stats: &mut TaskStats,
) -> Result<u64, String> {
    let mut shared = SharedReads::new(parts.iter().map(|p| &p.expr));
    let mut written = 0;
    let m = kept_region(region, axes).num_elements() as usize;
    // Tiles along a reduced axis keep the whole kept region: each folds into the same state.
    let axis = axes.first().copied().unwrap_or(0);
    for (i, part) in parts.iter().enumerate() {
        let mut state = part.reduce.empty(m);
        shared.eval(
            i,
            &part.expr,
            (region, axis),
            &mut |r, sub| read_input(stage, r, sub, cancel, stats),
            &mut |tile, values| {
                fold_block(&part.reduce, &mut state, m, &values, tile, axes);
                Ok(())
            },
        )?;
        written += store_state(
            stage,
            output(stage, part.output)?,
            region,
            &part.reduce,
            axes,
            part.finish,
            &state,
        )?;
    }
    Ok(written)
}

/// The kept part of a domain region (the reduced axes dropped).
fn kept_region(region: &Region, axes: &[usize]) -> Region {
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

/// Fold a block of `region`'s values (row-major) into a state of `m` kept elements: one
/// odometer over the block, the kept offset moved by each axis's stride (0 on reduced axes).
fn fold_block(
    reduce: &Reduce,
    state: &mut [f64],
    m: usize,
    values: &[f64],
    region: &Region,
    axes: &[usize],
) {
    let shape = region.shape();
    let ndim = shape.len();
    if values.is_empty() {
        return;
    }
    let keep_shape: Vec<u64> = (0..ndim)
        .filter(|d| !axes.contains(d))
        .map(|d| shape[d])
        .collect();
    let kstr = strides(&keep_shape);
    let mut step = vec![0u64; ndim];
    let mut k = 0;
    for (d, s) in step.iter_mut().enumerate() {
        if !axes.contains(&d) {
            *s = kstr[k];
            k += 1;
        }
    }
    // The index along the reduced axis, for argmin/argmax (which reduce one axis).
    let arg_axis = axes.first().copied();
    let arg_start = arg_axis.map_or(0, |a| region.ranges()[a].start);
    if ndim >= 2 && !axes.contains(&(ndim - 1)) {
        // The last axis is kept: each row of the block folds into a run of the state.
        let row = shape[ndim - 1] as usize;
        let outer: Vec<std::ops::Range<u64>> = shape[..ndim - 1].iter().map(|&n| 0..n).collect();
        for (r, idx) in chunkmill_grid::CoordIter::new(outer).enumerate() {
            let j: u64 = idx.iter().zip(&step).map(|(i, s)| i * s).sum();
            let index = arg_axis.map_or(0, |a| arg_start + idx[a]);
            if let Some(run) = values.get(r * row..(r + 1) * row) {
                reduce.add_run(state, m, j as usize, run, index);
            }
        }
        return;
    }
    let mut idx = vec![0u64; ndim];
    let mut j = 0u64;
    for &v in values {
        let index = arg_axis.map_or(0, |a| arg_start + idx[a]);
        reduce.add(state, m, j as usize, v, index);
        let mut d = ndim;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            j += step[d];
            if idx[d] < shape[d] {
                break;
            }
            j -= step[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Where a state goes: the piece grid has the domain's axes (one piece per block along the
/// reduced ones) and a last axis of fields.
fn state_coords(blocks_coords: &[u64]) -> Vec<u64> {
    let mut c = blocks_coords.to_vec();
    c.push(0);
    c
}

fn store_state(
    stage: &ComputeStage,
    out: &Endpoint,
    region: &Region,
    reduce: &Reduce,
    axes: &[usize],
    finish: Option<DType>,
    state: &[f64],
) -> Result<u64, String> {
    let m = state.len() / reduce.fields();
    match finish {
        Some(dtype) => {
            let values = (0..m)
                .map(|j| reduce.finish(state, m, j).map(|v| dtype.round(v)))
                .collect::<Result<Vec<f64>, _>>()
                .map_err(|e| e.to_string())?;
            write(out, dtype, &kept_region(region, axes), &values)
        }
        None => {
            let Endpoint::Pieces {
                url, prefix, grid, ..
            } = out
            else {
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
    let Some(Endpoint::Pieces {
        url, prefix, grid, ..
    }) = stage.inputs.first()
    else {
        return Err("a combine reads intermediate state pieces".into());
    };
    let store = Store::open(url).map_err(|e| e.to_string())?;
    let out = stage
        .blocks
        .chunks_in(region)
        .next()
        .ok_or("an empty block")?;
    let m = kept_region(region, axes).num_elements() as usize;
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
    store_state(
        stage,
        output(stage, 0)?,
        region,
        reduce,
        axes,
        finish,
        &state,
    )
}
