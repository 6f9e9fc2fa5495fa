//! Zstandard (registered filter 32015, the HDF5 plugin of hdf5plugin / HDF Group's
//! `H5Z-ZSTD`) → Zarr v3 core codec `zstd`.
//!
//! Spec: <https://github.com/HDFGroup/hdf5_plugins/blob/master/ZSTD/src/H5Zzstd.c>: each chunk
//! is one zstd frame; client data `[level]`. Zarr v3's `zstd` codec (and numcodecs' `Zstd`
//! in v2) decode a frame; the level only matters for writing.
//!
//! ```
//! use chunkmill_manifest::codecs::zstd;
//! # let filter = chunkmill_hdf5::Filter { id: 32015, name: "zstd".into(), stored_name: None, parameters: vec![5] };
//! let codec = zstd::codec(&filter);
//! assert_eq!(codec.to_v3(), serde_json::json!({"name": "zstd", "configuration": {"level": 5, "checksum": false}}));
//! assert_eq!(codec.to_numcodecs(), Some(serde_json::json!({"id": "zstd", "level": 5})));
//! ```
//!
//! Chunk data is decoded for `chunkmill convert` by [`super::decode_zarr`] (the zstd library
//! zarrs builds anyway); scanning does not decode zstd: a zstd-compressed concat coordinate or
//! identical-dims variable cannot be loaded, and a zstd chunk with a filter mask is refused.

use chunkmill_hdf5::Filter;
use serde_json::{Map, Value};

use super::Codec;

/// HDF5 filter id.
pub const ID: u16 = 32015;

/// `zstd` with the filter's level (3, zstd's default, when absent).
pub fn codec(filter: &Filter) -> Codec {
    let level = filter
        .parameters
        .first()
        .map_or(3, |&l| i64::from(l as i32));
    let mut c = Map::new();
    c.insert("level".into(), Value::from(level));
    c.insert("checksum".into(), Value::Bool(false));
    Codec {
        name: "zstd".into(),
        configuration: c,
    }
}
