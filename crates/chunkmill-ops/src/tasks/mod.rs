//! The tasks of every stage kind, run by the executors: copies (through the endpoints of a
//! plan) and scans. [`StageRunner`] runs any of them.

mod copy;
pub mod intermediates;
pub mod pieces;
pub mod references;
mod scan;

pub use copy::{forget_lost_pieces, StageRunner};
