//! chunkmill-hdf5 against an independent oracle: a corpus written by h5py (libhdf5) and
//! netCDF4-python (netCDF-C), with ground truth read back through those libraries.
//!
//! The corpus is generated on first use by `tests/corpus/make_corpus.py` into
//! `$CARGO_TARGET_TMPDIR/chunkmill-hdf5-corpus` (regenerated when the script is newer), with
//! the first Python found among `$CHUNKMILL_PYTHON`, `$VIRTUAL_ENV/bin/python`, a `.venv`
//! next to the crate or its workspace, and `python3`, that imports h5py and netCDF4 (pinned in
//! `tests/corpus/requirements.txt`):
//!
//! ```text
//! python3.12 -m venv .venv && .venv/bin/pip install -r tests/corpus/requirements.txt
//! ```
//!
//! Without such a Python these tests fail and say so; `CHUNKMILL_SKIP_CORPUS=1` skips them,
//! visibly.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use chunkmill_hdf5::{
    BlockCache, DataRefs, Error, Layout, LocalFile, RangeSource, SourceFile, Variable,
};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

// ----------------------------------------------------------------------------------------
// The corpus
// ----------------------------------------------------------------------------------------

/// This crate's directory as cargo gives it to the running test: `env!` bakes in the path the
/// binary was compiled at, which cargo reuses unchanged when the same target dir serves a
/// checkout at another path (then every script path pointed into the other checkout).
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn python_candidates() -> Vec<PathBuf> {
    let crate_dir = &crate_dir();
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("CHUNKMILL_PYTHON") {
        out.push(PathBuf::from(p));
    }
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        out.push(PathBuf::from(v).join("bin/python"));
    }
    for up in [crate_dir, crate_dir.parent().unwrap_or(crate_dir)] {
        out.push(up.join(".venv/bin/python"));
        if let Some(parent) = up.parent() {
            out.push(parent.join(".venv/bin/python"));
        }
    }
    out.push(PathBuf::from("python3"));
    out
}

fn find_python() -> Option<PathBuf> {
    python_candidates().into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import h5py, netCDF4, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn skip() -> bool {
    if std::env::var_os("CHUNKMILL_SKIP_CORPUS").is_some() {
        eprintln!("SKIPPED: CHUNKMILL_SKIP_CORPUS is set, the h5py oracle corpus is not checked");
        return true;
    }
    false
}

/// The corpus directory, generated once per test process if missing or stale.
fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chunkmill-hdf5-corpus");
        let script = crate_dir().join("tests/corpus/make_corpus.py");
        let index = dir.join("INDEX.json");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let fresh = match (modified(&index), modified(&script)) {
            (Some(i), Some(s)) => i >= s,
            _ => false,
        };
        if !fresh {
            let python = find_python().unwrap_or_else(|| {
                panic!(
                    "no Python with h5py and netCDF4 found (tried {:?}); install \
                     tests/corpus/requirements.txt in a venv and set CHUNKMILL_PYTHON, or set \
                     CHUNKMILL_SKIP_CORPUS=1 to skip these tests",
                    python_candidates()
                )
            });
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let out = Command::new(&python)
                .arg(&script)
                .arg(&tmp)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
            assert!(
                out.status.success(),
                "make_corpus.py failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).unwrap_or_else(|e| panic!("cannot place the corpus: {e}"));
        }
        dir
    })
}

fn truth(name: &str) -> Value {
    let path = corpus().join(format!("{name}.truth.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files(prefix: &str) -> Vec<String> {
    let index = std::fs::read_to_string(corpus().join("INDEX.json")).unwrap_or_default();
    let index: Value = serde_json::from_str(&index).unwrap_or(Value::Null);
    index["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["file"].as_str())
        .filter(|f| f.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn open(name: &str) -> SourceFile {
    SourceFile::open_path(corpus().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_u64().unwrap_or(u64::MAX))
        .collect()
}

/// JSON equality with numbers compared by value (1 == 1.0, "NaN" == "NaN").
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(p), Some(q), _, _) => p == q,
                (_, _, Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Undoes the filters of a chunk that the test knows (fletcher32, deflate, shuffle), in
/// reverse pipeline order, skipping those the filter mask marks as not applied.
fn decode_chunk(var: &Variable, mut bytes: Vec<u8>, mask: u32) -> Option<Vec<u8>> {
    for (i, f) in var.filters.iter().enumerate().rev() {
        if mask & (1 << i) != 0 {
            continue;
        }
        bytes = match f.id {
            1 => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(&bytes[..])
                    .read_to_end(&mut out)
                    .ok()?;
                out
            }
            2 => {
                let size = var.dtype.size;
                let n = bytes.len() / size;
                let mut out = vec![0u8; bytes.len()];
                for e in 0..n {
                    for b in 0..size {
                        out[e * size + b] = bytes[b * n + e];
                    }
                }
                out[n * size..].copy_from_slice(&bytes[n * size..]);
                out
            }
            3 => bytes[..bytes.len().checked_sub(4)?].to_vec(),
            _ => return None,
        };
    }
    Some(bytes)
}

/// Stored elements as f64, from a numpy type string.
fn numbers(numpy: &str, bytes: &[u8]) -> Option<Vec<f64>> {
    let big = numpy.starts_with('>');
    let size: usize = numpy[2..].parse().ok()?;
    let kind = numpy.as_bytes()[1];
    Some(
        bytes
            .chunks_exact(size)
            .map(|b| {
                let mut raw = [0u8; 8];
                if big {
                    for (i, &x) in b.iter().rev().enumerate() {
                        raw[i] = x;
                    }
                } else {
                    raw[..size].copy_from_slice(b);
                }
                let u = u64::from_le_bytes(raw);
                let shift = 64 - 8 * size as u32;
                match (kind, size) {
                    (b'f', 4) => f64::from(f32::from_bits(u as u32)),
                    (b'f', 8) => f64::from_bits(u),
                    (b'i', _) => (((u << shift) as i64) >> shift) as f64,
                    _ => u as f64,
                }
            })
            .collect(),
    )
}

fn value_f64(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => v.as_f64().unwrap_or(f64::NAN),
    }
}

fn same_numbers(got: &[f64], want: &[Value]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(&g, w)| {
            let w = value_f64(w);
            (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-6 * w.abs()
        })
}

/// The elements of a decoded whole chunk that lie inside the extent, in row-major order.
fn clip(values: &[f64], chunk: &[u64], origin: &[u64], shape: &[u64]) -> Vec<f64> {
    let extent: Vec<u64> = (0..chunk.len())
        .map(|d| chunk[d].min(shape[d] - origin[d]))
        .collect();
    let mut out = Vec::new();
    let total: u64 = extent.iter().product();
    for flat in 0..total {
        let mut rem = flat;
        let mut index = 0u64;
        let mut stride = 1u64;
        let mut coords = vec![0u64; chunk.len()];
        for d in (0..chunk.len()).rev() {
            coords[d] = rem % extent[d];
            rem /= extent[d];
        }
        for d in (0..chunk.len()).rev() {
            index += coords[d] * stride;
            stride *= chunk[d];
        }
        out.push(values[index as usize]);
    }
    out
}

// ----------------------------------------------------------------------------------------
// HDF5 and NetCDF-4 through hdf5-reader, against h5py
// ----------------------------------------------------------------------------------------

fn hdf5_files() -> Vec<String> {
    let mut all = files("h5_");
    all.extend(files("nc4_"));
    all
}

#[test]
fn every_chunk_address_size_and_mask_matches_h5py() -> TestResult {
    if skip() {
        return Ok(());
    }
    let mut checked_chunks = 0usize;
    let mut checked_datasets = 0usize;
    for name in hdf5_files() {
        let file = open(&name);
        let t = truth(&name);
        let inventory = file.inventory()?;
        for d in t["datasets"].as_array().into_iter().flatten() {
            let path = d["path"].as_str().unwrap_or_default();
            let layout = d["layout"].as_str().unwrap_or_default();
            if layout == "virtual" {
                assert!(
                    inventory.unlisted.iter().any(|u| u.path == path),
                    "{name}: {path}: a virtual dataset must be recorded as unlisted"
                );
                continue;
            }
            let Some(var) = inventory.variable(path) else {
                // Only NetCDF-4 dimension-only datasets may be missing from the variables.
                let hidden = d["attrs"]["NAME"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("This is a netCDF dimension but not"));
                assert!(hidden, "{name}: {path} is not listed");
                continue;
            };
            let ctx = format!("{name}: {path}");
            assert_eq!(var.shape, u64s(&d["shape"]), "{ctx}: shape");
            let maxshape: Vec<Option<u64>> = d["maxshape"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::as_u64)
                .collect();
            assert_eq!(var.max_shape, maxshape, "{ctx}: maxshape");
            assert_eq!(
                var.dtype.numpy,
                d["dtype"].as_str().unwrap_or_default(),
                "{ctx}: dtype"
            );
            let chunks = (!d["chunks"].is_null()).then(|| u64s(&d["chunks"]));
            assert_eq!(var.chunk_shape, chunks, "{ctx}: chunk shape");
            let filters: Vec<(u64, Vec<u64>)> = d["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| (f["id"].as_u64().unwrap_or(0), u64s(&f["parameters"])))
                .collect();
            let ours: Vec<(u64, Vec<u64>)> = var
                .filters
                .iter()
                .map(|f| {
                    (
                        u64::from(f.id),
                        f.parameters.iter().map(|&p| u64::from(p)).collect(),
                    )
                })
                .collect();
            assert_eq!(ours, filters, "{ctx}: filters");
            if let Some(index) = d["index"].as_str() {
                let Layout::Chunked { index: kind } = &var.layout else {
                    panic!("{ctx}: expected a chunked layout, got {:?}", var.layout);
                };
                assert_eq!(
                    serde_json::to_value(kind)?,
                    Value::from(index),
                    "{ctx}: index kind"
                );
            }
            let refs = file.data_refs(var)?;
            match (layout, refs) {
                (
                    "chunked",
                    DataRefs::Chunked {
                        chunk_shape,
                        chunks,
                        ..
                    },
                ) => {
                    let want: Vec<(Vec<u64>, u64, u64, u64)> = d["chunk_list"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| {
                            let offset = u64s(&c[0]);
                            let indices = offset
                                .iter()
                                .zip(&chunk_shape)
                                .map(|(o, c)| o / c)
                                .collect();
                            (
                                indices,
                                c[1].as_u64().unwrap_or(0),
                                c[2].as_u64().unwrap_or(0),
                                c[3].as_u64().unwrap_or(0),
                            )
                        })
                        .collect();
                    let got: Vec<(Vec<u64>, u64, u64, u64)> = chunks
                        .iter()
                        .map(|c| {
                            (
                                c.indices.clone(),
                                u64::from(c.filter_mask),
                                c.offset,
                                c.length,
                            )
                        })
                        .collect();
                    if got != want {
                        let first = got.iter().zip(&want).position(|(g, w)| g != w);
                        panic!(
                            "{ctx}: {} chunks listed, h5py has {}; first difference at {first:?}: {:?} vs {:?}",
                            got.len(),
                            want.len(),
                            first.and_then(|i| got.get(i)),
                            first.and_then(|i| want.get(i))
                        );
                    }
                    checked_chunks += got.len();
                }
                ("contiguous", DataRefs::Contiguous { range }) => {
                    let offset = d["contiguous"]["offset"].as_u64();
                    let size = d["contiguous"]["size"].as_u64().unwrap_or(0);
                    match (offset, range) {
                        (None, None) => {}
                        (Some(o), Some(r)) => {
                            assert_eq!((r.offset, r.length), (o, size), "{ctx}: contiguous range")
                        }
                        (_, r) if size == 0 => {
                            assert!(r.is_none(), "{ctx}: an empty dataset has no range")
                        }
                        (o, r) => panic!("{ctx}: h5py offset {o:?}, ours {r:?}"),
                    }
                    if let (Some(r), Some(values)) = (range, d["values"].as_array()) {
                        let bytes = file.read_range(r.offset, r.length)?;
                        let got = numbers(&var.dtype.numpy, &bytes).unwrap_or_default();
                        let n = values.len().min(got.len());
                        assert!(
                            same_numbers(&got[..n], &values[..n]),
                            "{ctx}: contiguous values"
                        );
                    }
                }
                ("compact", DataRefs::Compact { bytes }) => {
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    assert_eq!(
                        hex,
                        d["compact_hex"].as_str().unwrap_or_default(),
                        "{ctx}: compact bytes"
                    );
                }
                (layout, refs) => panic!("{ctx}: h5py says {layout}, we list {refs:?}"),
            }
            checked_datasets += 1;
        }
    }
    eprintln!("checked {checked_datasets} datasets and {checked_chunks} chunks against h5py");
    assert!(
        checked_chunks > 100_000,
        "the corpus must include the 50 000-chunk datasets"
    );
    Ok(())
}

#[test]
fn chunk_bytes_decode_to_the_values_h5py_reads() -> TestResult {
    if skip() {
        return Ok(());
    }
    let mut decoded = 0usize;
    for name in hdf5_files() {
        let file = open(&name);
        let inventory = file.inventory()?;
        for d in truth(&name)["datasets"].as_array().into_iter().flatten() {
            let Some(samples) = d["samples"].as_array() else {
                continue;
            };
            let path = d["path"].as_str().unwrap_or_default();
            let Some(var) = inventory.variable(path) else {
                continue;
            };
            if var.dtype.numpy.ends_with("f2") {
                continue;
            }
            let DataRefs::Chunked {
                chunk_shape,
                chunks,
                ..
            } = file.data_refs(var)?
            else {
                panic!("{name}: {path}: not chunked");
            };
            for s in samples {
                let origin = u64s(&s["chunk_offset"]);
                let indices: Vec<u64> = origin
                    .iter()
                    .zip(&chunk_shape)
                    .map(|(o, c)| o / c)
                    .collect();
                let chunk = chunks
                    .iter()
                    .find(|c| c.indices == indices)
                    .unwrap_or_else(|| panic!("{name}: {path}: chunk {indices:?} not listed"));
                let bytes = file.read_range(chunk.offset, chunk.length)?.to_vec();
                let raw = decode_chunk(var, bytes, chunk.filter_mask)
                    .unwrap_or_else(|| panic!("{name}: {path}: chunk {indices:?} does not decode"));
                let all = numbers(&var.dtype.numpy, &raw).unwrap_or_default();
                assert_eq!(
                    all.len() as u64,
                    chunk_shape.iter().product::<u64>(),
                    "{name}: {path}: decoded size"
                );
                let got = clip(&all, &chunk_shape, &origin, &var.shape);
                let want = s["values"].as_array().cloned().unwrap_or_default();
                assert!(
                    same_numbers(&got, &want),
                    "{name}: {path}: chunk {indices:?} values differ"
                );
                decoded += 1;
            }
        }
    }
    eprintln!("decoded {decoded} chunks, equal to h5py's values");
    assert!(decoded > 40);
    Ok(())
}

#[test]
fn attributes_fill_values_and_dimension_scales_match_h5py() -> TestResult {
    if skip() {
        return Ok(());
    }
    for name in hdf5_files() {
        let file = open(&name);
        let inventory = file.inventory()?;
        let t = truth(&name);
        for g in t["groups"].as_array().into_iter().flatten() {
            let path = g["path"].as_str().unwrap_or_default();
            let ours = inventory
                .group(path)
                .unwrap_or_else(|| panic!("{name}: group {path} not listed"));
            for (k, v) in g["attrs"].as_object().into_iter().flatten() {
                let got = ours
                    .attributes
                    .iter()
                    .chain(&ours.internal_attributes)
                    .find(|a| &a.name == k);
                let got = got.unwrap_or_else(|| panic!("{name}: {path}: attribute {k} missing"));
                assert!(
                    same(&got.value, v),
                    "{name}: {path}@{k}: {} vs {v}",
                    got.value
                );
            }
        }
        for d in t["datasets"].as_array().into_iter().flatten() {
            let path = d["path"].as_str().unwrap_or_default();
            let Some(var) = inventory.variable(path) else {
                continue;
            };
            let ctx = format!("{name}: {path}");
            let names: BTreeSet<&str> = var
                .attributes
                .iter()
                .chain(&var.internal_attributes)
                .map(|a| a.name.as_str())
                .collect();
            let want: BTreeSet<&str> = d["attr_names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(names, want, "{ctx}: attribute names");
            for (k, v) in d["attrs"].as_object().into_iter().flatten() {
                if v.is_null() {
                    continue;
                }
                let got = var.attribute(k).unwrap_or(&Value::Null);
                assert!(same(got, v), "{ctx}@{k}: {got} vs {v}");
            }
            match &var.fill_value {
                Some(f) => assert!(
                    same(&f.value, &d["fillvalue"]),
                    "{ctx}: fill value {} vs {}",
                    f.value,
                    d["fillvalue"]
                ),
                None => assert!(
                    is_zero(&d["fillvalue"]),
                    "{ctx}: no fill value listed, h5py has {}",
                    d["fillvalue"]
                ),
            }
            if let Some(dims) = d["dims"].as_array() {
                let want: Vec<String> = dims
                    .iter()
                    .map(|axis| {
                        axis[0]
                            .as_str()
                            .unwrap_or_default()
                            .rsplit('/')
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect();
                assert_eq!(
                    var.dimensions.as_ref(),
                    Some(&want),
                    "{ctx}: dimension names"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn links_are_listed_once_with_their_aliases() -> TestResult {
    if skip() {
        return Ok(());
    }
    for name in ["h5_v1btree_earliest.h5", "h5_latest_indexes.h5"] {
        let inventory = open(name).inventory()?;
        let t = truth(name);
        // Every dataset once.
        let paths: Vec<&str> = inventory
            .variables
            .iter()
            .map(|v| v.path.as_str())
            .collect();
        let unique: BTreeSet<&str> = paths.iter().copied().collect();
        assert_eq!(paths.len(), unique.len(), "{name}: a dataset listed twice");
        for (target, aliases) in t["aliases"].as_object().into_iter().flatten() {
            let var = inventory
                .variable(target)
                .unwrap_or_else(|| panic!("{name}: {target}"));
            for alias in aliases.as_array().into_iter().flatten() {
                let alias = alias.as_str().unwrap_or_default();
                assert!(
                    var.aliases.iter().any(|a| a == alias),
                    "{name}: {alias} is not an alias of {target}"
                );
            }
        }
        for link in t["soft_links"].as_array().into_iter().flatten() {
            let path = link[0].as_str().unwrap_or_default();
            let aliased = inventory
                .variables
                .iter()
                .any(|v| v.aliases.iter().any(|a| a == path))
                || inventory
                    .groups
                    .iter()
                    .any(|g| g.aliases.iter().any(|a| a == path));
            let unlisted = inventory.unlisted.iter().any(|u| u.path == path);
            assert!(
                aliased || unlisted,
                "{name}: soft link {path} neither aliased nor unlisted"
            );
        }
        for link in t["external_links"].as_array().into_iter().flatten() {
            let path = link.as_str().unwrap_or_default();
            assert!(
                inventory
                    .unlisted
                    .iter()
                    .any(|u| u.path == path && u.reason.contains("external")),
                "{name}: {path}"
            );
        }
    }
    let inventory = open("h5_v1btree_earliest.h5").inventory()?;
    assert!(inventory
        .unlisted
        .iter()
        .any(|u| u.path == "/dangling" && u.reason.contains("/nowhere")));
    Ok(())
}

#[test]
fn a_virtual_dataset_does_not_hide_its_siblings() -> TestResult {
    if skip() {
        return Ok(());
    }
    let file = open("h5_virtual.h5");
    let inventory = file.inventory()?;
    let listed: Vec<&str> = inventory
        .variables
        .iter()
        .map(|v| v.path.as_str())
        .collect();
    assert_eq!(listed, ["/a", "/b"]);
    assert_eq!(inventory.unlisted.len(), 1);
    let vds = &inventory.unlisted[0];
    assert_eq!(vds.path, "/vds");
    assert!(vds.reason.starts_with("virtual dataset"), "{}", vds.reason);
    Ok(())
}

#[test]
fn netcdf4_variables_dimensions_and_hidden_dimensions_match_netcdf4_python() -> TestResult {
    if skip() {
        return Ok(());
    }
    for name in files("nc4_") {
        let inventory = open(&name).inventory()?;
        assert!(
            inventory.netcdf4,
            "{name}: NetCDF-4 conventions not detected"
        );
        let view = &truth(&name)["netcdf"];
        let ours: BTreeMap<String, &Variable> = inventory
            .variables
            .iter()
            .map(|v| (format!("{}/{}", v.group.trim_end_matches('/'), v.name), v))
            .collect();
        let want: BTreeSet<&String> = view["variables"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            ours.keys().collect::<BTreeSet<_>>(),
            want,
            "{name}: variables"
        );
        for (key, v) in view["variables"].as_object().into_iter().flatten() {
            let var = ours[key];
            let dims: Vec<String> = v["dimensions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            assert_eq!(
                var.dimensions.as_ref(),
                Some(&dims),
                "{name}: {key}: dimensions"
            );
            for (k, value) in v["attrs"].as_object().into_iter().flatten() {
                let got = var.attribute(k).unwrap_or(&Value::Null);
                assert!(same(got, value), "{name}: {key}@{k}: {got} vs {value}");
            }
        }
        let dims: BTreeSet<(String, String, u64, bool)> = inventory
            .dimensions
            .iter()
            .map(|d| (d.group.clone(), d.name.clone(), d.length, d.unlimited))
            .collect();
        let want: BTreeSet<(String, String, u64, bool)> = view["dimensions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["group"].as_str().unwrap_or_default().to_string(),
                    d["name"].as_str().unwrap_or_default().to_string(),
                    d["size"].as_u64().unwrap_or(0),
                    d["unlimited"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(dims, want, "{name}: dimensions");
        let nv = inventory
            .dimensions
            .iter()
            .find(|d| d.name == "nv")
            .expect("nv");
        assert_eq!(
            nv.coordinate_variable, None,
            "{name}: nv is a dimension without a variable"
        );
        assert!(inventory.variable("/nv").is_none());
        let non_coord = inventory
            .variable("/_nc4_non_coord_x")
            .expect("non-coordinate x");
        assert_eq!(non_coord.name, "x");
    }
    Ok(())
}

// ----------------------------------------------------------------------------------------
// NetCDF-3 against the generator's own header parser and netCDF4-python's values
// ----------------------------------------------------------------------------------------

#[test]
fn netcdf3_offsets_strides_and_values_match_the_independent_parser() -> TestResult {
    if skip() {
        return Ok(());
    }
    let names = files("nc3_");
    assert_eq!(names.len(), 4);
    for name in names {
        let file = open(&name);
        assert!(file.format().is_netcdf3());
        let inventory = file.inventory()?;
        let t = truth(&name);
        let header = &t["netcdf3"];
        let numrecs = header["numrecs"].as_u64().unwrap_or(0);
        let stride = header["record_stride"].as_u64().unwrap_or(0);
        for v in header["variables"].as_array().into_iter().flatten() {
            let vname = v["name"].as_str().unwrap_or_default();
            let ctx = format!("{name}: {vname}");
            let var = inventory
                .variable(&format!("/{vname}"))
                .unwrap_or_else(|| panic!("{ctx}: not listed"));
            let begin = v["begin"].as_u64().unwrap_or(0);
            let slab = v["slab"].as_u64().unwrap_or(0);
            let record = v["record"].as_bool().unwrap_or(false);
            assert_eq!(
                var.layout,
                Layout::NetCdf3 {
                    data_offset: begin,
                    record_stride: record.then_some(stride),
                    record_size: slab
                },
                "{ctx}: layout"
            );
            let view = &t["netcdf"]["variables"][format!("/{vname}")];
            let dims: Vec<String> = view["dimensions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            assert_eq!(var.dimensions.as_ref(), Some(&dims), "{ctx}: dimensions");
            assert_eq!(
                var.dtype.numpy[1..],
                view["dtype"].as_str().unwrap_or_default()[1..],
                "{ctx}: dtype"
            );
            assert!(
                var.dtype.numpy.starts_with('>') || var.dtype.size == 1,
                "{ctx}: NetCDF-3 is big-endian"
            );
            for (k, value) in view["attrs"].as_object().into_iter().flatten() {
                let got = var.attribute(k).unwrap_or(&Value::Null);
                assert!(same(got, value), "{ctx}@{k}: {got} vs {value}");
            }
            let refs = file.data_refs(var)?;
            let expected_values = &t["values"][vname];
            match refs {
                DataRefs::Chunked {
                    chunk_shape,
                    chunks,
                    ..
                } => {
                    assert!(record, "{ctx}: only record variables are strided");
                    assert_eq!(chunk_shape[0], 1);
                    assert_eq!(
                        chunks.len() as u64,
                        numrecs,
                        "{ctx}: one reference per record"
                    );
                    for (r, c) in chunks.iter().enumerate() {
                        assert_eq!(
                            (c.indices[0], c.offset, c.length),
                            (r as u64, begin + r as u64 * stride, slab),
                            "{ctx}: record {r}"
                        );
                    }
                    if let Some(want) = expected_values["values"].as_array() {
                        let c = &chunks[1];
                        let bytes = file.read_range(c.offset, c.length)?;
                        let got = numbers(&var.dtype.numpy, &bytes).unwrap_or_default();
                        assert!(same_numbers(&got, want), "{ctx}: record 1 values");
                    }
                }
                DataRefs::Contiguous { range } => {
                    assert!(!record, "{ctx}");
                    let r = range.unwrap_or_else(|| panic!("{ctx}: no range"));
                    assert_eq!((r.offset, r.length), (begin, slab), "{ctx}: range");
                    if let Some(want) = expected_values["values"].as_array() {
                        let bytes = file.read_range(r.offset, r.length)?;
                        let got = numbers(&var.dtype.numpy, &bytes).unwrap_or_default();
                        assert!(same_numbers(&got, want), "{ctx}: values");
                    }
                }
                DataRefs::Compact { .. } => panic!("{ctx}: NetCDF-3 has no compact data"),
            }
        }
        let dims: BTreeSet<(String, u64)> = inventory
            .dimensions
            .iter()
            .map(|d| (d.name.clone(), d.length))
            .collect();
        let want: BTreeSet<(String, u64)> = t["netcdf"]["dimensions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["name"].as_str().unwrap_or_default().to_string(),
                    d["size"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(dims, want, "{name}: dimensions");
    }
    Ok(())
}

#[test]
fn netcdf3_default_and_own_fill_values() -> TestResult {
    if skip() {
        return Ok(());
    }
    let inventory = open("nc3_classic.nc").inventory()?;
    let fill = |p: &str| {
        inventory
            .variable(p)
            .and_then(|v| v.fill_value.clone())
            .map(|f| f.value)
    };
    assert_eq!(fill("/temp"), Some(Value::from(f64::from(-1e30f32))));
    assert_eq!(fill("/odd_short"), Some(Value::from(-32767)));
    assert_eq!(fill("/flag"), Some(Value::from(-127)));
    assert_eq!(fill("/fixed"), Some(Value::from(9.969_209_968_386_869e36)));
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Errors, caching, threads
// ----------------------------------------------------------------------------------------

#[test]
fn a_file_that_is_not_ours_or_is_cut_short_fails_with_one_clear_line() -> TestResult {
    if skip() {
        return Ok(());
    }
    let path = corpus().join("not_hdf5.bin");
    let err = SourceFile::open_path(&path).err().map(|e| e.to_string());
    assert_eq!(
        err,
        Some(format!("{}: not an HDF5 or NetCDF file", path.display()))
    );

    // Cut inside the metadata: the root group cannot be listed.
    let path = corpus().join("truncated.h5");
    let shown = path.display().to_string();
    let err = SourceFile::open_path(&path)
        .and_then(|f| f.inventory())
        .err()
        .map(|e| e.to_string());
    let err = err.unwrap_or_else(|| panic!("{shown}: half a file listed cleanly"));
    assert!(
        err.starts_with(&format!("{shown}: /: ")) && !err.contains('\n'),
        "{err}"
    );
    eprintln!("{err}");

    // Cut inside the data of the last dataset: it is listed, its range is refused.
    let path = corpus().join("truncated_data.h5");
    let shown = path.display().to_string();
    let file = SourceFile::open_path(&path)?;
    let inventory = file.inventory()?;
    let cut = inventory
        .variable("/second")
        .expect("header before the cut");
    let err = file.data_refs(cut).expect_err("data past the end");
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{shown}: /second: ")) && message.contains("truncated file"),
        "{message}"
    );
    eprintln!("{message}");
    let whole = inventory.variable("/first").expect("before the cut");
    assert!(file.data_refs(whole).is_ok());
    Ok(())
}

#[derive(Debug)]
struct Counting {
    inner: LocalFile,
    reads: Mutex<u64>,
}

impl RangeSource for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_range(&self, offset: u64, len: usize) -> std::io::Result<bytes::Bytes> {
        *self.reads.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.inner.read_range(offset, len)
    }
}

fn all_refs(file: &SourceFile) -> Result<Vec<DataRefs>, Error> {
    file.inventory()?
        .variables
        .iter()
        .map(|v| file.data_refs(v))
        .collect()
}

#[test]
fn the_block_cache_lists_the_same_with_far_fewer_reads() -> TestResult {
    if skip() {
        return Ok(());
    }
    for name in [
        "h5_big_index_v1btree.h5",
        "h5_latest_indexes.h5",
        "nc4_cf.nc",
    ] {
        let counting = |p: &Path| -> Result<Arc<Counting>, Error> {
            Ok(Arc::new(Counting {
                inner: LocalFile::open(p)?,
                reads: Mutex::new(0),
            }))
        };
        let direct = counting(&corpus().join(name))?;
        let plain = all_refs(&SourceFile::open(direct.clone())?)?;
        let behind = counting(&corpus().join(name))?;
        let cache = Arc::new(BlockCache::new(behind.clone()));
        let cached = all_refs(&SourceFile::open(cache.clone())?)?;
        assert_eq!(plain, cached, "{name}: the cache changed the listing");
        let (a, b) = (
            *direct.reads.lock().unwrap_or_else(|e| e.into_inner()),
            *behind.reads.lock().unwrap_or_else(|e| e.into_inner()),
        );
        eprintln!(
            "{name}: {a} reads direct, {b} through the block cache ({:?})",
            cache.stats()
        );
        assert!(
            b * 4 < a,
            "{name}: {b} reads through the cache, {a} without"
        );
    }
    Ok(())
}

#[test]
fn one_file_serves_many_threads() -> TestResult {
    if skip() {
        return Ok(());
    }
    let file = Arc::new(open("h5_latest_indexes.h5"));
    let expected = all_refs(&file)?;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let file = file.clone();
                scope.spawn(move || all_refs(&file).map_err(|e| e.to_string()))
            })
            .collect();
        for h in handles {
            let got = h.join().unwrap_or_else(|_| Err("thread panicked".into()));
            assert_eq!(got.as_ref(), Ok(&expected));
        }
    });
    Ok(())
}

/// A short mutation fuzz run over the corpus, in every test run (the stable toolchain here has
/// no cargo-fuzz): byte flips, word overwrites and truncations of each small file, opened,
/// listed and referenced. Errors are fine; a panic is a failure.
#[test]
fn mutated_files_never_panic() -> TestResult {
    if skip() {
        return Ok(());
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut checked = 0;
    for name in hdf5_files().into_iter().chain(files("nc3_")) {
        let bytes = std::fs::read(corpus().join(&name))?;
        if bytes.len() > 600_000 {
            continue;
        }
        for round in 0..40 {
            let mut mutated = bytes.clone();
            match round % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() % mutated.len() as u64) as usize;
                        mutated[at] ^= 1 << (next() % 8);
                    }
                }
                1 => {
                    let at = (next() % mutated.len() as u64) as usize;
                    for b in mutated.iter_mut().skip(at).take(8) {
                        *b = next() as u8;
                    }
                }
                _ => mutated.truncate((next() % mutated.len() as u64) as usize),
            }
            let result = std::panic::catch_unwind(|| {
                let source: Arc<dyn chunkmill_hdf5::RangeSource> =
                    Arc::new(chunkmill_hdf5::MemorySource::new(name.clone(), mutated));
                if let Ok(file) = SourceFile::open(source) {
                    if let Ok(inventory) = file.inventory() {
                        for v in &inventory.variables {
                            let _ = file.data_refs(v);
                        }
                    }
                }
            });
            assert!(result.is_ok(), "{name}: mutation round {round} panicked");
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} mutated files checked");
    Ok(())
}
