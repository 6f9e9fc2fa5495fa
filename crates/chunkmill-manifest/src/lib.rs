//! # chunkmill-manifest
//!
//! Virtual Zarr datasets over HDF5, NetCDF-4 and NetCDF-3 files: **where every chunk's bytes
//! are**, with the Zarr metadata and codecs that decode them, joined strictly across many
//! files and written as kerchunk references that xarray opens through fsspec.
//!
//! ## Overview
//!
//! - [`ChunkManifest`]: one array's chunks as three flat vectors in C grid order — a path id
//!   (into the dataset's URL table), an offset, a length — plus a sparse map of inlined chunks.
//!   Never-written chunks are [`MISSING`] and read as the fill value. No string per chunk.
//! - [`ManifestArray`] = [`ArrayMetadata`] (shape, numpy dtype with byte order, chunk shape,
//!   fill value, Zarr v3 codecs, dimension names, attributes incl. CF) + its manifest.
//!   [`VirtualDataset`] = URL table + group attributes + arrays by key.
//! - [`codecs`]: HDF5 filters → Zarr codecs, one module per filter (deflate →
//!   `numcodecs.zlib`, shuffle → `numcodecs.shuffle`, fletcher32 → `numcodecs.fletcher32`,
//!   zstd → `zstd`); lzf, szip, nbit, scaleoffset and unknown filters have none: [`scan()`]
//!   decodes such a variable and inlines it when small, else leaves it out naming the filter.
//! - [`scan()`]: one file (through `chunkmill-hdf5`, no libhdf5, no lock) → a
//!   [`VirtualDataset`]. Chunks below the inline threshold, compact datasets and the variables
//!   asked for in [`ScanOptions::load`] are inlined.
//! - [`combine()`]: concatenation along a dimension, or stacking along a new one, refusing
//!   inputs that differ (see the module docs for every check).
//! - [`kerchunk`]: JSON v1 writer (streaming, atomic) and reader.
//! - [`kerchunk_parquet`]: Parquet writer (a directory in fsspec's `LazyReferenceMapper`
//!   layout, written atomically) and reader (also of what fsspec and kerchunk write).
//! - [`icechunk`]: Icechunk repository writer (one commit on `main`, every chunk a virtual
//!   reference, virtual chunk containers for the input directories; written atomically) and
//!   reader (back to a [`VirtualDataset`]).
//! - [`virtualize()`]: inputs (paths, globs, `s3://` URLs and globs, `@lists`) → parallel scan
//!   on threads (objects read through chunkmill-store behind a block cache) → combine →
//!   references, with a progress callback and `skip_bad`.
//!
//! ## Example
//!
//! ```no_run
//! use chunkmill_manifest::{virtualize, VirtualizeOptions};
//!
//! let mut options = VirtualizeOptions::new("air.json");
//! options.concat_dim = Some("time".into());
//! options.identical_dims = vec!["lat".into(), "lon".into()];
//! let report = virtualize(&["data/air_*.nc".to_string()], &options)?;
//! println!("{} files, {} references", report.files.len(), report.stats.references);
//! # Ok::<(), chunkmill_manifest::Error>(())
//! ```
//!
//! ## Fill values
//!
//! The Zarr fill value of an array is the file's (the HDF5 fill value, NetCDF-3's
//! `_FillValue` or default). In kerchunk (Zarr v2) output, xarray takes `.zarray`'s
//! `fill_value` as `_FillValue`, so it is written as the `_FillValue` attribute when the
//! variable has one, as the file's fill value when some chunk was never written, and as
//! `null` otherwise — never as a value the original file did not declare for masking when
//! every chunk exists.
//!
//! ## Filter masks
//!
//! HDF5 records per chunk which filters were skipped (an optional filter that failed, e.g.
//! deflate that did not shrink, or a chunk written with `H5Dwrite_chunk`). Such a chunk cannot
//! be referenced: the array's codecs would undo filters that were never applied. When every
//! filter of the pipeline is one this crate can run (deflate, shuffle, fletcher32), the chunk
//! is read, the applied filters undone, the whole pipeline applied and the result **inlined**
//! (up to [`scan::MAX_REENCODED_CHUNK`] bytes decoded). Otherwise it is an
//! [`Error::FilterMask`] naming the file, the variable, the chunk and the skipped filters.
//!
//! ## Not yet
//!
//! Whole-file and `gen` references in the readers; Icechunk checksums (last-modified) on
//! virtual references; Icechunk repositories in object stores (local directories only).

pub mod access;
mod array;
mod atomic;
/// CF time lives in its own crate so that compute shares it without depending on manifest.
pub use chunkmill_cftime as cftime;
pub mod codecs;
pub mod combine;
mod compare;
mod dense;
mod error;
mod fold;
pub mod icechunk;
pub mod kerchunk;
pub mod kerchunk_parquet;
mod manifest;
pub mod reader;
mod rebase;
mod remote;
pub mod scan;
mod virtualize;

pub use access::ReferenceAccess;
pub use array::{ArrayMetadata, InputEncoding, ManifestArray, ManifestStats, VirtualDataset};
pub use combine::{combine, infer_concat_dim, CombineOptions, Compat, InferredDim};
pub use error::{Error, ErrorKind, Mismatch, Result};
pub use icechunk::{is_icechunk, read_icechunk, write_icechunk};
pub use kerchunk::{read_kerchunk_json, write_kerchunk_json};
pub use kerchunk_parquet::{
    is_kerchunk_parquet, read_kerchunk_parquet, write_kerchunk_parquet, DEFAULT_RECORD_SIZE,
};
pub use manifest::{ChunkEntry, ChunkManifest, INLINED, MAX_PATH_ID, MISSING};
pub use reader::ChunkReader;
pub use rebase::rebase_concat_times;
pub use scan::{scan, scan_listed, scan_path, FileScan, ScanOptions, SkippedVariable};
pub use virtualize::{
    build, expand_inputs, scan_files, scan_input, virtualize, Input, OutputFormat, ProgressFn,
    ScanExecutor, ScanResults, SkippedFile, VirtualizeOptions, VirtualizeReport,
    REMOTE_THREADS_PER_CORE,
};
