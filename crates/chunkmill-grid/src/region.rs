//! Axis-aligned boxes of array elements.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A box of elements: one half-open range per axis. A 0-d array has one region with no axes,
/// holding exactly one element.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Region {
    ranges: Vec<Range<u64>>,
}

impl Region {
    /// A region from one range per axis.
    #[must_use]
    pub fn new(ranges: Vec<Range<u64>>) -> Self {
        Self { ranges }
    }

    /// The region covering a whole array of `shape`.
    #[must_use]
    pub fn whole(shape: &[u64]) -> Self {
        Self::new(shape.iter().map(|&len| 0..len).collect())
    }

    /// The ranges, one per axis.
    #[must_use]
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Number of axes.
    #[must_use]
    pub fn ndim(&self) -> usize {
        self.ranges.len()
    }

    /// The start of every axis.
    #[must_use]
    pub fn start(&self) -> Vec<u64> {
        self.ranges.iter().map(|r| r.start).collect()
    }

    /// The length of every axis.
    #[must_use]
    pub fn shape(&self) -> Vec<u64> {
        self.ranges
            .iter()
            .map(|r| r.end.saturating_sub(r.start))
            .collect()
    }

    /// Number of elements (1 for a 0-d region, 0 when any axis is empty).
    #[must_use]
    pub fn num_elements(&self) -> u64 {
        self.shape().iter().product()
    }

    /// True when the region holds no element.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.num_elements() == 0
    }

    /// The elements both regions hold, or `None` when they do not meet.
    #[must_use]
    pub fn intersect(&self, other: &Region) -> Option<Region> {
        debug_assert_eq!(self.ndim(), other.ndim());
        let ranges: Vec<Range<u64>> = self
            .ranges
            .iter()
            .zip(&other.ranges)
            .map(|(a, b)| a.start.max(b.start)..a.end.min(b.end))
            .collect();
        if ranges.iter().any(|r| r.start >= r.end) {
            return None;
        }
        Some(Region::new(ranges))
    }

    /// True when `other` lies wholly inside this region.
    #[must_use]
    pub fn contains(&self, other: &Region) -> bool {
        self.ranges
            .iter()
            .zip(&other.ranges)
            .all(|(a, b)| a.start <= b.start && b.end <= a.end)
    }

    /// This region expressed relative to `origin` (which must not lie after it on any axis).
    #[must_use]
    pub fn relative_to(&self, origin: &[u64]) -> Region {
        Region::new(
            self.ranges
                .iter()
                .zip(origin)
                .map(|(r, &o)| (r.start - o)..(r.end - o))
                .collect(),
        )
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[")?;
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}..{}", r.start, r.end)?;
        }
        write!(f, "]")
    }
}
