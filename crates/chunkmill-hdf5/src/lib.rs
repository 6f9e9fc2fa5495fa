//! # chunkmill-hdf5
//!
//! Lists what is inside HDF5, NetCDF-4 and NetCDF-3 files — groups, variables, attributes,
//! dimensions — and **where every chunk's bytes are**, so that the data can be referenced
//! (kerchunk, Icechunk virtual chunks) or copied without decoding through libhdf5.
//!
//! It is the one adapter over the pure-Rust [`hdf5-reader`](hdf5_reader) and
//! [`netcdf-reader`](netcdf_reader) crates (pinned exactly): no C library, no global lock, one
//! [`SourceFile`] shared by any number of threads.
//!
//! ## Overview
//!
//! - A [`RangeSource`] serves byte ranges: [`LocalFile`] (positional reads), [`MemorySource`],
//!   and later object stores. Wrap a remote source in a [`BlockCache`]: HDF5 metadata is
//!   read in many small pieces, which the cache turns into few aligned block requests.
//! - [`SourceFile::open`] detects the format ([`detect_format`]): the HDF5 signature (also
//!   behind a user block), or a NetCDF-3 magic; anything else is
//!   [`Error::NotHdf5OrNetcdf`].
//! - [`SourceFile::inventory`] lists groups, [`Variable`]s (shape, numpy dtype, layout, chunk
//!   shape, fill value, filters, attributes as JSON, dimension names) and [`Dimension`]s.
//!   An object the reader refuses (a virtual dataset) is recorded in
//!   [`Inventory::unlisted`] with the reason, and its siblings are still listed.
//! - [`SourceFile::data_refs`] gives a variable's [`DataRefs`]: every written chunk as a
//!   [`ChunkRef`] (grid indices, absolute offset, stored length, filter mask), or one
//!   contiguous range, or the compact bytes. NetCDF-3 record variables give one chunk per
//!   record.
//!
//! ## What is normalised
//!
//! hdf5-reader's index collectors return what the file stores; a chunk reference needs more
//! (see the hdf5-reader evaluation, `shared/anchors/hdf5-eval.md` §4.1). This crate:
//!
//! 1. drops the element-size dimension of chunked layout messages;
//! 2. turns a stored size of 0 (unfiltered fixed-array, extensible-array, v2 B-tree and
//!    single-chunk entries) into the whole chunk: chunk elements × element size;
//! 3. adds the superblock offset (the user block) to every address, so offsets are absolute;
//! 4. drops chunks left outside a shrunk extent, sorts chunks in grid order, and refuses any
//!    range that passes the end of the file ([`Error::Truncated`]);
//! 5. lists each object once, under its first hard link in name order; other hard and soft
//!    links become [`Variable::aliases`].
//!
//! ## Support
//!
//! | | |
//! |---|---|
//! | Layouts | contiguous (never-written: no range), compact (inline bytes), chunked |
//! | Chunk indexes | v1 B-tree, single chunk, implicit, fixed array, extensible array, v2 B-tree |
//! | Filters | all are listed with ids and parameters (deflate, shuffle, fletcher32, szip, nbit, scaleoffset, lzf, zstd, blosc, …); none is decoded here |
//! | Dimension names | `DIMENSION_LIST` dimension scales, `_Netcdf4Coordinates`/`_Netcdf4Dimid`, NetCDF-4 dimension-only datasets, NetCDF-3 dimensions |
//! | NetCDF-3 | CDF-1, CDF-2, CDF-5; record variables strided; default fill values of netcdf.h |
//! | Not listed | virtual datasets and external links (recorded in `unlisted`); external raw data files ([`Error::Unsupported`]) |
//!
//! ## Example
//!
//! ```
//! use std::sync::Arc;
//! use chunkmill_hdf5::{DataRefs, SourceFile, MemorySource, RangeSource};
//!
//! # fn classic_file() -> Vec<u8> {
//! #     // A NetCDF-3 classic file: dimension x = 3, variable short v(x) = [1, 2, 3].
//! #     let mut f = b"CDF\x01".to_vec();
//! #     let be = |n: u32| n.to_be_bytes();
//! #     for word in [0, 0x0A, 1, 1] { f.extend(be(word)); }
//! #     f.extend(b"x\0\0\0");
//! #     for word in [3, 0, 0, 0x0B, 1, 1] { f.extend(be(word)); }
//! #     f.extend(b"v\0\0\0");
//! #     for word in [1, 0, 0, 0, 3, 8, 80] { f.extend(be(word)); }
//! #     for value in [1i16, 2, 3, 0] { f.extend(value.to_be_bytes()); }
//! #     f
//! # }
//! # fn main() -> Result<(), chunkmill_hdf5::Error> {
//! // A local file would be `SourceFile::open_path("data.nc")?`.
//! let source: Arc<dyn RangeSource> = Arc::new(MemorySource::new("data.nc", classic_file()));
//! let file = SourceFile::open(source)?;
//! let inventory = file.inventory()?;
//! let Some(v) = inventory.variable("/v") else { panic!("/v is not listed") };
//! assert_eq!(v.dtype.numpy, ">i2");
//! assert_eq!(v.dimensions.as_deref(), Some(&["x".to_string()][..]));
//! match file.data_refs(v)? {
//!     DataRefs::Contiguous { range: Some(range) } => {
//!         assert_eq!((range.offset, range.length), (80, 6));
//!         assert_eq!(file.read_range(range.offset, range.length)?.as_ref(), &[0, 1, 0, 2, 0, 3]);
//!     }
//!     other => panic!("expected one contiguous range, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Threads
//!
//! [`SourceFile`] is `Send + Sync`. hdf5-reader keeps per-file caches behind their own
//! short-held mutexes and has no process-wide lock, so listing several files, or several
//! variables of one file, scales with threads.

mod cache;
mod dtype;
mod error;
mod format;
mod hdf5;
pub mod lzf;
mod model;
mod netcdf3;
mod source;
mod values;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use cache::{BlockCache, CacheStats, DEFAULT_BLOCK_SIZE, DEFAULT_CACHE_BYTES};
pub use error::{Error, Result};
pub use format::{detect_format, Format, HDF5_SIGNATURE};
pub use hdf5::filter_name;
pub use model::{
    Attribute, ByteOrder, ByteRange, ChunkIndexKind, ChunkRef, DType, DataRefs, Dimension, Field,
    FillValue, Filter, GroupInfo, Inventory, Layout, Unlisted, Variable,
};
pub use source::{LocalFile, MemorySource, RangeSource, LISTING_HEAD};

/// HDF5 filters that no Zarr codec expresses but hdf5-reader decodes: szip, nbit, scaleoffset.
pub const NATIVE_FILTERS: [u16; 3] = [4, 5, 6];

/// Filters no Zarr codec expresses that [`decode_native_filter`] decodes: the
/// [`NATIVE_FILTERS`] and LZF ([`lzf`]).
pub const DECODABLE_FILTERS: [u16; 4] = [4, 5, 6, lzf::LZF_FILTER];

/// Decodes `data` through HDF5 filter `id` (one of [`DECODABLE_FILTERS`]) with hdf5-reader's own
/// decoder and the filter's client data, producing at most `limit` bytes: how `chunkmill
/// convert` reads variables whose filters no Zarr codec expresses.
///
/// # Errors
/// A filter that is not one of them, or bytes that do not decode.
pub fn decode_native_filter(
    id: u16,
    client_data: &[u32],
    data: &[u8],
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    use hdf5_reader::filters::{nbit, scaleoffset, szip};
    let decoded = match id {
        4 => szip::decompress_with_limit(data, client_data, limit),
        5 => nbit::decompress_with_limit(data, client_data, limit),
        6 => scaleoffset::decompress_with_limit(data, client_data, limit),
        lzf::LZF_FILTER => {
            let n = lzf::decoded_size(client_data)?;
            if n > limit {
                return Err(format!(
                    "lzf: a chunk of {n} bytes passes the limit of {limit}"
                ));
            }
            return lzf::decompress(data, n);
        }
        other => return Err(format!("HDF5 filter {other} has no decoder here")),
    };
    decoded.map_err(|e| e.to_string())
}

/// One open HDF5, NetCDF-4 or NetCDF-3 file. `Send + Sync`: share it between threads.
pub struct SourceFile {
    source: Arc<dyn RangeSource>,
    format: Format,
    reader: Reader,
}

enum Reader {
    Hdf5(hdf5::Hdf5Reader),
    NetCdf3(netcdf3::NetCdf3Reader),
}

impl std::fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFile")
            .field("source", &self.source)
            .field("format", &self.format)
            .finish()
    }
}

impl SourceFile {
    /// Opens the file `source` serves: detects its format and reads the superblock (HDF5) or
    /// the header (NetCDF-3).
    ///
    /// # Errors
    /// [`Error::NotHdf5OrNetcdf`] for any other file; [`Error::Hdf5`], [`Error::NetCdf3`] or
    /// [`Error::Truncated`] when the superblock or header is corrupt or cut short;
    /// [`Error::Read`] when the source fails.
    pub fn open(source: Arc<dyn RangeSource>) -> Result<Self> {
        let format = detect_format(source.as_ref())?;
        let reader = match format {
            Format::Hdf5 { .. } => Reader::Hdf5(hdf5::Hdf5Reader::open(source.clone())?),
            _ => Reader::NetCdf3(netcdf3::NetCdf3Reader::open(source.clone(), format)?),
        };
        Ok(Self {
            source,
            format,
            reader,
        })
    }

    /// Opens a local file, read with positional reads (the OS page cache is the cache).
    ///
    /// # Errors
    /// [`Error::Open`] if it cannot be opened, then as [`SourceFile::open`].
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(Arc::new(LocalFile::open(path)?))
    }

    /// Opens a local file to list it (its inventory, chunk indexes and small values): its
    /// first [`LISTING_HEAD`] bytes are read at once and held while it is open (see
    /// [`LocalFile::open_for_listing`]).
    ///
    /// # Errors
    /// As [`SourceFile::open_path`].
    pub fn open_path_for_listing(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(Arc::new(LocalFile::open_for_listing(path)?))
    }

    /// Path or URL of the file.
    pub fn name(&self) -> &str {
        self.source.name()
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.source.size()
    }

    /// The source the file is read from.
    pub fn source(&self) -> &Arc<dyn RangeSource> {
        &self.source
    }

    /// Lists groups, variables, dimensions and what could not be listed. Metadata only: the
    /// chunk index of each variable is read by [`SourceFile::data_refs`].
    ///
    /// # Errors
    /// Only when the root group cannot be read; a group or object that cannot is recorded
    /// in [`Inventory::unlisted`] instead.
    pub fn inventory(&self) -> Result<Inventory> {
        match &self.reader {
            Reader::Hdf5(r) => r.inventory(),
            Reader::NetCdf3(r) => Ok(r.inventory()),
        }
    }

    /// Where the data of `variable` (from this file's [`Inventory`]) is: every written chunk,
    /// one contiguous range, or the compact bytes.
    ///
    /// # Errors
    /// [`Error::Hdf5`] when the chunk index is corrupt, [`Error::Truncated`] when a range
    /// passes the end of the file, [`Error::InvalidVariable`] for inconsistent metadata,
    /// [`Error::Unsupported`] for external raw data files.
    pub fn data_refs(&self, variable: &Variable) -> Result<DataRefs> {
        match &self.reader {
            Reader::Hdf5(r) => r.data_refs(variable),
            Reader::NetCdf3(r) => r.data_refs(variable),
        }
    }

    /// Every element of a string variable (fixed or variable length), decoded to text, in C
    /// order; filters are undone.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a NetCDF-3 file (its text is `|S1` characters) or a
    /// variable that is not a string; [`Error::Hdf5`] when the data cannot be read.
    pub fn read_strings(&self, variable: &Variable) -> Result<Vec<String>> {
        match &self.reader {
            Reader::Hdf5(r) => r.read_strings(variable),
            Reader::NetCdf3(_) => Err(Error::Unsupported {
                file: self.name().to_string(),
                variable: variable.path.clone(),
                reason: "NetCDF-3 has no string type".into(),
            }),
        }
    }

    /// Reads `length` bytes at `offset` (a chunk or contiguous range).
    ///
    /// # Errors
    /// [`Error::Read`] when the source fails or the range passes the end.
    pub fn read_range(&self, offset: u64, length: u64) -> Result<Bytes> {
        let read_error = |source| Error::Read {
            file: self.name().to_string(),
            offset,
            len: length,
            source,
        };
        let len = usize::try_from(length).map_err(|_| {
            read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "range does not fit in memory",
            ))
        })?;
        self.source.read_range(offset, len).map_err(read_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<SourceFile>();
        assert_send_sync::<BlockCache>();
        assert_send_sync::<Inventory>();
    }
}
