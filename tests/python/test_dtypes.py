"""Arrays of data types chunkmill cannot rechunk yet (issue 15) no longer sink the whole job: a
group written by zarr-python with a float array beside a variable-length string array and a
datetime64 array rechunks its float array, names the arrays it leaves out, and refuses only
when one of them is asked for. zarr-python reads the results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import oracle


def mixed_group(path) -> np.ndarray:
    """A v3 group: `air` float32 (t, y), `name` variable-length strings (y), `when`
    datetime64[s] (t), as xarray writes coordinates and station names."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    air = oracle.smooth((24, 10), "float32")
    a = g.create_array("air", shape=air.shape, chunks=(4, 10), dtype="float32",
                       dimension_names=("t", "y"))
    a[:] = air
    names = g.create_array("name", shape=(10,), chunks=(10,), dtype=str, dimension_names=("y",))
    names[:] = np.array([f"station {i}" for i in range(10)])
    when = g.create_array("when", shape=(24,), chunks=(24,), dtype="datetime64[s]",
                          dimension_names=("t",))
    when[:] = np.arange(24).astype("datetime64[h]").astype("datetime64[s]")
    return air


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "mixed.zarr"
    air = mixed_group(src)
    supported = {k for k in ("name", "when") if _rechunkable(src, k)}
    if supported:
        pytest.fail(f"{supported} became rechunkable: extend this test to check their values")
    return src, air


def _rechunkable(src, key) -> bool:
    r = oracle.run("inspect", src, "--json")
    listed = json.loads(r.stdout)
    return any(a["path"] == key for a in listed["arrays"])


def test_arrays_not_asked_for_do_not_block_the_job(source, tmp_path):
    src, air = source
    tgt = tmp_path / "air.zarr"
    oracle.ok(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB", "--array", "air"))
    got = zarr.open_group(str(tgt), mode="r")
    np.testing.assert_array_equal(got["air"][:], air)
    assert got["air"].chunks == (24, 5)
    assert sorted(got.array_keys()) == ["air"]


def test_a_whole_group_rechunk_leaves_out_what_it_cannot_read_and_says_so(source, tmp_path):
    src, air = source
    tgt = tmp_path / "all.zarr"
    r = oracle.ok(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB"))
    warnings = [line for line in r.stderr.splitlines() if "left out" in line]
    assert len(warnings) == 2 and any("name" in w for w in warnings) and any("when" in w for w in warnings), r.stderr
    assert all("--array" in w for w in warnings), r.stderr
    got = zarr.open_group(str(tgt), mode="r")
    np.testing.assert_array_equal(got["air"][:], air)
    assert sorted(got.array_keys()) == ["air"]


@pytest.mark.parametrize("name", ["name", "when"])
def test_asking_for_an_array_it_cannot_read_is_refused_before_writing(source, tmp_path, name):
    src, _ = source
    tgt = tmp_path / "t.zarr"
    r = oracle.run(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB", "--array", name))
    oracle.assert_one_error_line(r, codes={3}, mentions=[name])
    assert not tgt.exists()


def test_inspect_lists_the_arrays_it_cannot_read(source):
    src, _ = source
    listed = json.loads(oracle.ok("inspect", src, "--json").stdout)
    assert [a["path"] for a in listed["arrays"]] == ["air"]
    assert sorted(u["path"] for u in listed["unsupported"]) == ["name", "when"]
    text = oracle.ok("inspect", src).stdout
    assert "unsupported" in text and "name" in text
