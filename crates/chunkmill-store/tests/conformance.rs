//! Every backend runs the conformance suite of `chunkmill_store::testing`: memory, a local
//! directory (as a path and as `file://`), the direct-I/O scratch store, and S3 (a real
//! S3-compatible server that scripts/test starts; named by `CHUNKMILL_TEST_S3`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chunkmill_store::{testing, ReadInto, ScratchIo, Store};

#[test]
fn memory_backend() {
    testing::run_all(&Store::open("memory://conformance").unwrap());
}

#[test]
fn local_backend() {
    let dir = tempfile::tempdir().unwrap();
    testing::run_all(&Store::open(dir.path().join("store").to_str().unwrap()).unwrap());
    let url = format!("file://{}", dir.path().join("other").display());
    testing::run_all(&Store::open(&url).unwrap());
}

#[test]
fn direct_io_scratch_backend() {
    let dir = tempfile::tempdir().unwrap();
    testing::run_all(&Store::open_scratch(dir.path().join("scratch").to_str().unwrap()).unwrap());
}

#[test]
fn page_cache_scratch_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scratch");
    testing::run_all(
        &Store::open_scratch_with(path.to_str().unwrap(), ScratchIo::PageCache).unwrap(),
    );
}

#[test]
fn output_backend() {
    let dir = tempfile::tempdir().unwrap();
    testing::run_all(&Store::open_output(dir.path().join("output").to_str().unwrap()).unwrap());
}

/// A scratch store, an output store and a plain store over one directory read each other's
/// values: the direct path pads to whole pages, a bounce buffer (1 MiB) at a time, and must
/// trim back to the true length.
#[test]
fn scratch_and_plain_stores_read_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let (plain, scratch) = (
        Store::open(path).unwrap(),
        Store::open_scratch(path).unwrap(),
    );
    let output = Store::open_output(path).unwrap();
    let cached = Store::open_scratch_with(path, ScratchIo::PageCache).unwrap();
    for (i, len) in [
        0usize,
        1,
        4095,
        4096,
        4097,
        100_003,
        262_144,
        1 << 20,
        2_500_001,
    ]
    .into_iter()
    .enumerate()
    {
        let value = testing::pattern(len, i as u8);
        output.put_slice(&format!("o/{len}"), &value).unwrap();
        for reader in [&plain, &scratch, &output, &cached] {
            assert_eq!(
                reader.get(&format!("o/{len}")).unwrap().as_deref(),
                Some(&value[..])
            );
            // Into a caller's buffer: exactly the value, or its size when that differs.
            let mut into = vec![0xAA; len];
            assert_eq!(
                reader
                    .read_exact_into(&format!("o/{len}"), &mut into)
                    .unwrap(),
                ReadInto::Read
            );
            assert_eq!(into, value);
            let mut longer = vec![0; len + 1];
            assert_eq!(
                reader
                    .read_exact_into(&format!("o/{len}"), &mut longer)
                    .unwrap(),
                ReadInto::Size(len as u64)
            );
            assert_eq!(
                reader.read_exact_into("o/absent", &mut longer).unwrap(),
                ReadInto::Missing
            );
        }
        let value = testing::pattern(len, i as u8);
        scratch.put(&format!("s/{len}"), value.clone()).unwrap();
        plain.put(&format!("p/{len}"), value.clone()).unwrap();
        // Written through the page cache, read around it (a resumed run may choose another
        // way than the run that wrote the pieces) and the other way round.
        cached.put(&format!("c/{len}"), value.clone()).unwrap();
        assert_eq!(
            scratch.get(&format!("c/{len}")).unwrap().as_deref(),
            Some(&value[..])
        );
        assert_eq!(
            cached.get(&format!("s/{len}")).unwrap().as_deref(),
            Some(&value[..])
        );
        assert_eq!(
            plain.get(&format!("s/{len}")).unwrap().as_deref(),
            Some(&value[..])
        );
        assert_eq!(
            scratch.get(&format!("p/{len}")).unwrap().as_deref(),
            Some(&value[..])
        );
        let on_disk = std::fs::metadata(dir.path().join(format!("s/{len}"))).unwrap();
        assert_eq!(
            on_disk.len(),
            len as u64,
            "the scratch file keeps its page padding"
        );
    }
}

#[test]
fn local_writes_leave_no_partial_files() {
    let dir = tempfile::tempdir().unwrap();
    for store in [
        Store::open(dir.path().to_str().unwrap()).unwrap(),
        Store::open_scratch(dir.path().to_str().unwrap()).unwrap(),
        Store::open_scratch_with(dir.path().to_str().unwrap(), ScratchIo::PageCache).unwrap(),
        Store::open_output(dir.path().to_str().unwrap()).unwrap(),
    ] {
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
}

#[test]
fn s3_backend() {
    let Ok(url) = std::env::var("CHUNKMILL_TEST_S3") else {
        eprintln!("SKIPPED s3_backend: CHUNKMILL_TEST_S3 is not set (scripts/test starts a server and sets it)");
        return;
    };
    testing::run_all(&Store::open(&format!("{url}/conformance")).unwrap());
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

/// A scratch store split between O_DIRECT and the page cache passes the conformance suite, and
/// a plain store reads every value it wrote whichever way its key sent it (0 and 100 percent
/// are the two whole ways).
#[test]
fn split_scratch_backend() {
    for direct_percent in [0, 50, 100] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scratch");
        let split =
            Store::open_scratch_with(path.to_str().unwrap(), ScratchIo::Split { direct_percent })
                .unwrap();
        testing::run_all(&split);
        let plain = Store::open(path.to_str().unwrap()).unwrap();
        for (i, len) in [1usize, 4097, 262_144, 1_000_003].into_iter().enumerate() {
            for k in 0..8 {
                let key = format!("p/{len}/{k}");
                let value = testing::pattern(len, (i + k) as u8);
                split.put_slice(&key, &value).unwrap();
                assert_eq!(split.get(&key).unwrap().as_deref(), Some(&value[..]));
                assert_eq!(plain.get(&key).unwrap().as_deref(), Some(&value[..]));
            }
        }
    }
}
