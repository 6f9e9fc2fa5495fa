//! HDF5 Fletcher-32 checksum (filter 3, `H5Z_FILTER_FLETCHER32`) → `numcodecs.fletcher32`.
//!
//! Spec: <https://docs.hdfgroup.org/hdf5/develop/group___d_c_p_l.html> (`H5Pset_fletcher32`):
//! the filter appends 4 bytes, the Fletcher-32 sum of the chunk (16-bit big-endian words, an
//! odd last byte as the high byte of a word) stored little-endian. numcodecs' `Fletcher32`
//! was written for HDF5 chunks: it checks and strips that trailer. (kerchunk instead drops 4
//! from every length; VirtualiZarr maps it as here.)
//!
//! ```
//! use chunkmill_manifest::codecs::fletcher32;
//! # let filter = chunkmill_hdf5::Filter { id: 3, name: "fletcher32".into(), stored_name: None, parameters: vec![] };
//! assert_eq!(fletcher32::codec(&filter).to_numcodecs(), Some(serde_json::json!({"id": "fletcher32"})));
//! let stored = fletcher32::append(b"abcde");
//! assert_eq!(fletcher32::strip(&stored).as_deref(), Ok(&b"abcde"[..]));
//! ```

use chunkmill_hdf5::Filter;
use serde_json::Map;

use super::Codec;

/// HDF5 filter id.
pub const ID: u16 = 3;

/// `numcodecs.fletcher32`.
pub fn codec(_filter: &Filter) -> Codec {
    Codec::numcodecs("fletcher32", Map::new())
}

/// libhdf5's `H5_checksum_fletcher32`.
pub fn checksum(data: &[u8]) -> u32 {
    let (mut sum1, mut sum2) = (0u32, 0u32);
    let mut words = data.chunks_exact(2);
    let mut left = data.len() / 2;
    while left > 0 {
        let n = left.min(360);
        left -= n;
        for w in words.by_ref().take(n) {
            sum1 += (u32::from(w[0]) << 8) | u32::from(w[1]);
            sum2 += sum1;
        }
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    if data.len() % 2 == 1 {
        sum1 += u32::from(data[data.len() - 1]) << 8;
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    (sum2 << 16) | sum1
}

/// `data` followed by its checksum, as the filter stores it.
pub fn append(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    out.extend_from_slice(data);
    out.extend_from_slice(&checksum(data).to_le_bytes());
    out
}

/// Checks the trailing checksum and returns the data before it.
///
/// # Errors
/// When the chunk is shorter than 4 bytes or the checksum does not match.
pub fn strip(stored: &[u8]) -> Result<Vec<u8>, String> {
    let n = stored
        .len()
        .checked_sub(4)
        .ok_or_else(|| "fletcher32: chunk shorter than its checksum".to_string())?;
    let (data, sum) = stored.split_at(n);
    let want = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    let got = checksum(data);
    // libhdf5 before 1.6.4 stored the sum byte-swapped on little-endian machines; it still
    // accepts both, and so do we.
    if got == want || got.swap_bytes() == want {
        Ok(data.to_vec())
    } else {
        Err(format!(
            "fletcher32: checksum mismatch: stored {want:#010x}, computed {got:#010x}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sums() {
        // What numcodecs.Fletcher32 (written to match libhdf5) appends for these inputs; the
        // textbook values over little-endian words (0xF04FC729, 0x56502D2A) differ by a byte
        // rotation of each half, since HDF5 reads big-endian words.
        assert_eq!(checksum(b"abcde"), 0x4FF0_29C7);
        assert_eq!(checksum(b"abcdef"), 0x5056_2A2D);
        let long: Vec<u8> = (0..5000u32).map(|x| (x * 7) as u8).collect();
        assert!(strip(&append(&long)).is_ok());
        let mut bad = append(&long);
        bad[10] ^= 1;
        assert!(strip(&bad).is_err());
    }
}
