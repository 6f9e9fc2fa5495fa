//! Tiles of a task's block as the expressions take them: each read's values over a tile
//! decoded once from its held box (in its stored type) into a small buffer that every
//! expression of the tile shares, and a reduction over the leading axes cut with the kept
//! axes outermost, so that the states a tile folds into stay in cache while every reduced
//! index folds into them (cut along the reduced axis, each tile would stream the whole state
//! through memory once).

use chunkmill_grid::Region;

use super::{eval_message, fold_block, Held, HeldReader, SharedReads};
use crate::eval::{eval_with_views, EvalError, Lent, Tile};
use crate::kernel::{tile_elements, Expr, Part, Read};
use crate::scratch;

/// Elements of a kept box: its states (a few fields of f64 per part) and the tile's decoded
/// reads and intermediate values stay within a core's L2 cache.
const KEPT_TILE: u64 = 8192;

/// Each distinct read of a tile, as its expressions take it: a view of its held box where
/// that holds f64 or float32 values in one run, else decoded into a buffer of this thread's.
pub(super) struct TileReads<'h> {
    reads: Vec<(&'h Read, TileRead<'h>)>,
}

enum TileRead<'h> {
    Values(Tile<'h>),
    F32(&'h [f32]),
}

impl<'h> TileReads<'h> {
    /// Decode `reads` (all held in `kept` over `block`) over `tile`, each distinct one once.
    pub(super) fn new(
        kept: &'h [(Read, Held)],
        reads: &[&Read],
        block: &Region,
        tile: &Region,
    ) -> Result<Self, String> {
        let n = tile.num_elements() as usize;
        let mut out: Vec<(&'h Read, TileRead<'h>)> = Vec::new();
        for &r in reads {
            if out.iter().any(|(x, _)| *x == r) {
                continue;
            }
            let (read, held) = kept
                .iter()
                .find(|(x, _)| x == r)
                .ok_or("a read that was not read")?;
            let values = if let Some(v) = held.view(block, tile) {
                TileRead::Values(Tile::View(v))
            } else if let Some(v) = held.view32(block, tile) {
                TileRead::F32(v)
            } else {
                let mut buf = scratch::values(n);
                held.gather_into(block, tile, &mut buf);
                TileRead::Values(Tile::Owned(buf))
            };
            out.push((read, values));
        }
        Ok(TileReads { reads: out })
    }

    /// `expr` over the tile, its reads taken from here.
    pub(super) fn eval(&self, expr: &Expr, tile: &Region) -> Result<Tile<'_>, EvalError> {
        let views = |r: &Read| {
            self.reads
                .iter()
                .find(|(x, _)| *x == r)
                .map(|(_, t)| match t {
                    TileRead::Values(v) => Lent::F64(v),
                    TileRead::F32(v) => Lent::F32(v),
                })
        };
        let mut unread = |_: &Read, _: &Region| Err("a read that was not read".to_string());
        eval_with_views(expr, tile, &views, &mut unread)
    }

    /// Its buffers back for reuse.
    pub(super) fn give_back(self) {
        for (_, values) in self.reads {
            if let TileRead::Values(v) = values {
                v.give_back();
            }
        }
    }
}

/// Whether `axes` are the leading axes of `region` (and some axis is kept): the case that
/// [`fold_kept_first`] tiles.
pub(super) fn reduces_leading_axes(region: &Region, axes: &[usize]) -> bool {
    !axes.is_empty() && axes.len() < region.ndim() && axes.iter().enumerate().all(|(i, &a)| i == a)
}

/// `block` cut for a reduction over its first `r` axes: boxes of the kept axes of at most
/// `most` elements (the inner axes whole, one axis cut, the outer ones an index at a time),
/// and for each box, in order, the reduced indices an index at a time (several of the last
/// reduced axis while the tile stays within `most`).
fn kept_tiles(block: &Region, r: usize, most: u64) -> Vec<Region> {
    let shape = block.shape();
    let ranges = block.ranges();
    let ndim = shape.len();
    // The kept axis that is cut, and the elements of the axes inside it.
    let mut cut = None;
    let mut inner = 1u64;
    for d in (r..ndim).rev() {
        if inner * shape[d] > most {
            cut = Some(d);
            break;
        }
        inner *= shape[d];
    }
    let (cut, step) = match cut {
        Some(d) => (d, (most / inner).max(1)),
        None => (r, shape[r].max(1)),
    };
    let box_elems = shape[cut + 1..].iter().product::<u64>() * step.min(shape[cut]);
    let along = (most / box_elems.max(1)).clamp(1, shape[r - 1].max(1));
    // Outer kept axes an index at a time, the cut axis in steps.
    let mut box_axes: Vec<Vec<std::ops::Range<u64>>> = (r..=cut)
        .map(|d| {
            let (s, e) = (ranges[d].start, ranges[d].end);
            let by = if d == cut { step } else { 1 };
            (s..e)
                .step_by(by as usize)
                .map(|a| a..(a + by).min(e))
                .collect()
        })
        .collect();
    // Reduced axes an index at a time, the last in steps of `along`.
    box_axes.splice(
        0..0,
        (0..r).map(|d| {
            let (s, e) = (ranges[d].start, ranges[d].end);
            let by = if d == r - 1 { along } else { 1 };
            (s..e)
                .step_by(by as usize)
                .map(|a| a..(a + by).min(e))
                .collect::<Vec<_>>()
        }),
    );
    // Boxes outermost: the kept pieces vary slowest.
    let order: Vec<usize> = (r..=cut).chain(0..r).collect();
    let counts: Vec<u64> = order.iter().map(|&d| box_axes[d].len() as u64).collect();
    let mut tiles = Vec::new();
    for pick in chunkmill_grid::CoordIter::new(counts.iter().map(|&c| 0..c).collect()) {
        let mut tile = ranges.to_vec();
        for (k, &d) in order.iter().enumerate() {
            tile[d] = box_axes[d][pick[k] as usize].clone();
        }
        tiles.push(Region::new(tile));
    }
    tiles
}

/// The partial step of reductions over the leading axes `axes` of `block`: every read held
/// over the block, then tile by tile ([`kept_tiles`]) each tile's reads decoded once for all
/// parts, each part evaluated and folded into its states (over `kept`).
pub(super) fn fold_kept_first(
    shared: &mut SharedReads<'_>,
    (parts, states): (&[Part], &mut [Vec<f64>]),
    (block, kept, axes): (&Region, &Region, &[usize]),
    read: &mut HeldReader<'_>,
) -> Result<(), String> {
    let mut reads = Vec::new();
    for p in parts {
        p.expr.reads(&mut reads);
    }
    shared.hold(&reads, block, read)?;
    let mut distinct: Vec<&Read> = Vec::new();
    for &r in &reads {
        if !distinct.contains(&r) {
            distinct.push(r);
        }
    }
    // The tile's decoded reads, shared by the parts, and one part's intermediate values stay
    // within the tiles the projection counts (a tile along the reduced axis per node).
    let nodes = parts
        .iter()
        .map(|p| p.expr.buffers())
        .max()
        .unwrap_or(1)
        .max(1);
    let counted = tile_elements(&block.shape(), axes[0]) * nodes / (distinct.len() as u64 + nodes);
    let most = KEPT_TILE.min(counted).max(1);
    for tile in kept_tiles(block, axes.len(), most) {
        let tile_reads = TileReads::new(&shared.kept, &distinct, block, &tile)?;
        for (part, state) in parts.iter().zip(states.iter_mut()) {
            let values = tile_reads.eval(&part.expr, &tile).map_err(eval_message)?;
            fold_block(&part.reduce, (state, kept), &values, &tile, axes);
            values.give_back();
        }
        tile_reads.give_back();
    }
    shared.release_after(usize::MAX);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_tiles_cover_the_block_once_boxes_outermost() {
        // A (5, 3, 7) block from (10, 0, 2), reduced over its first axis, boxes of at most 8
        // elements: the last axis (7) whole, the middle one an index at a time.
        let block = Region::new(vec![10..15, 0..3, 2..9]);
        let tiles = kept_tiles(&block, 1, 8);
        let mut seen = std::collections::HashMap::new();
        for t in &tiles {
            assert!(t.num_elements() <= 8, "{t:?}");
            for c in chunkmill_grid::CoordIter::new(t.ranges().to_vec()) {
                *seen.entry(c).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len() as u64, block.num_elements());
        assert!(seen.values().all(|&n| n == 1));
        // The first box's every reduced index comes before the next box.
        let first: Vec<_> = tiles
            .iter()
            .take(5)
            .map(|t| t.ranges()[1].clone())
            .collect();
        assert!(first.iter().all(|r| *r == (0..1)));
        assert_eq!(tiles[5].ranges()[1], 1..2);
        // A kept region smaller than a box: several reduced indices a tile.
        let small = Region::new(vec![0..9, 0..2]);
        let tiles = kept_tiles(&small, 1, 8);
        assert_eq!(tiles[0].ranges(), &[0..4, 0..2]);
        assert_eq!(tiles.len(), 3);
        // The innermost axis longer than a box is cut itself.
        let wide = Region::new(vec![0..2, 0..20]);
        let tiles = kept_tiles(&wide, 1, 8);
        assert_eq!(tiles[0].ranges(), &[0..1, 0..8]);
        assert_eq!(tiles[1].ranges(), &[1..2, 0..8]);
        assert_eq!(tiles.len(), 6);
    }
}
