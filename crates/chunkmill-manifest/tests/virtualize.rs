//! `virtualize` against independent oracles: collections written by netCDF4-python (netCDF-C)
//! and h5py (libhdf5), our kerchunk JSON opened by xarray through fsspec's
//! ReferenceFileSystem and compared with `xarray.open_mfdataset` of the originals (values,
//! attributes, CF encoding), with h5py's values, and with kerchunk's chunk offsets.
//!
//! The collections are generated on first use by `tests/python/make_collections.py` into
//! `$CARGO_TARGET_TMPDIR/chunkmill-manifest-collections` (regenerated when the script is
//! newer); the oracle is `tests/python/check_refs.py`. Both run with the first Python found
//! among `$CHUNKMILL_PYTHON`, `$VIRTUAL_ENV/bin/python`, a `.venv` next to the crate or its
//! parent, and `python3`, that imports the packages of `tests/python/requirements.txt`:
//!
//! ```text
//! PYENV_VERSION=3.12.1 python3.12 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt
//! ```
//!
//! Without such a Python these tests fail and say so; `CHUNKMILL_SKIP_ORACLE=1` skips them,
//! visibly.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use chunkmill_manifest::{
    build, read_kerchunk_json, virtualize, ChunkEntry, Error, VirtualizeOptions, VirtualizeReport,
};
use serde_json::Value;

const IMPORTS: &str = "import xarray, netCDF4, h5py, fsspec, zarr, dask, kerchunk";

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
    out.push(crate_dir.join(".venv/bin/python"));
    // Next to the crate's parent (a standalone checkout) or the workspace root
    // (crates/chunkmill-manifest → .venv/oracle, made by scripts/python-env).
    for up in crate_dir.ancestors().skip(1).take(2) {
        out.push(up.join(".venv/bin/python"));
        out.push(up.join(".venv/oracle/bin/python"));
    }
    out.push(PathBuf::from("python3"));
    out
}

fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        python_candidates()
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .args(["-c", IMPORTS])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no Python with xarray, netCDF4, h5py, fsspec, zarr, dask and kerchunk found (tried {:?}); \
                     install tests/python/requirements.txt in a venv and set CHUNKMILL_PYTHON, or set \
                     CHUNKMILL_SKIP_ORACLE=1 to skip these tests",
                    python_candidates()
                )
            })
    })
}

fn skip() -> bool {
    if std::env::var_os("CHUNKMILL_SKIP_ORACLE").is_some() {
        eprintln!(
            "SKIPPED: CHUNKMILL_SKIP_ORACLE is set, virtualize is not checked against xarray"
        );
        return true;
    }
    false
}

fn script(name: &str) -> PathBuf {
    crate_dir().join("tests/python").join(name)
}

/// The collections, generated once per test process if missing or stale.
fn collections() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chunkmill-manifest-collections");
        let script = script("make_collections.py");
        let index = dir.join("INDEX.json");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let fresh = matches!((modified(&index), modified(&script)), (Some(i), Some(s)) if i >= s);
        if !fresh {
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            let out = Command::new(python())
                .arg(&script)
                .arg(&tmp)
                .output()
                .expect("run make_collections.py");
            assert!(
                out.status.success(),
                "make_collections.py failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).expect("place the collections");
        }
        dir
    })
}

fn files(collection: &str) -> Vec<String> {
    let text = std::fs::read_to_string(collections().join("INDEX.json")).expect("INDEX.json");
    let index: Value = serde_json::from_str(&text).expect("INDEX.json is JSON");
    index[collection]
        .as_array()
        .unwrap_or_else(|| panic!("no collection {collection}"))
        .iter()
        .map(|f| {
            collections()
                .join(f.as_str().expect("path"))
                .display()
                .to_string()
        })
        .collect()
}

/// A fresh output path for `name`.
fn output(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chunkmill-manifest-out");
    std::fs::create_dir_all(&dir).expect("output dir");
    let path = dir.join(format!("{name}.json"));
    let _ = std::fs::remove_file(&path);
    path
}

fn options(out: &Path, concat_dim: Option<&str>) -> VirtualizeOptions {
    let mut o = VirtualizeOptions::new(out);
    o.concat_dim = concat_dim.map(str::to_string);
    o
}

/// Runs the oracle; panics with its output unless it agrees.
fn oracle(args: &[&str], refs: &Path, inputs: &[String]) -> String {
    let out = Command::new(python())
        .arg(script("check_refs.py"))
        .args(args)
        .arg(refs)
        .args(inputs)
        .output()
        .expect("run check_refs.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the oracle disagrees with {}:\n{stdout}\n{}",
        refs.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", stdout.trim());
    stdout
}

fn error_of(r: chunkmill_manifest::Result<VirtualizeReport>) -> Error {
    match r {
        Ok(report) => panic!("expected an error, got {report:?}"),
        Err(e) => e,
    }
}

// ----------------------------------------------------------------------------------------

#[test]
fn netcdf4_files_along_time_equal_open_mfdataset() {
    if skip() {
        return;
    }
    // Files of 6, 4, 6 and 3 days, time chunks of 2; zlib+shuffle, fletcher32, big-endian,
    // packed sst, NaN fill value, never-written chunks, descending lat, CF time.
    let inputs = files("nc4_time");
    for threshold in [500, 0] {
        let out = output(&format!("nc4_time_inline{threshold}"));
        let mut o = options(&out, Some("time"));
        o.identical_dims = vec!["lat".into(), "lon".into()];
        o.inline_threshold = threshold;
        let report = virtualize(&inputs, &o).expect("virtualize");
        assert_eq!(report.files.len(), 4);
        assert!(!report.reordered);
        assert!(report.stats.missing > 0, "sparse has never-written chunks");
        oracle(&["--concat-dim", "time"], &out, &inputs);
    }
}

#[test]
fn netcdf3_record_variables_along_time_equal_open_mfdataset() {
    if skip() {
        return;
    }
    // Classic, 64-bit offset and CDF-5 files; record variables are one chunk per record.
    let inputs = files("nc3_time");
    let out = output("nc3_time");
    let mut o = options(&out, Some("time"));
    o.inline_threshold = 0;
    o.identical_dims = vec!["lat".into(), "lon".into(), "elev".into()];
    let report = virtualize(&inputs, &o).expect("virtualize");
    // air and pr: one reference per record; time, lat, lon and elev are loaded (inlined).
    assert_eq!(report.stats.references, 2 * 15);
    oracle(&["--concat-dim", "time"], &out, &inputs);
}

#[test]
fn stacking_along_a_new_dimension_equals_open_mfdataset() {
    if skip() {
        return;
    }
    let inputs = files("stack");
    let out = output("stack");
    let mut o = options(&out, Some("member"));
    o.stack = true;
    let report = virtualize(&inputs, &o).expect("virtualize");
    assert_eq!(report.files.len(), 3);
    oracle(&["--stack", "member"], &out, &inputs);
}

#[test]
fn a_single_file_matches_xarray_and_kerchunks_offsets() {
    if skip() {
        return;
    }
    let inputs = vec![files("nc4_time")[0].clone()];
    let out = output("single");
    let mut o = options(&out, None);
    o.inline_threshold = 0;
    virtualize(&inputs, &o).expect("virtualize");
    oracle(&[], &out, &inputs);
    let said = oracle(&["--kerchunk"], &out, &inputs);
    assert!(
        said.contains("kerchunk refused ['rh']"),
        "kerchunk 0.2.10 refuses fletcher32: {said}"
    );
}

#[test]
fn hdf5_layouts_equal_h5py() {
    if skip() {
        return;
    }
    // Compact, contiguous big-endian, fletcher32+gzip+shuffle, never-written chunks, a scalar,
    // and a chunk written with deflate skipped (filter mask 0b10).
    let inputs = files("h5_layouts");
    let out = output("h5_layouts");
    let mut o = options(&out, None);
    o.inline_threshold = 0;
    let (dataset, _) = build(&inputs, &o).expect("build");
    let masked = &dataset.arrays["masked"].manifest;
    assert!(
        matches!(masked.get(0), Some(ChunkEntry::Inlined(_))),
        "the masked chunk is re-encoded and inlined"
    );
    assert!(
        matches!(masked.get(1), Some(ChunkEntry::Reference { .. })),
        "the other chunk is referenced"
    );
    assert!(matches!(
        dataset.arrays["compact"].manifest.get(0),
        Some(ChunkEntry::Inlined(_))
    ));
    assert_eq!(dataset.arrays["big_endian"].metadata.dtype, ">i4");
    virtualize(&inputs, &o).expect("virtualize");
    oracle(&["--h5py"], &out, &inputs);
}

#[test]
fn files_are_ordered_by_their_first_time() {
    if skip() {
        return;
    }
    let in_time_order = files("reorder");
    let given: Vec<String> = in_time_order.iter().rev().cloned().collect();
    let out = output("reorder");
    let report = virtualize(&given, &options(&out, Some("time"))).expect("virtualize");
    assert!(report.reordered);
    assert_eq!(report.files, in_time_order);
    oracle(&["--concat-dim", "time"], &out, &in_time_order);
}

#[test]
fn files_that_differ_are_refused_naming_the_file_and_the_difference() {
    if skip() {
        return;
    }
    let cases = [
        ("bad_dtype", 1, "air: dtype differs: got <f8, expected <f4"),
        (
            "bad_scale",
            1,
            // float32 attributes are their exact float64 values, as numpy widens them.
            "sst: attribute scale_factor differs: got 0.019999999552965164, expected 0.009999999776482582",
        ),
        (
            "bad_chunks",
            1,
            "air: chunk shape differs: got [2, 10, 12], expected [2, 5, 6]",
        ),
        (
            "bad_units",
            1,
            "time: attribute units differs: got \"days after 2000-01-01 00:00:00\"",
        ),
        (
            "bad_partial",
            0,
            "air: 5 elements along time is not a multiple of the chunk length 2",
        ),
    ];
    for (collection, bad, expected) in cases {
        let inputs = files(collection);
        let out = output(collection);
        let mut o = options(&out, Some("time"));
        o.identical_dims = vec!["lat".into(), "lon".into()];
        let message = error_of(virtualize(&inputs, &o)).to_string();
        assert!(
            message.starts_with(&format!("{}: {expected}", inputs[bad])),
            "{collection}: got {message}"
        );
        assert!(
            !out.exists(),
            "{collection}: nothing may be written on error"
        );
        // skip_bad does not skip a file that differs: that stays an error.
        o.skip_bad = true;
        assert!(
            virtualize(&inputs, &o).is_err(),
            "{collection} with skip_bad"
        );
    }
}

#[test]
fn a_file_that_is_not_netcdf_fails_unless_skip_bad() {
    if skip() {
        return;
    }
    let inputs = files("not_netcdf");
    let out = output("not_netcdf");
    let mut o = options(&out, Some("time"));
    let message = error_of(virtualize(&inputs, &o)).to_string();
    assert_eq!(
        message,
        format!("{}: not an HDF5 or NetCDF file", inputs[1])
    );
    assert!(!out.exists());

    o.skip_bad = true;
    let report = virtualize(&inputs, &o).expect("virtualize with skip_bad");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].file, inputs[1]);
    assert!(report.skipped[0]
        .reason
        .contains("not an HDF5 or NetCDF file"));
    let good = vec![inputs[0].clone(), inputs[2].clone()];
    assert_eq!(report.files, good);
    oracle(&["--concat-dim", "time"], &out, &good);
}

#[test]
fn inexpressible_filters_inline_small_variables_and_leave_out_large_ones() {
    if skip() {
        return;
    }
    let inputs = files("filters");
    // Both hold 0..100 (i4 and f4): 400 bytes decoded.
    let values: [Vec<u8>; 2] = [
        (0..100i32).flat_map(i32::to_le_bytes).collect(),
        (0..100).flat_map(|x| (x as f32).to_le_bytes()).collect(),
    ];
    for ((file, values), (variable, expected)) in inputs.iter().zip(&values).zip([
        ("packed", "filter scaleoffset (HDF5 id 6) has no Zarr codec"),
        ("squeezed", "filter lzf (HDF5 id 32000) has no Zarr codec"),
    ]) {
        let out = output("filters");
        // Below the default inline threshold (500): decoded and inlined.
        let (dataset, report) = build(std::slice::from_ref(file), &options(&out, None))
            .expect("a variable without a codec no longer fails the file");
        assert!(report.skipped_variables.is_empty());
        assert_eq!(
            dataset.arrays[variable].loaded_values(),
            Some(&values[..]),
            "{file}: {variable}"
        );
        // Above it: left out, naming the filter.
        let mut o = options(&out, None);
        o.inline_threshold = 100;
        let report = virtualize(std::slice::from_ref(file), &o).expect("virtualize");
        let skipped = &report.skipped_variables;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].variable, variable);
        assert!(skipped[0].reason.starts_with(expected), "{skipped:?}");
        let written = read_kerchunk_json(&out).expect("read back");
        assert!(!written.arrays.contains_key(variable));
        std::fs::remove_file(&out).expect("remove the output");
    }
}

#[test]
fn progress_is_reported_for_every_file() {
    if skip() {
        return;
    }
    let inputs = files("nc4_time");
    let out = output("progress");
    let calls = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(AtomicUsize::new(0));
    let mut o = options(&out, Some("time"));
    let (c, l) = (calls.clone(), last.clone());
    o.progress = Some(Arc::new(move |done, total| {
        assert_eq!(total, 4);
        c.fetch_add(1, Ordering::SeqCst);
        l.fetch_max(done, Ordering::SeqCst);
    }));
    o.threads = 3;
    virtualize(&inputs, &o).expect("virtualize");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(last.load(Ordering::SeqCst), 4);
}

#[test]
fn the_json_reads_back_as_the_same_manifests() {
    if skip() {
        return;
    }
    let inputs = files("nc4_time");
    let out = output("read_back");
    let mut o = options(&out, Some("time"));
    o.inline_threshold = 0;
    let (dataset, _) = build(&inputs, &o).expect("build");
    virtualize(&inputs, &o).expect("virtualize");
    let back = read_kerchunk_json(&out).expect("read back");
    assert_eq!(
        back.arrays.keys().collect::<Vec<_>>(),
        dataset.arrays.keys().collect::<Vec<_>>()
    );
    for (key, a) in &dataset.arrays {
        let b = &back.arrays[key];
        assert_eq!(a.metadata.shape, b.metadata.shape, "{key}");
        assert_eq!(a.metadata.dtype, b.metadata.dtype, "{key}");
        assert_eq!(a.metadata.chunk_shape, b.metadata.chunk_shape, "{key}");
        assert_eq!(a.metadata.codecs, b.metadata.codecs, "{key}");
        assert_eq!(
            a.metadata.dimension_names, b.metadata.dimension_names,
            "{key}"
        );
        // Same chunks, URLs compared by name (the reader numbers them in order of appearance).
        for ((_, x), (_, y)) in a.manifest.iter().zip(b.manifest.iter()) {
            match (x, y) {
                (
                    ChunkEntry::Reference {
                        path_id: p,
                        offset: o1,
                        length: l1,
                    },
                    ChunkEntry::Reference {
                        path_id: q,
                        offset: o2,
                        length: l2,
                    },
                ) => {
                    assert_eq!(
                        (&dataset.urls[p as usize], o1, l1),
                        (&back.urls[q as usize], o2, l2),
                        "{key}"
                    );
                }
                (x, y) => assert_eq!(x, y, "{key}"),
            }
        }
    }
}

#[test]
fn inputs_expand_from_globs_and_lists() {
    if skip() {
        return;
    }
    let inputs = files("nc4_time");
    let dir = Path::new(&inputs[0]).parent().expect("dir");
    let list = output("list").with_extension("txt");
    std::fs::write(&list, format!("# the files\n{}\n\n", inputs.join("\n"))).expect("write list");
    let from_list =
        chunkmill_manifest::expand_inputs(&[format!("@{}", list.display())]).expect("list");
    let from_glob =
        chunkmill_manifest::expand_inputs(&[format!("{}/air_*.nc", dir.display())]).expect("glob");
    assert_eq!(from_list, from_glob);
    assert_eq!(from_list.len(), 4);
    let none = chunkmill_manifest::expand_inputs(&[format!("{}/nothing_*.nc", dir.display())]);
    assert!(none.is_err_and(|e| e.to_string().ends_with("matches no file")));
}

#[test]
fn usage_errors_come_before_any_work() {
    if skip() {
        return;
    }
    let inputs = files("nc4_time");
    let out = output("usage");
    // No concat dimension: the one unlimited in every file is taken, and said.
    let report = virtualize(&inputs, &options(&out, None)).expect("inferred");
    assert_eq!(report.concat_dim.as_deref(), Some("time"));
    assert_eq!(
        report.notes,
        ["concatenating along time (inferred: the unlimited dimension of every input; name another with --concat-dim)"]
    );
    std::fs::write(&out, "keep me").expect("write");
    let message = error_of(virtualize(&inputs, &options(&out, Some("time")))).to_string();
    assert!(
        message.ends_with("output exists; use --overwrite to replace it"),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "keep me");
    let mut o = options(&out, Some("time"));
    o.overwrite = true;
    // --overwrite replaces only references: this file is not chunkmill's (issue 9).
    let message = error_of(virtualize(&inputs, &o)).to_string();
    assert!(message.contains("is not a kerchunk JSON file"), "{message}");
    assert_eq!(std::fs::read_to_string(&out).expect("read"), "keep me");
    std::fs::remove_file(&out).expect("remove");
    virtualize(&inputs, &options(&out, Some("time"))).expect("write");
    virtualize(&inputs, &o).expect("overwrite");
}
