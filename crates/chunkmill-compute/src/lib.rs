//! `chunkmill compute`: array expressions over Zarr arrays with xarray's semantics (named
//! dimensions, broadcasting by name, NaN-skipping reductions), planned as bounded-memory
//! stages that the executors of `chunkmill-exec` run like any other job.
//!
//! * [`syntax`] — the language: `NAME = EXPR` lines, Python's operators, calls and methods.
//! * [`check`] — names, functions and dimensions resolved into lazy arrays ([`model`]).
//! * [`planner`] — fused map stages and tree reductions, each task's memory projected.
//! * [`kernel`] — what a task computes (plan data); [`eval`] — evaluating an expression over a
//!   block; [`task`] — running one.
//! * [`time`] — CF time on a coordinate: `groupby` keys, `resample` bins, dates for `sel`.

pub mod check;
pub mod dtype;
pub mod eval;
pub mod kernel;
pub mod model;
pub mod open;
pub mod planner;
pub mod scratch;
pub mod syntax;
pub mod task;
pub mod time;

pub use check::{check, CheckError, Inputs};
pub use open::{open_inputs, read_coordinate, InputSpec};
pub use planner::{plan, ComputePlan, PlanError, Target};
pub use scratch::release_idle;
pub use syntax::{parse, SyntaxError};
pub use task::{run_task, Io};
