//! HDF5 shuffle (filter 2, `H5Z_FILTER_SHUFFLE`) → `numcodecs.shuffle`.
//!
//! Spec: <https://docs.hdfgroup.org/hdf5/develop/group___d_c_p_l.html> (`H5Pset_shuffle`): byte
//! `b` of element `e` goes to position `b × n + e`; client data `[element size]`; bytes past
//! the last whole element stay in place. numcodecs' `Shuffle(elementsize)` is the same
//! transform (a bytes-to-bytes codec in Zarr v3, a filter in Zarr v2).
//!
//! ```
//! use chunkmill_manifest::codecs::shuffle;
//! # let filter = chunkmill_hdf5::Filter { id: 2, name: "shuffle".into(), stored_name: None, parameters: vec![4] };
//! # let dtype = chunkmill_hdf5::DType { numpy: "<f4".into(), name: "float32".into(), byte_order: chunkmill_hdf5::ByteOrder::Little, size: 4, class: "float" };
//! let codec = shuffle::codec(&filter, &dtype);
//! assert_eq!(codec.to_numcodecs(), Some(serde_json::json!({"id": "shuffle", "elementsize": 4})));
//! assert_eq!(shuffle::shuffle(&[1, 2, 3, 4, 5, 6], 2), vec![1, 3, 5, 2, 4, 6]);
//! ```

use chunkmill_hdf5::{DType, Filter};
use serde_json::{Map, Value};

use super::Codec;

/// HDF5 filter id.
pub const ID: u16 = 2;

/// The element size of the filter (client data 0), else the dtype's.
pub fn element_size(filter: &Filter, dtype_size: usize) -> usize {
    filter
        .parameters
        .first()
        .map_or(dtype_size, |&p| p as usize)
        .max(1)
}

/// `numcodecs.shuffle` with the element size.
pub fn codec(filter: &Filter, dtype: &DType) -> Codec {
    let mut c = Map::new();
    c.insert(
        "elementsize".into(),
        Value::from(element_size(filter, dtype.size)),
    );
    Codec::numcodecs("shuffle", c)
}

/// Shuffles `bytes` of `size`-byte elements.
pub fn shuffle(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let n = bytes.len() / size.max(1);
    if size > 1 && n > 0 {
        // Stream b is byte b of every element: written in order, read with a stride.
        for (b, stream) in out[..n * size].chunks_exact_mut(n).enumerate() {
            for (to, &from) in stream.iter_mut().zip(bytes[b..].iter().step_by(size)) {
                *to = from;
            }
        }
    }
    out
}

/// Undoes [`shuffle`].
pub fn unshuffle(bytes: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    unshuffle_into(bytes, size, &mut out);
    out
}

/// Undoes [`shuffle`] into `out`, of the same length as `bytes`.
///
/// # Panics
/// When the lengths differ (a caller's bug, never the data's).
pub fn unshuffle_into(bytes: &[u8], size: usize, out: &mut [u8]) {
    assert_eq!(bytes.len(), out.len(), "unshuffle_into: lengths differ");
    let n = bytes.len() / size.max(1);
    let whole = n * size.max(1);
    // This runs on every byte of every shuffled chunk a conversion or the Python reader
    // reads: the common element sizes gather one element at a time from fixed streams,
    // which the compiler unrolls and vectorizes; other sizes scatter stream by stream.
    match size {
        2 => gather::<2>(&bytes[..whole], n, &mut out[..whole]),
        4 => gather::<4>(&bytes[..whole], n, &mut out[..whole]),
        8 => gather::<8>(&bytes[..whole], n, &mut out[..whole]),
        s if s > 1 && n > 0 => {
            for (b, stream) in bytes[..whole].chunks_exact(n).enumerate() {
                for (to, &from) in out[b..].iter_mut().step_by(s).zip(stream) {
                    *to = from;
                }
            }
        }
        _ => out[..whole].copy_from_slice(&bytes[..whole]),
    }
    // HDF5 leaves the bytes past the last whole element in place.
    out[whole..].copy_from_slice(&bytes[whole..]);
}

/// Unshuffles `n` elements of `N` bytes.
fn gather<const N: usize>(streams: &[u8], n: usize, out: &mut [u8]) {
    if n == 0 {
        return;
    }
    let lanes: [&[u8]; N] = std::array::from_fn(|b| &streams[b * n..(b + 1) * n]);
    for (i, element) in out.chunks_exact_mut(N).enumerate() {
        for (byte, lane) in element.iter_mut().zip(&lanes) {
            *byte = lane[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_bytes_stay_in_place() {
        let data = [1, 2, 3, 4, 5, 6, 7];
        let s = shuffle(&data, 2);
        assert_eq!(s, vec![1, 3, 5, 2, 4, 6, 7]);
        assert_eq!(unshuffle(&s, 2), data.to_vec());
        assert_eq!(shuffle(&data, 1), data.to_vec());
    }

    #[test]
    fn unshuffle_undoes_shuffle_for_every_element_size() {
        let data: Vec<u8> = (0..1003u32).map(|i| (i * 7 % 251) as u8).collect();
        for size in [1, 2, 3, 4, 8, 16, 2000] {
            let shuffled = shuffle(&data, size);
            let n = data.len() / size;
            // Byte b of element e sits at b * n + e (the HDF5 definition, not our own code).
            for e in 0..n {
                for b in 0..size {
                    assert_eq!(shuffled[b * n + e], data[e * size + b], "size {size}");
                }
            }
            assert_eq!(shuffled[n * size..], data[n * size..], "size {size}");
            assert_eq!(unshuffle(&shuffled, size), data, "size {size}");
        }
    }
}
