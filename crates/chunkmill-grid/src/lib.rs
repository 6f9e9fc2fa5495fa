//! Chunk grids, regions, block iteration and rechunk plans: pure math, no I/O.
//!
//! * [`Grid`] cuts an array into chunks, axis by axis, regular or rectilinear ([`AxisChunks`]).
//! * [`Region`] is a box of elements; [`copy_region`] moves one between two buffers.
//! * [`rechunk`] chooses how to move an array from one chunking to another within a memory
//!   budget: direct, multipass, through one intermediate, or multistage.
//!
//! ```
//! use chunkmill_grid::{Grid, Region};
//!
//! let grid = Grid::regular(&[10, 10], &[4, 5])?;
//! assert_eq!(grid.num_chunks(), 6);
//! // The chunks a 3x3 box at (3, 4) touches.
//! let touched: Vec<_> = grid.chunks_in(&Region::new(vec![3..6, 4..7])).collect();
//! assert_eq!(touched, vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]);
//! # Ok::<(), chunkmill_grid::GridError>(())
//! ```

mod copy;
mod grid;
pub mod rechunk;
mod region;

pub use copy::copy_region;
pub use grid::{AxisChunks, CoordIter, Grid};
pub use region::Region;

/// What the grid math refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GridError {
    /// A chunk of length 0.
    #[error("chunk size 0 is not allowed")]
    ZeroChunk,
    /// Rectilinear boundaries that do not start at 0 or do not increase.
    #[error("chunk boundaries must start at 0 and increase, got {0:?}")]
    BadBoundaries(Vec<u64>),
    /// A list with the wrong number of axes.
    #[error("got {got} axes, expected {expected}")]
    Rank { got: usize, expected: usize },
    /// No task of any strategy fits the budget.
    #[error(
        "one task needs at least {task_bytes} bytes but the budget per task is {budget} bytes"
    )]
    DoesNotFit { task_bytes: u64, budget: u64 },
}
