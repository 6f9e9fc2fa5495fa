//! The exceptions of the package, one per exit-code category of the `chunkmill` command, all
//! under `ChunkmillError`, with the message the command prints.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    chunkmill,
    ChunkmillError,
    PyException,
    "Every error chunkmill raises; its subclasses are the exit-code categories of the \
     `chunkmill` command, and the message is the one the command prints."
);
create_exception!(
    chunkmill,
    RefusedError,
    ChunkmillError,
    "Refused before anything was written (the command's exit code 3): an input that does \
     not exist or cannot be read, an output that exists, files that differ."
);
create_exception!(
    chunkmill,
    UsageError,
    ChunkmillError,
    "A malformed request (the command's exit code 2): a bad argument, option or value."
);
create_exception!(
    chunkmill,
    JobError,
    ChunkmillError,
    "Failed while running (the command's exit code 1): a read or write that failed."
);

/// Adds the exception types to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ChunkmillError", py.get_type::<ChunkmillError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("UsageError", py.get_type::<UsageError>())?;
    m.add("JobError", py.get_type::<JobError>())?;
    Ok(())
}

/// The exception of exit code `code` (2 usage, 3 refused, anything else failed).
pub fn by_code(code: i32, message: String) -> PyErr {
    match code {
        2 => UsageError::new_err(message),
        3 => RefusedError::new_err(message),
        _ => JobError::new_err(message),
    }
}

/// `e` as the exception of the exit code the command gives it.
pub fn manifest(e: chunkmill_manifest::Error) -> PyErr {
    use chunkmill_manifest::ErrorKind;
    let message = e.to_string();
    match e.kind() {
        ErrorKind::Usage => UsageError::new_err(message),
        ErrorKind::Refused => RefusedError::new_err(message),
        _ => JobError::new_err(message),
    }
}

/// `e` as the command reports it: chunkmill-manifest wraps errors of chunkmill-hdf5.
pub fn hdf5(e: chunkmill_hdf5::Error) -> PyErr {
    manifest(chunkmill_manifest::Error::from(e))
}

/// A request that cannot be served (exit code 2).
pub fn usage(message: impl Into<String>) -> PyErr {
    UsageError::new_err(message.into())
}

/// A failure of the command's jobs as the exception of its exit code (an interruption that
/// Python did not raise itself is a failed job).
pub fn failure(f: &chunkmill::Failure) -> PyErr {
    by_code(f.exit_code(), f.to_string())
}
