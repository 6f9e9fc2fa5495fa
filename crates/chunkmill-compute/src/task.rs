//! Running one task of a compute stage: read the blocks its expression names, evaluate,
//! reduce or merge, write its output chunk or state piece.

use chunkmill_exec::{Cancel, TaskError, TaskStats};
use chunkmill_grid::{Grid, Region};
use chunkmill_plan::{ComputeStage, Endpoint};

use crate::dtype::DType;
use crate::eval::{eval, EvalError};
use crate::kernel::{tile_step, tileable, Kernel, Part, Read, ReadAxis, Reduce, Unpack, NO_INDEX};
use crate::scratch;

mod group;
mod io;
mod tiles;
mod written;

pub use io::Io;
use tiles::TileReads;
pub use written::{written_pieces, WrittenPiece};

/// The key of piece `coords` of an intermediate `grid` under `prefix`.
#[must_use]
pub fn piece_key(prefix: &str, grid: &Grid, coords: &[u64]) -> String {
    format!("{prefix}/{}", grid.ravel(coords))
}

/// The stored bytes of piece `coords` of the intermediate `grid` at `url`/`prefix`; a piece
/// that is not there is an error (its writer's marker said it was).
fn read_piece(
    io: &Io,
    (url, prefix, grid): (&str, &str, &Grid),
    coords: &[u64],
) -> Result<chunkmill_store::Bytes, String> {
    let store = io.pieces(url)?;
    let key = piece_key(prefix, grid, coords);
    store
        .get(&key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{url}/{key}: intermediate piece missing"))
}

fn failed(e: impl std::fmt::Display) -> TaskError {
    TaskError::failed(e.to_string())
}

/// A chunk's stored bytes: in a buffer of this thread's (given back when decoded), as the
/// store returned them, or already in their place in the caller's box.
enum ChunkBytes {
    Spare(Vec<u8>),
    Stored(chunkmill_store::Bytes),
    InPlace,
}

impl ChunkBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            ChunkBytes::Spare(v) => v,
            ChunkBytes::Stored(b) => b,
            ChunkBytes::InPlace => &[],
        }
    }

    fn give_back(self) {
        if let ChunkBytes::Spare(v) = self {
            scratch::give_bytes(v);
        }
    }
}

/// The stored bytes of chunk `coords` of `endpoint` and the region they cover (a Zarr chunk at
/// its nominal shape, a piece at its exact one). With `into` (a box and its stored bytes), a
/// Zarr chunk that lies in the box as one run of it is decompressed straight into its place
/// where the codecs allow ([`ChunkBytes::InPlace`]).
fn read_chunk(
    io: &Io,
    endpoint: &Endpoint,
    coords: &[u64],
    size: usize,
    into: Option<(&Region, &mut [u8])>,
) -> Result<(ChunkBytes, Region), String> {
    let grid = endpoint.grid();
    let exact = grid.chunk_region(coords);
    match endpoint {
        Endpoint::Zarr { url, path, .. } => {
            let array = io.input(url, path)?;
            // The stored chunk's shape is the array's (a chunk may be longer than a short
            // array, which the grid clamps).
            let stored = &array.info().chunks;
            let nominal: Vec<std::ops::Range<u64>> = exact
                .ranges()
                .iter()
                .zip(grid.axes())
                .enumerate()
                .map(|(d, (r, a))| {
                    let len = stored.get(d).copied().unwrap_or_else(|| a.chunk(0).end);
                    r.start..r.start + len.max(1)
                })
                .collect();
            let nominal = Region::new(nominal);
            let n = nominal.num_elements() as usize;
            // The stored (compressed) bytes are read into a reused buffer too, sized by the
            // read; a chunk's values' size is the usual size class of it.
            let mut stored = scratch::bytes_as_left(n * size);
            let mut read_into = |dest: &mut [u8]| {
                array
                    .read_chunk_into_reusing(coords, dest, &mut stored)
                    .map_err(|e| e.to_string())
            };
            if let Some((bbox, raw)) = into {
                let place = run_start(bbox, &nominal)
                    .and_then(|at| raw.get_mut(at * size..(at + n) * size));
                if let Some(place) = place {
                    if read_into(place)? {
                        scratch::give_bytes(stored);
                        return Ok((ChunkBytes::InPlace, nominal));
                    }
                }
            }
            // Decompressed straight into a reused buffer where the codecs allow.
            let mut spare = scratch::bytes(n * size);
            let decoded = read_into(&mut spare)?;
            scratch::give_bytes(stored);
            if decoded {
                return Ok((ChunkBytes::Spare(spare), nominal));
            }
            scratch::give_bytes(spare);
            let bytes = array.read_chunk(coords).map_err(|e| e.to_string())?;
            Ok((ChunkBytes::Stored(bytes.into()), nominal))
        }
        Endpoint::Pieces { url, prefix, .. } => {
            let bytes = read_piece(io, (url, prefix, grid), coords)?;
            Ok((ChunkBytes::Stored(bytes), exact))
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
    Ok(read_held(&Io::default(), endpoint, read, region)?.into_values(region))
}

/// A read's values for a task's block as the task holds them: the bounding box of the source
/// indices the block needs, as stored, and where each domain position's value is in it.
struct Held {
    /// The box's values in their stored type (`dtype`, native order), in 8-byte words so that
    /// f32 and f64 values are read in place; a box with holes (beyond the array's edge) is
    /// held as f64 values, NaN in the holes.
    words: Vec<f64>,
    /// Elements in the box.
    len: usize,
    dtype: DType,
    /// Stored values that read NaN, masked as values are read out (an f64 box is masked once,
    /// when it is read, and has none left here).
    missing: Vec<f64>,
    /// CF unpacking, applied after the mask as values are read out (once, when it is read,
    /// for an f64 box, which then has none left here).
    unpack: Option<Unpack>,
    /// `None` when the box is the block itself (a read along the domain's own axes,
    /// forwards); else the offset of each position: `base` plus one move per domain axis.
    moves: Option<Moves>,
}

struct Moves {
    base: i64,
    /// Per axis of the block, per index along it: the offset it adds, or [`MISSING`].
    along: Vec<Vec<i64>>,
}

/// Where `inner` (a region within `outer`) starts among `outer`'s row-major elements, when
/// its elements are one run of them: the axes after the first one it cuts are whole, the
/// axes before it one long.
fn run_start(outer: &Region, inner: &Region) -> Option<usize> {
    if outer.ndim() != inner.ndim() {
        return None;
    }
    let within = outer
        .ranges()
        .iter()
        .zip(inner.ranges())
        .all(|(o, i)| o.start <= i.start && i.end <= o.end);
    if !within {
        return None;
    }
    let cut = (0..outer.ndim())
        .rev()
        .find(|&d| inner.ranges()[d] != outer.ranges()[d]);
    if let Some(cut) = cut {
        if !inner.shape()[..cut].iter().all(|&l| l == 1) {
            return None;
        }
    }
    let ostr = strides(&outer.shape());
    let at: u64 = (0..outer.ndim())
        .map(|d| (inner.ranges()[d].start - outer.ranges()[d].start) * ostr[d])
        .sum();
    Some(at as usize)
}

/// Read `read` over `region`: its bounding box as stored (chunks decompressed straight into
/// it where they lie in it as one run, copied in otherwise).
fn read_held(io: &Io, endpoint: &Endpoint, read: &Read, region: &Region) -> Result<Held, String> {
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
    let covered = bbox
        .ranges()
        .iter()
        .zip(endpoint.grid().shape())
        .all(|(r, n)| r.end <= n);
    // Every value of a covered box is stored over; NaN is needed only where no chunk lands,
    // which only an f64 box can hold.
    let n = bbox.num_elements() as usize;
    let dtype = if covered { read.dtype } else { DType::Float64 };
    let mut words = if covered {
        scratch::values((n * dtype.size()).div_ceil(8))
    } else {
        scratch::values_filled(n, f64::NAN)
    };
    let size = read.dtype.size();
    for coords in endpoint.grid().chunks_in(&bbox) {
        let into = (dtype == read.dtype).then(|| (&bbox, bytemuck::cast_slice_mut(&mut words)));
        let (bytes, covers) = read_chunk(io, endpoint, &coords, size, into)?;
        if matches!(bytes, ChunkBytes::InPlace) {
            continue;
        }
        let Some(both) = covers.intersect(&bbox) else {
            bytes.give_back();
            continue;
        };
        let raw = bytes.as_slice();
        let mut short = false;
        if dtype == read.dtype {
            let held: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
            each_run(&covers, &bbox, &both, |s, d, n| {
                match (
                    raw.get(s * size..(s + n) * size),
                    held.get_mut(d * size..(d + n) * size),
                ) {
                    (Some(src), Some(dst)) => dst.copy_from_slice(src),
                    _ => short = true,
                }
            });
        } else {
            each_run(&covers, &bbox, &both, |s, d, n| {
                match (raw.get(s * size..(s + n) * size), words.get_mut(d..d + n)) {
                    (Some(src), Some(dst)) => read.dtype.decode_into(src, dst),
                    _ => short = true,
                }
            });
        }
        bytes.give_back();
        if short && covered {
            return Err(format!(
                "{}: chunk {coords:?} holds fewer values than its shape",
                endpoint.describe()
            ));
        }
    }
    let mut missing = read.missing.clone();
    let mut unpack = read.unpack;
    if dtype == DType::Float64 {
        if !missing.is_empty() {
            mask(&mut words[..n], &missing);
            missing.clear();
        }
        if let Some(u) = unpack.take() {
            u.apply(&mut words[..n]);
        }
    }
    // A read in the domain's own axes, forwards, is its bounding box: no gather, no copy.
    let identity = read.axes.len() == dom.len()
        && read
            .axes
            .iter()
            .enumerate()
            .all(|(k, a)| a.to == Some(k) && a.step == 1 && a.index.is_none());
    let moves = (!identity).then(|| Moves::new(read, region, &bbox));
    Ok(Held {
        words,
        len: n,
        dtype,
        missing,
        unpack,
        moves,
    })
}

/// Stored values that mean "missing" read NaN.
fn mask(values: &mut [f64], missing: &[f64]) {
    for v in values {
        if missing.contains(v) {
            *v = f64::NAN;
        }
    }
}

impl Moves {
    /// Each domain axis moves the source offset by the source axes mapped onto it.
    fn new(read: &Read, region: &Region, bbox: &Region) -> Moves {
        let dom = region.ranges();
        let bstr = strides(&bbox.shape());
        let mut along: Vec<Vec<i64>> = region
            .shape()
            .iter()
            .map(|&n| vec![0; n as usize])
            .collect();
        let mut base = 0i64;
        for (k, a) in read.axes.iter().enumerate() {
            if let Some(d) = a.to {
                for (i, m) in along[d].iter_mut().enumerate() {
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
        Moves { base, along }
    }

    /// Call `row(offset of the row's first value, its moves along the last axis)` for each
    /// row of `sub` (a region within `block`); the offset is `None` for a row that is NaN.
    fn rows(&self, block: &Region, sub: &Region, mut row: impl FnMut(Option<i64>, &[i64])) {
        let Some((last, outer)) = self.along.split_last() else {
            row(Some(self.base), &[0]);
            return;
        };
        let ndim = block.ndim();
        let from = |d: usize| (sub.ranges()[d].start - block.ranges()[d].start) as usize;
        let lr = from(ndim - 1);
        let last =
            &last[lr..lr + (sub.ranges()[ndim - 1].end - sub.ranges()[ndim - 1].start) as usize];
        let outer_ranges: Vec<std::ops::Range<u64>> = (0..ndim - 1)
            .map(|d| {
                let f = from(d) as u64;
                f..f + (sub.ranges()[d].end - sub.ranges()[d].start)
            })
            .collect();
        for idx in chunkmill_grid::CoordIter::new(outer_ranges) {
            let mut off = self.base;
            let mut missing = false;
            for (d, &i) in idx.iter().enumerate() {
                let m = outer[d][i as usize];
                missing |= m == MISSING;
                off = off.wrapping_add(m);
            }
            row((!missing).then_some(off), last);
        }
    }
}

impl Held {
    /// Decode values `at..at + out.len()` of the box into `out` as f64, missing values NaN.
    fn decode(&self, at: usize, out: &mut [f64]) {
        let end = at + out.len();
        match self.dtype {
            DType::Float64 => {
                if let Some(src) = self.words.get(at..end) {
                    out.copy_from_slice(src);
                }
            }
            DType::Float32 => {
                let f32s: &[f32] = bytemuck::cast_slice(&self.words);
                if let Some(src) = f32s.get(at..end) {
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = f64::from(v);
                    }
                }
            }
            t => {
                let raw: &[u8] = bytemuck::cast_slice(&self.words);
                if let Some(src) = raw.get(at * t.size()..end * t.size()) {
                    t.decode_into(src, out);
                }
            }
        }
        if !self.missing.is_empty() {
            mask(out, &self.missing);
        }
        if let Some(u) = self.unpack {
            u.apply(out);
        }
    }

    /// The values over the whole `block` it was read for.
    fn into_values(self, block: &Region) -> Vec<f64> {
        if self.moves.is_none() && self.dtype == DType::Float64 {
            let mut words = self.words;
            words.truncate(self.len);
            return words;
        }
        let mut out = scratch::values(block.num_elements() as usize);
        self.gather_into(block, block, &mut out);
        scratch::give_values(self.words);
        out
    }

    /// The values over `sub` (within the task's `block`) into `out`, row by row (decoded in
    /// one loop where a row is a run of the box, the whole of `sub` at once where it is).
    fn gather_into(&self, block: &Region, sub: &Region, out: &mut [f64]) {
        let Some(moves) = &self.moves else {
            if let Some(at) = run_start(block, sub) {
                self.decode(at, out);
            } else {
                each_run(block, sub, sub, |s, d, n| {
                    if let Some(dst) = out.get_mut(d..d + n) {
                        self.decode(s, dst);
                    }
                });
            }
            return;
        };
        let mut at = 0;
        moves.rows(block, sub, |off, last| {
            let Some(dst) = out.get_mut(at..at + last.len()) else {
                return;
            };
            at += last.len();
            let Some(off) = off else {
                dst.fill(f64::NAN);
                return;
            };
            if is_run(last) {
                self.decode((off + last[0]) as usize, dst);
            } else {
                for (o, &m) in dst.iter_mut().zip(last) {
                    if m == MISSING {
                        *o = f64::NAN;
                    } else {
                        self.decode((off + m) as usize, std::slice::from_mut(o));
                    }
                }
            }
        });
    }

    /// The values over `sub` (within `block`) when the box holds f64 values and they are one
    /// run of it: a view, no copy.
    fn view(&self, block: &Region, sub: &Region) -> Option<&[f64]> {
        if self.dtype != DType::Float64 {
            return None;
        }
        let start = self.run_in(block, sub)?;
        self.words.get(start..start + sub.num_elements() as usize)
    }

    /// The values over `sub` (within `block`) as stored, when the box holds float32 values
    /// with none missing and they are one run of it: a view, no copy.
    fn view32(&self, block: &Region, sub: &Region) -> Option<&[f32]> {
        if self.dtype != DType::Float32 || !self.missing.is_empty() || self.unpack.is_some() {
            return None;
        }
        let start = self.run_in(block, sub)?;
        let f32s: &[f32] = bytemuck::cast_slice(&self.words);
        f32s.get(start..start + sub.num_elements() as usize)
    }

    /// Where the values over `sub` (within `block`) start in the box, when they are one run
    /// of it.
    fn run_in(&self, block: &Region, sub: &Region) -> Option<usize> {
        Some(match &self.moves {
            None => run_start(block, sub)?,
            Some(moves) => {
                let mut start: Option<i64> = None;
                let mut next = 0i64;
                let mut ok = true;
                moves.rows(block, sub, |off, last| match off {
                    Some(off) if ok && is_run(last) && !last.is_empty() => {
                        let s = off + last[0];
                        if start.is_some() && s != next {
                            ok = false;
                        }
                        start.get_or_insert(s);
                        next = s + last.len() as i64;
                    }
                    _ => ok = false,
                });
                if !ok {
                    return None;
                }
                usize::try_from(start?).ok()?
            }
        })
    }

    /// Its buffer back for reuse.
    fn give_back(self) {
        scratch::give_values(self.words);
    }
}

/// Whether moves along a row step through consecutive values.
fn is_run(last: &[i64]) -> bool {
    !last.contains(&MISSING) && last.windows(2).all(|w| w[1] == w[0] + 1)
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
    io: &Io,
    endpoint: &Endpoint,
    dtype: DType,
    region: &Region,
    values: &[f64],
) -> Result<u64, String> {
    let grid = endpoint.grid();
    match endpoint {
        Endpoint::Zarr { .. } => {
            let nominal: Vec<u64> = grid.axes().iter().map(|a| a.chunk(0).end.max(1)).collect();
            let exact = region.shape();
            let mut bytes = scratch::bytes(0);
            if nominal == exact {
                dtype.encode_into(values, &mut bytes);
            } else {
                let mut full =
                    scratch::values_filled(nominal.iter().product::<u64>() as usize, 0.0);
                let inside = Region::whole(&exact);
                copy_rows(
                    values,
                    &inside,
                    &mut full,
                    &Region::whole(&nominal),
                    &inside,
                );
                dtype.encode_into(&full, &mut bytes);
                scratch::give_values(full);
            }
            put_encoded(io, endpoint, region, bytes)
        }
        Endpoint::Pieces { .. } => {
            let mut bytes = scratch::bytes(0);
            dtype.encode_into(values, &mut bytes);
            put_encoded(io, endpoint, region, bytes)
        }
        other => Err(format!("{}: compute cannot write here", other.describe())),
    }
}

/// Store `bytes`, the encoded chunk of `endpoint` that `region` lies in (its nominal shape);
/// the buffer goes back for reuse.
fn put_encoded(
    io: &Io,
    endpoint: &Endpoint,
    region: &Region,
    bytes: Vec<u8>,
) -> Result<u64, String> {
    let grid = endpoint.grid();
    let coords: Vec<u64> = grid
        .chunks_in(region)
        .next()
        .ok_or_else(|| "an empty block".to_string())?;
    let n = bytes.len() as u64;
    match endpoint {
        Endpoint::Zarr { url, path, .. } => {
            let written = io.output(url, path)?.write_chunk_slice(&coords, &bytes);
            scratch::give_bytes(bytes);
            written.map_err(|e| e.to_string())?;
        }
        Endpoint::Pieces { url, prefix, .. } => {
            io.pieces(url)?
                .put(&piece_key(prefix, grid, &coords), bytes)
                .map_err(|e| e.to_string())?;
        }
        other => return Err(format!("{}: compute cannot write here", other.describe())),
    }
    Ok(n)
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
    io: &Io,
) -> Result<TaskStats, TaskError> {
    let kernel: Kernel = serde_json::from_value(stage.kernel.clone())
        .map_err(|e| failed(format!("not a compute kernel of this chunkmill: {e}")))?;
    let mut stats = TaskStats::default();
    let written = match &kernel {
        Kernel::Map { expr, dtype } => {
            let mut shared = SharedReads::new(std::iter::once(expr));
            let out = output(stage, 0).map_err(failed)?;
            map_write(
                io,
                &mut shared,
                (0, expr, *dtype),
                out,
                region,
                &mut |r, sub| read_input(io, stage, r, sub, cancel, &mut stats),
            )
            .map_err(failed)?
        }
        Kernel::Maps { parts } => {
            let mut shared = SharedReads::new(parts.iter().map(|p| &p.expr));
            let mut written = 0;
            for (i, part) in parts.iter().enumerate() {
                let out = output(stage, part.output).map_err(failed)?;
                written += map_write(
                    io,
                    &mut shared,
                    (i, &part.expr, part.dtype),
                    out,
                    region,
                    &mut |r, sub| read_input(io, stage, r, sub, cancel, &mut stats),
                )
                .map_err(failed)?;
            }
            written
        }
        Kernel::Partial { parts, axes, sub } => {
            partials(io, stage, region, (parts, axes, *sub), cancel, &mut stats).map_err(failed)?
        }
        Kernel::Combine {
            reduce,
            axes,
            fan_in,
            finish,
        } => combine(
            (stage, io),
            region,
            (reduce, axes, fan_in, *finish),
            &mut stats,
        )
        .map_err(failed)?,
        Kernel::Group { step } => {
            let mut reader =
                |r: &Read, sub: &Region| read_input(io, stage, r, sub, cancel, &mut stats);
            group::run((stage, io), region, step, &mut reader).map_err(failed)?
        }
    };
    // Freed memory is not trimmed here: the next task of the stage on this thread reuses it
    // (inside the reservation the thread keeps); [`scratch::release_idle`] gives it back
    // before the thread waits or runs another stage.
    if cancel.is_cancelled() {
        return Err(TaskError::Superseded);
    }
    stats.bytes_written += written;
    Ok(stats)
}

/// Evaluate expression `i` over `region` and write it to `out` as `dtype`: each tile encoded
/// straight into its place in the stored chunk's bytes (a Zarr chunk at its nominal shape,
/// zeros beyond the array's edge; a piece at its exact one), no block of values between.
fn map_write(
    io: &Io,
    shared: &mut SharedReads<'_>,
    (i, expr, dtype): (usize, &crate::kernel::Expr, DType),
    out: &Endpoint,
    region: &Region,
    read: &mut HeldReader<'_>,
) -> Result<u64, String> {
    let stored = match out {
        Endpoint::Zarr { grid, .. } => Region::new(
            region
                .ranges()
                .iter()
                .zip(grid.axes())
                .map(|(r, a)| r.start..r.start + a.chunk(0).end.max(1))
                .collect(),
        ),
        _ => region.clone(),
    };
    let size = dtype.size();
    let n = stored.num_elements() as usize;
    let mut bytes = if stored == *region {
        scratch::bytes(n * size)
    } else {
        let mut b = scratch::bytes(n * size);
        b.fill(0);
        b
    };
    shared.eval(i, expr, (region, 0), read, &mut |tile, values| {
        each_run(tile, &stored, tile, |s, d, n| {
            if let (Some(v), Some(b)) = (
                values.get(s..s + n),
                bytes.get_mut(d * size..(d + n) * size),
            ) {
                dtype.encode_slice(v, b);
            }
        });
        Ok(())
    })?;
    put_encoded(io, out, region, bytes)
}

fn output(stage: &ComputeStage, k: usize) -> Result<&Endpoint, String> {
    stage
        .outputs
        .get(k)
        .ok_or_else(|| format!("the kernel writes output {k}, which the stage lacks"))
}

fn read_input(
    io: &Io,
    stage: &ComputeStage,
    r: &Read,
    region: &Region,
    cancel: &Cancel,
    stats: &mut TaskStats,
) -> Result<Held, String> {
    if cancel.is_cancelled() {
        return Err("superseded".into());
    }
    let endpoint = stage
        .inputs
        .get(r.input)
        .ok_or("a read of an input the stage lacks")?;
    let held = read_held(io, endpoint, r, region)?;
    stats.bytes_read += (held.len * r.dtype.size()) as u64;
    Ok(held)
}

/// Reads a read over a task's block, as held ([`Held`]).
type HeldReader<'a> = dyn FnMut(&Read, &Region) -> Result<Held, String> + 'a;

/// Takes the values of each tile of an expression, in order.
type TileSink<'a> = dyn FnMut(&Region, &[f64]) -> Result<(), String> + 'a;

/// The expressions of a task evaluated one after the other, each tile by tile: every read
/// is read over the whole block once, and kept until the last expression that names it.
struct SharedReads<'e> {
    /// Each distinct read and the last expression that names it.
    last: Vec<(&'e Read, usize)>,
    kept: Vec<(Read, Held)>,
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
        read: &mut HeldReader<'_>,
        sink: &mut TileSink<'_>,
    ) -> Result<(), String> {
        if !tileable(expr) {
            // Its parts read regions of their own: read as they ask, over the whole block.
            let mut whole = |r: &Read, sub: &Region| Ok(read(r, sub)?.into_values(sub));
            let values = eval(expr, region, &mut whole).map_err(eval_message)?;
            sink(region, &values)?;
            scratch::give_values(values);
        } else {
            let mut reads = Vec::new();
            expr.reads(&mut reads);
            self.hold(&reads, region, read)?;
            for tile in tiles(region, axis) {
                let tile_reads = TileReads::new(&self.kept, &reads, region, &tile)?;
                let values = tile_reads.eval(expr, &tile).map_err(eval_message)?;
                sink(&tile, &values)?;
                values.give_back();
                tile_reads.give_back();
            }
        }
        self.release_after(i);
        Ok(())
    }

    /// Read each of `reads` over `region` that is not held yet.
    fn hold(
        &mut self,
        reads: &[&Read],
        region: &Region,
        read: &mut HeldReader<'_>,
    ) -> Result<(), String> {
        for &r in reads {
            if !self.kept.iter().any(|(x, _)| x == r) {
                let held = read(r, region)?;
                self.kept.push((r.clone(), held));
            }
        }
        Ok(())
    }

    /// Give back the reads that no expression after the `i`th names.
    fn release_after(&mut self, i: usize) {
        let last = &self.last;
        let (keep, done): (Vec<_>, Vec<_>) = std::mem::take(&mut self.kept)
            .into_iter()
            .partition(|(r, _)| last.iter().any(|(x, l)| *x == r && *l > i));
        self.kept = keep;
        for (_, held) in done {
            held.give_back();
        }
    }
}

/// What a failed evaluation says.
fn eval_message(e: EvalError) -> String {
    match e {
        EvalError::Read(m) => m,
        data => data.to_string(),
    }
}

/// `region` cut along `axis` into tiles of about [`crate::kernel::TILE_ELEMENTS`] elements (at least one
/// index of the axis each).
fn tiles(region: &Region, axis: usize) -> Vec<Region> {
    sub_blocks(region, axis, tile_step(&region.shape(), axis))
}

/// The partial step of one or more reductions over the same block, their reads shared,
/// `sub` elements of the first reduced axis at a time (0: the whole block at once).
fn partials(
    io: &Io,
    stage: &ComputeStage,
    region: &Region,
    (parts, axes, sub): (&[Part], &[usize], u64),
    cancel: &Cancel,
    stats: &mut TaskStats,
) -> Result<u64, String> {
    let kept = kept_region(region, axes);
    let m = kept.num_elements() as usize;
    // Tiles along a reduced axis keep the whole kept region: each folds into the same state.
    let axis = axes.first().copied().unwrap_or(0);
    let mut states: Vec<Vec<f64>> = parts.iter().map(|p| p.reduce.empty(m)).collect();
    let kept_first =
        tiles::reduces_leading_axes(region, axes) && parts.iter().all(|p| tileable(&p.expr));
    for block in sub_blocks(region, axis, sub) {
        // Reads are held for one sub-block: the next one's replace them.
        let mut shared = SharedReads::new(parts.iter().map(|p| &p.expr));
        if kept_first {
            tiles::fold_kept_first(
                &mut shared,
                (parts, &mut states),
                (&block, &kept, axes),
                &mut |r, sub| read_input(io, stage, r, sub, cancel, stats),
            )?;
            continue;
        }
        for (i, (part, state)) in parts.iter().zip(states.iter_mut()).enumerate() {
            shared.eval(
                i,
                &part.expr,
                (&block, axis),
                &mut |r, sub| read_input(io, stage, r, sub, cancel, stats),
                &mut |tile, values| {
                    fold_block(&part.reduce, (state, &kept), values, tile, axes);
                    Ok(())
                },
            )?;
        }
    }
    let mut written = 0;
    for (part, state) in parts.iter().zip(&states) {
        written += store_state(
            (stage, io),
            output(stage, part.output)?,
            region,
            (&part.reduce, axes, part.finish),
            state,
        )?;
    }
    Ok(written)
}

/// `region` cut along `axis` into consecutive parts of `sub` elements (the last shorter);
/// the whole region when `sub` is 0 or covers it.
fn sub_blocks(region: &Region, axis: usize, sub: u64) -> Vec<Region> {
    let Some(range) = region.ranges().get(axis).cloned() else {
        return vec![region.clone()];
    };
    if sub == 0 || sub >= range.end - range.start {
        return vec![region.clone()];
    }
    (range.start..range.end)
        .step_by(sub as usize)
        .map(|a| {
            let mut ranges = region.ranges().to_vec();
            ranges[axis] = a..(a + sub).min(range.end);
            Region::new(ranges)
        })
        .collect()
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

/// Fold a block of `region`'s values (row-major) into a state over the kept region `kept`
/// (which holds `region`'s kept part): one odometer over the block, the kept offset moved by
/// each axis's stride (0 on reduced axes).
fn fold_block(
    reduce: &Reduce,
    (state, kept): (&mut [f64], &Region),
    values: &[f64],
    region: &Region,
    axes: &[usize],
) {
    let shape = region.shape();
    let ndim = shape.len();
    if values.is_empty() {
        return;
    }
    let m = kept.num_elements() as usize;
    let kstr = strides(&kept.shape());
    let mut step = vec![0u64; ndim];
    let mut first = 0u64;
    let mut k = 0;
    for (d, s) in step.iter_mut().enumerate() {
        if !axes.contains(&d) {
            *s = kstr[k];
            first += (region.ranges()[d].start - kept.ranges()[k].start) * kstr[k];
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
            let j: u64 = first + idx.iter().zip(&step).map(|(i, s)| i * s).sum::<u64>();
            let index = arg_axis.map_or(0, |a| arg_start + idx[a]);
            if let Some(run) = values.get(r * row..(r + 1) * row) {
                reduce.add_run(state, m, j as usize, run, index);
            }
        }
        return;
    }
    let mut idx = vec![0u64; ndim];
    let mut j = first;
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
    (stage, io): (&ComputeStage, &Io),
    out: &Endpoint,
    region: &Region,
    (reduce, axes, finish): (&Reduce, &[usize], Option<DType>),
    state: &[f64],
) -> Result<u64, String> {
    let m = state.len() / reduce.fields();
    match finish {
        Some(dtype) => {
            let values = (0..m)
                .map(|j| reduce.finish(state, m, j).map(|v| dtype.round(v)))
                .collect::<Result<Vec<f64>, _>>()
                .map_err(|e| e.to_string())?;
            write(io, out, dtype, &kept_region(region, axes), &values)
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
            let bytes = DType::Float64.encode(state);
            let n = bytes.len() as u64;
            io.pieces(url)?
                .put(&piece_key(prefix, grid, &state_coords(&coords)), bytes)
                .map_err(|e| e.to_string())?;
            Ok(n)
        }
    }
}

fn combine(
    (stage, io): (&ComputeStage, &Io),
    region: &Region,
    (reduce, axes, fan_in, finish): (&Reduce, &[usize], &[u64], Option<DType>),
    stats: &mut TaskStats,
) -> Result<u64, String> {
    let Some(Endpoint::Pieces {
        url, prefix, grid, ..
    }) = stage.inputs.first()
    else {
        return Err("a combine reads intermediate state pieces".into());
    };
    let store = io.pieces(url)?;
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
        (stage, io),
        output(stage, 0)?,
        region,
        (reduce, axes, finish),
        &state,
    )
}
