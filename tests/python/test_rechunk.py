"""Oracle tests of `chunkmill rechunk` and `chunkmill plan rechunk`.

Sources are written by zarr-python 3 (Zarr v2 and v3) or by xarray; chunkmill rechunks them; the
targets are read back by zarr-python and xarray and compared with the sources (see oracle.py for
the exact rules). Every store lives in pytest's tmp dirs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import oracle
from oracle import NULL_FILL, create_array, new_group

FORMATS = [2, 3]
FORMAT_PAIRS = [(2, 2), (3, 3), (2, 3), (3, 2)]


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# dtypes, fill values and attributes


def _f64_data():
    d = _rng(1).normal(0, 1e3, (9, 8, 6))
    d[0, 0, 0], d[1, 2, 3], d[8, 7, 5] = np.inf, -np.inf, 1e-300
    return d


def _i16_data():
    return ((np.arange(33 * 4).reshape(33, 4) * 997) % 20000 - 10000).astype("i2")


def _nan_data():
    d = oracle.smooth((33, 10), "float32", seed=2)
    d[1, 1] = d[30, 9] = d[12, 0] = np.nan
    return d


def _m9999_i16():
    d = _i16_data()
    d[3, 2] = d[17, 0] = -9999
    return d


def _m9999_f64():
    d = oracle.smooth((29, 6), "float64", seed=3)
    d[0, 0] = d[28, 5] = -9999.0
    return d


# name -> (dtype, shape, source chunks, dims, target chunks, fill, attrs, data, written region)
DTYPE_CASES = {
    "f32": (
        "float32", (33, 10), (7, 4), ("time", "x"), (5, 3), None,
        {"units": "K", "long_name": "air temperature"},
        lambda: oracle.smooth((33, 10), "float32"), ...,
    ),
    "f64": (
        "float64", (9, 8, 6), (4, 3, 5), ("time", "lat", "lon"), (2, 8, 4), None,
        {"valid_range": [-100.0, 100.0], "flag": True, "nested": {"a": [1, 2], "b": None}, "units": "°C"},
        _f64_data, ...,
    ),
    "i16": (
        "int16", (33, 4), (7, 4), ("time", "station"), (5, 3), 0,
        {"scale_factor": 0.01, "add_offset": 273.15, "units": "K"},
        _i16_data, ...,
    ),
    "u8": (
        "uint8", (20, 17), (6, 5), ("y", "x"), (20, 4), 0,
        {"flag_values": [0, 1, 2], "flag_meanings": "clear cloud snow"},
        lambda: (np.arange(20 * 17).reshape(20, 17) * 7 % 256).astype("u1"), ...,
    ),
    "bool": (
        "bool", (31, 9), (8, 4), ("time", "x"), (5, 9), False,
        {"description": "land mask"},
        lambda: _rng(4).random((31, 9)) > 0.5, ...,
    ),
    "datetime_i64": (
        "int64", (48,), (10,), ("time",), (13,), None,
        {"units": "hours since 2000-01-01", "calendar": "standard", "standard_name": "time"},
        lambda: (np.arange(48, dtype="i8") * 3 + 100_000), ...,
    ),
    "f32_nan_fill": (
        "float32", (33, 10), (7, 4), ("time", "x"), (5, 3), np.nan,
        {"units": "mm"},
        _nan_data, (slice(0, 20), slice(None)),  # rows 21.. never written: NaN fill
    ),
    "i16_fill_m9999": (
        "int16", (33, 4), (7, 3), ("time", "station"), (5, 4), -9999,
        {"_FillValue": -9999, "missing_value": -9999, "units": "count"},
        _m9999_i16, (slice(7, 33), slice(None)),  # first chunk row never written: -9999 fill
    ),
    "f64_fill_m9999": (
        "float64", (29, 6), (4, 4), ("time", "x"), (7, 5), -9999.0,
        {"missing_value": -9999.0},
        _m9999_f64, (slice(0, 13), slice(None)),
    ),
}


def _dims_spec(dims, chunks):
    return ",".join(f"{d}={c}" for d, c in zip(dims, chunks))


@pytest.mark.parametrize("src_fmt,tgt_fmt", FORMAT_PAIRS, ids=lambda p: str(p))
@pytest.mark.parametrize("case", sorted(DTYPE_CASES))
def test_dtypes_fill_values_attributes(tmp_path, case, src_fmt, tgt_fmt):
    dtype, shape, chunks, dims, tchunks, fill, attrs, make, region = DTYPE_CASES[case]
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, src_fmt, {"title": f"case {case}", "Conventions": "CF-1.8"})
    data = make()
    create_array(
        g, "var", zarr_format=src_fmt, shape=shape, dtype=dtype, chunks=chunks, fill_value=fill,
        dims=dims, attrs=attrs, codec="zstd", data=data, region=region,
    )
    oracle.consolidate(src)

    oracle.rechunk(src, tgt, _dims_spec(dims, tchunks), "64MB", "--zarr-format", tgt_fmt)

    s, t = oracle.open_array(src, "var"), oracle.open_array(tgt, "var")
    oracle.assert_array_matches(s, t, chunks=tchunks, zarr_format=tgt_fmt)
    exact_fill = src_fmt == tgt_fmt or src_fmt == 2 or "_FillValue" in attrs  # see oracle.assert_fill_value
    if exact_fill and fill is not None and not (isinstance(fill, float) and math.isnan(fill)):
        assert t.fill_value == fill and np.asarray(t.fill_value).dtype.kind == np.dtype(dtype).kind
    if case == "f32_nan_fill":
        assert np.isnan(t.fill_value)
    if case == "i16_fill_m9999":
        assert t.attrs["_FillValue"] == -9999 and t.attrs["missing_value"] == -9999
    # the values are really there: compare with the numpy data, not only with the source store
    expect = np.full(shape, fill if fill is not None else 0, dtype=dtype)
    expect[region] = data[region]
    np.testing.assert_array_equal(t[...], expect)

    # xarray: decoded exactly like the source when the format is kept; raw values across formats
    # (test_xarray_dataset checks decoding across formats on a dataset xarray wrote itself)
    if src_fmt == tgt_fmt:
        oracle.assert_xr_identical(xr.open_zarr(src).load(), oracle.open_xr_no_flags(tgt).load())
    else:
        raw = dict(mask_and_scale=False, decode_times=False, decode_timedelta=False)
        a, b = xr.open_zarr(src, **raw).load(), xr.open_zarr(tgt, **raw).load()
        np.testing.assert_array_equal(b["var"].values, a["var"].values)
        assert b["var"].dims == a["var"].dims and oracle.same_dtype(b["var"].dtype, a["var"].dtype)


def test_null_fill_value_v2_to_v2(tmp_path):
    """A v2 array whose fill value is null keeps it null (v2 -> v2)."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, 2)
    data = np.arange(40, dtype="i4").reshape(10, 4) + 1
    create_array(g, "v", zarr_format=2, shape=(10, 4), dtype="i4", chunks=(3, 4), fill_value=NULL_FILL,
                 dims=("t", "x"), data=data)
    oracle.consolidate(src)
    oracle.rechunk(src, tgt, "t=4,x=2", "64MB", "--zarr-format", "2")
    t = oracle.open_array(tgt, "v")
    assert t.fill_value is None
    oracle.assert_array_matches(oracle.open_array(src, "v"), t, chunks=(4, 2), zarr_format=2)


def test_big_endian_v2_source(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, 2)
    data = (np.arange(33 * 5, dtype="i2").reshape(33, 5) * 131 - 7000).astype(">i2")
    create_array(g, "v", zarr_format=2, shape=data.shape, dtype=">i2", chunks=(7, 2), fill_value=-1,
                 dims=("t", "x"), data=data)
    oracle.consolidate(src)
    for fmt in FORMATS:
        out = tmp_path / f"tgt{fmt}.zarr"
        oracle.rechunk(src, out, "t=5,x=5", "64MB", "--zarr-format", fmt)
        t = oracle.open_array(out, "v")
        oracle.assert_array_matches(oracle.open_array(src, "v"), t, chunks=(5, 5), zarr_format=fmt)
        np.testing.assert_array_equal(t[...], data)


# ---------------------------------------------------------------------------------------------
# source codecs and shapes (stores whose root is an array; SPEC by axis)

SHAPES = {
    "1d": ((33,), (7,), (5,)),  # coprime chunk sizes, irregular last chunks on both sides
    "2d": ((33, 20), (7, 6), (5, 9)),
    "3d": ((12, 33, 10), (5, 7, 3), (4, 5, -1)),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("codec", ["zstd", "gzip", "blosc", "none"])
def test_source_codecs_and_shapes(tmp_path, codec, shape_name, fmt):
    shape, chunks, tchunks = SHAPES[shape_name]
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = oracle.smooth(shape, "float32", seed=len(shape))
    create_array(src, "", zarr_format=fmt, shape=shape, dtype="float32", chunks=chunks, fill_value=0.0,
                 attrs={"units": "m/s"}, codec=codec, data=data)

    oracle.rechunk(src, tgt, ",".join(map(str, tchunks)), "64MB", "--zarr-format", fmt)

    want_chunks = tuple(n if c == -1 else c for n, c in zip(shape, tchunks))
    s, t = oracle.open_array(src), oracle.open_array(tgt)
    oracle.assert_array_matches(s, t, chunks=want_chunks, zarr_format=fmt)  # same compression too
    np.testing.assert_array_equal(t[...], data)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_merging_chunks_decodes_each_source_chunk_into_its_block(tmp_path, codec, fmt):
    """Target chunks that each hold whole source chunks: zstd and uncompressed source chunks are
    decoded straight into the block (ZarrArray::read_chunk_into); the last source chunk runs
    past the array's edge and takes the buffered path."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = oracle.smooth((195, 30, 40), "float32", seed=3)
    create_array(src, "", zarr_format=fmt, shape=data.shape, dtype="float32", chunks=(10, 30, 40),
                 fill_value=0.0, codec=codec, data=data)
    oracle.rechunk(src, tgt, "100,30,40", "64MB", "--zarr-format", fmt)
    t = oracle.open_array(tgt)
    assert t.chunks == (100, 30, 40)
    np.testing.assert_array_equal(t[...], data)


def test_v2_slash_separator_source(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = oracle.smooth((33, 20), "float64")
    create_array(src, "", zarr_format=2, shape=data.shape, dtype="float64", chunks=(7, 6), fill_value=0.0,
                 codec="zstd", data=data, separator="/")
    assert (src / "0" / "0").is_file()  # zarr-python really wrote nested keys
    oracle.rechunk(src, tgt, "5,9", "64MB", "--zarr-format", "2")
    oracle.assert_array_matches(oracle.open_array(src), oracle.open_array(tgt), chunks=(5, 9), zarr_format=2)


def test_default_target_format_is_v3(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = oracle.smooth((33,), "float32")
    create_array(src, "", zarr_format=2, shape=(33,), dtype="float32", chunks=(7,), fill_value=0.0, data=data)
    oracle.rechunk(src, tgt, "5", "64MB")
    t = oracle.open_array(tgt)
    assert t.metadata.zarr_format == 3
    assert json.loads((tgt / "zarr.json").read_text())["chunk_key_encoding"] == {
        "name": "default", "configuration": {"separator": "/"}
    }
    oracle.assert_array_matches(oracle.open_array(src), t, chunks=(5,))


def test_chunks_by_name_whole_axis_and_unnamed_dims_kept(tmp_path):
    """`-1` is the whole axis; dimensions the SPEC does not name keep the source's chunks."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, 3)
    data = oracle.smooth((12, 33, 10), "float32")
    create_array(g, "v", zarr_format=3, shape=data.shape, dtype="float32", chunks=(5, 7, 3),
                 dims=("time", "lat", "lon"), data=data)
    oracle.consolidate(src)
    oracle.rechunk(src, tgt, "time=-1,lat=5", "64MB")
    oracle.assert_array_matches(oracle.open_array(src, "v"), oracle.open_array(tgt, "v"), chunks=(12, 5, 3))


# ---------------------------------------------------------------------------------------------
# target codecs, formats and shards


def _source_for_codecs(path, fmt=3):
    g = new_group(path, fmt, {"title": "codecs"})
    data = oracle.smooth((33, 20), "float32", seed=5)
    create_array(g, "v", zarr_format=fmt, shape=data.shape, dtype="float32", chunks=(7, 6),
                 fill_value=np.nan, dims=("time", "x"), attrs={"units": "K"}, codec="zstd", data=data)
    oracle.consolidate(path)
    return data


TARGET_CODECS = {
    "zstd:1": [("zstd", 1)],
    "gzip:5": [("gzip", 5)],
    "blosc:zstd:5": [("blosc", "zstd", 5)],  # shuffle is not part of the SPEC
    "none": [],
}


@pytest.mark.parametrize("tgt_fmt", FORMATS)
@pytest.mark.parametrize("codec", sorted(TARGET_CODECS))
def test_target_codec(tmp_path, codec, tgt_fmt):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = _source_for_codecs(src)
    oracle.rechunk(src, tgt, "time=5,x=9", "64MB", "--codec", codec, "--zarr-format", tgt_fmt)
    t = oracle.open_array(tgt, "v")
    got = oracle.compression_of(t)
    if codec.startswith("blosc"):
        got = [k[:3] for k in got]
    assert got == TARGET_CODECS[codec], f"--codec {codec}: target compressors {t.compressors!r}"
    oracle.assert_array_matches(oracle.open_array(src, "v"), t, chunks=(5, 9), zarr_format=tgt_fmt,
                                same_compression=False)
    np.testing.assert_array_equal(t[...], data)
    oracle.assert_xr_identical(xr.open_zarr(src).load(), oracle.open_xr_no_flags(tgt).load())


def test_sharded_v3_target(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = _source_for_codecs(src, fmt=2)
    oracle.rechunk(src, tgt, "time=5,x=4", "64MB", "--shards", "time=20,x=8", "--codec", "zstd:1")
    t = oracle.open_array(tgt, "v")
    assert t.metadata.zarr_format == 3
    assert t.shards == (20, 8), f"shards {t.shards}"
    assert t.chunks == (5, 4), f"inner chunks {t.chunks}"
    assert oracle.compression_of(t) == [("zstd", 1)]
    np.testing.assert_array_equal(t[...], data)
    oracle.assert_array_matches(oracle.open_array(src, "v"), t, same_compression=False)
    # one object per shard, not per chunk: 33x20 in 20x8 shards is at most 2x3 shard files
    chunk_files = [p for p in (tgt / "v").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert 0 < len(chunk_files) <= 6, sorted(map(str, chunk_files))
    ds = oracle.open_xr_no_flags(tgt).load()
    np.testing.assert_array_equal(ds["v"].values, data)


# ---------------------------------------------------------------------------------------------
# edge shapes


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_size_array(tmp_path, fmt):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, fmt)
    create_array(g, "empty", zarr_format=fmt, shape=(0, 10), dtype="float32", chunks=(4, 4), fill_value=np.nan,
                 dims=("t", "x"), attrs={"units": "1"})
    oracle.consolidate(src)
    oracle.rechunk(src, tgt, "t=3,x=5", "64MB", "--zarr-format", fmt)
    t = oracle.open_array(tgt, "empty")
    assert t.shape == (0, 10)
    oracle.assert_array_matches(oracle.open_array(src, "empty"), t, chunks=(3, 5), zarr_format=fmt)
    assert oracle.open_xr_no_flags(tgt)["empty"].shape == (0, 10)


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_d_array(tmp_path, fmt):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, fmt)
    create_array(g, "scalar", zarr_format=fmt, shape=(), dtype="float64", fill_value=0.0, dims=(),
                 attrs={"units": "m", "comment": "0-d"}, data=np.array(3.25))
    x = np.arange(10, dtype="i4")
    create_array(g, "x", zarr_format=fmt, shape=(10,), dtype="i4", chunks=(3,), dims=("x",), data=x)
    oracle.consolidate(src)
    oracle.rechunk(src, tgt, "x=4", "64MB", "--zarr-format", fmt)
    t = oracle.open_array(tgt, "scalar")
    assert t.shape == () and t[...] == 3.25
    oracle.assert_stores_match(src, tgt, zarr_format=fmt)
    ds = oracle.open_xr_no_flags(tgt).load()
    assert float(ds["scalar"]) == 3.25 and ds["scalar"].attrs["comment"] == "0-d"


@pytest.mark.parametrize("fmt", FORMATS)
def test_never_written_array(tmp_path, fmt):
    """No chunk ever written: the target reads as the fill value everywhere."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = new_group(src, fmt)
    create_array(g, "blank", zarr_format=fmt, shape=(20, 6), dtype="float32", chunks=(5, 3), fill_value=1.5,
                 dims=("t", "x"), attrs={"units": "K"}, region=None)
    oracle.consolidate(src)
    assert [p.name for p in (src / "blank").iterdir() if p.name not in (".zarray", ".zattrs", "zarr.json")] == []
    oracle.rechunk(src, tgt, "t=7,x=6", "64MB", "--zarr-format", fmt)
    t = oracle.open_array(tgt, "blank")
    assert t.fill_value == 1.5
    np.testing.assert_array_equal(t[...], np.full((20, 6), 1.5, dtype="float32"))
    oracle.assert_array_matches(oracle.open_array(src, "blank"), t, chunks=(7, 6), zarr_format=fmt)


# ---------------------------------------------------------------------------------------------
# a dataset written by xarray


def _xr_dataset():
    times = pd.date_range("2000-01-01", periods=24, freq="h")
    lat = np.linspace(-45.0, 45.0, 11)
    lon = np.arange(13) * 27.5
    temp = oracle.smooth((24, 11, 13), "float32", seed=7)
    temp[3, 2, 1] = np.nan
    elev = (np.arange(11 * 13).reshape(11, 13) * 3.0).astype("float32")
    elev[0, 0] = np.nan  # written as -9999 in int16 (its _FillValue)
    return xr.Dataset(
        {
            "temp": (("time", "lat", "lon"), temp, {"units": "K", "long_name": "air temperature"}),
            "elev": (("lat", "lon"), elev, {"units": "m"}),
        },
        coords={
            "time": times,
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"title": "chunkmill oracle", "history": "written by xarray"},
    )


XR_ENCODING = {
    "temp": {"chunks": (7, 4, 5)},
    "elev": {"chunks": (3, 13), "dtype": "int16", "_FillValue": -9999},
    "time": {"units": "hours since 2000-01-01", "calendar": "standard", "dtype": "int64", "chunks": (10,)},
    "lat": {"chunks": (4,)},
    "lon": {"chunks": (5,)},
}


@pytest.mark.parametrize("src_fmt,tgt_fmt", FORMAT_PAIRS, ids=lambda p: str(p))
def test_xarray_dataset(tmp_path, src_fmt, tgt_fmt):
    """`--chunks time=-1,lat=5,lon=5` on a dataset: every variable with those dims is rechunked,
    1-d coordinates are copied whole, and xarray (no flags, consolidated metadata found) reads a
    dataset identical to the source, across Zarr formats too."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    ds = _xr_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(src, zarr_format=src_fmt, encoding=XR_ENCODING, mode="w", consolidated=True)
    source = xr.open_zarr(src).load()
    xr.testing.assert_identical(ds, source)  # the oracle itself round-trips (time units may differ)

    oracle.rechunk(src, tgt, "time=-1,lat=5,lon=5", "64MB", "--zarr-format", tgt_fmt)

    target = oracle.open_xr_no_flags(tgt)
    assert target["temp"].encoding["chunks"] == (24, 5, 5)
    assert target["elev"].encoding["chunks"] == (5, 5)
    for c, n in (("time", 24), ("lat", 11), ("lon", 13)):
        assert target[c].encoding["chunks"] == (n,), f"coordinate {c} should be one chunk"
    assert target["time"].encoding["units"] == "hours since 2000-01-01"
    assert target["time"].encoding["calendar"] == "standard"
    oracle.assert_xr_identical(source, target.load())

    # consolidated metadata is there for zarr-python too, and lists every array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cg = zarr.open_consolidated(str(tgt), zarr_format=tgt_fmt)
    assert sorted(cg.metadata.consolidated_metadata.metadata) == ["elev", "lat", "lon", "temp", "time"]
    # raw arrays: values and attributes (fill values across formats: see oracle.assert_fill_value)
    for name in ("temp", "elev", "time", "lat", "lon"):
        s, t = oracle.open_array(src, name), oracle.open_array(tgt, name)
        oracle.assert_array_matches(s, t, zarr_format=tgt_fmt)


# ---------------------------------------------------------------------------------------------
# --array, --temp, executors, --quiet


def _two_array_group(path, fmt=3):
    g = new_group(path, fmt, {"title": "two"})
    a = oracle.smooth((30, 8), "float32", seed=8)
    b = oracle.smooth((30, 8), "float64", seed=9)
    create_array(g, "a", zarr_format=fmt, shape=a.shape, dtype="float32", chunks=(4, 8), dims=("t", "x"),
                 attrs={"name": "a"}, data=a)
    create_array(g, "b", zarr_format=fmt, shape=b.shape, dtype="float64", chunks=(4, 8), dims=("t", "x"),
                 attrs={"name": "b"}, data=b)
    oracle.consolidate(path)
    return a, b


def test_array_selection(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    a, _ = _two_array_group(src)
    oracle.rechunk(src, tgt, "t=10,x=2", "64MB", "--array", "a")
    arrays = oracle.arrays_of(tgt)
    assert sorted(arrays) == ["a"], f"--array a should copy only a, target has {sorted(arrays)}"
    oracle.assert_array_matches(oracle.open_array(src, "a"), arrays["a"], chunks=(10, 2))
    np.testing.assert_array_equal(arrays["a"][...], a)
    assert dict(zarr.open_group(str(tgt), mode="r").attrs) == {"title": "two"}
    assert list(oracle.open_xr_no_flags(tgt).data_vars) == ["a"]


def test_executor_workers_retries_quiet(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    _two_array_group(src, fmt=2)
    r = oracle.rechunk(src, tgt, "t=7,x=3", "64MB", "--executor", "threads", "--workers", "2", "--retries", "0",
                       "--quiet", "--zarr-format", "2")
    assert r.stdout.strip() == "" and r.stderr.strip() == "", "--quiet should print nothing on success\n" + oracle.describe(r)
    oracle.assert_stores_match(src, tgt, zarr_format=2)
    oracle.assert_xr_identical(xr.open_zarr(src).load(), oracle.open_xr_no_flags(tgt).load())


# ---------------------------------------------------------------------------------------------
# a larger array: intermediates, plans, resume after SIGKILL

BIG_SHAPE, BIG_CHUNKS, BIG_TARGET = (1000, 100, 100), (10, 100, 100), (1000, 10, 10)  # 40 MB of float32
BIG_SPEC = "time=-1,lat=10,lon=10"
BIG_MEM = "64MB"  # a direct copy needs every source chunk of a column at once (40 MB + baseline): no fit
BIG_MEM_BYTES = 64_000_000


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.zarr"
    g = new_group(path, 3, {"title": "big"})
    t, y, x = np.meshgrid(np.arange(1000), np.arange(100), np.arange(100), indexing="ij")
    data = (np.sin(t / 50.0) * 10 + np.cos(y / 7.0) + x * 0.01).astype("float32")
    create_array(g, "v", zarr_format=3, shape=BIG_SHAPE, dtype="float32", chunks=BIG_CHUNKS, fill_value=np.nan,
                 dims=("time", "lat", "lon"), attrs={"units": "K"}, codec="zstd", data=data)
    oracle.consolidate(path)
    return path, data


def _plan(src, tgt, spec, mem, *extra):
    r = oracle.ok("plan", *oracle.rechunk_args(src, tgt, spec, mem, *extra), "--json")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"plan --json did not print JSON: {e}\n" + oracle.describe(r))


def _check_plan(plan, shape, target_chunks, max_mem_bytes):
    assert isinstance(plan["plan_id"], str) and plan["plan_id"]
    assert plan["max_mem"] == max_mem_bytes
    assert plan["strategy"] in ("direct", "intermediate", "multistage", "multipass")
    for key in ("bytes_read", "bytes_written", "bytes_intermediate"):
        assert isinstance(plan[key], int) and plan[key] >= 0, key
    stages = plan["stages"]
    assert stages, "a plan has at least one stage"
    for st in stages:
        assert st["kind"] == "copy"
        assert isinstance(st["tasks"], int) and st["tasks"] >= 1, st
        assert 0 < st["projected_mem"] <= max_mem_bytes, f"stage {st['name']}: projected {st['projected_mem']} > budget"
        wb = st["write_block"]
        assert len(wb) == len(shape) and len(st["read_block"]) == len(shape)
        n = math.prod(math.ceil(s / b) for s, b in zip(shape, wb) if s > 0)
        assert st["tasks"] == n, f"stage {st['name']}: {st['tasks']} tasks, but ceil(shape/write_block) gives {n}"
    # the last stage writes whole target chunks
    for s, b, c in zip(shape, stages[-1]["write_block"], target_chunks):
        assert b % c == 0 or b >= s, f"write block {stages[-1]['write_block']} splits target chunks {target_chunks}"
    if plan["strategy"] == "direct":
        assert len(stages) == 1 and plan["bytes_intermediate"] == 0
    if plan["strategy"] in ("intermediate", "multistage"):
        assert len(stages) >= 2 and plan["bytes_intermediate"] > 0
    return stages


def test_plan_direct_arithmetic(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    # metadata only: planning must not need the data
    create_array(src, "", zarr_format=3, shape=(100, 60), dtype="float32", chunks=(10, 60), region=None)
    plan = _plan(src, tgt, "100,6", "64MB")
    stages = _check_plan(plan, (100, 60), (100, 6), 64_000_000)
    assert plan["strategy"] == "direct", "a 24 kB array under a 64 MB budget is a direct copy"
    assert not tgt.exists() and not Path(f"{tgt}.work").exists(), "plan must not write anything"
    assert stages[0]["tasks"] == math.prod(math.ceil(s / b) for s, b in zip((100, 60), stages[0]["write_block"]))


@pytest.mark.parametrize("size,nbytes", [("64MB", 64_000_000), ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000),
                                         ("512MiB", 512 * 2**20)])
def test_plan_sizes(tmp_path, size, nbytes):
    src = tmp_path / "src.zarr"
    create_array(src, "", zarr_format=2, shape=(50, 40), dtype="int16", chunks=(7, 40), region=None)
    plan = _plan(src, tmp_path / "tgt.zarr", "50,3", size)
    _check_plan(plan, (50, 40), (50, 3), nbytes)


def test_plan_tight_budget(tmp_path):
    src = tmp_path / "src.zarr"
    create_array(src, "", zarr_format=3, shape=BIG_SHAPE, dtype="float32", chunks=BIG_CHUNKS, region=None)
    plan = _plan(src, tmp_path / "tgt.zarr", ",".join(map(str, BIG_TARGET)), BIG_MEM)
    _check_plan(plan, BIG_SHAPE, BIG_TARGET, BIG_MEM_BYTES)
    assert plan["strategy"] != "direct", "a direct copy needs 40 MB of source chunks per task"
    assert sum(st["tasks"] for st in plan["stages"]) >= 2


def test_temp_intermediates_removed(tmp_path, big_source):
    src, data = big_source
    tgt, temp = tmp_path / "tgt.zarr", tmp_path / "scratch"
    oracle.rechunk(src, tgt, BIG_SPEC, BIG_MEM, "--temp", temp, "--workers", "2")
    t = oracle.open_array(tgt, "v")
    assert t.chunks == BIG_TARGET
    np.testing.assert_array_equal(t[...], data)
    left = [p for p in temp.rglob("*") if p.is_file()] if temp.exists() else []
    assert left == [], f"intermediates left behind after success: {left[:5]}"


def _markers(work_dir: Path, stages: set[str]) -> list[Path]:
    """Task markers: files at <work-dir>/<plan-id>/<stage>/<task-index> (other files of the work
    dir, such as intermediate chunks, are not markers)."""
    if not work_dir.exists():
        return []
    return [p for p in work_dir.glob("*/*/*") if p.parent.name in stages and p.name.isdigit() and p.is_file()]


@pytest.mark.parametrize("killed_in", ["first stage", "last stage", "last stage, pieces lost"])
def test_resume_after_sigkill_gives_same_bytes(tmp_path, big_source, killed_in):
    """Killed once a task of the first stage is done, or once two of the last stage are (its
    readers then have removed the pieces only they read): the resumed run redoes no task that
    was done, and writes the same bytes as an uninterrupted run. With every piece left then
    lost too (a power loss takes unsynced pieces), the tasks that wrote the pieces still read
    run again, and so do, in turn, those that wrote what they read (removed already)."""
    src, data = big_source
    extra = ["--workers", "1"]
    # the first budget (a plan is cheap) whose plan has enough tasks to be killed half-way
    tried = []
    for mem in ("48MB", "44MB", "56MB", "64MB", "96MB"):
        r = oracle.run("plan", *oracle.rechunk_args(src, tmp_path / "killed.zarr", BIG_SPEC, mem, *extra), "--json")
        stages = json.loads(r.stdout)["stages"] if r.returncode == 0 else []
        total = sum(st["tasks"] for st in stages)
        tried.append((mem, r.returncode, total))
        if total >= 4 and (killed_in == "first stage" or (len(stages) >= 2 and stages[-1]["tasks"] >= 4)):
            break
    else:
        raise AssertionError(f"no budget gave a plan with enough tasks to kill in its {killed_in}: {tried}")
    names = {st["name"] for st in stages}
    # killed once this many markers of these stages exist
    kill_after, kill_names = (1, names) if killed_in == "first stage" else (2, {stages[-1]["name"]})

    # an uninterrupted reference run
    ref = tmp_path / "ref.zarr"
    oracle.rechunk(src, ref, BIG_SPEC, mem, *extra)

    # a run killed with SIGKILL once some tasks are done
    killed, work = tmp_path / "killed.zarr", tmp_path / "work"
    args = oracle.rechunk_args(src, killed, BIG_SPEC, mem, *extra, "--work-dir", work)
    proc = subprocess.Popen([str(oracle.chunkmill_bin()), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + oracle.TIMEOUT
    try:
        while proc.poll() is None and len(_markers(work, kill_names)) < kill_after and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was meant to be killed mid-way but ended with {proc.returncode}\n{err.decode()[-2000:]}"
    )
    done = _markers(work, names)
    assert 1 <= len(done) < total, f"{len(done)} of {total} task markers after the kill"
    if killed_in != "first stage":
        # every reader needs every producer here, so all the pieces it reads were written; the
        # first done reader (one thread: done before the second started) has removed those it
        # alone read
        plan = json.loads((work / "plan.json").read_text())
        pieces = plan["stages"][-1]["kind"]["input"]
        assert pieces["kind"] == "pieces", plan["stages"][-1]
        written = math.prod(len(_bounds(a)) - 1 for a in pieces["grid"]["axes"])
        left = [p for p in (Path(pieces["url"]) / pieces["prefix"]).iterdir() if p.name.isdigit()]
        assert 0 < len(left) < written, f"{len(left)} of {written} pieces left after two readers were done"
        if killed_in == "last stage, pieces lost":
            for piece in left:
                piece.unlink()
    # (with pieces lost, the tasks that wrote them run again, and rewrite their markers)
    before = {} if killed_in == "last stage, pieces lost" else {p: p.stat().st_mtime_ns for p in done}

    # resume, then the same bytes as the uninterrupted run, and the values of the source
    oracle.rechunk(src, killed, BIG_SPEC, mem, *extra, "--work-dir", work, "--resume")
    for p, mtime in before.items():  # tasks already done were skipped, not redone
        if p.exists():
            assert p.stat().st_mtime_ns == mtime, f"marker {p} was rewritten: its task ran again"
    a, b = oracle.tree_files(ref), oracle.tree_files(killed)
    assert sorted(a) == sorted(b), f"files differ: only in reference {sorted(set(a) - set(b))[:5]}, " \
                                   f"only in resumed {sorted(set(b) - set(a))[:5]}"
    differ = [k for k in a if a[k] != b[k]]
    assert differ == [], f"{len(differ)} files differ in bytes, e.g. {differ[:5]}"
    t = oracle.open_array(killed, "v")
    assert t.chunks == BIG_TARGET
    np.testing.assert_array_equal(t[...], data)
    oracle.assert_array_matches(oracle.open_array(src, "v"), t, chunks=BIG_TARGET)


def test_resume_redoes_tasks_whose_pieces_were_lost(tmp_path, big_source):
    """Intermediate pieces are not synced (a power loss may take them after their task's marker
    was written): a resumed run un-marks the tasks whose pieces are missing or short and runs
    them again, rather than failing on them or reading them short (forget_lost_pieces)."""
    src, data = big_source
    tgt, work = tmp_path / "tgt.zarr", tmp_path / "work"
    args = oracle.rechunk_args(src, tgt, BIG_SPEC, BIG_MEM, "--workers", "2", "--work-dir", work)
    oracle.ok(*args, "--prepare")
    plan = json.loads((work / "plan.json").read_text())
    first = plan["stages"][0]
    out = first["kind"]["output"]
    assert out["kind"] == "pieces", f"the plan at {BIG_MEM} should go through intermediates: {first}"
    # Run the first stage alone, as a batch engine's worker would: its tasks are marked done.
    tasks = int(np.prod([len(_bounds(a)) - 1 for a in first["kind"]["blocks"]["axes"]]))
    oracle.ok("worker", "--plan", work, "--stage", "0", "--tasks", f"0..{tasks}", "--workers", "2",
              "--no-progress")
    assert len(_markers(work, {first["name"]})) == tasks
    pieces = sorted((Path(out["url"]) / out["prefix"]).iterdir(), key=lambda p: int(p.name))
    assert len(pieces) > 2
    pieces[0].unlink()  # lost
    with open(pieces[-1], "r+b") as f:  # short
        f.truncate(pieces[-1].stat().st_size // 2)
    oracle.ok(*args, "--resume")
    t = oracle.open_array(tgt, "v")
    assert t.chunks == BIG_TARGET
    np.testing.assert_array_equal(t[...], data)


def _bounds(axis: dict) -> list[int]:
    """Chunk boundaries of one axis of a plan's grid (regular or rectilinear)."""
    if axis["kind"] == "rectilinear":
        return axis["bounds"]
    size, n = axis["size"], axis["len"]
    return list(range(0, n, size)) + [n] if size else [0, n]


# ---------------------------------------------------------------------------------------------
# bad input: one clear line, a non-zero exit, nothing written


def _nothing_written(tgt: Path):
    assert not tgt.exists(), f"{tgt} was created by a refused run"
    assert not Path(f"{tgt}.work").exists(), f"{tgt}.work was created by a refused run"


def test_error_missing_source(tmp_path):
    tgt = tmp_path / "tgt.zarr"
    r = oracle.run(*oracle.rechunk_args(tmp_path / "nope.zarr", tgt, "5", "64MB"))
    oracle.assert_one_error_line(r, codes={1, 2, 3}, mentions=["nope.zarr"],
                                 pattern=r"not found|does not exist|no such|missing|no zarr|not a zarr|cannot open")
    _nothing_written(tgt)


def test_error_unknown_dimension(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    _two_array_group(src)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "t=5,depth=3", "64MB"))
    oracle.assert_one_error_line(r, codes={2, 3}, mentions=["depth"], pattern=r"dimension")
    _nothing_written(tgt)


def test_error_wrong_number_of_axes(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    create_array(src, "", zarr_format=3, shape=(10, 10), dtype="float32", chunks=(5, 5), region=None)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "5,5,5", "64MB"))
    oracle.assert_one_error_line(r, codes={2, 3}, pattern=r"ax[ie]s|dimension|rank")
    _nothing_written(tgt)


def test_error_target_exists_then_overwrite(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    _two_array_group(src)
    old = oracle.smooth((5,), "float64", seed=11)
    create_array(tgt, "", zarr_format=2, shape=(5,), dtype="float64", chunks=(5,), data=old)
    before = oracle.tree_files(tgt)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "t=10,x=2", "64MB"))
    oracle.assert_one_error_line(r, codes={3}, mentions=["tgt.zarr"], pattern=r"exist")
    assert oracle.tree_files(tgt) == before, "a refused run changed the existing target"
    assert not Path(f"{tgt}.work").exists()

    oracle.rechunk(src, tgt, "t=10,x=2", "64MB", "--overwrite")
    oracle.assert_stores_match(src, tgt)
    assert not (tgt / ".zarray").exists(), "files of the old target were left behind"
    oracle.assert_xr_identical(xr.open_zarr(src).load(), oracle.open_xr_no_flags(tgt).load())


def test_error_budget_smaller_than_one_chunk(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    data = oracle.smooth((100, 100), "float64")  # one 80 kB chunk
    create_array(src, "", zarr_format=3, shape=data.shape, dtype="float64", chunks=(100, 100), data=data)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "50,50", "1KB"))
    oracle.assert_one_error_line(r, codes={3}, pattern=r"mem|budget")
    _nothing_written(tgt)


def test_error_unsupported_codec(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    create_array(src, "", zarr_format=3, shape=(10,), dtype="float32", chunks=(5,), region=None)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "2", "64MB", "--codec", "lz77:3"))
    oracle.assert_one_error_line(r, codes={2}, mentions=["lz77"])
    _nothing_written(tgt)


def test_error_shards_with_v2_target(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    create_array(src, "", zarr_format=3, shape=(40,), dtype="float32", chunks=(5,), region=None)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "5", "64MB", "--shards", "20", "--zarr-format", "2"))
    oracle.assert_one_error_line(r, codes={2, 3}, pattern=r"shard")
    _nothing_written(tgt)
