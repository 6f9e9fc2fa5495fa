//! The jobs chunkmill runs, each built as a [`chunkmill_plan::Plan`] and run by an executor of
//! [`chunkmill_exec`]:
//!
//! * [`rechunk`] — Zarr v2/v3 → Zarr, bounded memory, the cheapest plan of direct, multipass,
//!   intermediate and multistage.
//! * [`convert`] — NetCDF/HDF5 files, references or Zarr → Zarr with a selection, renames,
//!   CF decoding, casts and reversed axes, planned and run as a rechunk is.
//!
//! Errors carry the exit code the command line gives them ([`OpsError::exit_code`]).

pub mod compute;
pub mod convert;
pub mod job;
pub mod rechunk;
pub(crate) mod safety;
pub mod spec;
pub mod tasks;
pub mod values;
pub mod virtualize;
pub mod work;

/// Why a job did not complete, sorted by what the user should do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The request itself is malformed (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Refused before anything ran: missing or inconsistent inputs, a target that exists, a
    /// plan that does not fit the memory budget (exit 3). Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// Failed while running, after retries (exit 1). Markers of finished tasks are kept, so
    /// `--resume` continues.
    #[error("{0}")]
    Failed(String),
    /// Stopped by the user (Ctrl-C) after cancelling what it had started (exit 130); markers
    /// are kept, so `--resume` continues.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl OpsError {
    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            OpsError::Usage(_) => 2,
            OpsError::Refused(_) => 3,
            OpsError::Failed(_) => 1,
            OpsError::Interrupted(_) => 130,
        }
    }
}
