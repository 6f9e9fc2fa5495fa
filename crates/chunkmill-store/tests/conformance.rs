//! One conformance suite, run by every backend: memory, a local directory, and S3 (a real
//! S3-compatible server that scripts/test starts; named by `CHUNKMILL_TEST_S3`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chunkmill_store::markers::Markers;
use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use chunkmill_store::Store;
use serde_json::json;

fn put_get_list_erase(store: &Store) {
    store.erase_prefix("").unwrap();
    assert!(store.is_empty().unwrap());
    assert_eq!(store.get("missing").unwrap(), None);
    store.put("a/b/c", vec![1, 2, 3]).unwrap();
    store.put("a/d", vec![4]).unwrap();
    store.put("e", vec![]).unwrap();
    assert_eq!(
        store.get("a/b/c").unwrap().as_deref(),
        Some(&[1u8, 2, 3][..])
    );
    assert_eq!(store.get("e").unwrap().as_deref(), Some(&[][..]));
    assert!(store.exists("a/d").unwrap());
    let mut keys = store.list("a/").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["a/b/c".to_string(), "a/d".to_string()]);
    store.put("a/b/c", vec![9]).unwrap();
    assert_eq!(store.get("a/b/c").unwrap().as_deref(), Some(&[9u8][..]));
    store.erase_prefix("a/").unwrap();
    assert_eq!(store.list("").unwrap(), vec!["e".to_string()]);
    store.erase("e").unwrap();
    store.erase("e").unwrap();
    assert!(store.is_empty().unwrap());
}

fn ranges_and_sizes(store: &Store) {
    store.erase_prefix("").unwrap();
    let value: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    store.put("dir/obj.nc", value.clone()).unwrap();
    store.put("empty", vec![]).unwrap();
    assert_eq!(store.size("dir/obj.nc").unwrap(), Some(100_000));
    assert_eq!(store.size("empty").unwrap(), Some(0));
    assert_eq!(store.size("missing").unwrap(), None);
    for (offset, len) in [(0u64, 8u64), (65_530, 20), (99_990, 10), (1, 99_999)] {
        let got = store.get_range("dir/obj.nc", offset, len).unwrap().unwrap();
        assert_eq!(&got[..], &value[offset as usize..(offset + len) as usize]);
    }
    assert_eq!(
        store.get_range("dir/obj.nc", 500, 0).unwrap().as_deref(),
        Some(&[][..])
    );
    assert_eq!(store.get_range("missing", 0, 4).unwrap(), None);
    assert_eq!(store.get_range("missing", 0, 0).unwrap(), None);
    assert!(store.get_range("dir/obj.nc", 99_995, 10).is_err());
    store.erase_prefix("").unwrap();
}

fn markers(store: &Store) {
    store.erase_prefix("").unwrap();
    let m = Markers::new(store.clone(), "plan1");
    assert!(m.marked("s0").unwrap().is_empty());
    for t in [0u64, 3, 17] {
        m.mark("s0", t, &json!({"seconds": t})).unwrap();
    }
    assert_eq!(m.marked("s0").unwrap(), [0u64, 3, 17].into_iter().collect());
    assert!(m.is_marked("s0", 3).unwrap());
    assert!(!m.is_marked("s1", 3).unwrap());
    assert_eq!(m.records("s0").unwrap()[2].1["seconds"], 17);
    // Another plan's markers are apart.
    assert!(Markers::new(store.clone(), "plan2")
        .marked("s0")
        .unwrap()
        .is_empty());
    m.clear().unwrap();
    assert!(m.marked("s0").unwrap().is_empty());
}

fn zarr_round_trip(store: &Store) {
    store.erase_prefix("").unwrap();
    for format in [2u8, 3] {
        let spec = ArraySpec {
            path: format!("v{format}"),
            zarr_format: format,
            shape: vec![5, 7],
            dtype: chunkmill_store::DataType::Float(4),
            chunks: vec![2, 4],
            inner_chunks: None,
            fill_value: json!("NaN"),
            encoding: Encoding::Compressor(Compressor::Zstd(3)),
            dimension_names: Some(vec![Some("y".into()), Some("x".into())]),
            attributes: json!({"units": "K"}).as_object().cloned().unwrap(),
        };
        zarr::create_array(store, &spec).unwrap();
        let array = ZarrArray::open(store, &spec.path).unwrap();
        assert!(f32::from_ne_bytes(array.fill_bytes().try_into().unwrap()).is_nan());
        let values: Vec<u8> = (0..8)
            .flat_map(|i| (i as f32 * 1.5).to_ne_bytes())
            .collect();
        array.write_chunk(&[1, 1], values.clone()).unwrap();
        assert_eq!(array.read_chunk(&[1, 1]).unwrap(), values);
        // A chunk never written decodes to the fill value.
        let empty = array.read_chunk(&[0, 0]).unwrap();
        assert!(empty
            .chunks(4)
            .all(|b| f32::from_ne_bytes(b.try_into().unwrap()).is_nan()));
        let info = array.info();
        assert_eq!(info.dimension_names, spec.dimension_names);
        assert_eq!(info.attributes["units"], "K");
        assert_eq!(info.compressor, Some(Compressor::Zstd(3)));
    }
    zarr::create_group(store, "", 3, &serde_json::Map::new()).unwrap();
    zarr::write_consolidated(store).unwrap();
    let root = store.get_json("zarr.json").unwrap().unwrap();
    assert!(root["consolidated_metadata"]["metadata"]["v3"].is_object());
    store.erase_prefix("").unwrap();
}

fn suite(store: &Store) {
    put_get_list_erase(store);
    ranges_and_sizes(store);
    markers(store);
    zarr_round_trip(store);
}

#[test]
fn memory_backend() {
    suite(&Store::open("memory://conformance").unwrap());
}

#[test]
fn local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
    suite(&store);
    let url = format!("file://{}", dir.path().join("other").display());
    suite(&Store::open(&url).unwrap());
}

#[test]
fn local_writes_leave_no_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    for i in 0..20 {
        store.put(&format!("k/{i}"), vec![i; 1000]).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(dir.path().join("k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(names.iter().all(|n| !n.contains("partial")));
}

#[test]
fn s3_backend() {
    let Ok(url) = std::env::var("CHUNKMILL_TEST_S3") else {
        eprintln!("SKIPPED s3_backend: CHUNKMILL_TEST_S3 is not set (scripts/test starts a server and sets it)");
        return;
    };
    suite(&Store::open(&format!("{url}/conformance")).unwrap());
}

#[test]
fn bad_urls_are_refused() {
    assert!(Store::open("ftp://x/y")
        .unwrap_err()
        .to_string()
        .contains("unsupported scheme"));
    assert!(Store::open("s3://")
        .unwrap_err()
        .to_string()
        .contains("no bucket"));
}
