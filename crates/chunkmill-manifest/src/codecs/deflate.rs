//! HDF5 deflate (filter 1, `H5Z_FILTER_DEFLATE`) → `numcodecs.zlib`.
//!
//! Spec: <https://docs.hdfgroup.org/hdf5/develop/group___h5_z.html> (`H5Pset_deflate`): the
//! chunk is one zlib stream (RFC 1950: 2-byte header, deflate data, Adler-32), client data
//! `[level]`. numcodecs' `Zlib` reads exactly that. It is **not** Zarr v3's core `gzip` codec
//! (RFC 1952 framing), so the v3 name is `numcodecs.zlib`; in Zarr v2 and kerchunk it is
//! `{"id": "zlib", "level": L}`.
//!
//! ```
//! use chunkmill_manifest::codecs::deflate;
//! # let filter = chunkmill_hdf5::Filter { id: 1, name: "deflate".into(), stored_name: None, parameters: vec![4] };
//! let codec = deflate::codec(&filter);
//! assert_eq!(codec.to_v3(), serde_json::json!({"name": "numcodecs.zlib", "configuration": {"level": 4}}));
//! assert_eq!(codec.to_numcodecs(), Some(serde_json::json!({"id": "zlib", "level": 4})));
//! ```

use std::io::{Read, Write};

use chunkmill_hdf5::Filter;
use serde_json::{Map, Value};

use super::Codec;

/// HDF5 filter id.
pub const ID: u16 = 1;

/// The compression level of the filter (client data 0; libhdf5's default is 6).
pub fn level(filter: &Filter) -> u32 {
    filter.parameters.first().copied().unwrap_or(6).min(9)
}

/// `numcodecs.zlib` with the filter's level.
pub fn codec(filter: &Filter) -> Codec {
    let mut c = Map::new();
    c.insert("level".into(), Value::from(level(filter)));
    Codec::numcodecs("zlib", c)
}

thread_local! {
    /// This thread's inflater, kept: a new one is an allocation of its tables per chunk.
    static INFLATER: std::cell::RefCell<libdeflater::Decompressor> =
        std::cell::RefCell::new(libdeflater::Decompressor::new());
}

/// Inflates one zlib stream; `decoded_len` is the size it should inflate to when known (0
/// when not), so the output is allocated once instead of grown and copied.
///
/// # Errors
/// When the bytes are not a complete zlib stream.
pub fn decode(bytes: &[u8], decoded_len: usize) -> Result<Vec<u8>, String> {
    // A checksum filter after deflate adds its 4 bytes: room for them too. Deflate cannot
    // expand more than 1032:1, which bounds what metadata from a file can make us allocate.
    let capacity = if decoded_len > 0 {
        (decoded_len + 8).min(bytes.len().saturating_mul(1032).saturating_add(64))
    } else {
        bytes.len().saturating_mul(3)
    };
    if decoded_len > 0 {
        // libdeflate inflates a whole stream into a buffer of known size about twice as fast
        // as a streaming inflater (docs/benchmarks.md, "Convert"). It needs the output's
        // size up front: a stream longer than expected goes the streaming way below.
        let mut out = vec![0u8; capacity];
        match INFLATER.with(|inflater| inflater.borrow_mut().zlib_decompress(bytes, &mut out)) {
            Ok(len) => {
                out.truncate(len);
                return Ok(out);
            }
            Err(libdeflater::DecompressionError::InsufficientSpace) => {}
            Err(e) => return Err(format!("deflate: {e}")),
        }
    }
    let mut out = Vec::with_capacity(capacity);
    flate2::read::ZlibDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| format!("deflate: {e}"))?;
    Ok(out)
}

/// Inflates one zlib stream into `out`, which it must fill exactly.
///
/// # Errors
/// When the bytes are not a complete zlib stream, or inflate to another size.
pub fn decode_into(bytes: &[u8], out: &mut [u8]) -> Result<(), String> {
    match INFLATER.with(|inflater| inflater.borrow_mut().zlib_decompress(bytes, out)) {
        Ok(len) if len == out.len() => Ok(()),
        Ok(len) => Err(format!("decoded to {len} bytes, expected {}", out.len())),
        Err(libdeflater::DecompressionError::InsufficientSpace) => Err(format!(
            "decoded to more than the {} bytes expected",
            out.len()
        )),
        Err(e) => Err(format!("deflate: {e}")),
    }
}

/// Deflates into one zlib stream at `level`.
///
/// # Errors
/// Never in practice (writing to memory); the error is kept for symmetry.
pub fn encode(bytes: &[u8], level: u32) -> Result<Vec<u8>, String> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(bytes).map_err(|e| format!("deflate: {e}"))?;
    e.finish().map_err(|e| format!("deflate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() -> Result<(), String> {
        let data = b"chunkmill chunkmill chunkmill chunkmill".repeat(10);
        let packed = encode(&data, 4)?;
        // Unknown size, the right size, and a size hint that is wrong (still decodes it all).
        for hint in [0, data.len(), 3] {
            assert_eq!(decode(&packed, hint)?, data);
        }
        assert!(decode(b"not zlib", 0).is_err());
        assert!(decode(b"not zlib", data.len()).is_err());
        // Cut short: a complete stream is required whichever inflater runs.
        assert!(decode(&packed[..packed.len() - 6], data.len()).is_err());
        Ok(())
    }

    #[test]
    fn level_defaults_to_libhdf5s() {
        let f = crate::codecs::filter(ID, "deflate", vec![]);
        assert_eq!(level(&f), 6);
    }
}
