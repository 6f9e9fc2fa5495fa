//! LZF (registered filter 32000, h5py's built-in compressor) → **no codec: a clear error**.
//!
//! Spec: <https://github.com/h5py/h5py/tree/master/lzf>: each chunk is raw liblzf output
//! with no header; the decompressed size comes from the filter's client data (the chunk
//! size), and a chunk that did not compress is stored unfiltered with its filter-mask bit
//! set. Neither numcodecs nor zarr-python's core has an LZF codec; kerchunk refuses LZF
//! (`Hdf5FeatureNotSupported`). imagecodecs registers `imagecodecs_lzf`, but it expects
//! its own size header or an output size per call, which a Zarr codec configuration
//! cannot give for the partial last chunk, and it is an optional, heavy dependency of the
//! reader. So no codec maps it: `virtualize` decodes an LZF variable
//! ([`chunkmill_hdf5::lzf`]) and inlines it when it is small, else leaves it out naming the
//! filter; `convert` decodes it.
//!
//! ```
//! use chunkmill_manifest::codecs::lzf;
//! # let filter = chunkmill_hdf5::Filter { id: 32000, name: "lzf".into(), stored_name: None, parameters: vec![4, 261, 4000] };
//! let err = lzf::error(&filter);
//! assert_eq!((err.filter.as_str(), err.id), ("lzf", 32000));
//! ```

use chunkmill_hdf5::Filter;

use super::FilterError;

/// HDF5 filter id.
pub const ID: u16 = 32000;

/// The refusal.
pub fn error(filter: &Filter) -> FilterError {
    FilterError::new(
        filter,
        "numcodecs and zarr-python have no LZF codec and kerchunk refuses it; chunkmill convert \
         re-encodes it",
    )
}
