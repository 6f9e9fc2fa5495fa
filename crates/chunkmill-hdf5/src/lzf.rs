//! LZF decompression (h5py's filter 32000), so that a variable no Zarr codec can read is
//! decoded here and inlined (`virtualize`) or converted.
//!
//! Format (liblzf's `lzf_d.c` documents it): a sequence of runs, each starting with a control
//! byte `c`. `c < 32`: `c + 1` literal bytes follow. Otherwise a back reference: length
//! `c >> 5` (7 means "7 plus the next byte"), plus 2; distance `((c & 31) << 8)` plus the
//! next byte plus 1, back from the end of the output. h5py stores the chunk's decoded size as
//! client data 2; a chunk that did not compress is stored as is with its filter-mask bit set.

/// The HDF5 filter id h5py registered for LZF.
pub const LZF_FILTER: u16 = 32000;

/// Decodes `input` into exactly `out_len` bytes.
///
/// # Errors
/// A run that reads past the input, references before the start of the output, or writes
/// past `out_len`; or output shorter than `out_len`.
pub fn decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(out_len);
    let mut i = 0;
    let corrupt = |what: &str| format!("lzf: corrupt data: {what}");
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input
                .get(i..i + n)
                .ok_or_else(|| corrupt("a literal run passes the end of the input"))?;
            if out.len() + n > out_len {
                return Err(corrupt("the output passes the chunk size"));
            }
            out.extend_from_slice(lit);
            i += n;
            continue;
        }
        let mut len = ctrl >> 5;
        if len == 7 {
            len += usize::from(
                *input
                    .get(i)
                    .ok_or_else(|| corrupt("a length passes the end of the input"))?,
            );
            i += 1;
        }
        let low = usize::from(
            *input
                .get(i)
                .ok_or_else(|| corrupt("a distance passes the end of the input"))?,
        );
        i += 1;
        let distance = ((ctrl & 0x1f) << 8) + low + 1;
        let len = len + 2;
        let start = out
            .len()
            .checked_sub(distance)
            .ok_or_else(|| corrupt("a back reference before the start of the output"))?;
        if out.len() + len > out_len {
            return Err(corrupt("the output passes the chunk size"));
        }
        // The source may overlap what is being written (a run repeating a short pattern):
        // copy byte by byte.
        for k in 0..len {
            let b = out[start + k];
            out.push(b);
        }
    }
    if out.len() != out_len {
        return Err(format!(
            "lzf: decodes to {} bytes, expected {out_len}",
            out.len()
        ));
    }
    Ok(out)
}

/// The decoded size of an LZF chunk from the filter's client data (h5py's `[version,
/// lzf version, chunk bytes]`).
///
/// # Errors
/// Client data without the chunk size.
pub fn decoded_size(client_data: &[u32]) -> Result<usize, String> {
    match client_data.get(2) {
        Some(&n) if n > 0 => Ok(n as usize),
        _ => Err("lzf: the filter's client data holds no chunk size".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_overlapping_back_references() -> Result<(), String> {
        // "abc" as literals, then a reference of length 6 at distance 3: "abcabc".
        let data = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(decompress(&data, 9)?, b"abcabcabc");
        // Long run: length 7 + 3 + 2 = 12 of one byte at distance 1.
        let data = [0, b'x', (7 << 5), 3, 0];
        assert_eq!(decompress(&data, 13)?, vec![b'x'; 13]);
        Ok(())
    }

    #[test]
    fn corrupt_input_is_refused() {
        assert!(decompress(&[5, b'a'], 6).is_err());
        assert!(decompress(&[(1 << 5), 9], 3).is_err());
        assert!(decompress(&[0, b'a'], 2).is_err());
        assert!(decoded_size(&[1, 4]).is_err());
    }
}
