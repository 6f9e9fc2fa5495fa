//! One test per form of each flag: every accepted spelling gives the typed value expected, and
//! every refused one is a usage error (exit 2) that echoes what was typed. The command lines go
//! through clap, as the user's do.

use chunkmill_ops::convert::ConvertOptions;
use chunkmill_ops::job::Executor;
use chunkmill_ops::rechunk::RechunkOptions;
use chunkmill_ops::spec::ChunkSpec;
use chunkmill_store::zarr::Compressor;
use clap::Parser;

use super::*;
use crate::args::{Cli, Command};
use crate::failure::exit_code;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn cli(words: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("chunkmill").chain(words.iter().copied()))
        .map(|c| c.command)
}

/// `convert a.nc t.zarr --chunks time=-1 --max-mem 64MB` plus `extra`, resolved.
fn convert_with(extra: &[&str]) -> Result<ConvertOptions, Failure> {
    let mut words = vec![
        "convert",
        "a.nc",
        "t.zarr",
        "--chunks",
        "time=-1",
        "--max-mem",
        "64MB",
    ];
    words.extend(extra);
    match cli(&words) {
        Ok(Command::Convert(a)) => super::convert(&a).map(|(o, _)| o),
        other => Err(Failure::failed(format!("not convert: {other:?}"))),
    }
}

/// `rechunk src.zarr t.zarr` plus `extra`, resolved.
fn rechunk_with(extra: &[&str]) -> Result<(RechunkOptions, BudgetOrigin), Failure> {
    let mut words = vec!["rechunk", "/nonexistent/src.zarr", "t.zarr"];
    words.extend(extra);
    match cli(&words) {
        Ok(Command::Rechunk(a)) => super::rechunk(&a),
        other => Err(Failure::failed(format!("not rechunk: {other:?}"))),
    }
}

/// `result` is a usage error whose message holds every one of `words`.
pub(super) fn assert_usage<T: std::fmt::Debug>(result: Result<T, Failure>, words: &[&str]) {
    match result {
        Err(f) => {
            assert_eq!(exit_code(&f), 2, "{f}");
            let text = f.to_string();
            for w in words {
                assert!(text.contains(w), "{w:?} not in {text:?}");
            }
        }
        Ok(v) => panic!("accepted {words:?}: {v:?}"),
    }
}

#[test]
fn chunks_by_name_by_axis_whole_axis_and_absent() -> TestResult {
    let (o, _) = rechunk_with(&["--chunks", "time=8760,lat=18", "--max-mem", "1GB"])?;
    assert_eq!(
        o.layout.chunks,
        ChunkSpec::ByName(vec![("time".into(), Some(8760)), ("lat".into(), Some(18))])
    );
    let (o, _) = rechunk_with(&["--chunks", "8760,-1,36", "--max-mem", "1GB"])?;
    assert_eq!(
        o.layout.chunks,
        ChunkSpec::ByAxis(vec![Some(8760), None, Some(36)])
    );
    let (o, _) = rechunk_with(&["--max-mem", "1GB"])?;
    assert_eq!(o.layout.chunks, ChunkSpec::ByName(vec![]));
    Ok(())
}

#[test]
fn chunks_refused() {
    for bad in [
        "0",
        "time=0",
        "time=x",
        "time=1,10",
        "",
        "lat=1,lat=2",
        "-2",
    ] {
        assert_usage(chunks(Some(bad)), &["--chunks", bad]);
    }
}

#[test]
fn shards_forms() -> TestResult {
    assert_eq!(shards(None)?, None);
    assert_eq!(
        shards(Some("time=-1"))?,
        Some(ChunkSpec::ByName(vec![("time".into(), None)]))
    );
    assert_eq!(
        shards(Some("4,4"))?,
        Some(ChunkSpec::ByAxis(vec![Some(4), Some(4)]))
    );
    assert_usage(shards(Some("a=b")), &["--shards", "a=b"]);
    Ok(())
}

#[test]
fn max_mem_decimal_binary_fraction_and_bytes() -> TestResult {
    for (text, bytes) in [
        ("512MB", 512_000_000),
        ("2GiB", 2 << 30),
        ("1.5GB", 1_500_000_000),
        ("1000", 1000),
        ("64k", 64_000),
        ("3mib", 3 << 20),
    ] {
        let (o, origin) = rechunk_with(&["--max-mem", text])?;
        assert_eq!(
            (o.job.max_mem, origin),
            (bytes, BudgetOrigin::Given),
            "{text}"
        );
    }
    Ok(())
}

#[test]
fn max_mem_refused() {
    for bad in ["lots", "0", "1XB", "-5MB", "MB"] {
        assert_usage(size("--max-mem", bad), &["--max-mem", bad]);
    }
}

#[test]
fn max_mem_absent_is_the_default_budget() -> TestResult {
    if let Some(bytes) = crate::budget::default_max_mem() {
        let (o, origin) = rechunk_with(&[])?;
        assert_eq!((o.job.max_mem, origin), (bytes, BudgetOrigin::Default));
    }
    Ok(())
}

#[test]
fn codec_forms() -> TestResult {
    let (o, _) = rechunk_with(&["--max-mem", "1GB"])?;
    assert_eq!(o.layout.codec, None, "rechunk keeps the source's codec");
    for (text, want) in [
        ("zstd:1", Compressor::Zstd(1)),
        ("zstd", Compressor::Zstd(1)),
        ("gzip:5", Compressor::Gzip(5)),
        ("none", Compressor::None),
        (
            "blosc:zstd:5",
            Compressor::Blosc {
                cname: "zstd".into(),
                clevel: 5,
            },
        ),
    ] {
        let (o, _) = rechunk_with(&["--max-mem", "1GB", "--codec", text])?;
        assert_eq!(o.layout.codec, Some(want), "{text}");
    }
    for bad in ["lzma:1", "gzip:99", "blosc:nope:1", "zstd:x"] {
        assert_usage(codec(Some(bad)), &["--codec", bad]);
    }
    Ok(())
}

#[test]
fn zarr_format_two_three_and_default() -> TestResult {
    assert_eq!(rechunk_with(&["--max-mem", "1GB"])?.0.layout.zarr_format, 3);
    let (o, _) = rechunk_with(&["--max-mem", "1GB", "--zarr-format", "2"])?;
    assert_eq!(o.layout.zarr_format, 2);
    assert!(cli(&["rechunk", "a", "b", "--zarr-format", "4"]).is_err());
    Ok(())
}

#[test]
fn workers_given_default_and_zero() -> TestResult {
    assert_eq!(workers(Some(3))?, 3);
    assert_eq!(workers(None)?, crate::default_workers());
    assert_usage(workers(Some(0)), &["--workers"]);
    let (o, _) = rechunk_with(&["--max-mem", "1GB", "--workers", "5", "--retries", "7"])?;
    assert_eq!((o.job.workers, o.job.retries), (5, 7));
    Ok(())
}

#[test]
fn executor_forms() -> TestResult {
    let (o, _) = rechunk_with(&["--max-mem", "1GB"])?;
    assert!(matches!(o.job.executor, Executor::Threads));
    let (o, _) = rechunk_with(&["--max-mem", "1GB", "--executor", "processes"])?;
    assert!(matches!(o.job.executor, Executor::Processes { .. }));
    let (o, _) = rechunk_with(&[
        "--max-mem",
        "1GB",
        "--executor",
        "slurm",
        "--slurm-opt",
        "--account=x --comment 'two words'",
        "--slurm-tasks-per-job",
        "8",
    ])?;
    let Executor::Slurm(s) = o.job.executor else {
        return Err("not slurm".into());
    };
    assert_eq!(s.sbatch_options, ["--account=x", "--comment", "two words"]);
    assert_eq!(s.tasks_per_job, Some(8));
    assert!(cli(&["rechunk", "a", "b", "--executor", "dask"]).is_err());
    assert_usage(
        rechunk_with(&[
            "--max-mem",
            "1GB",
            "--executor",
            "slurm",
            "--slurm-opt",
            "'open",
        ]),
        &["--slurm-opt", "'open"],
    );
    assert_usage(
        rechunk_with(&["--executor", "slurm", "--slurm-tasks-per-job", "0"]),
        &["--slurm-tasks-per-job"],
    );
    Ok(())
}

#[test]
fn rechunk_run_flags_pass_through() -> TestResult {
    let (o, _) = rechunk_with(&[
        "--max-mem",
        "1GB",
        "--array",
        "a",
        "--array",
        "b",
        "--temp",
        "/tmp/x",
        "--work-dir",
        "w",
        "--resume",
        "--overwrite",
        "--keep-work",
        "--prepare",
    ])?;
    assert_eq!(o.arrays, ["a", "b"]);
    assert_eq!(o.job.temp.as_deref(), Some("/tmp/x"));
    assert_eq!(o.job.work_dir.as_deref(), Some("w"));
    assert!(o.job.resume && o.job.overwrite && o.job.keep_work && o.job.prepare_only);
    Ok(())
}

#[test]
fn rechunk_refuses_a_repeated_array_and_a_data_file() {
    assert_usage(
        rechunk_with(&["--max-mem", "1GB", "--array", "a", "--array", "a"]),
        &["--array a is given twice"],
    );
    assert_usage(
        refuse_data_file("/nowhere/x.nc"),
        &["x.nc", "chunkmill convert"],
    );
}

#[test]
fn select_by_value_forms() -> TestResult {
    for (text, dim, start, stop) in [
        ("lat=-30:30", "lat", Some("-30"), Some("30")),
        ("lat=:30", "lat", None, Some("30")),
        ("lat=-30:", "lat", Some("-30"), None),
        (
            "time=2020-01-01:2020-06-30",
            "time",
            Some("2020-01-01"),
            Some("2020-06-30"),
        ),
        (
            "time=2020-01-02T05:30:2020-01-02T07:45",
            "time",
            Some("2020-01-02T05:30"),
            Some("2020-01-02T07:45"),
        ),
        (
            "time=2020-01-02 05:30:",
            "time",
            Some("2020-01-02 05:30"),
            None,
        ),
    ] {
        let s = convert::value_selection(text)?;
        assert_eq!(
            (s.dim.as_str(), s.start.as_deref(), s.stop.as_deref()),
            (dim, start, stop),
            "{text}"
        );
    }
    let o = convert_with(&["--select", "lat=0:10", "--select", "lon=5:"])?;
    assert_eq!(o.select.len(), 2);
    Ok(())
}

#[test]
fn select_refused() {
    for bad in ["lat", "lat=", "=1:2", "lat=1", "lat=3:1:2"] {
        assert_usage(convert::value_selection(bad), &["--select", bad]);
    }
}

#[test]
fn isel_forms_and_refusals() -> TestResult {
    for (text, start, stop) in [
        ("time=0:24", Some(0), Some(24)),
        ("time=-5:", Some(-5), None),
        ("time=:-1", None, Some(-1)),
        ("time=:", None, None),
    ] {
        let s = convert::index_selection(text)?;
        assert_eq!(
            (s.dim.as_str(), s.start, s.stop),
            ("time", start, stop),
            "{text}"
        );
    }
    for bad in ["time=a:b", "time=1.5:2", "time=0", "time"] {
        assert_usage(convert::index_selection(bad), &["--isel", bad]);
    }
    Ok(())
}

#[test]
fn rename_and_cast_pairs() -> TestResult {
    let o = convert_with(&["--rename", "air=temperature", "--cast", "air=float32"])?;
    assert_eq!(o.rename, [("air".to_string(), "temperature".to_string())]);
    assert_eq!(o.cast, [("air".to_string(), "float32".to_string())]);
    for bad in ["air", "air=", "=x"] {
        assert_usage(
            convert_with(&["--rename", bad]),
            &["--rename", bad, "OLD=NEW"],
        );
        assert_usage(
            convert_with(&["--cast", bad]),
            &["--cast", bad, "VAR=DTYPE"],
        );
    }
    Ok(())
}

#[test]
fn tile_forms_and_refusals() -> TestResult {
    assert_eq!(
        convert::tiles("lat=32,lon=16")?,
        [("lat".to_string(), 32), ("lon".to_string(), 16)]
    );
    assert_eq!(
        convert_with(&["--tile", "lat=4"])?.tile,
        [("lat".to_string(), 4)]
    );
    assert!(convert_with(&[])?.tile.is_empty());
    for (bad, says) in [
        ("lat", "DIM=SIZE"),
        ("lat=x", "not a tile size"),
        ("lat=-1", "not a tile size"),
        ("lat=32,lat=16", "lat is given twice"),
    ] {
        assert_usage(convert::tiles(bad), &["--tile", bad, says]);
    }
    Ok(())
}

#[test]
fn compat_and_identical_dims() -> TestResult {
    use chunkmill_manifest::Compat;
    assert_eq!(convert_with(&[])?.compat, Compat::Equals);
    assert_eq!(
        convert_with(&["--compat", "override"])?.compat,
        Compat::Override
    );
    assert_eq!(
        convert_with(&["--compat", "equals"])?.compat,
        Compat::Equals
    );
    assert!(cli(&["convert", "a", "b", "--compat", "maybe"]).is_err());
    let o = convert_with(&["--identical-dims", " lat, ,lon "])?;
    assert_eq!(o.identical_dims, ["lat", "lon"]);
    Ok(())
}

#[test]
fn variables_comma_or_repeated() -> TestResult {
    let o = convert_with(&["--variables", "air,uwnd", "--variables", "vwnd"])?;
    assert_eq!(o.variables, ["air", "uwnd", "vwnd"]);
    assert_usage(
        convert_with(&["--variables", "air,air"]),
        &["--variables air is given twice"],
    );
    Ok(())
}

#[test]
fn repeated_names_refused() {
    for (extra, says) in [
        (
            &["--reverse", "lat", "--reverse", "lat"][..],
            "--reverse lat",
        ),
        (&["--drop", "orog", "--drop", "orog"], "--drop orog"),
        (&["--rename", "a=b", "--rename", "a=c"], "--rename a"),
        (&["--cast", "a=int8", "--cast", "a=int16"], "--cast a"),
        (
            &["--select", "lat=0:1", "--isel", "lat=0:1"],
            "--select/--isel of dimension lat",
        ),
    ] {
        assert_usage(convert_with(extra), &[says, "given twice"]);
    }
}

#[test]
fn switches_and_their_partners() -> TestResult {
    let o = convert_with(&[
        "--decode-cf",
        "--strict-alignment",
        "--concat-dim",
        "run",
        "--stack",
        "--append",
        "time",
        "--allow-gap",
        "--allow-refs",
        "/data/",
        "--reverse",
        "lat",
    ])?;
    assert!(o.decode_cf && o.strict_alignment && o.stack && o.allow_gap);
    assert_eq!(o.concat_dim.as_deref(), Some("run"));
    assert_eq!(o.append.as_deref(), Some("time"));
    assert_eq!(
        (o.allow_refs, o.reverse),
        (vec!["/data/".into()], vec!["lat".into()])
    );
    assert_usage(convert_with(&["--stack"]), &["--stack", "--concat-dim"]);
    assert_usage(convert_with(&["--allow-gap"]), &["--allow-gap", "--append"]);
    Ok(())
}

#[test]
fn convert_paths_chunks_and_default_codec() -> TestResult {
    let o = convert_with(&[])?;
    assert_eq!(
        (o.inputs.as_slice(), o.job.target.as_str()),
        (&["a.nc".to_string()][..], "t.zarr")
    );
    assert_eq!(
        o.layout.codec,
        Some(chunkmill_ops::convert::default_codec())
    );
    let Ok(Command::Convert(a)) = cli(&["convert", "only.zarr", "--chunks", "x=1"]) else {
        return Err("not convert".into());
    };
    assert_usage(super::convert(&a), &["inputs, then the target"]);
    let Ok(Command::Convert(a)) = cli(&["convert", "a.nc", "t.zarr", "--max-mem", "1GB"]) else {
        return Err("not convert".into());
    };
    assert_usage(super::convert(&a), &["--chunks is required"]);
    Ok(())
}

#[test]
fn report_must_go_to_an_existing_directory() {
    let result = rechunk_with(&["--max-mem", "1GB", "--report", "/nonexistent/dir/r.html"]);
    assert!(result.is_err_and(|f| f.to_string().contains("--report")));
}

#[test]
fn array_chunks_forms() -> TestResult {
    let (o, _) = rechunk_with(&[
        "--max-mem",
        "1GB",
        "--array-chunks",
        "air:time=100,lat=-1",
        "--array-chunks",
        "g/time:24",
    ])?;
    assert_eq!(
        o.array_chunks,
        vec![
            (
                "air".to_string(),
                ChunkSpec::ByName(vec![("time".into(), Some(100)), ("lat".into(), None)])
            ),
            ("g/time".to_string(), ChunkSpec::ByAxis(vec![Some(24)])),
        ]
    );
    Ok(())
}

#[test]
fn array_chunks_refused() {
    for (spec, words) in [
        ("air", vec!["air", "NAME:SPEC"]),
        (":10", vec![":10", "NAME:SPEC"]),
        ("air:0", vec!["air:0", "not a positive size"]),
    ] {
        assert_usage(
            rechunk_with(&["--max-mem", "1GB", "--array-chunks", spec]),
            &words,
        );
    }
    assert_usage(
        rechunk_with(&[
            "--max-mem",
            "1GB",
            "--array-chunks",
            "a:1",
            "--array-chunks",
            "a:2",
        ]),
        &["--array-chunks a is given twice"],
    );
}
