//! [`ChunkManifest`]: where every chunk of one array is, as three flat vectors in C (row-major)
//! grid order — a path id, an offset, a length — plus a sparse map of inlined chunks.
//!
//! A path id indexes the URL table of the [`VirtualDataset`](crate::VirtualDataset) that holds
//! the array, so a URL is stored once however many chunks point into its file (VirtualiZarr
//! stores one string per chunk). Two ids are reserved: [`MISSING`] (never written: a read
//! returns the fill value) and [`INLINED`] (the stored bytes are in the manifest). 1 M chunks
//! cost 20 MB.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Path id of a chunk that was never written: its elements are the fill value.
pub const MISSING: u32 = u32::MAX;
/// Path id of a chunk whose stored bytes are held in the manifest.
pub const INLINED: u32 = u32::MAX - 1;
/// Largest path id that names a URL.
pub const MAX_PATH_ID: u32 = u32::MAX - 2;

/// One chunk of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEntry<'a> {
    /// Never written: the fill value.
    Missing,
    /// The stored (encoded) bytes, held in the manifest.
    Inlined(&'a [u8]),
    /// `length` bytes at `offset` of the URL numbered `path_id`.
    Reference {
        /// Index into the dataset's URL table.
        path_id: u32,
        /// First byte.
        offset: u64,
        /// Number of bytes.
        length: u64,
    },
}

/// Where every chunk of one array is, in C grid order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChunkManifest {
    grid_shape: Vec<u64>,
    path_ids: Vec<u32>,
    offsets: Vec<u64>,
    lengths: Vec<u64>,
    inlined: BTreeMap<usize, Vec<u8>>,
}

fn grid_len(grid_shape: &[u64]) -> Result<usize> {
    grid_shape
        .iter()
        .try_fold(1usize, |acc, &g| {
            usize::try_from(g).ok().and_then(|g| acc.checked_mul(g))
        })
        .ok_or_else(|| Error::Manifest(format!("chunk grid {grid_shape:?} is too large")))
}

impl ChunkManifest {
    /// A manifest of `grid_shape` chunks, all missing.
    ///
    /// # Errors
    /// [`Error::Manifest`] when the number of chunks does not fit in memory.
    pub fn new(grid_shape: Vec<u64>) -> Result<Self> {
        let n = grid_len(&grid_shape)?;
        Ok(Self {
            grid_shape,
            path_ids: vec![MISSING; n],
            offsets: vec![0; n],
            lengths: vec![0; n],
            inlined: BTreeMap::new(),
        })
    }

    /// Builds a manifest from its three vectors (VirtualiZarr's `from_arrays`). Chunks whose
    /// path id is [`INLINED`] must have their bytes in `inlined`, keyed by flat index.
    ///
    /// # Errors
    /// [`Error::Manifest`] when the lengths disagree with the grid or an inlined chunk has no
    /// bytes.
    pub fn from_arrays(
        grid_shape: Vec<u64>,
        path_ids: Vec<u32>,
        offsets: Vec<u64>,
        lengths: Vec<u64>,
        inlined: BTreeMap<usize, Vec<u8>>,
    ) -> Result<Self> {
        let n = grid_len(&grid_shape)?;
        if path_ids.len() != n || offsets.len() != n || lengths.len() != n {
            return Err(Error::Manifest(format!(
                "grid {grid_shape:?} has {n} chunks, got {} path ids, {} offsets, {} lengths",
                path_ids.len(),
                offsets.len(),
                lengths.len()
            )));
        }
        for (i, &id) in path_ids.iter().enumerate() {
            if id == INLINED && !inlined.contains_key(&i) {
                return Err(Error::Manifest(format!(
                    "chunk {i} is marked inlined but has no bytes"
                )));
            }
        }
        if let Some(&i) = inlined.keys().find(|&&i| path_ids.get(i) != Some(&INLINED)) {
            return Err(Error::Manifest(format!(
                "chunk {i} has inline bytes but is not marked inlined"
            )));
        }
        Ok(Self {
            grid_shape,
            path_ids,
            offsets,
            lengths,
            inlined,
        })
    }

    /// Number of chunks along each axis.
    pub fn grid_shape(&self) -> &[u64] {
        &self.grid_shape
    }

    /// Number of grid cells (written or not).
    pub fn len(&self) -> usize {
        self.path_ids.len()
    }

    /// Whether the grid has no cell (an axis of length 0).
    pub fn is_empty(&self) -> bool {
        self.path_ids.is_empty()
    }

    /// Path ids in grid order ([`MISSING`], [`INLINED`] or an index into the URL table).
    pub fn path_ids(&self) -> &[u32] {
        &self.path_ids
    }

    /// Offsets in grid order (0 unless a reference).
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Lengths in grid order (0 unless a reference).
    pub fn lengths(&self) -> &[u64] {
        &self.lengths
    }

    /// The flat (C-order) index of the chunk at `indices`, if inside the grid.
    pub fn flat_index(&self, indices: &[u64]) -> Option<usize> {
        if indices.len() != self.grid_shape.len() {
            return None;
        }
        let mut flat = 0usize;
        for (&i, &g) in indices.iter().zip(&self.grid_shape) {
            if i >= g {
                return None;
            }
            flat = flat
                .checked_mul(usize::try_from(g).ok()?)?
                .checked_add(usize::try_from(i).ok()?)?;
        }
        Some(flat)
    }

    /// The grid indices of flat index `flat`.
    pub fn indices(&self, flat: usize) -> Vec<u64> {
        let mut rest = flat as u64;
        let mut out = vec![0; self.grid_shape.len()];
        for (o, &g) in out.iter_mut().zip(&self.grid_shape).rev() {
            if g > 0 {
                *o = rest % g;
                rest /= g;
            }
        }
        out
    }

    /// Points chunk `flat` at `length` bytes at `offset` of URL `path_id`.
    ///
    /// # Errors
    /// [`Error::Manifest`] when `flat` is outside the grid or `path_id` is reserved.
    pub fn set_reference(
        &mut self,
        flat: usize,
        path_id: u32,
        offset: u64,
        length: u64,
    ) -> Result<()> {
        if path_id > MAX_PATH_ID {
            return Err(Error::Manifest(format!("path id {path_id} is reserved")));
        }
        self.check(flat)?;
        self.inlined.remove(&flat);
        self.path_ids[flat] = path_id;
        self.offsets[flat] = offset;
        self.lengths[flat] = length;
        Ok(())
    }

    /// Stores chunk `flat`'s encoded bytes in the manifest.
    ///
    /// # Errors
    /// [`Error::Manifest`] when `flat` is outside the grid.
    pub fn set_inlined(&mut self, flat: usize, bytes: Vec<u8>) -> Result<()> {
        self.check(flat)?;
        self.path_ids[flat] = INLINED;
        self.offsets[flat] = 0;
        self.lengths[flat] = 0;
        self.inlined.insert(flat, bytes);
        Ok(())
    }

    fn check(&self, flat: usize) -> Result<()> {
        if flat < self.len() {
            Ok(())
        } else {
            Err(Error::Manifest(format!(
                "chunk {flat} is outside the grid {:?} of {} chunks",
                self.grid_shape,
                self.len()
            )))
        }
    }

    /// Chunk `flat`, or `None` outside the grid.
    pub fn get(&self, flat: usize) -> Option<ChunkEntry<'_>> {
        let id = *self.path_ids.get(flat)?;
        Some(match id {
            MISSING => ChunkEntry::Missing,
            INLINED => ChunkEntry::Inlined(self.inlined.get(&flat).map_or(&[][..], Vec::as_slice)),
            _ => ChunkEntry::Reference {
                path_id: id,
                offset: self.offsets[flat],
                length: self.lengths[flat],
            },
        })
    }

    /// Every chunk with its flat index, in grid order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, ChunkEntry<'_>)> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i).map(|e| (i, e)))
    }

    /// Inlined chunks by flat index.
    pub fn inlined(&self) -> &BTreeMap<usize, Vec<u8>> {
        &self.inlined
    }

    /// (references, inlined, missing) counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let missing = self.path_ids.iter().filter(|&&p| p == MISSING).count();
        let inlined = self.inlined.len();
        (self.len() - missing - inlined, inlined, missing)
    }

    /// Whether any chunk is missing (its elements read as the fill value).
    pub fn has_missing(&self) -> bool {
        self.path_ids.contains(&MISSING)
    }

    /// Adds `offset` to every path id that names a URL (when URL tables are joined).
    ///
    /// # Errors
    /// [`Error::Manifest`] if an id would overflow into the reserved ones.
    pub fn shift_paths(&mut self, offset: u32) -> Result<()> {
        for id in &mut self.path_ids {
            if *id <= MAX_PATH_ID {
                *id = id
                    .checked_add(offset)
                    .filter(|&x| x <= MAX_PATH_ID)
                    .ok_or_else(|| Error::Manifest("too many URLs for 32-bit path ids".into()))?;
            }
        }
        Ok(())
    }

    /// Path ids rewritten through `map` (`map[old] = new`), for URL tables that are merged.
    ///
    /// # Errors
    /// [`Error::Manifest`] for an id outside `map`.
    pub fn remap_paths(&mut self, map: &[u32]) -> Result<()> {
        for id in &mut self.path_ids {
            if *id <= MAX_PATH_ID {
                *id = *map
                    .get(*id as usize)
                    .ok_or_else(|| Error::Manifest(format!("path id {id} has no URL")))?;
            }
        }
        Ok(())
    }

    /// Joins manifests along grid axis `axis`: their grids must agree on every other axis.
    /// This is chunk-level concatenation; the caller checks that no part ends in a partial
    /// chunk along `axis` (but the last).
    ///
    /// # Errors
    /// [`Error::Manifest`] when the grids disagree or `axis` is out of range.
    pub fn concat(parts: &[&ChunkManifest], axis: usize) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::Manifest("concat of no manifests".into()))?;
        let rank = first.grid_shape.len();
        if axis >= rank {
            return Err(Error::Manifest(format!(
                "axis {axis} out of range for rank {rank}"
            )));
        }
        let mut grid = first.grid_shape.clone();
        grid[axis] = 0;
        for p in parts {
            let same = p.grid_shape.len() == rank
                && p.grid_shape
                    .iter()
                    .zip(&first.grid_shape)
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            if !same {
                return Err(Error::Manifest(format!(
                    "cannot join grids {:?} and {:?} along axis {axis}",
                    first.grid_shape, p.grid_shape
                )));
            }
            grid[axis] += p.grid_shape[axis];
        }
        let outer = grid_len(&grid[..axis])?;
        let inner = grid_len(&grid[axis + 1..])?;
        let total = grid_len(&grid)?;
        let mut path_ids = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(total);
        let mut lengths = Vec::with_capacity(total);
        let mut inlined = BTreeMap::new();
        for o in 0..outer {
            for p in parts {
                let block = p.grid_shape[axis] as usize * inner;
                let start = o * block;
                let base = path_ids.len();
                path_ids.extend_from_slice(&p.path_ids[start..start + block]);
                offsets.extend_from_slice(&p.offsets[start..start + block]);
                lengths.extend_from_slice(&p.lengths[start..start + block]);
                for (&k, v) in p.inlined.range(start..start + block) {
                    inlined.insert(base + (k - start), v.clone());
                }
            }
        }
        Self::from_arrays(grid, path_ids, offsets, lengths, inlined)
    }

    /// Stacks manifests of equal grids along a new leading axis.
    ///
    /// # Errors
    /// [`Error::Manifest`] when the grids differ.
    pub fn stack(parts: &[&ChunkManifest]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::Manifest("stack of no manifests".into()))?;
        let mut grid = vec![parts.len() as u64];
        grid.extend_from_slice(&first.grid_shape);
        let mut lifted = Vec::with_capacity(parts.len());
        for p in parts {
            if p.grid_shape != first.grid_shape {
                return Err(Error::Manifest(format!(
                    "cannot stack grids {:?} and {:?}",
                    first.grid_shape, p.grid_shape
                )));
            }
            let mut q = (*p).clone();
            q.grid_shape.insert(0, 1);
            lifted.push(q);
        }
        let refs: Vec<&ChunkManifest> = lifted.iter().collect();
        let out = Self::concat(&refs, 0)?;
        debug_assert_eq!(out.grid_shape, grid);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(grid: Vec<u64>, path: u32) -> Result<ChunkManifest> {
        let mut m = ChunkManifest::new(grid)?;
        for i in 0..m.len() {
            m.set_reference(i, path, i as u64 * 100, 10 + i as u64)?;
        }
        Ok(m)
    }

    #[test]
    fn flat_indices_are_c_order() -> Result<()> {
        let m = ChunkManifest::new(vec![2, 3, 4])?;
        assert_eq!(m.flat_index(&[1, 2, 3]), Some(23));
        assert_eq!(m.indices(23), vec![1, 2, 3]);
        assert_eq!(m.flat_index(&[2, 0, 0]), None);
        assert_eq!(m.counts(), (0, 0, 24));
        Ok(())
    }

    #[test]
    fn concat_along_an_inner_axis_interleaves_blocks() -> Result<()> {
        let a = numbered(vec![2, 1], 0)?;
        let mut b = numbered(vec![2, 2], 1)?;
        b.set_inlined(3, vec![7, 7])?;
        let c = ChunkManifest::concat(&[&a, &b], 1)?;
        assert_eq!(c.grid_shape(), &[2, 3]);
        assert_eq!(c.path_ids(), &[0, 1, 1, 0, 1, INLINED]);
        assert_eq!(c.offsets(), &[0, 0, 100, 100, 200, 0]);
        assert_eq!(c.get(5), Some(ChunkEntry::Inlined(&[7, 7])));
        Ok(())
    }

    #[test]
    fn stack_adds_a_leading_axis() -> Result<()> {
        let a = numbered(vec![2], 0)?;
        let mut b = numbered(vec![2], 0)?;
        b.shift_paths(4)?;
        let s = ChunkManifest::stack(&[&a, &b])?;
        assert_eq!(s.grid_shape(), &[2, 2]);
        assert_eq!(s.path_ids(), &[0, 0, 4, 4]);
        assert!(ChunkManifest::stack(&[&a, &numbered(vec![3], 0)?]).is_err());
        Ok(())
    }

    #[test]
    fn from_arrays_checks_lengths_and_inline_marks() {
        assert!(
            ChunkManifest::from_arrays(vec![2], vec![0], vec![0], vec![0], BTreeMap::new())
                .is_err()
        );
        assert!(ChunkManifest::from_arrays(
            vec![1],
            vec![INLINED],
            vec![0],
            vec![0],
            BTreeMap::new()
        )
        .is_err());
    }
}
