//! Compressed intermediate pieces: LZ4 or Zstandard level 1 in a checked frame.
//!
//! A scratch piece is never synced (see `Store::open_scratch`), so after a power loss or a
//! disk error a file under a piece's name may hold anything. A raw piece is trusted when its
//! length is right; a compressed one only when its frame says so: the magic, the codec, the
//! decoded length the reader expects, the stored length, and a CRC-32 of the compressed bytes
//! must all agree before a byte is decoded, and the decoder must then fill exactly the
//! decoded length. Anything else is a lost piece: its task runs again on `--resume`
//! ([`super::forget_lost_pieces`]), and a task reading it fails rather than use it.
//!
//! Frame (little-endian): `CMPC`, codec (1 byte), 3 zero bytes, decoded length (u64),
//! compressed length (u64), CRC-32 of the compressed bytes (u32), 4 zero bytes; then the
//! compressed bytes.

use std::cell::RefCell;

use chunkmill_plan::PieceCodec;

const MAGIC: &[u8; 4] = b"CMPC";
const HEADER: usize = 32;

/// Why a stored piece is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PieceError {
    /// Shorter than its header says, or than a header.
    #[error("truncated: {got} bytes, its frame needs {needed}")]
    Truncated { got: usize, needed: usize },
    /// Not a frame of this codec, or of another decoded length.
    #[error("not a {codec} piece of {expected} bytes ({why})")]
    Foreign {
        codec: PieceCodec,
        expected: usize,
        why: String,
    },
    /// The compressed bytes changed since they were written.
    #[error("corrupt: checksum {got:08x}, its frame says {expected:08x}")]
    Checksum { got: u32, expected: u32 },
    /// The decoder refused the bytes or filled another length.
    #[error("does not decode: {0}")]
    Decode(String),
    /// The encoder failed (only ever for a buffer sized wrong).
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn codec_byte(codec: PieceCodec) -> u8 {
    match codec {
        PieceCodec::Raw => 0,
        PieceCodec::Lz4 => 1,
        PieceCodec::Zstd1 => 2,
    }
}

thread_local! {
    /// This thread's Zstandard contexts, kept across pieces: a fresh one costs its tables.
    static ZSTD: RefCell<Option<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>)>> =
        const { RefCell::new(None) };
}

fn with_zstd<R>(
    f: impl FnOnce(
        &mut zstd::bulk::Compressor<'static>,
        &mut zstd::bulk::Decompressor<'static>,
    ) -> std::io::Result<R>,
) -> Result<R, String> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let c = zstd::bulk::Compressor::new(1).map_err(|e| e.to_string())?;
            let d = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
            *slot = Some((c, d));
        }
        let (c, d) = slot.as_mut().ok_or_else(|| "no zstd context".to_string())?;
        f(c, d).map_err(|e| e.to_string())
    })
}

/// Encodes `raw` with `codec` into `out` (cleared first), frame included. Raw is copied.
///
/// # Errors
/// [`PieceError::Encode`] if the codec fails.
pub fn encode_piece(codec: PieceCodec, raw: &[u8], out: &mut Vec<u8>) -> Result<(), PieceError> {
    out.clear();
    if codec == PieceCodec::Raw {
        out.extend_from_slice(raw);
        return Ok(());
    }
    let bound = match codec {
        PieceCodec::Lz4 => lz4_flex::block::get_maximum_output_size(raw.len()),
        _ => zstd::zstd_safe::compress_bound(raw.len()),
    };
    out.resize(HEADER + bound, 0);
    let payload = &mut out[HEADER..];
    let len = match codec {
        PieceCodec::Lz4 => lz4_flex::block::compress_into(raw, payload)
            .map_err(|e| PieceError::Encode(e.to_string()))?,
        _ => with_zstd(|c, _| c.compress_to_buffer(raw, payload)).map_err(PieceError::Encode)?,
    };
    let crc = crc32fast::hash(&out[HEADER..HEADER + len]);
    out.truncate(HEADER + len);
    out[..4].copy_from_slice(MAGIC);
    out[4..8].copy_from_slice(&[codec_byte(codec), 0, 0, 0]);
    out[8..16].copy_from_slice(&(raw.len() as u64).to_le_bytes());
    out[16..24].copy_from_slice(&(len as u64).to_le_bytes());
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out[28..32].copy_from_slice(&[0; 4]);
    Ok(())
}

/// The compressed bytes of a stored piece whose frame checks out for `codec` and a decoded
/// length of `expected` bytes.
fn checked_payload(codec: PieceCodec, stored: &[u8], expected: usize) -> Result<&[u8], PieceError> {
    let foreign = |why: String| PieceError::Foreign {
        codec,
        expected,
        why,
    };
    if stored.len() < HEADER {
        return Err(PieceError::Truncated {
            got: stored.len(),
            needed: HEADER,
        });
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&stored[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if &stored[..4] != MAGIC || stored[4] != codec_byte(codec) {
        return Err(foreign("another magic or codec".into()));
    }
    let raw_len = word(8);
    if raw_len != expected as u64 {
        return Err(foreign(format!("its frame says {raw_len} bytes")));
    }
    let payload_len = usize::try_from(word(16)).unwrap_or(usize::MAX);
    let needed = HEADER.saturating_add(payload_len);
    if stored.len() != needed {
        return Err(PieceError::Truncated {
            got: stored.len(),
            needed,
        });
    }
    let payload = &stored[HEADER..];
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&stored[24..28]);
    let (got, expected_crc) = (crc32fast::hash(payload), u32::from_le_bytes(crc));
    if got != expected_crc {
        return Err(PieceError::Checksum {
            got,
            expected: expected_crc,
        });
    }
    Ok(payload)
}

/// Whether `stored` is a whole, uncorrupted `codec` piece of `expected` decoded bytes (the
/// frame and its checksum; a raw piece by its length).
#[must_use]
pub fn piece_is_whole(codec: PieceCodec, stored: &[u8], expected: usize) -> bool {
    if codec == PieceCodec::Raw {
        return stored.len() == expected;
    }
    checked_payload(codec, stored, expected).is_ok()
}

/// Decodes a stored `codec` piece into `dest`, whose length is the piece's decoded length.
///
/// # Errors
/// [`PieceError`] when the frame does not check out or the codec refuses the bytes.
pub fn decode_piece(codec: PieceCodec, stored: &[u8], dest: &mut [u8]) -> Result<(), PieceError> {
    if codec == PieceCodec::Raw {
        if stored.len() != dest.len() {
            return Err(PieceError::Truncated {
                got: stored.len(),
                needed: dest.len(),
            });
        }
        dest.copy_from_slice(stored);
        return Ok(());
    }
    let payload = checked_payload(codec, stored, dest.len())?;
    let filled = match codec {
        PieceCodec::Lz4 => lz4_flex::block::decompress_into(payload, dest)
            .map_err(|e| PieceError::Decode(e.to_string()))?,
        _ => with_zstd(|_, d| d.decompress_to_buffer(payload, dest)).map_err(PieceError::Decode)?,
    };
    if filled != dest.len() {
        return Err(PieceError::Decode(format!(
            "{filled} bytes decoded, {} expected",
            dest.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|i| ((i as f32 * 0.01).sin() * 100.0).round().to_le_bytes())
            .collect()
    }

    #[test]
    fn pieces_round_trip_and_shrink_compressible_data() -> Result<(), PieceError> {
        let raw = field();
        for codec in PieceCodec::ALL {
            let mut stored = Vec::new();
            encode_piece(codec, &raw, &mut stored)?;
            if codec != PieceCodec::Raw {
                assert!(stored.len() < raw.len() / 2, "{codec}: {}", stored.len());
            }
            let mut back = vec![0u8; raw.len()];
            decode_piece(codec, &stored, &mut back)?;
            assert_eq!(back, raw, "{codec}");
            assert!(piece_is_whole(codec, &stored, raw.len()));
        }
        Ok(())
    }

    #[test]
    fn truncated_corrupt_or_foreign_pieces_are_refused() -> Result<(), PieceError> {
        let raw = field();
        for codec in [PieceCodec::Lz4, PieceCodec::Zstd1] {
            let mut stored = Vec::new();
            encode_piece(codec, &raw, &mut stored)?;
            let mut back = vec![0u8; raw.len()];
            let short = &stored[..stored.len() - 1];
            assert!(matches!(
                decode_piece(codec, short, &mut back),
                Err(PieceError::Truncated { .. })
            ));
            assert!(!piece_is_whole(codec, &stored[..10], raw.len()));
            let mut flipped = stored.clone();
            let mid = HEADER + (flipped.len() - HEADER) / 2;
            flipped[mid] ^= 0x10;
            assert!(matches!(
                decode_piece(codec, &flipped, &mut back),
                Err(PieceError::Checksum { .. })
            ));
            assert!(!piece_is_whole(codec, &flipped, raw.len()));
            let mut other_len = vec![0u8; raw.len() - 4];
            assert!(matches!(
                decode_piece(codec, &stored, &mut other_len),
                Err(PieceError::Foreign { .. })
            ));
            // A zero-filled file of the right size (what a lost write may leave) is no piece.
            assert!(!piece_is_whole(codec, &vec![0u8; stored.len()], raw.len()));
            let other = if codec == PieceCodec::Lz4 {
                PieceCodec::Zstd1
            } else {
                PieceCodec::Lz4
            };
            assert!(!piece_is_whole(other, &stored, raw.len()));
        }
        Ok(())
    }
}
