"""Every data type users store (issue 15): zarr-python writes one array of each type, in Zarr v2
and v3, with NaN/NaT and fill values and chunks never written; chunkmill rechunks it (and converts
Zarr to Zarr); zarr-python and xarray read back the same values, dtype and fill value.

Types: bool, every int/uint width, float16/32/64, complex64/128, datetime64/timedelta64 with their
unit, fixed-length bytes and unicode, variable-length strings (v3 `string`, v2 `|O` with
`vlen-utf8` or `vlen-bytes`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from zarr.core.dtype import VariableLengthBytes, VariableLengthUTF8

import oracle

N = 23  # elements; chunks of 5 leave a partial edge chunk


def values_of(kind: str) -> tuple[np.ndarray, object]:
    """Values of one type (with its missing values where it has them) and a fill value."""
    i = np.arange(N)
    if kind == "bool":
        return i % 3 == 0, True
    if kind.startswith(("int", "uint")):
        info = np.iinfo(kind)
        v = np.linspace(info.min, info.max, N, dtype=np.float64).astype(kind)
        return v, int(info.max)
    if kind.startswith("float"):
        v = (i * 1.5 - 7).astype(kind)
        v[3], v[7], v[8] = np.nan, np.inf, -np.inf
        return v, np.nan
    if kind.startswith("complex"):
        v = (i + 1j * (N - i)).astype(kind)
        v[4] = complex(np.nan, 1)
        return v, 1 + 2j
    if kind.startswith(("M8", "m8")):
        unit = kind[3:-1]
        base = np.datetime64("2000-01-01", unit) if kind[0] == "M" else np.timedelta64(0, unit)
        v = base + np.arange(N).astype(f"m8[{unit}]") * 7
        v[5] = np.datetime64("NaT") if kind[0] == "M" else np.timedelta64("NaT")
        return v, (np.datetime64("NaT") if kind[0] == "M" else np.timedelta64("NaT"))
    if kind.startswith("S"):
        return np.array([f"b{k * 37}".encode() for k in i], dtype=kind), b"ab"
    if kind.startswith("U"):
        return np.array([f"ü{k * 37}" for k in i], dtype=kind), "xy"
    if kind in ("str", "bytes"):
        words = ["", "a", "Zürich", "station with a long name " * 3, "日本"]
        v = np.array([words[k % len(words)] + str(k) for k in i], dtype=object)
        return (np.array([s.encode() for s in v], dtype=object) if kind == "bytes" else v), None
    raise ValueError(kind)


FIXED = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
         "float16", "float32", "float64", "complex64", "complex128", "M8[ns]", "M8[s]",
         "m8[ms]", "S6", "U5"]
TYPES = FIXED + ["str", "bytes"]


def write(path, kind: str, zarr_format: int) -> zarr.Array:
    """One array of `kind`, chunks of 5, the last chunk never written (fill value), consolidated."""
    values, fill = values_of(kind)
    if kind == "str":
        dtype = VariableLengthUTF8()
    elif kind == "bytes":
        dtype = VariableLengthBytes()
    else:
        dtype = np.dtype(kind)
    kw = {} if fill is None else {"fill_value": fill}
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    attributes = {"kind": kind} if zarr_format == 3 else {"kind": kind, "_ARRAY_DIMENSIONS": ["x"]}
    a = g.create_array("v", shape=(N,), chunks=(5,), dtype=dtype, dimension_names=("x",)
                       if zarr_format == 3 else None, attributes=attributes, **kw)
    a[:20] = values[:20]
    zarr.consolidate_metadata(str(path))
    return a


def read(path):
    return zarr.open_group(str(path), mode="r")["v"]


def assert_same(src, tgt, chunks):
    assert tgt.chunks == chunks
    assert tgt.dtype == src.dtype, (tgt.dtype, src.dtype)
    assert tgt.metadata.zarr_format == src.metadata.zarr_format
    s, t = src[:], tgt[:]
    assert s.dtype == t.dtype
    np.testing.assert_array_equal(t, s, strict=True)
    if src.fill_value is None or (isinstance(src.fill_value, float) and np.isnan(src.fill_value)):
        assert repr(tgt.fill_value) == repr(src.fill_value)
    else:
        assert np.array(tgt.fill_value).tobytes() == np.array(src.fill_value).tobytes(), (
            tgt.fill_value, src.fill_value)
    assert dict(tgt.attrs) == dict(src.attrs)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("kind", TYPES)
def test_every_type_rechunks_exactly_with_its_fill_value(tmp_path, kind, zarr_format):
    src_path, tgt_path = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    src = write(src_path, kind, zarr_format)
    oracle.rechunk(src_path, tgt_path, "x=7", "64MB", "--zarr-format", zarr_format)
    tgt = read(tgt_path)
    assert_same(src, tgt, (7,))
    # The never-written source chunk reads as the fill value in the target too.
    np.testing.assert_array_equal(tgt[20:], src[20:], strict=True)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("kind", TYPES)
def test_every_type_changes_zarr_format_exactly(tmp_path, kind, zarr_format):
    """v2 -> v3 and v3 -> v2: the same values (the never-written chunk included) and dtype; the
    fill value kept, but a v3 number's, which becomes null in v2 (every chunk then stored), as
    xarray reads a v2 fill value as _FillValue."""
    src_path, tgt_path = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    src = write(src_path, kind, zarr_format)
    to = 5 - zarr_format
    oracle.rechunk(src_path, tgt_path, "x=7", "64MB", "--zarr-format", to)
    tgt = read(tgt_path)
    assert tgt.metadata.zarr_format == to and tgt.dtype == src.dtype
    np.testing.assert_array_equal(tgt[:], src[:], strict=True)
    numeric = np.dtype(src.dtype).kind in "biu" if kind not in ("str", "bytes") else False
    if to == 2 and numeric:
        assert tgt.fill_value is None
    else:
        assert repr(tgt.fill_value) == repr(src.fill_value)


@pytest.mark.parametrize("kind", ["float16", "complex64", "M8[ns]", "U5", "str", "S6"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_every_type_converts_zarr_to_zarr(tmp_path, kind, zarr_format):
    src_path, tgt_path = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    src = write(src_path, kind, zarr_format)
    oracle.ok("convert", src_path, tgt_path, "--chunks", "x=11", "--zarr-format", zarr_format,
              "--no-progress")
    tgt = read(tgt_path)
    assert_same(src, tgt, (11,))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_inspect_names_every_type_as_zarr_python_does(tmp_path, zarr_format):
    names = {}
    for kind in TYPES:
        path = tmp_path / f"{kind}.zarr".replace("[", "_").replace("]", "_")
        a = write(path, kind, zarr_format)
        listed = json.loads(oracle.ok("inspect", path, "--json").stdout)
        (array,) = listed["arrays"]
        names[kind] = array["dtype"]
        want = {"str": "string", "bytes": "variable_length_bytes"}.get(kind)
        if want is None:
            dt = a.dtype
            want = dt.str if dt.kind in "SU" else str(dt)
        assert array["dtype"] == want, (kind, array)
    assert len(set(names.values())) == len(TYPES)


def mixed_group(path, zarr_format=3):
    """What xarray writes for station data: a float array (t, y), a string coordinate `name`
    (y), a bool mask (t, y), a datetime64 `when` (t) and a float16 array (t, y)."""
    import xarray as xr

    t, y = 24, 10
    ds = xr.Dataset(
        {
            "air": (("t", "y"), oracle.smooth((t, y), "float32")),
            "mask": (("t", "y"), (np.arange(t * y).reshape(t, y) % 7) == 0),
            "when": (("t",), np.arange(t).astype("datetime64[h]").astype("datetime64[ns]")),
            "low": (("t", "y"), oracle.smooth((t, y), "float16")),
        },
        coords={"name": (("y",), np.array([f"station {i}" for i in range(y)]))},
    )
    ds["air"][3, 4] = np.nan
    ds.to_zarr(str(path), mode="w", zarr_format=zarr_format,
               encoding={k: {"chunks": (4, y)} if ds[k].ndim == 2 else {} for k in ds.data_vars})
    return ds


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_group_mixing_every_kind_rechunks_in_one_run(tmp_path, zarr_format):
    import xarray as xr

    src, tgt = tmp_path / "mixed.zarr", tmp_path / "out.zarr"
    ds = mixed_group(src, zarr_format)
    r = oracle.ok(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB"))
    assert "left out" not in r.stderr, r.stderr
    got_group = zarr.open_group(str(tgt), mode="r")
    src_group = zarr.open_group(str(src), mode="r")
    assert sorted(got_group.array_keys()) == sorted(src_group.array_keys())
    for key in src_group.array_keys():
        np.testing.assert_array_equal(got_group[key][:], src_group[key][:], strict=True)
        assert got_group[key].dtype == src_group[key].dtype
    assert got_group["air"].chunks == (24, 5)
    assert got_group["name"].chunks == (5,)
    back = xr.open_zarr(str(tgt))
    xr.testing.assert_identical(back.load(), ds)


def test_choosing_two_arrays_touches_only_those(tmp_path):
    src, tgt = tmp_path / "mixed.zarr", tmp_path / "two.zarr"
    mixed_group(src)
    oracle.ok(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB", "--array", "mask", "--array", "when"))
    got = zarr.open_group(str(tgt), mode="r")
    srcg = zarr.open_group(str(src), mode="r")
    assert sorted(got.array_keys()) == ["mask", "when"]
    for key in ["mask", "when"]:
        np.testing.assert_array_equal(got[key][:], srcg[key][:], strict=True)
    assert got["mask"].chunks == (24, 5)


UNREADABLE = ["data type", "codec"]


def unreadable_group(path, how="data type"):
    """A v3 group with a float array beside one nobody can read: its data type (float128) or a
    codec nobody implements."""
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    air = oracle.smooth((24, 10), "float32")
    a = g.create_array("air", shape=air.shape, chunks=(4, 10), dtype="float32",
                       dimension_names=("t", "y"))
    a[:] = air
    odd = g.create_array("odd", shape=(10,), chunks=(10,), dtype="float32", dimension_names=("y",))
    odd[:] = np.arange(10, dtype="float32")
    meta_path = path / "odd" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    if how == "codec":
        meta["codecs"].append({"name": "made_up_codec", "configuration": {}})
    else:
        meta["data_type"] = "float128"  # no implementation reads it
    meta_path.write_text(json.dumps(meta))
    return air


@pytest.mark.parametrize("how", UNREADABLE)
def test_an_array_it_cannot_read_is_left_out_with_a_warning(tmp_path, how):
    src, tgt = tmp_path / "odd.zarr", tmp_path / "all.zarr"
    air = unreadable_group(src, how)
    r = oracle.ok(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB"))
    warnings = [line for line in r.stderr.splitlines() if "left out" in line]
    assert len(warnings) == 1 and "odd" in warnings[0] and "--array" in warnings[0], r.stderr
    got = zarr.open_group(str(tgt), mode="r")
    np.testing.assert_array_equal(got["air"][:], air)
    assert sorted(got.array_keys()) == ["air"]


@pytest.mark.parametrize("how", UNREADABLE)
def test_asking_for_an_array_it_cannot_read_is_refused_before_writing(tmp_path, how):
    src, tgt = tmp_path / "odd.zarr", tmp_path / "t.zarr"
    unreadable_group(src, how)
    r = oracle.run(*oracle.rechunk_args(src, tgt, "t=24,y=5", "64MB", "--array", "odd"))
    oracle.assert_one_error_line(r, codes={3}, mentions=["odd"])
    assert not tgt.exists()
    listed = json.loads(oracle.ok("inspect", src, "--json").stdout)
    assert [u["path"] for u in listed["unsupported"]] == ["odd"]


@pytest.mark.parametrize("how", UNREADABLE)
def test_convert_refuses_an_array_it_cannot_read_unless_dropped(tmp_path, how):
    src, tgt = tmp_path / "odd.zarr", tmp_path / "c.zarr"
    air = unreadable_group(src, how)
    r = oracle.run("convert", src, tgt, "--chunks", "t=24,y=5", "--no-progress")
    oracle.assert_one_error_line(r, codes={3}, mentions=["odd", "--drop odd"])
    assert not tgt.exists()
    oracle.ok("convert", src, tgt, "--chunks", "t=24,y=5", "--drop", "odd", "--no-progress")
    got = zarr.open_group(str(tgt), mode="r")
    np.testing.assert_array_equal(got["air"][:], air)
    assert sorted(got.array_keys()) == ["air"]


def datetime_group(path, unit: str, zarr_format: int) -> np.ndarray:
    """A v2/v3 group with a datetime64 `time` coordinate (six-hourly over 10 days) and `v(time)`,
    written by zarr-python and consolidated; returns the times."""
    times = np.datetime64("2001-02-25", unit) + np.arange(40) * np.timedelta64(6, "h").astype(f"m8[{unit}]")
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    dims = {"dimension_names": ("time",)} if zarr_format == 3 else {}
    attrs = {} if zarr_format == 3 else {"_ARRAY_DIMENSIONS": ["time"]}
    g.create_array("time", data=times, chunks=(8,), attributes=attrs, **dims)
    g.create_array("v", data=np.arange(40, dtype="f4"), chunks=(8,), attributes=attrs, **dims)
    zarr.consolidate_metadata(str(path))
    return times


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("unit", ["ns", "s", "m"])
def test_select_dates_on_a_datetime64_coordinate(tmp_path, unit, zarr_format):
    """`--select time=2001-02-27:2001-03-01` on a datetime64 coordinate selects the days as
    xarray's .sel does (before: refused, the bounds had to be numbers)."""
    import xarray as xr

    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    datetime_group(src, unit, zarr_format)
    oracle.ok("convert", src, tgt, "--chunks", "time=-1", "--select", "time=2001-02-27:2001-03-01",
              "--zarr-format", zarr_format, "--no-progress")
    want = xr.open_zarr(str(src)).sel(time=slice("2001-02-27", "2001-03-01")).load()
    got = oracle.open_xr_no_flags(tgt).load()
    assert got.sizes["time"] == 12  # Feb 27, Feb 28, Mar 1: 4 steps a day
    xr.testing.assert_identical(got, want)


def test_a_day_the_calendar_lacks_is_refused(tmp_path):
    """2001-02-29 (not a leap year) on a datetime64 coordinate, and on CF time coordinates in
    the noleap and 360_day calendars a day each lacks, is refused before writing (exit 3); a
    day the 360_day calendar has (February 30) selects as xarray (cftime) does."""
    import netCDF4
    import xarray as xr

    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    datetime_group(src, "ns", 3)
    r = oracle.run("convert", src, tgt, "--chunks", "time=-1", "--select", "time=2001-02-29:")
    oracle.assert_one_error_line(r, codes=[3], mentions=["2001-02-29", "time"])
    assert not tgt.exists()
    for calendar, missing, present in [("noleap", "2004-02-29", "2004-02-28"),
                                       ("360_day", "2004-01-31", "2004-02-30")]:
        nc = tmp_path / f"{calendar}.nc"
        with netCDF4.Dataset(nc, "w") as ds:
            ds.createDimension("time", 120)
            t = ds.createVariable("time", "f8", ("time",))
            t.units, t.calendar = "hours since 2004-01-20", calendar
            t[:] = np.arange(120) * 12.0
            ds.createVariable("v", "f4", ("time",))[:] = np.arange(120)
        out = tmp_path / f"{calendar}.zarr"
        r = oracle.run("convert", nc, out, "--chunks", "time=-1", "--select", f"time={missing}:")
        oracle.assert_one_error_line(r, codes=[3], mentions=[missing, calendar])
        assert not out.exists()
        oracle.ok("convert", nc, out, "--chunks", "time=-1", "--select", f"time={present}:{present}",
                  "--no-progress")
        want = xr.open_dataset(nc, use_cftime=True).sel(time=slice(present, present)).load()
        got = xr.open_zarr(str(out), use_cftime=True).load()
        assert got.sizes["time"] == 2
        xr.testing.assert_identical(got, want)


def big_endian_array(path, kind: str, zarr_format: int) -> np.ndarray:
    """`v` stored big-endian as zarr-python stores it when asked (a v2 `>U5`; v3 with the bytes
    codec's endian big), chunks of 2, the last chunk never written, and a fill value."""
    from zarr.codecs import BytesCodec

    if kind == "U":
        values, fill = np.array(["ab", "Zürich", "", "日本", "x", "yz", "q"], dtype=">U6"), "zz"
    else:
        values = np.array([(k, k / 2) for k in range(7)], dtype=[("a", ">i4"), ("b", ">f8")])
        fill = None
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    kw = {"fill_value": fill} if fill is not None else {}
    if zarr_format == 3:
        kw.update(serializer=BytesCodec(endian="big"), dimension_names=("x",))
        dtype = values.dtype.newbyteorder("<")
    else:
        kw.update(attributes={"_ARRAY_DIMENSIONS": ["x"]})
        dtype = values.dtype
    a = g.create_array("v", shape=(9,), chunks=(2,), dtype=dtype, **kw)
    a[:7] = values
    zarr.consolidate_metadata(str(path))
    return a[:]


@pytest.mark.parametrize("case", [("U", 2), ("U", 3), ("struct", 3)])
def test_big_endian_text_and_structs_are_read_exactly(tmp_path, case):
    """Before: convert of a v3 `fixed_length_utf32` stored big-endian wrote byte-swapped
    characters with exit 0; v2 `>U` was refused. Now both rechunk and convert exactly."""
    kind, zarr_format = case
    src = tmp_path / "src.zarr"
    want = big_endian_array(src, kind, zarr_format)
    for command in ("rechunk", "convert"):
        tgt = tmp_path / f"{command}.zarr"
        oracle.ok(command, src, tgt, "--chunks", "x=3", "--max-mem", "64MB", "--no-progress")
        got = zarr.open_group(str(tgt), mode="r")["v"][:]
        assert got.tolist() == want.tolist(), command
        assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), command


def test_v2_structs_with_big_endian_fields_are_refused_before_writing(tmp_path):
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    g = zarr.open_group(str(src), mode="w", zarr_format=2)
    g.create_array("v", data=np.array([(1, 2.5)], dtype=[("a", ">i4"), ("b", "<f8")]),
                   attributes={"_ARRAY_DIMENSIONS": ["x"]})
    g.create_array("w", data=np.arange(1.0), attributes={"_ARRAY_DIMENSIONS": ["x"]})
    zarr.consolidate_metadata(str(src))
    r = oracle.run("convert", src, tgt, "--chunks", "x=1", "--max-mem", "64MB")
    oracle.assert_one_error_line(r, codes=[3], mentions=["big-endian", "--drop v"])
    assert not tgt.exists()
    oracle.ok("convert", src, tgt, "--chunks", "x=1", "--drop", "v", "--no-progress")
    assert zarr.open_group(str(tgt), mode="r")["w"][:].tolist() == [0.0]


def test_workers_take_the_record_width_of_variable_length_text_from_the_plan(tmp_path):
    """The plan carries the record width (4-byte length + the longest element's UTF-8 bytes); a
    worker reads with it instead of reading the whole array again to measure it. Shown by a
    chunk damaged after planning that the worker's task does not read: before, opening the
    array read every chunk and the task failed on it."""
    src, tgt = tmp_path / "src.zarr", tmp_path / "tgt.zarr"
    write(src, "str", 3)
    values, _ = values_of("str")
    oracle.ok("convert", src, tgt, "--chunks", "x=10", "--isel", "x=0:10", "--max-mem", "64MB",
              "--prepare", "--no-progress")
    work = tmp_path / "tgt.zarr.work"
    plan = json.loads((work / "plan.json").read_text())
    widths = {s["kind"].get("item_size") for s in plan["stages"]}
    assert widths == {4 + max(len(s.encode()) for s in values[:20])}, widths
    (src / "v" / "c" / "3").write_bytes(b"damaged after planning")
    oracle.ok("worker", "--plan", work, "--stage", plan["stages"][0]["name"], "--tasks", "0..1",
              "--no-progress")
    got = zarr.open_group(str(tgt), mode="r")["v"][:10]
    assert list(got) == list(values[:10])
