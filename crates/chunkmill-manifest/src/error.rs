//! Errors of this crate. Every message starts with the file (or input, or output) it is about,
//! then the variable, then the reason, so that one line is enough to act on:
//! `chunkmill: <file>: <variable>: <reason>`.

use std::path::PathBuf;

/// Everything that can go wrong while scanning, combining, writing or reading references.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or listing a file failed (not HDF5/NetCDF, truncated, corrupt, …). The message
    /// of chunkmill-hdf5 already names the file and the object.
    #[error(transparent)]
    Source(#[from] chunkmill_hdf5::Error),

    /// An HDF5 filter that no Zarr codec expresses (szip, scaleoffset, nbit, lzf, unknown ids).
    #[error("{file}: {variable}: filter {filter} (HDF5 id {id}) has no Zarr codec: {reason}")]
    UnsupportedFilter {
        /// Path or URL of the file.
        file: String,
        /// Path of the variable in the file.
        variable: String,
        /// Short filter name (`szip`, `scaleoffset`, …).
        filter: String,
        /// HDF5 filter id.
        id: u16,
        /// Why, and what to do.
        reason: String,
    },

    /// A chunk whose filter mask says that some filters were skipped, which cannot be
    /// referenced as if fully filtered and could not be re-encoded and inlined.
    #[error(
        "{file}: {variable}: chunk {chunk:?} skipped filters {skipped:?} (filter mask {mask:#x}): {reason}"
    )]
    FilterMask {
        /// Path or URL of the file.
        file: String,
        /// Path of the variable in the file.
        variable: String,
        /// Grid indices of the chunk.
        chunk: Vec<u64>,
        /// The filter mask as stored.
        mask: u32,
        /// Names of the skipped filters.
        skipped: Vec<String>,
        /// Why it cannot be handled.
        reason: String,
    },

    /// A variable this crate cannot reference (variable-length or compound types, a value
    /// that cannot be decoded to be loaded, …).
    #[error("{file}: {variable}: {reason}")]
    Unsupported {
        /// Path or URL of the file.
        file: String,
        /// Path of the variable in the file.
        variable: String,
        /// What is not supported.
        reason: String,
    },

    /// Stored bytes that do not decode (a corrupt chunk, a wrong checksum).
    #[error("{file}: {variable}: cannot decode chunk {chunk:?}: {reason}")]
    Decode {
        /// Path or URL of the file.
        file: String,
        /// Path of the variable in the file.
        variable: String,
        /// Grid indices of the chunk.
        chunk: Vec<u64>,
        /// What went wrong.
        reason: String,
    },

    /// Two inputs of a combine differ where they must agree (boxed: it is the largest).
    #[error("{0}")]
    Mismatch(Box<Mismatch>),

    /// Inputs that cannot be joined by references, for a reason other than a plain difference
    /// (a partial chunk in the middle of the concat dimension, …).
    #[error("{file}: {variable}: {reason}")]
    Combine {
        /// The input concerned.
        file: String,
        /// The variable (array key).
        variable: String,
        /// Why, in words.
        reason: String,
    },

    /// Inputs that must not be combined as asked (the same file twice, overlapping or
    /// unordered concat coordinates, a concat dimension no input has): refused before
    /// anything is written.
    #[error("{0}")]
    Refused(String),

    /// An input argument (path, glob, `@file` list) that cannot be expanded.
    #[error("{input}: {reason}")]
    Input {
        /// The argument as given.
        input: String,
        /// Why.
        reason: String,
    },

    /// Options that do not fit the inputs (several files and no concat dimension, …).
    #[error("{0}")]
    Usage(String),

    /// Every input failed; the reasons are in `skipped`.
    #[error("all {} inputs failed; first: {}", .skipped.len(), .skipped.first().map_or("", |s| s.reason.as_str()))]
    AllInputsFailed {
        /// Each input and its reason.
        skipped: Vec<crate::SkippedFile>,
    },

    /// Writing the output could lose data chunkmill did not write (it is an input, holds one,
    /// is the current directory, is not references), or another job is writing it.
    #[error(transparent)]
    Guard(#[from] chunkmill_store::guard::GuardError),

    /// The output exists and overwriting was not asked for.
    #[error("{}: output exists; use --overwrite to replace it", .path.display())]
    OutputExists {
        /// The output path.
        path: PathBuf,
    },

    /// Writing the output failed; nothing was left at the output path.
    #[error("{}: cannot write: {source}", .path.display())]
    Write {
        /// The output path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A reference file that cannot be read.
    #[error("{path}: cannot read: {source}")]
    ReferenceRead {
        /// Path of the reference file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A reference file that cannot be parsed.
    #[error("{path}: {reason}")]
    Reference {
        /// Path of the reference file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A manifest operation on inconsistent shapes (a bug in the caller or a corrupt input).
    #[error("manifest: {0}")]
    Manifest(String),

    /// A file's scan failed in another process (an executor's task): its message, which names
    /// the file.
    #[error("{0}")]
    Task(String),

    /// The executor running the scans failed (a task could not run after its retries, the
    /// work dir could not be written).
    #[error("{0}")]
    Executor(String),
}

/// What the user should do about an [`Error`]: the category a caller (the command line's exit
/// codes, a job's own error) sorts it into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A malformed request: fix the command.
    Usage,
    /// Refused before anything was written: a missing, unreadable or inconsistent input (a
    /// glob that matches nothing is a missing input, as a path that does not exist is), an
    /// output that exists or must not be written.
    Refused,
    /// Failed while writing or running.
    Failed,
}

impl Error {
    /// The category of this error (decided here, once, for every caller).
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Write { .. } | Error::Executor(_) => ErrorKind::Failed,
            _ => ErrorKind::Refused,
        }
    }
}

/// What differs between an input of a combine and the first input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {variable}: {what} differs: got {got}, expected {expected} (as in {first}){hint}")]
pub struct Mismatch {
    /// The input that differs.
    pub file: String,
    /// The variable (array key) that differs.
    pub variable: String,
    /// What differs: `dtype`, `codecs`, `chunk shape`, `fill value`, `attribute
    /// scale_factor`, `shape`, `values`, `presence`, …
    pub what: String,
    /// Its value in `file`.
    pub got: String,
    /// Its value in the first input.
    pub expected: String,
    /// The first input, the reference for the comparison.
    pub first: String,
    /// Why that blocks and the way around it, starting with `; ` (empty when the difference
    /// says enough).
    pub hint: String,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
