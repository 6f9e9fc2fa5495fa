//! HDF5 filters that no Zarr codec expresses (szip 4, nbit 5, scaleoffset 6, LZF 32000) kept
//! as a chunkmill-private codec, `chunkmill.hdf5_filter`, for `chunkmill convert` only: it
//! decodes them with hdf5-reader's own decoders (LZF with chunkmill-hdf5's) and writes ordinary
//! Zarr. `virtualize` never writes this codec (no other reader would understand it): it
//! decodes such a variable and inlines it, or leaves it out (see [`crate::scan`]).
//!
//! ```
//! use chunkmill_manifest::codecs::native;
//! # let filter = chunkmill_hdf5::Filter { id: 6, name: "scaleoffset".into(), stored_name: None, parameters: vec![0, 2] };
//! let codec = native::codec(&filter);
//! assert_eq!(codec.name, native::NAME);
//! assert_eq!(codec.configuration["client_data"], serde_json::json!([0, 2]));
//! ```

use chunkmill_hdf5::Filter;
use serde_json::{Map, Value};

use super::Codec;

/// The codec's name.
pub const NAME: &str = "chunkmill.hdf5_filter";

/// Whether `id` is a filter this module keeps.
pub fn handles(id: u16) -> bool {
    chunkmill_hdf5::DECODABLE_FILTERS.contains(&id)
}

/// The codec for `filter`: its id (`filter_id`: numcodecs keeps `id` for the codec's name),
/// name and client data.
pub fn codec(filter: &Filter) -> Codec {
    let mut c = Map::new();
    c.insert("filter_id".into(), Value::from(filter.id));
    c.insert("filter".into(), Value::from(filter.name.clone()));
    c.insert(
        "client_data".into(),
        Value::Array(filter.parameters.iter().map(|&p| Value::from(p)).collect()),
    );
    Codec {
        name: NAME.into(),
        configuration: c,
    }
}

/// Whether `name` is this codec (also as read back from kerchunk JSON, `numcodecs.` prefixed).
pub fn is(name: &str) -> bool {
    name == NAME || name.strip_prefix("numcodecs.") == Some(NAME)
}

/// Decodes `data` with the filter `configuration` describes, producing at most `limit` bytes.
///
/// # Errors
/// A configuration without an id, or bytes that do not decode.
pub fn decode(
    configuration: &Map<String, Value>,
    data: &[u8],
    limit: usize,
) -> Result<Vec<u8>, String> {
    let id = configuration
        .get("filter_id")
        .and_then(Value::as_u64)
        .and_then(|id| u16::try_from(id).ok())
        .ok_or("chunkmill.hdf5_filter without an HDF5 filter id")?;
    let client_data: Vec<u32> = configuration
        .get("client_data")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default();
    chunkmill_hdf5::decode_native_filter(id, &client_data, data, limit)
}
