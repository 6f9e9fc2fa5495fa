//! `ZarrArray::read_chunk_into` decodes a chunk stored as one zstd frame (or raw) straight into
//! the caller's buffer, giving exactly what zarrs' own decoding gives, and declines every
//! chunk it cannot decode that way.

use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use chunkmill_store::{DataType, Store};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn spec(path: &str, zarr_format: u8, compressor: Compressor) -> ArraySpec {
    ArraySpec {
        path: path.into(),
        zarr_format,
        shape: vec![6, 4],
        dtype: DataType::Float(4),
        chunks: vec![3, 4],
        inner_chunks: None,
        fill_value: serde_json::json!(-1.0),
        encoding: Encoding::Compressor(compressor),
        dimension_names: None,
        attributes: serde_json::Map::new(),
    }
}

fn values() -> Vec<u8> {
    (0..12)
        .flat_map(|i| (i as f32 * 1.5 - 4.0).to_le_bytes())
        .collect()
}

#[test]
fn zstd_and_raw_chunks_decode_in_place_as_zarrs_decodes_them() -> TestResult {
    let store = Store::open("memory://direct-decode")?;
    for format in [2u8, 3] {
        for (name, compressor) in [("zstd", Compressor::Zstd(3)), ("raw", Compressor::None)] {
            let spec = spec(&format!("{name}{format}"), format, compressor);
            zarr::create_array(&store, &spec)?;
            let array = ZarrArray::open(&store, &spec.path)?;
            array.write_chunk(&[0, 0], values())?;
            // Bytes before and after the span stay as they were.
            let mut block = [0xABu8; 48 + 8];
            assert!(
                array.read_chunk_into(&[0, 0], &mut block[4..52])?,
                "{name} v{format}"
            );
            assert_eq!(&block[4..52], array.read_chunk(&[0, 0])?.as_slice());
            assert_eq!(&block[4..52], values().as_slice());
            assert_eq!(
                (&block[..4], &block[52..]),
                (&[0xAB; 4][..], &[0xAB; 4][..])
            );
            // A chunk never written is left to the caller (the fill value), untouched here.
            let mut untouched = [7u8; 48];
            assert!(!array.read_chunk_into(&[1, 0], &mut untouched)?);
            assert_eq!(untouched, [7u8; 48]);
            // A buffer of another length is an error, not a short read.
            assert!(array.read_chunk_into(&[0, 0], &mut [0u8; 44]).is_err());
        }
    }
    Ok(())
}

#[test]
fn other_codecs_are_declined() -> TestResult {
    let store = Store::open("memory://direct-decode-declined")?;
    for format in [2u8, 3] {
        let spec = spec(&format!("gzip{format}"), format, Compressor::Gzip(1));
        zarr::create_array(&store, &spec)?;
        let array = ZarrArray::open(&store, &spec.path)?;
        array.write_chunk(&[0, 0], values())?;
        let mut block = [0u8; 48];
        assert!(!array.read_chunk_into(&[0, 0], &mut block)?);
        assert_eq!(block, [0u8; 48]);
    }
    Ok(())
}

#[test]
fn chunks_of_a_local_store_decode_through_a_reused_buffer() -> TestResult {
    // The stored bytes go into the caller's buffer whatever it held before (longer, shorter,
    // empty): each chunk decodes as zarrs decodes it, an unwritten chunk is left to the
    // caller, and a buffer of values of another length is an error.
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().to_string_lossy())?;
    for format in [2u8, 3] {
        for (name, compressor) in [("zstd", Compressor::Zstd(3)), ("raw", Compressor::None)] {
            let spec = spec(&format!("{name}{format}"), format, compressor);
            zarr::create_array(&store, &spec)?;
            let array = ZarrArray::open(&store, &spec.path)?;
            array.write_chunk(&[0, 0], values())?;
            let mut other = values();
            other.reverse();
            array.write_chunk(&[1, 0], other)?;
            for mut stored in [Vec::new(), vec![9u8; 3], vec![9u8; 4096]] {
                for chunk in [[0u64, 0], [1, 0], [0, 0]] {
                    let mut block = [0xABu8; 48];
                    assert!(array.read_chunk_into_reusing(&chunk, &mut block, &mut stored)?);
                    assert_eq!(
                        &block[..],
                        array.read_chunk(&chunk)?.as_slice(),
                        "{name} v{format}"
                    );
                }
                assert!(array
                    .read_chunk_into_reusing(&[0, 0], &mut [0u8; 44], &mut stored)
                    .is_err());
            }
        }
        let spec = spec(&format!("unwritten{format}"), format, Compressor::Zstd(1));
        zarr::create_array(&store, &spec)?;
        let array = ZarrArray::open(&store, &spec.path)?;
        let mut untouched = [7u8; 48];
        assert!(!array.read_chunk_into_reusing(&[1, 0], &mut untouched, &mut Vec::new())?);
        assert_eq!(untouched, [7u8; 48]);
    }
    Ok(())
}
