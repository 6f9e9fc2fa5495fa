//! The store conformance suite (feature `testing`): what every backend must do, one function per
//! behaviour, so each store's tests run the same checks (memory, local, the direct-I/O scratch
//! store, S3) and a new backend gets them by calling [`run_all`].
//!
//! Every check starts by clearing the store it is given, so hand it a store that holds nothing
//! you want kept. A check returns `Err` when the store fails an operation it must support and
//! panics (as a test assertion) when the store answers wrongly.
//!
//! ```
//! let store = chunkmill_store::Store::open("memory://testing-doc")?;
//! chunkmill_store::testing::run_all(&store);
//! # Ok::<(), chunkmill_store::StoreError>(())
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use crate::markers::Markers;
use crate::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use crate::{Store, StoreError};

/// What a check returns: `Err` for an operation the store failed.
pub type Outcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// One behaviour: its name and its check.
pub type Check = (&'static str, fn(&Store) -> Outcome);

/// Every behaviour, in the order [`run_all`] checks them.
pub const CHECKS: &[Check] = &[
    ("missing_keys", missing_keys),
    ("put_get", put_get),
    ("prefixes_are_not_values", prefixes_are_not_values),
    ("value_sizes", value_sizes),
    (
        "overwrite_replaces_whole_value",
        overwrite_replaces_whole_value,
    ),
    ("key_names", key_names),
    ("list_all", list_all),
    ("list_prefix", list_prefix),
    ("erase", erase),
    ("erase_prefix", erase_prefix),
    ("partial_reads", partial_reads),
    ("sizes", sizes),
    ("json_values", json_values),
    ("markers", markers),
    ("markers_of_plans_are_apart", markers_of_plans_are_apart),
    ("concurrent_writers", concurrent_writers),
    ("atomic_visibility", atomic_visibility),
    (
        "listing_shows_only_whole_values",
        listing_shows_only_whole_values,
    ),
    ("zarr_round_trip", zarr_round_trip),
];

/// Runs every check of [`CHECKS`] on `store` and clears it afterwards.
///
/// # Panics
/// When a check fails; the message names the check and the store.
pub fn run_all(store: &Store) {
    for (name, check) in CHECKS {
        if let Err(e) = check(store) {
            panic!("{}: {name}: {e}", store.url());
        }
    }
    if let Err(e) = store.erase_prefix("") {
        panic!("{}: clearing after the suite: {e}", store.url());
    }
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

/// A value of `len` bytes that differs from its neighbours at every offset and from `seed` to
/// `seed`, so a misplaced or mixed range cannot go unnoticed.
#[must_use]
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// An absent key reads as `None` everywhere, and erasing it is not an error.
///
/// # Errors
/// When the store fails an operation.
pub fn missing_keys(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    assert!(store.is_empty()?, "a cleared store lists keys");
    assert_eq!(store.get("missing")?, None);
    assert_eq!(store.get("no/such/key")?, None);
    assert_eq!(store.size("missing")?, None);
    assert!(!store.exists("missing")?);
    assert_eq!(store.get_range("missing", 0, 4)?, None);
    assert_eq!(store.get_range("missing", 0, 0)?, None);
    assert_eq!(store.get_json("missing")?, None);
    store.erase("missing")?;
    store.erase_prefix("no/")?;
    Ok(())
}

/// A value written is read back byte for byte, at nested keys too, and empty values exist.
///
/// # Errors
/// When the store fails an operation.
pub fn put_get(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    store.put("a/b/c", vec![1, 2, 3])?;
    store.put("a/d", vec![4])?;
    store.put("e", vec![])?;
    store.put("bin", (0..=255u8).collect())?;
    assert_eq!(store.get("a/b/c")?.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(store.get("a/d")?.as_deref(), Some(&[4u8][..]));
    assert_eq!(store.get("e")?.as_deref(), Some(&[][..]));
    assert!(store.exists("e")?, "an empty value does not exist");
    assert_eq!(
        store.get("bin")?.as_deref(),
        Some(&(0..=255u8).collect::<Vec<_>>()[..])
    );
    assert!(store.exists("a/d")?);
    Ok(())
}

/// A prefix of stored keys is not a value: it does not exist, has no size and reads as `None`
/// (a local store keeps it as a directory; this was once reported as existing).
///
/// # Errors
/// When the store fails an operation.
pub fn prefixes_are_not_values(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    store.put("a/b/c", vec![1, 2, 3])?;
    for prefix in ["a", "a/b"] {
        assert_eq!(store.get(prefix)?, None, "{prefix} read as a value");
        assert!(!store.exists(prefix)?, "{prefix} exists as a value");
        assert_eq!(store.size(prefix)?, None, "{prefix} has a size");
        assert_eq!(store.get_range(prefix, 0, 1)?, None, "{prefix} has bytes");
    }
    Ok(())
}

/// Sizes around page and block boundaries (where direct I/O pads and trims) read back exactly.
///
/// # Errors
/// When the store fails an operation.
pub fn value_sizes(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let lens = [
        0usize, 1, 511, 512, 4095, 4096, 4097, 8191, 65_537, 1_048_579,
    ];
    for (i, len) in lens.into_iter().enumerate() {
        store.put(&format!("sizes/{len}"), pattern(len, i as u8))?;
    }
    for (i, len) in lens.into_iter().enumerate() {
        let key = format!("sizes/{len}");
        let got = store.get(&key)?.ok_or_else(|| format!("{key} vanished"))?;
        assert_eq!(got.len(), len, "{key}: length");
        assert!(got[..] == pattern(len, i as u8)[..], "{key}: bytes differ");
        assert_eq!(store.size(&key)?, Some(len as u64), "{key}: size");
    }
    Ok(())
}

/// Writing over a value replaces all of it: a shorter value leaves no tail of the longer one.
///
/// # Errors
/// When the store fails an operation.
pub fn overwrite_replaces_whole_value(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    store.put("k", pattern(10_000, 1))?;
    store.put("k", vec![9])?;
    assert_eq!(store.get("k")?.as_deref(), Some(&[9u8][..]));
    assert_eq!(store.size("k")?, Some(1));
    store.put("k", pattern(5000, 2))?;
    assert!(store.get("k")?.as_deref() == Some(&pattern(5000, 2)[..]));
    store.put("k", vec![])?;
    assert_eq!(store.get("k")?.as_deref(), Some(&[][..]));
    assert_eq!(
        store.list("")?,
        vec!["k".to_string()],
        "overwrites left extra keys"
    );
    Ok(())
}

/// The key shapes Zarr and chunkmill use: dotted chunk keys, hidden metadata names, `c/` paths,
/// dashes and underscores, deep nesting.
///
/// # Errors
/// When the store fails an operation.
pub fn key_names(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let keys = [
        ".zarray",
        ".zattrs",
        "zarr.json",
        "v/0.0.0",
        "v/c/0/1/2",
        "my-array_2/.zarray",
        "plan-3f2a/stage_0/17",
        "a/b/c/d/e/f/g/h",
    ];
    for (i, key) in keys.iter().enumerate() {
        store.put(key, vec![i as u8; i + 1])?;
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            store.get(key)?.as_deref(),
            Some(&vec![i as u8; i + 1][..]),
            "{key}"
        );
    }
    let want: Vec<String> = sorted(keys.iter().map(|k| (*k).to_string()).collect());
    assert_eq!(sorted(store.list("")?), want);
    Ok(())
}

/// Listing everything gives every key once, with its full name.
///
/// # Errors
/// When the store fails an operation.
pub fn list_all(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let mut want = BTreeSet::new();
    for i in 0..50 {
        let key = format!("d{}/k{i}", i % 7);
        store.put(&key, vec![i])?;
        want.insert(key);
    }
    store.put("top", vec![])?;
    want.insert("top".to_string());
    let got = store.list("")?;
    assert_eq!(got.len(), want.len(), "duplicate or missing keys: {got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    assert!(!store.is_empty()?);
    Ok(())
}

/// A prefix lists the keys below it, at every depth, and nothing beside it: `a/` does not list
/// `ab/x` or `a.json`.
///
/// # Errors
/// When the store fails an operation.
pub fn list_prefix(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    for key in ["a/x", "a/y/z", "a/y/w/v", "ab/x", "a.json", "b/a/x", "c"] {
        store.put(key, vec![1])?;
    }
    assert_eq!(sorted(store.list("a/")?), ["a/x", "a/y/w/v", "a/y/z"]);
    assert_eq!(sorted(store.list("a/y/")?), ["a/y/w/v", "a/y/z"]);
    assert_eq!(store.list("ab/")?, ["ab/x"]);
    assert_eq!(store.list("b/")?, ["b/a/x"]);
    assert!(store.list("none/")?.is_empty());
    assert!(store.list("a/x/")?.is_empty(), "a value listed as a prefix");
    Ok(())
}

/// Erasing a key removes it and only it; erasing twice is fine.
///
/// # Errors
/// When the store fails an operation.
pub fn erase(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    store.put("a/b", vec![1])?;
    store.put("a/bc", vec![2])?;
    store.erase("a/b")?;
    assert_eq!(store.get("a/b")?, None);
    assert!(!store.exists("a/b")?);
    assert_eq!(store.get("a/bc")?.as_deref(), Some(&[2u8][..]));
    store.erase("a/b")?;
    assert_eq!(store.list("")?, ["a/bc"]);
    // A key erased can be written again.
    store.put("a/b", vec![3])?;
    assert_eq!(store.get("a/b")?.as_deref(), Some(&[3u8][..]));
    Ok(())
}

/// Erasing a prefix removes everything below it and nothing beside it; `""` clears the store.
///
/// # Errors
/// When the store fails an operation.
pub fn erase_prefix(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    for key in ["a/x", "a/y/z", "ab/x", "a.json", "b/x"] {
        store.put(key, vec![1])?;
    }
    store.erase_prefix("a/")?;
    assert_eq!(sorted(store.list("")?), ["a.json", "ab/x", "b/x"]);
    store.erase_prefix("none/")?;
    assert_eq!(store.list("")?.len(), 3);
    store.erase_prefix("")?;
    assert!(store.is_empty()?);
    Ok(())
}

/// Byte ranges read exactly the bytes asked for, across block boundaries and at the end; an
/// empty range of an existing value is empty; a range past the end is an error.
///
/// # Errors
/// When the store fails an operation.
pub fn partial_reads(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let value = pattern(100_000, 7);
    store.put("dir/obj.nc", value.clone())?;
    store.put("empty", vec![])?;
    for (offset, len) in [
        (0u64, 8u64),
        (0, 100_000),
        (4095, 2),
        (65_530, 20),
        (99_990, 10),
        (99_999, 1),
        (1, 99_999),
    ] {
        let got = store
            .get_range("dir/obj.nc", offset, len)?
            .ok_or("an existing value read as missing")?;
        let want = &value[offset as usize..(offset + len) as usize];
        assert!(&got[..] == want, "bytes {offset}+{len} differ");
    }
    assert_eq!(
        store.get_range("dir/obj.nc", 500, 0)?.as_deref(),
        Some(&[][..])
    );
    assert_eq!(store.get_range("empty", 0, 0)?.as_deref(), Some(&[][..]));
    assert!(
        store.get_range("dir/obj.nc", 99_995, 10).is_err(),
        "a range past the end was answered"
    );
    assert!(
        store.get_range("dir/obj.nc", 200_000, 1).is_err(),
        "a range beyond the value was answered"
    );
    Ok(())
}

/// Sizes are the stored lengths; a missing key has none.
///
/// # Errors
/// When the store fails an operation.
pub fn sizes(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    store.put("dir/obj", pattern(100_000, 3))?;
    store.put("empty", vec![])?;
    assert_eq!(store.size("dir/obj")?, Some(100_000));
    assert_eq!(store.size("empty")?, Some(0));
    assert_eq!(store.size("missing")?, None);
    Ok(())
}

/// JSON documents round-trip; a value that is not JSON is a [`StoreError::Json`], not `None`.
///
/// # Errors
/// When the store fails an operation.
pub fn json_values(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let doc = json!({"zarr_format": 3, "shape": [5, 7], "name": "t ∆", "f": 0.1, "n": null});
    store.put_json("doc.json", &doc)?;
    assert_eq!(store.get_json("doc.json")?, Some(doc));
    store.put("bad.json", b"{not json".to_vec())?;
    match store.get_json("bad.json") {
        Err(StoreError::Json { key, .. }) => assert_eq!(key, "bad.json"),
        other => panic!("invalid JSON read as {other:?}"),
    }
    Ok(())
}

/// Task markers: marked tasks are listed, probed and carry their records, in task order.
///
/// # Errors
/// When the store fails an operation.
pub fn markers(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let m = Markers::new(store.clone(), "plan1");
    assert!(m.marked("s0")?.is_empty());
    assert!(m.records("s0")?.is_empty());
    for t in [17u64, 0, 3, 1_000_000] {
        m.mark("s0", t, &json!({"seconds": t}))?;
    }
    assert_eq!(
        m.marked("s0")?,
        [0u64, 3, 17, 1_000_000].into_iter().collect()
    );
    assert!(m.is_marked("s0", 3)?);
    assert!(!m.is_marked("s0", 4)?);
    assert!(!m.is_marked("s1", 3)?);
    let records = m.records("s0")?;
    let tasks: Vec<u64> = records.iter().map(|(t, _)| *t).collect();
    assert_eq!(tasks, [0, 3, 17, 1_000_000]);
    assert_eq!(records[2].1["seconds"], 17);
    // Marking again (a task run twice) keeps one marker with the newer record.
    m.mark("s0", 3, &json!({"seconds": 99}))?;
    assert_eq!(m.marked("s0")?.len(), 4);
    assert_eq!(m.records("s0")?[1].1["seconds"], 99);
    // A stage name that prefixes another's is apart from it.
    m.mark("s", 5, &json!({}))?;
    assert_eq!(m.marked("s")?, [5u64].into_iter().collect());
    m.clear()?;
    assert!(m.marked("s0")?.is_empty());
    assert!(m.marked("s")?.is_empty());
    Ok(())
}

/// Markers of two plans in one work dir do not see each other, and clearing one keeps the other
/// (and everything else in the work dir).
///
/// # Errors
/// When the store fails an operation.
pub fn markers_of_plans_are_apart(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    store.put("plan10/unrelated", vec![1])?;
    let one = Markers::new(store.clone(), "plan1");
    let two = Markers::new(store.clone(), "plan2");
    one.mark("s0", 1, &json!({}))?;
    two.mark("s0", 2, &json!({}))?;
    assert_eq!(one.marked("s0")?, [1u64].into_iter().collect());
    assert_eq!(two.marked("s0")?, [2u64].into_iter().collect());
    one.clear()?;
    assert!(one.marked("s0")?.is_empty());
    assert_eq!(two.marked("s0")?, [2u64].into_iter().collect());
    assert!(
        store.exists("plan10/unrelated")?,
        "clearing plan1 removed plan10's files"
    );
    Ok(())
}

/// Many threads writing distinct keys at once all land, each with its own value.
///
/// # Errors
/// When the store fails an operation.
pub fn concurrent_writers(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let threads = 8u8;
    let per_thread = 16u8;
    std::thread::scope(|scope| -> Outcome {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> Outcome {
                    for i in 0..per_thread {
                        store.put(&format!("c/{t}/{i}"), pattern(3000 + usize::from(i), t ^ i))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "a writer thread panicked")??;
        }
        Ok(())
    })?;
    assert_eq!(
        store.list("c/")?.len(),
        usize::from(threads) * usize::from(per_thread)
    );
    for t in 0..threads {
        for i in 0..per_thread {
            let got = store.get(&format!("c/{t}/{i}"))?;
            assert!(
                got.as_deref() == Some(&pattern(3000 + usize::from(i), t ^ i)[..]),
                "c/{t}/{i} differs"
            );
        }
    }
    Ok(())
}

/// While one thread rewrites a key with values of different lengths, readers see one whole
/// value or another, never a torn mix, a truncated value or no value at all.
///
/// # Errors
/// When the store fails an operation.
pub fn atomic_visibility(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let values = [pattern(200_000, 1), pattern(70_001, 2), pattern(1, 3)];
    store.put("hot", values[0].clone())?;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| -> Outcome {
        let writer = scope.spawn(|| -> Outcome {
            let result = (|| -> Outcome {
                for round in 0..60 {
                    store.put("hot", values[round % values.len()].clone())?;
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            result
        });
        let mut reads = 0;
        while !done.load(Ordering::Acquire) || reads == 0 {
            let got = store
                .get("hot")?
                .ok_or("the key vanished while being rewritten")?;
            assert!(
                values.iter().any(|v| v[..] == got[..]),
                "a reader saw a torn value of {} bytes",
                got.len()
            );
            reads += 1;
        }
        writer.join().map_err(|_| "the writer thread panicked")??;
        Ok(())
    })?;
    assert_eq!(store.list("")?, ["hot"], "rewrites left other keys");
    Ok(())
}

/// A listing taken while values are being written names only keys whose whole value is there:
/// temporary files of in-flight writes never show up as keys.
///
/// # Errors
/// When the store fails an operation.
pub fn listing_shows_only_whole_values(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    let done = AtomicBool::new(false);
    let value = |i: usize| pattern(50_000 + i, i as u8);
    std::thread::scope(|scope| -> Outcome {
        let writer = scope.spawn(|| -> Outcome {
            let result = (|| -> Outcome {
                for i in 0..40 {
                    store.put(&format!("w/{i}"), value(i))?;
                }
                Ok(())
            })();
            done.store(true, Ordering::Release);
            result
        });
        while !done.load(Ordering::Acquire) {
            for key in store.list("w/")? {
                let i: usize = key
                    .strip_prefix("w/")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("a listing named {key}"))?;
                let got = store
                    .get(&key)?
                    .ok_or_else(|| format!("{key} listed but missing"))?;
                assert!(got[..] == value(i)[..], "{key} listed before it was whole");
            }
        }
        writer.join().map_err(|_| "the writer thread panicked")??;
        Ok(())
    })?;
    assert_eq!(store.list("w/")?.len(), 40);
    Ok(())
}

/// Zarr v2 and v3 arrays are created, written and read through the store; unwritten chunks read
/// as the fill value; metadata consolidates.
///
/// # Errors
/// When the store fails an operation.
pub fn zarr_round_trip(store: &Store) -> Outcome {
    store.erase_prefix("")?;
    for format in [2u8, 3] {
        let spec = ArraySpec {
            path: format!("v{format}"),
            zarr_format: format,
            shape: vec![5, 7],
            dtype: crate::DataType::Float(4),
            chunks: vec![2, 4],
            inner_chunks: None,
            fill_value: json!("NaN"),
            encoding: Encoding::Compressor(Compressor::Zstd(3)),
            dimension_names: Some(vec![Some("y".into()), Some("x".into())]),
            attributes: json!({"units": "K"})
                .as_object()
                .cloned()
                .ok_or("attributes are not an object")?,
        };
        zarr::create_array(store, &spec)?;
        let array = ZarrArray::open(store, &spec.path)?;
        assert!(f32::from_ne_bytes(array.fill_bytes().try_into()?).is_nan());
        let values: Vec<u8> = (0..8u8)
            .flat_map(|i| (f32::from(i) * 1.5).to_ne_bytes())
            .collect();
        array.write_chunk(&[1, 1], values.clone())?;
        assert_eq!(array.read_chunk(&[1, 1])?, values);
        let empty = array.read_chunk(&[0, 0])?;
        assert_eq!(empty.len(), 32);
        for b in empty.chunks(4) {
            assert!(
                f32::from_ne_bytes(b.try_into()?).is_nan(),
                "fill is not NaN"
            );
        }
        let info = array.info();
        assert_eq!(info.dimension_names, spec.dimension_names);
        assert_eq!(info.attributes["units"], "K");
        assert_eq!(info.compressor, Some(Compressor::Zstd(3)));
    }
    zarr::create_group(store, "", 3, &serde_json::Map::new())?;
    zarr::write_consolidated(store)?;
    let root = store.get_json("zarr.json")?.ok_or("no root zarr.json")?;
    assert!(root["consolidated_metadata"]["metadata"]["v3"].is_object());
    Ok(())
}
