"""What a newcomer meets first (issue 9, "First contact", and the exit-code and flag items of
14): the README quickstart runs as written, `--max-mem` and `--chunks` have defaults the plan
shows, errors name the flag (or command, or path) that fixes them, every command gives the same
exit code for the same mistake, repeated flags are refused, and a resume with other workers
continues. Each test is named after the bug it pins."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import zarr

import oracle

NT, NLAT, NLON = 6, 4, 5


def _nc(path: Path, first_hour: int) -> None:
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("lat", NLAT)
        ds.createDimension("lon", NLON)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "hours since 2020-01-01"
        t[:] = np.arange(first_hour, first_hour + NT)
        ds.createVariable("lat", "f8", ("lat",))[:] = np.arange(NLAT) * 10.0
        ds.createVariable("lon", "f8", ("lon",))[:] = np.arange(NLON) * 10.0
        ds.createVariable("air", "f4", ("time", "lat", "lon"))[:] = (
            np.arange(first_hour * NLAT * NLON, (first_hour + NT) * NLAT * NLON).reshape(NT, NLAT, NLON)
        )


@pytest.fixture
def files(tmp_path) -> list[Path]:
    out = []
    for i in range(2):
        p = tmp_path / f"air_{i}.nc"
        _nc(p, i * NT)
        out.append(p)
    return out


def _zarr(path: Path, shape=(24, 8, 10), chunks=(4, 8, 10)) -> np.ndarray:
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    values = oracle.smooth(shape)
    a = root.create_array("air", shape=shape, chunks=chunks, dtype="float32", dimension_names=("time", "lat", "lon"))
    a[:] = values
    oracle.consolidate(path)
    return values


def _one_error(r, code):
    assert r.returncode == code, oracle.describe(r)
    assert "panicked" not in r.stderr, oracle.describe(r)
    return r.stderr


# ---------------------------------------------------------------------------------------------
# exit codes agree


def test_empty_glob_exits_3_in_virtualize_and_convert_alike(tmp_path):
    pattern = str(tmp_path / "nothing_*.nc")
    v = oracle.run("virtualize", pattern, "--output", tmp_path / "r.json", "--no-progress")
    c = oracle.run("convert", pattern, tmp_path / "c.zarr", "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress")
    assert v.returncode == c.returncode == 3, oracle.describe(v) + oracle.describe(c)
    for r in (v, c):
        assert "matches no file" in r.stderr, oracle.describe(r)
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "c.zarr").exists()


def test_bad_glob_pattern_is_a_usage_error_in_both(tmp_path):
    pattern = str(tmp_path / "air_[.nc")
    v = oracle.run("virtualize", pattern, "--output", tmp_path / "r.json", "--no-progress")
    c = oracle.run("convert", pattern, tmp_path / "c.zarr", "--chunks", "time=-1", "--max-mem", "64MB")
    assert v.returncode == c.returncode == 2, oracle.describe(v) + oracle.describe(c)


@pytest.mark.parametrize("command", ["inspect", "convert", "rechunk"])
def test_missing_path_says_it_does_not_exist(tmp_path, command):
    missing = tmp_path / "no-such.zarr"
    args = {
        "inspect": ["inspect", missing],
        "convert": ["convert", missing, tmp_path / "t.zarr", "--chunks", "time=-1", "--max-mem", "64MB"],
        "rechunk": ["rechunk", missing, tmp_path / "t.zarr", "--chunks", "time=-1", "--max-mem", "64MB"],
    }[command]
    err = _one_error(oracle.run(*args), 3)
    assert "no such file or directory" in err and "no Zarr array or group" not in err, err


def test_a_file_that_is_not_netcdf_exits_3_in_every_command(tmp_path):
    text = tmp_path / "notes.nc"
    text.write_text("not NetCDF\n")
    runs = [
        oracle.run("inspect", text),
        oracle.run("virtualize", text, "--output", tmp_path / "r.json"),
        # no --max-mem: the default budget is announced only for a job that runs, so the refusal
        # stays one line
        oracle.run("convert", text, tmp_path / "c.zarr", "--chunks", "time=-1"),
    ]
    for r in runs:
        oracle.assert_one_error_line(r, codes=[3], mentions=["notes.nc", "not an HDF5 or NetCDF file"])


# ---------------------------------------------------------------------------------------------
# errors name what fixes them


def test_rechunk_of_a_netcdf_file_suggests_convert(files, tmp_path):
    r = oracle.run("rechunk", files[0], tmp_path / "t.zarr", "--chunks", "time=-1", "--max-mem", "64MB")
    err = _one_error(r, 2)
    assert "chunkmill convert" in err, err
    assert not (tmp_path / "t.zarr").exists()


def test_status_of_a_target_suggests_its_work_dir(tmp_path):
    src = tmp_path / "src.zarr"
    _zarr(src)
    oracle.ok("rechunk", src, tmp_path / "t.zarr", "--chunks", "time=-1", "--max-mem", "64MB", "--prepare",
              "--no-progress")
    err = _one_error(oracle.run("status", tmp_path / "t.zarr"), 3)
    assert f"chunkmill status {tmp_path / 't.zarr'}.work" in err, err
    oracle.ok("status", f"{tmp_path / 't.zarr'}.work")


def test_no_concat_dimension_names_the_flag(tmp_path):
    """Files with no unlimited dimension and two coordinates that differ between them: the
    concat dimension cannot be inferred, and the refusal names the flag that chooses it."""
    paths = []
    for i in range(2):
        path = tmp_path / f"grid{i}.nc"
        with netCDF4.Dataset(path, "w") as ds:
            for dim in ("x", "y"):
                ds.createDimension(dim, 3)
                ds.createVariable(dim, "f8", (dim,))[:] = np.arange(3) + 10 * i
            ds.createVariable("v", "f4", ("x", "y"))[:] = np.ones((3, 3))
        paths.append(path)
    r = oracle.run("virtualize", *paths, "--output", tmp_path / "r.json", "--no-progress")
    err = _one_error(r, 2)
    assert "--concat-dim" in err, err


def test_virtualize_help_mentions_no_max_mem_it_lacks():
    text = oracle.ok("virtualize", "--help").stdout
    for flag in re.findall(r"--[a-z][a-z-]+", text):
        if flag in ("--max-mem",):
            # named only as the budget of the other commands, never as a flag of this one
            assert "of rechunk and convert" in text, text
    r = oracle.run("virtualize", "x.nc", "--output", "r.json", "--max-mem", "1GB")
    assert r.returncode == 2, oracle.describe(r)


# ---------------------------------------------------------------------------------------------
# repeated flags


@pytest.mark.parametrize(
    "extra",
    [
        ["--reverse", "lat", "--reverse", "lat"],
        ["--drop", "lon", "--drop", "lon"],
        ["--rename", "air=a", "--rename", "air=b"],
        ["--cast", "air=float64", "--cast", "air=float32"],
        ["--select", "lat=0:20", "--select", "lat=10:30"],
        ["--isel", "time=0:2", "--isel", "time=1:3"],
        ["--select", "lat=0:20", "--isel", "lat=0:2"],
        ["--variables", "air,air"],
    ],
    ids=["reverse", "drop", "rename", "cast", "select", "isel", "select-and-isel", "variables"],
)
def test_repeated_flag_is_refused(files, tmp_path, extra):
    target = tmp_path / "t.zarr"
    r = oracle.run("convert", *files, target, "--concat-dim", "time", "--chunks", "time=-1", "--max-mem", "64MB",
                   "--no-progress", *extra)
    err = _one_error(r, 2)
    assert "given twice" in err and extra[0].lstrip("-").split("/")[0] in err, err
    assert not target.exists()


def test_repeated_array_is_refused(tmp_path):
    src = tmp_path / "src.zarr"
    _zarr(src)
    r = oracle.run("rechunk", src, tmp_path / "t.zarr", "--chunks", "time=-1", "--max-mem", "64MB", "--array", "air",
                   "--array", "air")
    assert "--array air is given twice" in _one_error(r, 2)


# ---------------------------------------------------------------------------------------------
# defaults


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable")


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs /proc/meminfo")
def test_max_mem_defaults_to_half_of_available_memory_and_the_plan_says_so(tmp_path):
    src = tmp_path / "src.zarr"
    _zarr(src)
    r = oracle.ok("plan", "rechunk", src, tmp_path / "t.zarr", "--chunks", "time=-1", "--json")
    doc = json.loads(r.stdout)
    assert doc["max_mem_origin"] == "default"
    half = _mem_available() / 2
    # a cgroup limit may make it less; never more than half of MemAvailable (which moves a bit)
    assert 256e6 <= doc["max_mem"] <= max(half * 1.1, 256e6), doc["max_mem"]
    assert doc["max_mem"] % 64_000_000 == 0
    text = oracle.ok("plan", "rechunk", src, tmp_path / "t.zarr", "--chunks", "time=-1").stdout
    assert "default: half of the available memory" in text, text
    run = oracle.ok("rechunk", src, tmp_path / "t.zarr", "--chunks", "time=-1", "--no-progress")
    assert "default: half of the available memory" in run.stderr, oracle.describe(run)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "t.zarr"))["air"][...],
                                  zarr.open_group(str(src))["air"][...])


def test_rechunk_without_chunks_keeps_every_arrays_chunks(tmp_path):
    src = tmp_path / "src.zarr"
    values = _zarr(src)
    oracle.ok("rechunk", src, tmp_path / "t.zarr", "--max-mem", "64MB", "--codec", "gzip:3", "--no-progress")
    out = zarr.open_group(str(tmp_path / "t.zarr"))["air"]
    assert out.chunks == (4, 8, 10)
    assert [type(c).__name__ for c in out.compressors] == ["GzipCodec"]
    np.testing.assert_array_equal(out[...], values)


def test_rechunk_partial_chunks_keep_the_unnamed_dims(tmp_path):
    src = tmp_path / "src.zarr"
    values = _zarr(src)
    oracle.ok("rechunk", src, tmp_path / "t.zarr", "--chunks", "lat=2", "--max-mem", "64MB", "--no-progress")
    out = zarr.open_group(str(tmp_path / "t.zarr"))["air"]
    assert out.chunks == (4, 2, 10)
    np.testing.assert_array_equal(out[...], values)


# ---------------------------------------------------------------------------------------------
# resume


def test_resume_with_other_workers_continues_the_stored_plan(tmp_path):
    src = tmp_path / "src.zarr"
    values = _zarr(src, shape=(96, 64, 64), chunks=(1, 64, 64))
    target = tmp_path / "t.zarr"
    base = ["rechunk", src, target, "--chunks", "time=-1,lat=8,lon=8", "--max-mem", "64MB", "--no-progress"]
    plans = {w: json.loads(oracle.ok("plan", *base, "--workers", w, "--json").stdout)["plan_id"]
             for w in ("1", "8")}
    assert plans["1"] != plans["8"], "the worker count must change this plan for the test to mean anything"
    oracle.ok(*base, "--workers", "8", "--prepare")
    r = oracle.ok(*base, "--workers", "1", "--resume")
    assert "cut for another worker count" in r.stderr, oracle.describe(r)
    np.testing.assert_array_equal(zarr.open_group(str(target))["air"][...], values)


def test_resume_of_another_job_names_what_differs(tmp_path):
    src = tmp_path / "src.zarr"
    _zarr(src)
    target = tmp_path / "t.zarr"
    oracle.ok("rechunk", src, target, "--chunks", "time=-1", "--max-mem", "64MB", "--prepare", "--no-progress")
    r = oracle.run("rechunk", src, target, "--chunks", "time=-1,lat=2", "--max-mem", "128MB", "--resume",
                   "--no-progress")
    err = _one_error(r, 3)
    assert "what differs" in err and "--max-mem 64.0 MB → 128.0 MB" in err, err
    assert "writes chunks [24, 8, 10] of [24, 8, 10] → [24, 2, 10]" in err, err


# ---------------------------------------------------------------------------------------------
# the README's quickstart, as written


def _quickstart() -> list[str]:
    readme = (Path(oracle.REPO) / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.strip().splitlines()]


def test_readme_quickstart_runs_as_written(tmp_path):
    demo = tmp_path / "demo"
    oracle.ok("demo", "--dir", demo, "--no-progress")
    lines = _quickstart()
    assert len(lines) == 5 and lines[0].startswith("cargo install"), lines
    for line in lines[1:]:
        words = shlex.split(line)
        if words[0] == "chunkmill":
            oracle_run = subprocess.run([str(oracle.chunkmill_bin()), *words[1:]], cwd=demo, capture_output=True,
                                        text=True, timeout=300, stdin=subprocess.DEVNULL)
            assert oracle_run.returncode == 0, oracle.describe(oracle_run)
        else:
            assert words[0] == "python", line
            r = subprocess.run([sys.executable, *words[1:]], cwd=demo, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and "air" in r.stdout, r.stderr
    import xarray as xr

    got = xr.open_zarr(demo / "air.zarr")
    want = xr.open_mfdataset(sorted((demo / "data").glob("air_*.nc")), combine="nested", concat_dim="time")
    np.testing.assert_array_equal(got.air.values, want.air.values)
    assert got.air.encoding["chunks"][0] == got.air.shape[0]


def test_convert_chunks_naming_no_dimension_is_refused_like_rechunk(files, tmp_path):
    target = tmp_path / "t.zarr"
    r = oracle.run("convert", *files, target, "--concat-dim", "time", "--chunks", "tiem=4", "--max-mem", "64MB",
                   "--no-progress")
    err = _one_error(r, 2)
    assert "no dimension 'tiem'" in err and "time" in err, err
    assert not target.exists()
    # the spec names the target's dimensions: a renamed one by its new name
    r = oracle.run("convert", *files, target, "--concat-dim", "time", "--rename", "time=t", "--chunks", "time=4",
                   "--max-mem", "64MB", "--no-progress")
    assert "renamed to 't'" in _one_error(r, 2)
    oracle.ok("convert", *files, target, "--concat-dim", "time", "--rename", "time=t", "--chunks", "t=4",
              "--max-mem", "64MB", "--no-progress")
    assert zarr.open_group(str(target))["air"].chunks[0] == 4


@pytest.mark.parametrize("size, words", [("20000000TB", "larger than"), ("0.1", "less than one byte")])
def test_a_budget_no_machine_can_count_is_a_usage_error(tmp_path, size, words):
    """A float cast saturates: --max-mem 20000000TB used to run with 18.4 EB and 0.1 with 0."""
    src = tmp_path / "src.zarr"
    _zarr(src)
    r = oracle.run("rechunk", src, tmp_path / "t.zarr", "--chunks", "time=-1", "--max-mem", size,
                   "--no-progress")
    err = _one_error(r, 2)
    assert size in err and words in err, err
    assert not (tmp_path / "t.zarr").exists()
