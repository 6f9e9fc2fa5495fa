"""The copy path's ways of moving bytes, each checked against zarr-python: intermediate pieces
written from a page-aligned buffer or a view of the block and read straight into their place
(direct I/O, `CHUNKMILL_SCRATCH_IO=direct`) or through the page cache; pieces whose byte length
is no multiple of a page or of a device block, irregular last chunks on every axis, element
sizes 1 to 8, a sharded target; and a run whose arrays' stages alternate on the threads (each
thread's spare block reshaped for the next stage's task)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import oracle
from oracle import create_array, new_group

# 41-83 MB: no task holds a whole column of source chunks under MEM, so pieces are written
# (cut out of the block: not contiguous there) and read back (contiguous in the next block).
SHAPE, SOURCE_CHUNKS, TARGET = (997, 101, 103), (10, 101, 103), (997, 10, 10)
MEM = "64MB"
# float64 pieces are twice the float32 ones: the budget that still forces pieces.
MEM_OF = {"uint8": MEM, "int16": MEM, "float32": MEM, "float64": "100MB"}


def _data(dtype):
    t, y, x = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), np.arange(SHAPE[2]), indexing="ij")
    values = np.sin(t / 37.0) * 100 + np.cos(y / 7.0) * 10 + x * 0.5
    if np.dtype(dtype).kind in "iu":
        return (np.abs(values) % np.iinfo(dtype).max).astype(dtype)
    return values.astype(dtype)


def _source(path, dtype):
    data = _data(dtype)
    g = new_group(path, 3)
    create_array(g, "v", zarr_format=3, shape=SHAPE, dtype=dtype, chunks=SOURCE_CHUNKS, fill_value=0,
                 dims=("time", "lat", "lon"), codec="zstd", data=data)
    oracle.consolidate(path)
    return data


def _strategy(src, tgt, spec, mem, *extra):
    r = oracle.ok("plan", *oracle.rechunk_args(src, tgt, spec, mem, *extra), "--json")
    return json.loads(r.stdout)["strategy"]


@pytest.mark.parametrize("io", ["direct", "page-cache"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float64"])
def test_pieces_of_every_width_and_ragged_edge_round_trip(tmp_path, dtype, io):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = _source(src, dtype)
    spec = ",".join(map(str, TARGET))
    assert _strategy(src, tgt, spec, MEM_OF[dtype]) in ("intermediate", "multistage")
    oracle.ok(*oracle.rechunk_args(src, tgt, spec, MEM_OF[dtype]), env={"CHUNKMILL_SCRATCH_IO": io})
    t = oracle.open_array(tgt, "v")
    assert t.chunks == TARGET
    np.testing.assert_array_equal(t[...], data)


def test_sharded_target_through_direct_pieces(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = _source(src, "float32")
    spec = "time=-1,lat=10,lon=10"
    assert _strategy(src, tgt, spec, "80MB", "--shards", "time=-1,lat=20,lon=30") in ("intermediate", "multistage")
    oracle.ok(*oracle.rechunk_args(src, tgt, spec, "80MB", "--shards", "time=-1,lat=20,lon=30"),
              env={"CHUNKMILL_SCRATCH_IO": "direct"})
    t = oracle.open_array(tgt, "v")
    assert t.shards == (997, 20, 30) and t.chunks == (997, 10, 10)
    np.testing.assert_array_equal(t[...], data)


def test_arrays_whose_stages_alternate_on_the_threads(tmp_path):
    """Two arrays of different dtypes (blocks of different sizes) and a small one: threads go
    from one array's stage to the other's and back, keeping their block between them."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, 3)
    wide, narrow = _data("float64"), _data("int16")
    for name, values in (("wide", wide), ("narrow", narrow)):
        create_array(g, name, zarr_format=3, shape=SHAPE, dtype=values.dtype, chunks=SOURCE_CHUNKS,
                     fill_value=0, dims=("time", "lat", "lon"), codec="zstd", data=values)
    lat = np.linspace(-90, 90, SHAPE[1]).astype("float32")
    create_array(g, "lat", zarr_format=3, shape=lat.shape, dtype="float32", chunks=(50,), fill_value=0,
                 dims=("lat",), codec="zstd", data=lat)
    oracle.consolidate(src)
    oracle.ok(*oracle.rechunk_args(src, tgt, "time=-1,lat=10,lon=10", "96MB"),
              env={"CHUNKMILL_SCRATCH_IO": "direct"})
    for name, values in (("wide", wide), ("narrow", narrow), ("lat", lat)):
        np.testing.assert_array_equal(oracle.open_array(tgt, name)[...], values, err_msg=name)
