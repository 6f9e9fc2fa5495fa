//! The jobs chunkmill runs, each built as a [`chunkmill_plan::Plan`] and run by an executor of
//! [`chunkmill_exec`]:
//!
//! * [`rechunk`] — Zarr v2/v3 → Zarr, bounded memory, the cheapest plan of direct, multipass,
//!   intermediate and multistage.
//! * [`convert`] — NetCDF/HDF5 files, references or Zarr → Zarr with a selection, renames,
//!   CF decoding, casts and reversed axes, planned and run as a rechunk is.
//!
//! Errors keep the error of the crate below as their source and say what the user should do
//! about them ([`OpsError::kind`]); the command line turns that into its exit code.

pub mod compute;
pub mod convert;
mod error;
pub mod job;
pub mod rechunk;
pub(crate) mod safety;
pub mod spec;
pub mod tasks;
pub mod values;
pub mod virtualize;
pub mod work;
mod work_files;

pub(crate) use error::Context;
pub use error::{ComputeError, ErrorKind, OpsError};
pub use work_files::check_work_dir;
