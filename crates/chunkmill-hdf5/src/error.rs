//! Errors of this crate. Every message starts with the file it is about, so that one line is
//! enough to act on: `chunkmill: <file>: <object>: <reason>`.

/// Everything that can go wrong while opening, listing or referencing a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file starts with neither an HDF5 signature (also searched after a user block at
    /// 512, 1024, 2048, … bytes) nor a NetCDF-3 `CDF\x01`/`CDF\x02`/`CDF\x05` magic.
    #[error("{file}: not an HDF5 or NetCDF file")]
    NotHdf5OrNetcdf {
        /// Path or URL of the file.
        file: String,
    },

    /// A local file could not be opened.
    #[error("{file}: cannot open: {source}")]
    Open {
        /// Path of the file.
        file: String,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A byte-range read failed (I/O error, or a short read).
    #[error("{file}: reading {len} bytes at offset {offset} failed: {source}")]
    Read {
        /// Path or URL of the file.
        file: String,
        /// First byte asked for.
        offset: u64,
        /// Number of bytes asked for.
        len: u64,
        /// The source's error.
        source: std::io::Error,
    },

    /// Metadata points past the end of the file: the file is truncated (or corrupt).
    #[error("{file}: {object}: truncated file: needs bytes {offset}..{end}, got {size} bytes")]
    Truncated {
        /// Path or URL of the file.
        file: String,
        /// The variable or structure that needs the bytes.
        object: String,
        /// First byte needed.
        offset: u64,
        /// One past the last byte needed.
        end: u64,
        /// Size of the file.
        size: u64,
    },

    /// The HDF5 reader refused an object (corrupt metadata, unsupported encoding, …).
    #[error("{file}: {object}: {source}")]
    Hdf5 {
        /// Path or URL of the file.
        file: String,
        /// The object (group, variable, attribute) being read, or `/` for the file itself.
        object: String,
        /// The reader's error.
        source: hdf5_reader::error::Error,
    },

    /// The NetCDF-3 header could not be parsed.
    #[error("{file}: NetCDF-3 header: {source}")]
    NetCdf3 {
        /// Path or URL of the file.
        file: String,
        /// The reader's error.
        source: netcdf_reader::Error,
    },

    /// A variable's metadata is inconsistent (it names the variable and what is wrong).
    #[error("{file}: {variable}: {reason}")]
    InvalidVariable {
        /// Path or URL of the file.
        file: String,
        /// Path of the variable in the file.
        variable: String,
        /// What is wrong, in words.
        reason: String,
    },

    /// A valid object whose storage this crate cannot reference (virtual datasets, external
    /// raw data files, …).
    #[error("{file}: {variable}: unsupported: {reason}")]
    Unsupported {
        /// Path or URL of the file.
        file: String,
        /// Path of the object in the file.
        variable: String,
        /// What is not supported.
        reason: String,
    },

    /// No variable at that path.
    #[error("{file}: no variable {variable}")]
    NoSuchVariable {
        /// Path or URL of the file.
        file: String,
        /// The path asked for.
        variable: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
