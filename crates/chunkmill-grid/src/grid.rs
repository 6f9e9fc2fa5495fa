//! Chunk grids: how each axis of an array is cut into chunks, regular or rectilinear.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{GridError, Region};

/// How one axis of length `len` is cut into consecutive chunks.
///
/// A regular axis stores two numbers however many chunks it has, so a plan over a million
/// chunks stays small. A rectilinear axis stores its boundaries.
///
/// Read from JSON (a plan a person may have edited) an axis is checked as its constructors
/// check it: a chunk size of 0 or boundaries that do not increase from 0 are an error, never a
/// division by zero later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "UncheckedAxis")]
pub enum AxisChunks {
    /// Chunks of `size` elements; the last one is clipped to `len`.
    Regular { size: u64, len: u64 },
    /// Chunk `i` spans `bounds[i]..bounds[i + 1]`; `bounds` starts at 0 and ends at the length.
    Rectilinear { bounds: Vec<u64> },
}

/// [`AxisChunks`] as JSON has it, before the checks.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum UncheckedAxis {
    Regular { size: u64, len: u64 },
    Rectilinear { bounds: Vec<u64> },
}

impl TryFrom<UncheckedAxis> for AxisChunks {
    type Error = GridError;

    fn try_from(axis: UncheckedAxis) -> Result<Self, GridError> {
        match axis {
            UncheckedAxis::Regular { size, len } => Self::regular(size, len),
            UncheckedAxis::Rectilinear { bounds } => Self::rectilinear(bounds),
        }
    }
}

impl AxisChunks {
    /// A regular axis. A chunk size of 0 is refused; an axis of length 0 has no chunks.
    ///
    /// # Errors
    /// [`GridError::ZeroChunk`] when `size` is 0.
    pub fn regular(size: u64, len: u64) -> Result<Self, GridError> {
        if size == 0 {
            return Err(GridError::ZeroChunk);
        }
        Ok(Self::Regular { size, len })
    }

    /// A rectilinear axis from strictly increasing boundaries starting at 0.
    ///
    /// # Errors
    /// [`GridError::BadBoundaries`] when the boundaries do not start at 0 or do not increase.
    pub fn rectilinear(bounds: Vec<u64>) -> Result<Self, GridError> {
        if bounds.first() != Some(&0) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            if bounds == [0] {
                return Ok(Self::Rectilinear { bounds });
            }
            return Err(GridError::BadBoundaries(bounds));
        }
        Ok(Self::Rectilinear { bounds })
    }

    /// The axis cut at the union of the boundaries of two cuttings of the same length, so that
    /// every chunk of either lies on whole chunks of the result.
    #[must_use]
    pub fn union(&self, other: &AxisChunks) -> AxisChunks {
        debug_assert_eq!(self.len(), other.len());
        if self == other {
            return self.clone();
        }
        if let (Self::Regular { size: a, len }, Self::Regular { size: b, .. }) = (self, other) {
            if a % b == 0 {
                return other.clone();
            }
            if b % a == 0 {
                return self.clone();
            }
            let _ = len;
        }
        let mut bounds: Vec<u64> = self.bounds().into_iter().chain(other.bounds()).collect();
        bounds.sort_unstable();
        bounds.dedup();
        AxisChunks::Rectilinear { bounds }
    }

    /// The length of the axis.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Regular { len, .. } => *len,
            Self::Rectilinear { bounds } => bounds.last().copied().unwrap_or(0),
        }
    }

    /// True when the axis has length 0.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of chunks along the axis.
    #[must_use]
    pub fn count(&self) -> u64 {
        match self {
            Self::Regular { size, len } => len.div_ceil(*size),
            Self::Rectilinear { bounds } => bounds.len().saturating_sub(1) as u64,
        }
    }

    /// The elements of chunk `i`.
    #[must_use]
    pub fn chunk(&self, i: u64) -> Range<u64> {
        match self {
            Self::Regular { size, len } => (i * size).min(*len)..((i + 1) * size).min(*len),
            Self::Rectilinear { bounds } => {
                let i = i as usize;
                bounds[i]..bounds[i + 1]
            }
        }
    }

    /// The largest chunk length along the axis (0 for an empty axis). A regular axis answers its
    /// nominal size even when the array is shorter: Zarr stores edge chunks at full size, and
    /// memory must be counted for what is really decoded.
    #[must_use]
    pub fn max_chunk(&self) -> u64 {
        match self {
            Self::Regular { size, len } => {
                if *len == 0 {
                    0
                } else {
                    *size
                }
            }
            Self::Rectilinear { bounds } => {
                bounds.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
            }
        }
    }

    /// The nominal chunk size of a regular axis.
    #[must_use]
    pub fn regular_size(&self) -> Option<u64> {
        match self {
            Self::Regular { size, .. } => Some(*size),
            Self::Rectilinear { .. } => None,
        }
    }

    /// The chunks that meet `range`, as a range of chunk indices.
    #[must_use]
    pub fn overlapping(&self, range: &Range<u64>) -> Range<u64> {
        if range.start >= range.end {
            return 0..0;
        }
        match self {
            Self::Regular { size, len } => {
                let end = range.end.min(*len);
                if range.start >= end {
                    return 0..0;
                }
                (range.start / size)..end.div_ceil(*size)
            }
            Self::Rectilinear { bounds } => {
                // First chunk whose end lies after the range start; last whose start lies before its end.
                let first = bounds
                    .partition_point(|&b| b <= range.start)
                    .saturating_sub(1);
                let last = bounds.partition_point(|&b| b < range.end);
                (first as u64)..(last.saturating_sub(1).max(first) as u64 + 1).min(self.count())
            }
        }
    }

    /// Every boundary, 0 and the length included.
    #[must_use]
    pub fn bounds(&self) -> Vec<u64> {
        match self {
            Self::Regular { .. } => {
                let mut out: Vec<u64> = (0..self.count()).map(|i| self.chunk(i).start).collect();
                out.push(self.len());
                out
            }
            Self::Rectilinear { bounds } => bounds.clone(),
        }
    }

    /// True when `range` starts and ends on boundaries of this axis.
    #[must_use]
    pub fn is_aligned(&self, range: &Range<u64>) -> bool {
        let on = |x: u64| match self {
            Self::Regular { size, len } => x.is_multiple_of(*size) || x == *len,
            Self::Rectilinear { bounds } => bounds.binary_search(&x).is_ok(),
        };
        on(range.start) && on(range.end)
    }

    /// Σ over the chunks of `blocks` of the total length of the chunks of `self` each meets:
    /// the elements read along this axis when every block reads whole chunks of `self`.
    #[must_use]
    pub fn covered_length(&self, blocks: &AxisChunks) -> u64 {
        (0..blocks.count())
            .map(|b| {
                let touched = self.overlapping(&blocks.chunk(b));
                if touched.is_empty() {
                    0
                } else {
                    self.chunk(touched.end - 1).end - self.chunk(touched.start).start
                }
            })
            .sum()
    }

    /// Σ over the chunks of `blocks` of the number of chunks of `self` each meets.
    #[must_use]
    pub fn covered_count(&self, blocks: &AxisChunks) -> u64 {
        (0..blocks.count())
            .map(|b| {
                let r = self.overlapping(&blocks.chunk(b));
                r.end - r.start
            })
            .sum()
    }
}

/// An N-dimensional chunk grid: one [`AxisChunks`] per axis. Chunks are numbered in C order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    axes: Vec<AxisChunks>,
}

impl Grid {
    /// A grid from its axes.
    #[must_use]
    pub fn new(axes: Vec<AxisChunks>) -> Self {
        Self { axes }
    }

    /// A regular grid of `chunks` over `shape`.
    ///
    /// # Errors
    /// [`GridError::Rank`] when the lengths differ, [`GridError::ZeroChunk`] for a 0 chunk.
    pub fn regular(shape: &[u64], chunks: &[u64]) -> Result<Self, GridError> {
        if shape.len() != chunks.len() {
            return Err(GridError::Rank {
                got: chunks.len(),
                expected: shape.len(),
            });
        }
        Ok(Self::new(
            shape
                .iter()
                .zip(chunks)
                .map(|(&len, &size)| AxisChunks::regular(size, len))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// The axes.
    #[must_use]
    pub fn axes(&self) -> &[AxisChunks] {
        &self.axes
    }

    /// Number of axes.
    #[must_use]
    pub fn ndim(&self) -> usize {
        self.axes.len()
    }

    /// The shape of the array the grid cuts.
    #[must_use]
    pub fn shape(&self) -> Vec<u64> {
        self.axes.iter().map(AxisChunks::len).collect()
    }

    /// Chunks per axis.
    #[must_use]
    pub fn counts(&self) -> Vec<u64> {
        self.axes.iter().map(AxisChunks::count).collect()
    }

    /// Number of chunks (1 for a 0-d array, 0 when any axis is empty).
    #[must_use]
    pub fn num_chunks(&self) -> u64 {
        self.counts().iter().product()
    }

    /// The largest chunk's shape, axis by axis.
    #[must_use]
    pub fn max_chunk_shape(&self) -> Vec<u64> {
        self.axes.iter().map(AxisChunks::max_chunk).collect()
    }

    /// Elements in the largest chunk.
    #[must_use]
    pub fn max_chunk_elements(&self) -> u64 {
        self.max_chunk_shape().iter().product()
    }

    /// The chunk coordinates of the chunk numbered `index` in C order.
    #[must_use]
    pub fn unravel(&self, mut index: u64) -> Vec<u64> {
        let counts = self.counts();
        let mut coords = vec![0; counts.len()];
        for (axis, &n) in counts.iter().enumerate().rev() {
            if n > 0 {
                coords[axis] = index % n;
                index /= n;
            }
        }
        coords
    }

    /// The C-order number of the chunk at `coords`.
    #[must_use]
    pub fn ravel(&self, coords: &[u64]) -> u64 {
        self.counts()
            .iter()
            .zip(coords)
            .fold(0, |acc, (&n, &c)| acc * n + c)
    }

    /// The elements of the chunk at `coords`.
    #[must_use]
    pub fn chunk_region(&self, coords: &[u64]) -> Region {
        Region::new(
            self.axes
                .iter()
                .zip(coords)
                .map(|(axis, &c)| axis.chunk(c))
                .collect(),
        )
    }

    /// The chunks that meet `region`, as a range of chunk coordinates per axis.
    #[must_use]
    pub fn overlapping(&self, region: &Region) -> Vec<Range<u64>> {
        self.axes
            .iter()
            .zip(region.ranges())
            .map(|(axis, r)| axis.overlapping(r))
            .collect()
    }

    /// Iterate the coordinates of every chunk that meets `region`, in C order.
    pub fn chunks_in(&self, region: &Region) -> impl Iterator<Item = Vec<u64>> {
        CoordIter::new(self.overlapping(region))
    }

    /// True when `region` starts and ends on chunk boundaries on every axis.
    #[must_use]
    pub fn is_aligned(&self, region: &Region) -> bool {
        self.axes
            .iter()
            .zip(region.ranges())
            .all(|(axis, r)| axis.is_aligned(r))
    }

    /// The grid cut at the union of both grids' boundaries.
    #[must_use]
    pub fn union(&self, other: &Grid) -> Grid {
        Grid::new(
            self.axes
                .iter()
                .zip(&other.axes)
                .map(|(a, b)| a.union(b))
                .collect(),
        )
    }
}

/// Iterates the integer points of a box of coordinates in C order.
#[derive(Clone, Debug)]
pub struct CoordIter {
    ranges: Vec<Range<u64>>,
    next: Option<Vec<u64>>,
}

impl CoordIter {
    /// Points of `ranges`; a 0-d box yields one empty point.
    #[must_use]
    pub fn new(ranges: Vec<Range<u64>>) -> Self {
        let next = if ranges.iter().any(|r| r.start >= r.end) {
            None
        } else {
            Some(ranges.iter().map(|r| r.start).collect())
        };
        Self { ranges, next }
    }
}

impl Iterator for CoordIter {
    type Item = Vec<u64>;

    fn next(&mut self) -> Option<Vec<u64>> {
        let current = self.next.take()?;
        let mut following = current.clone();
        for axis in (0..self.ranges.len()).rev() {
            following[axis] += 1;
            if following[axis] < self.ranges[axis].end {
                self.next = Some(following);
                return Some(current);
            }
            following[axis] = self.ranges[axis].start;
        }
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_block_size_zero_is_an_error_when_read_not_a_panic() {
        let zero: Result<AxisChunks, _> =
            serde_json::from_str(r#"{"kind": "regular", "size": 0, "len": 10}"#);
        assert!(zero.is_err_and(|e| e.to_string().contains("chunk size 0")));
        let backwards: Result<AxisChunks, _> =
            serde_json::from_str(r#"{"kind": "rectilinear", "bounds": [0, 5, 3]}"#);
        assert!(backwards.is_err());
        let fine: Result<AxisChunks, _> =
            serde_json::from_str(r#"{"kind": "regular", "size": 4, "len": 10}"#);
        assert_eq!(fine.ok(), AxisChunks::regular(4, 10).ok());
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn regular_axis_clips_last_chunk() -> TestResult {
        let axis = AxisChunks::regular(7, 33)?;
        assert_eq!(axis.count(), 5);
        assert_eq!(axis.chunk(4), 28..33);
        assert_eq!(axis.overlapping(&(6..15)), 0..3);
        assert_eq!(axis.overlapping(&(7..14)), 1..2);
        Ok(())
    }

    #[test]
    fn rectilinear_overlap_matches_regular() -> TestResult {
        let regular = AxisChunks::regular(5, 23)?;
        let rect = AxisChunks::rectilinear(regular.bounds())?;
        for start in 0..23 {
            for end in start + 1..=23 {
                assert_eq!(
                    regular.overlapping(&(start..end)),
                    rect.overlapping(&(start..end))
                );
            }
        }
        Ok(())
    }

    #[test]
    fn union_of_coprime_axes() -> TestResult {
        let a = AxisChunks::regular(3, 10)?;
        let b = AxisChunks::regular(4, 10)?;
        assert_eq!(a.union(&b).bounds(), vec![0, 3, 4, 6, 8, 9, 10]);
        Ok(())
    }

    #[test]
    fn zero_d_grid_has_one_chunk() -> TestResult {
        let grid = Grid::regular(&[], &[])?;
        assert_eq!(grid.num_chunks(), 1);
        assert_eq!(grid.chunks_in(&Region::whole(&[])).count(), 1);
        Ok(())
    }

    #[test]
    fn empty_axis_has_no_chunks() -> TestResult {
        let grid = Grid::regular(&[0, 10], &[1, 5])?;
        assert_eq!(grid.num_chunks(), 0);
        assert_eq!(grid.chunks_in(&Region::whole(&[0, 10])).count(), 0);
        Ok(())
    }
}
