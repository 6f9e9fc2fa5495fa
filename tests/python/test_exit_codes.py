"""Errors decided once (issue 10, item 3): the same bad input file gives the same exit code, and
a message naming it, whichever command reads it (`virtualize` and `convert` open files through
the same reader, and the binary maps errors to exit codes in one function)."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import oracle


def good_file(path: Path) -> Path:
    """A small chunked NetCDF-4 file, written by h5py with the netCDF-4 dimension scales."""
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", data=np.arange(40, dtype="f8"))
        x.make_scale("x")
        v = f.create_dataset("v", data=np.arange(40, dtype="f4") * 0.5, chunks=(10,),
                             compression="gzip")
        v.dims[0].attach_scale(x)
    return path


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"bad-{kind}.nc"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("station,temperature\nA,21.5\n")
    elif kind == "truncated":
        whole = good_file(tmp_path / "whole.nc").read_bytes()
        path.write_bytes(whole[: len(whole) // 3])
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "text", "truncated"])
@pytest.mark.parametrize("with_good", [False, True], ids=["alone", "after-a-good-file"])
def test_virtualize_and_convert_give_the_same_code_for_the_same_bad_file(tmp_path, kind, with_good):
    bad = bad_file(tmp_path, kind)
    inputs = [good_file(tmp_path / "good.nc"), bad] if with_good else [bad]
    refs, cache = tmp_path / "refs.json", tmp_path / "cache.zarr"
    before = sorted(p.name for p in tmp_path.iterdir())
    virtualize = oracle.run("virtualize", *inputs, "--output", refs, "--concat-dim", "x",
                            "--no-progress")
    convert = oracle.run("convert", *inputs, cache, "--chunks", "x=10", "--max-mem", "64MB",
                         "--concat-dim", "x", "--no-progress")
    # A file that cannot be read is an input that does not fit: refused before any write.
    for r in (virtualize, convert):
        oracle.assert_one_error_line(r, codes={3}, mentions=[bad.name])
    assert virtualize.returncode == convert.returncode
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a refused job wrote something"


@pytest.mark.parametrize("metadata", ["zarr.json", ".zarray"])
def test_rechunk_and_convert_give_the_same_code_for_the_same_bad_zarr_store(tmp_path, metadata):
    # A store whose metadata is not JSON: both jobs list it through the same Zarr reader before
    # anything is written, so it is an input that does not fit (3) for both, named.
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / metadata).write_bytes(b"\x00\x01 not json")
    before = sorted(p.name for p in tmp_path.iterdir())
    rechunk = oracle.run("rechunk", bad, tmp_path / "r.zarr", "--chunks", "x=10",
                         "--max-mem", "64MB", "--no-progress")
    convert = oracle.run("convert", bad, tmp_path / "c.zarr", "--chunks", "x=10",
                         "--max-mem", "64MB", "--no-progress")
    for r in (rechunk, convert):
        oracle.assert_one_error_line(r, codes={3}, mentions=["bad.zarr", metadata, "JSON"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a refused job wrote something"


def test_a_bare_nan_attribute_is_named_in_the_refusal(tmp_path):
    """zarr-python writes a float('nan') attribute as a bare NaN, which JSON has no token for:
    the refusal (exit 3, nothing written) says what is there and what to write instead."""
    zarr = pytest.importorskip("zarr")
    src = tmp_path / "nan.zarr"
    a = zarr.create_array(src, shape=(4,), chunks=(2,), dtype="f4", dimension_names=["x"])
    a[:] = np.arange(4)
    a.attrs["valid_min"] = float("nan")
    assert "NaN" in (src / "zarr.json").read_text()
    before = sorted(p.name for p in tmp_path.iterdir())
    for job in ("rechunk", "compute"):
        if job == "rechunk":
            r = oracle.run("rechunk", src, tmp_path / "r.zarr", "--chunks", "x=4", "--max-mem", "64MB",
                           "--no-progress")
        else:
            r = oracle.run("compute", "--input", f"ds={src}", "m = ds.mean()", "--output", tmp_path / "c.zarr",
                           "--max-mem", "64MB", "--no-progress")
        oracle.assert_one_error_line(r, codes={3}, mentions=["nan.zarr", "zarr.json", "bare NaN", '"NaN"'])
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a refused job wrote something"


@pytest.mark.parametrize("zgroup", [b"not json", b'{"zarr_format": 3}', b"[]"])
def test_a_group_whose_zgroup_is_not_a_v2_group_is_refused_by_both_jobs(tmp_path, zgroup):
    # The array inside is fine; the group's own metadata is not. Copying the array as if the
    # group were a v2 group would hide a damaged or foreign store behind exit 0.
    bad = tmp_path / "bad.zarr"
    (bad / "x").mkdir(parents=True)
    (bad / ".zgroup").write_bytes(zgroup)
    (bad / "x" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<f4", "compressor": None,
        "fill_value": 0, "order": "C", "filters": None}))
    (bad / "x" / ".zattrs").write_text(json.dumps({"_ARRAY_DIMENSIONS": ["x"]}))
    before = sorted(p.name for p in tmp_path.iterdir())
    for job in ("rechunk", "convert"):
        r = oracle.run(job, bad, tmp_path / f"{job}.zarr", "--chunks", "x=4",
                       "--max-mem", "64MB", "--no-progress")
        oracle.assert_one_error_line(r, codes={3}, mentions=["bad.zarr", ".zgroup"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a refused job wrote something"
