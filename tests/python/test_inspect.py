"""Oracle tests of `chunkmill inspect PATH --json` against what zarr-python reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import oracle
from oracle import NULL_FILL, create_array, new_group


def _fill_json(v):
    """zarr-python's fill value as the contract's JSON: numbers, or "NaN"/"Infinity"/"-Infinity"."""
    if v is None:
        return None
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def _expected(arr) -> dict:
    dims = oracle.dims_of(arr)
    return {
        "shape": list(arr.shape),
        "dtype": np.dtype(arr.dtype).name,
        "chunks": list(arr.chunks),
        "shards": list(arr.shards) if arr.shards is not None else None,
        "dimension_names": list(dims) if dims is not None else None,
        "fill_value": _fill_json(arr.fill_value),
        "zarr_format": arr.metadata.zarr_format,
    }


def _inspect(path) -> dict[str, dict]:
    r = oracle.ok("inspect", path, "--json")
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"inspect --json did not print JSON: {e}\n" + oracle.describe(r))
    out = {}
    for a in doc["arrays"]:
        out[a["path"].strip("/")] = a
    return out


def _build(path, fmt):
    g = new_group(path, fmt, {"title": "inspect me"})
    create_array(g, "temp", zarr_format=fmt, shape=(12, 33, 10), dtype="float32", chunks=(5, 7, 3),
                 fill_value=np.nan, dims=("time", "lat", "lon"), codec="zstd",
                 data=oracle.smooth((12, 33, 10)))
    create_array(g, "count", zarr_format=fmt, shape=(33,), dtype="int16", chunks=(7,), fill_value=-9999,
                 dims=("time",), attrs={"_FillValue": -9999}, codec="gzip",
                 data=np.arange(33, dtype="i2"))
    create_array(g, "mask", zarr_format=fmt, shape=(4, 5), dtype="bool", chunks=(2, 5), fill_value=False,
                 dims=("y", "x"), codec="none", data=np.eye(4, 5, dtype=bool))
    create_array(g, "neg_inf", zarr_format=fmt, shape=(6,), dtype="float64", chunks=(4,), fill_value=-np.inf,
                 dims=("z",), codec="zstd", region=None)
    create_array(g, "big_time", zarr_format=fmt, shape=(48,), dtype="int64", chunks=(10,), fill_value=0,
                 dims=("time",), attrs={"units": "hours since 2000-01-01", "calendar": "standard"},
                 data=np.arange(48, dtype="i8"))
    create_array(g, "scalar", zarr_format=fmt, shape=(), dtype="float64", fill_value=0.0, dims=(),
                 data=np.array(2.5))
    sub = g.create_group("sub")
    create_array(sub, "deep", zarr_format=fmt, shape=(9, 9), dtype="uint8", chunks=(4, 4), fill_value=7,
                 codec="blosc", data=np.arange(81, dtype="u1").reshape(9, 9))  # no dimension names
    if fmt == 3:
        create_array(g, "sharded", zarr_format=3, shape=(40, 6), dtype="float32", chunks=(5, 3), shards=(20, 6),
                     fill_value=1.0, dims=("time", "x"), codec="zstd", data=np.ones((40, 6), "f4"))
    else:
        create_array(g, "nullfill", zarr_format=2, shape=(5,), dtype="int32", chunks=(5,), fill_value=NULL_FILL,
                     dims=("w",), codec="zstd", data=np.arange(5, dtype="i4"))
    oracle.consolidate(path)


CODEC_OF = {"temp": "zstd", "count": "gzip", "mask": None, "neg_inf": "zstd", "big_time": "zstd",
            "scalar": "zstd", "sub/deep": "blosc", "sharded": "zstd", "nullfill": "zstd"}


@pytest.mark.parametrize("fmt", [2, 3])
def test_inspect_json_matches_zarr_python(tmp_path, fmt):
    path = tmp_path / f"store{fmt}.zarr"
    _build(path, fmt)
    want = oracle.arrays_of(path)
    got = _inspect(path)
    assert sorted(got) == sorted(want), f"inspect lists {sorted(got)}, zarr-python finds {sorted(want)}"
    for name, arr in want.items():
        entry = got[name]
        for key, value in _expected(arr).items():
            assert key in entry, f"{name}: no {key!r} in {entry}"
            assert entry[key] == value, f"{name}.{key}: inspect says {entry[key]!r}, zarr-python {value!r}"
        assert isinstance(entry["codecs"], list), f"{name}: codecs {entry['codecs']!r}"
        text = json.dumps(entry["codecs"]).lower()
        kind = CODEC_OF[name]
        for other in ("zstd", "gzip", "blosc"):
            if other == kind:
                assert other in text, f"{name}: codecs {entry['codecs']} should name {other}"
            else:
                assert other not in text, f"{name}: codecs {entry['codecs']} should not name {other}"


def test_inspect_root_array_and_text_output(tmp_path):
    path = tmp_path / "root.zarr"
    create_array(path, "", zarr_format=2, shape=(33, 20), dtype="float32", chunks=(7, 6), fill_value=np.nan,
                 codec="blosc", data=oracle.smooth((33, 20)))
    got = _inspect(path)
    assert list(got) == [""], f"a root array has the empty path, got {list(got)}"
    for key, value in _expected(oracle.open_array(path)).items():
        assert got[""][key] == value, f"{key}: inspect says {got[''][key]!r}, zarr-python {value!r}"

    group = tmp_path / "group.zarr"
    _build(group, 3)
    r = oracle.ok("inspect", group)
    for name in ("temp", "count", "mask", "sub/deep", "sharded"):
        assert name in r.stdout, f"text inspect should list {name}\n" + oracle.describe(r)
    assert "12" in r.stdout and "33" in r.stdout


def test_inspect_missing_path(tmp_path):
    r = oracle.run("inspect", tmp_path / "absent.zarr", "--json")
    oracle.assert_one_error_line(r, codes={1, 2, 3}, mentions=["absent.zarr"])
