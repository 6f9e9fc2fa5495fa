//! Filters no Zarr codec expresses: szip (4), nbit (5), scaleoffset (6), and any id without
//! a mapping here (blosc, lz4, bitshuffle, zfp, …) → a clear error naming the filter.
//!
//! - **szip** (<https://docs.hdfgroup.org/hdf5/develop/group___d_c_p_l.html>, `H5Pset_szip`):
//!   CCSDS 121 / libaec with HDF5-specific framing; no numcodecs codec reads it.
//! - **nbit** (`H5Pset_nbit`): packs each element's significant bits, with a parameter block
//!   describing the type tree; no Zarr codec.
//! - **scaleoffset** (`H5Pset_scaleoffset`): lossy integer/float packing with a per-chunk
//!   minimum stored in the chunk; no Zarr codec.
//! - others: not mapped yet; each would need its own module and an oracle test.
//!
//! ```
//! use chunkmill_manifest::codecs::unsupported;
//! # let filter = chunkmill_hdf5::Filter { id: 6, name: "scaleoffset".into(), stored_name: None, parameters: vec![] };
//! assert!(unsupported::error(&filter).reason.contains("no Zarr codec"));
//! ```

use chunkmill_hdf5::Filter;

use super::FilterError;

/// The refusal for `filter`.
pub fn error(filter: &Filter) -> FilterError {
    let why = match filter.id {
        4 => "szip (CCSDS 121 with HDF5 framing) has no Zarr codec",
        5 => "nbit packing has no Zarr codec",
        6 => "scaleoffset packing stores a per-chunk minimum and has no Zarr codec",
        _ => "no Zarr codec is mapped for this filter",
    };
    FilterError::new(
        filter,
        format!(
            "{why}; re-encode the variable (e.g. with chunkmill convert) instead of referencing it"
        ),
    )
}
