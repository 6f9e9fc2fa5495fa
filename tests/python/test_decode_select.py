"""Issue 9, items 8, 9, 10 and 13: CF decoding with xarray's data types and bit-identical values,
attributes with their stored types, casts that would wrap, partial-date selections as pandas
reads them, plans checked when a worker reads them, and every check made before anything is
written. The oracle is xarray/numpy on the same files (netCDF4-python writes them)."""

from __future__ import annotations

import json
import os
import subprocess

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import oracle

N = 40


def packed_file(path, dtype, scale, offset, *, fill=True, data=None, attrs=None) -> None:
    """One variable `v` (dtype) with scale_factor/add_offset of the given numpy scalar types."""
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("x", N)
    x = ds.createVariable("x", "f8", ("x",))
    x[:] = np.arange(N)
    fill = (7 if np.dtype(dtype).kind == "u" else -7) if fill else None
    fill_value = np.array(fill, dtype=dtype).item() if fill is not None else False
    v = ds.createVariable("v", dtype, ("x",), fill_value=fill_value)
    v.set_auto_maskandscale(False)
    if scale is not None:
        v.scale_factor = scale
    if offset is not None:
        v.add_offset = offset
    for k, value in (attrs or {}).items():
        v.setncattr(k, value)
    if data is None:
        rng = np.random.default_rng(3)
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        lo, hi = (max(info.min, -30000), min(info.max, 30000)) if info else (-3e4, 3e4)
        data = rng.uniform(lo, hi, N).astype(dtype)
        if fill is not None:
            data[[2, 5]] = fill
    v[:] = data
    ds.close()


def convert(inputs, target, *extra):
    return oracle.run("convert", inputs, target, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress", *extra)


def bits(a: np.ndarray) -> np.ndarray:
    """The bytes of every element, so that NaN payloads and signed zeros are compared too."""
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


# The cases of xarray's _choose_float_dtype: (stored type, scale_factor, add_offset).
DECODE_CASES = {
    "int16_float32_scale_offset": ("i2", np.float32(0.1), np.float32(250.0)),
    "int16_float32_scale_only": ("i2", np.float32(0.01), None),
    "int16_float64_that_look_float32": ("i2", np.float64(0.5), np.float64(250.0)),
    "int32_float32_scale_offset": ("i4", np.float32(0.1), np.float32(2.0)),
    "int32_float32_scale_only": ("i4", np.float32(0.1), None),
    "int8_float32_offset_only": ("i1", None, np.float32(3.0)),
    "uint8_float32_scale_offset": ("u1", np.float32(0.2), np.float32(1.0)),
    "float64_float32_scale_offset": ("f8", np.float32(0.1), np.float32(1.0)),
    "int16_mixed_scale_offset_types": ("i2", np.float32(0.1), np.float64(1.0)),
    "int16_fill_only": ("i2", None, None),
    "int32_fill_only": ("i4", None, None),
}


@pytest.mark.parametrize("case", sorted(DECODE_CASES))
@pytest.mark.parametrize("cast", [None, "float32", "float64"])
def test_decode_cf_dtype_and_values_equal_xarray(tmp_path, case, cast):
    """Item 8: `--decode-cf` gives xarray's decoded data type (float32 for int16 packed with
    float32 scale_factor/add_offset, which gave float64 before) and the same bits, also cast."""
    dtype, scale, offset = DECODE_CASES[case]
    src = tmp_path / "p.nc"
    packed_file(src, dtype, scale, offset)
    want = xr.open_dataset(src)["v"].values
    if cast:
        want = want.astype(cast)
    target = tmp_path / "d.zarr"
    extra = ["--cast", f"v={cast}"] if cast else []
    oracle.ok("convert", src, target, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress", "--decode-cf", *extra)
    got = zarr.open_group(str(target), mode="r")["v"][...]
    assert got.dtype == want.dtype, f"{case}: {got.dtype} != xarray's {want.dtype}"
    np.testing.assert_array_equal(bits(got), bits(want))


def test_decode_cf_float32_cast_has_no_ulp_differences(tmp_path):
    """Item 8: with `--cast float32` the values were 1 ulp off xarray's for int16 packed with
    float32 scale/offset (computed in float64 and rounded once, where xarray computes in float32)."""
    src = tmp_path / "p.nc"
    data = np.arange(-20000, 20000, 1000, dtype="i2")[:N]
    packed_file(src, "i2", np.float32(0.0123), np.float32(273.15), fill=False, data=data)
    want = xr.open_dataset(src)["v"].values.astype("float32")
    f64 = data.astype("f8") * float(np.float32(0.0123)) + float(np.float32(273.15))
    assert (f64.astype("f4") != want).any(), "the data must tell the two computations apart"
    target = tmp_path / "c.zarr"
    oracle.ok("convert", src, target, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress",
              "--decode-cf", "--cast", "v=float32")
    np.testing.assert_array_equal(bits(zarr.open_group(str(target), mode="r")["v"][...]), bits(want))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_float32_attributes_written_as_xarray_writes_them(tmp_path, zarr_format):
    """Item 8: a float32 attribute (scale_factor 0.1f) is the JSON number xarray's to_zarr
    writes (0.10000000149011612), not the shortest decimal 0.1, which is another float64."""
    src = tmp_path / "p.nc"
    packed_file(src, "i2", np.float32(0.1), np.float32(250.3),
                attrs={"valid_range": np.array([-3e4, 3e4], "f4"), "note_scale": np.float32(1.1)})
    target = tmp_path / "a.zarr"
    oracle.ok("convert", src, target, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress",
              "--zarr-format", zarr_format)
    ref = tmp_path / "ref.zarr"
    xr.open_dataset(src, mask_and_scale=False).to_zarr(ref, zarr_format=zarr_format, consolidated=False)
    name = ".zattrs" if zarr_format == 2 else "zarr.json"
    ours = json.loads((target / "v" / name).read_text())
    theirs = json.loads((ref / "v" / name).read_text())
    if zarr_format == 3:
        ours, theirs = ours["attributes"], theirs["attributes"]
    for key in ("scale_factor", "add_offset", "valid_range", "note_scale"):
        assert ours[key] == theirs[key], key
    assert ours["scale_factor"] == 0.10000000149011612


def test_cast_air_int8_that_would_wrap_is_refused_before_writing(tmp_path):
    """Item 14 (`--cast air=int8` wrapped 280 → 24 silently): a cast into an integer type
    that cannot hold every value the variable may have is refused before anything is written,
    naming the variable, the range and the type."""
    src = tmp_path / "p.nc"
    data = np.array([3000] * N, "i2")  # 280 K once unpacked
    packed_file(src, "i2", np.float64(0.01), np.float64(250.0), fill=False, data=data)
    target = tmp_path / "w.zarr"
    r = convert(src, target, "--decode-cf", "--cast", "v=int8")
    assert r.returncode == 3, oracle.describe(r)
    assert "v" in r.stderr and "int8" in r.stderr and "577" in r.stderr, r.stderr
    assert not target.exists() and not (tmp_path / "w.zarr.work").exists()
    # int16 holds every unpacked value (-77.67 … 577.67): allowed, numpy's truncation.
    ok = tmp_path / "ok.zarr"
    oracle.ok("convert", src, ok, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress",
              "--decode-cf", "--cast", "v=int16")
    want = xr.open_dataset(src)["v"].values.astype("int16")
    np.testing.assert_array_equal(zarr.open_group(str(ok), mode="r")["v"][...], want)


def test_cast_float_to_int_needs_a_stated_range(tmp_path):
    """Floats have no range of their own: a cast to an integer type is refused unless
    valid_range/actual_range says the values fit; then it equals numpy's astype."""
    src = tmp_path / "f.nc"
    data = np.linspace(-100.7, 100.7, N).astype("f4")
    packed_file(src, "f4", None, None, fill=False, data=data)
    r = convert(src, tmp_path / "n.zarr", "--cast", "v=int16")
    assert r.returncode == 3 and "valid_range" in r.stderr, oracle.describe(r)
    assert not (tmp_path / "n.zarr").exists()
    ranged = tmp_path / "r.nc"
    packed_file(ranged, "f4", None, None, fill=False, data=data,
                attrs={"actual_range": np.array([-100.7, 100.7], "f4")})
    target = tmp_path / "y.zarr"
    oracle.ok("convert", ranged, target, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress",
              "--cast", "v=int8")
    np.testing.assert_array_equal(zarr.open_group(str(target), mode="r")["v"][...], data.astype("int8"))


# ----------------------------------------------------------------------------------------------
# Item 9: partial dates


def hourly_file(path, *, hours=24 * 12, start="2020-01-01", calendar="standard", descending=False,
                step_minutes=60) -> None:
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("time", hours)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = f"minutes since {start}"
    t.calendar = calendar
    values = np.arange(hours) * step_minutes
    t[:] = values[::-1] if descending else values
    v = ds.createVariable("v", "f4", ("time",))
    v[:] = np.arange(hours, dtype="f4")
    ds.close()


PARTIAL = [
    ("2020-01-03", "2020-01-10"),  # days: the whole of Jan 10 (the case)
    ("2020-01", "2020-01"),  # a month
    ("2020", None),  # a year, open end
    (None, "2020-01"),  # a month as the stop
    ("2020-01-02", "2020-01-02"),  # one day
    (None, "2020-01-02T05"),  # an hour
    ("2020-01-02T05:30", "2020-01-02T07:45"),  # minutes
    ("2020-01-02T05:30:00", "2020-01-02T07:45:00"),  # seconds
]


@pytest.mark.parametrize("start,stop", PARTIAL)
def test_select_time_partial_date_bounds_equal_xarray(tmp_path, start, stop):
    src = tmp_path / "h.nc"
    hourly_file(src, step_minutes=15, hours=4 * 24 * 12)
    target = tmp_path / "s.zarr"
    spec = f"time={start or ''}:{stop or ''}"
    oracle.ok("convert", src, target, "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress", "--select", spec)
    want = xr.open_dataset(src).sel(time=slice(start, stop))
    got = oracle.open_xr_no_flags(target).load()
    assert got.sizes["time"] == want.sizes["time"] > 0
    xr.testing.assert_identical(got, want)


def test_select_time_stop_keeps_the_whole_last_day_on_hourly_data(tmp_path):
    src = tmp_path / "h.nc"
    hourly_file(src)
    target = tmp_path / "d.zarr"
    oracle.ok("convert", src, target, "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress",
              "--select", "time=2020-01-03:2020-01-10")
    got = oracle.open_xr_no_flags(target)
    assert str(got.time.values[-1])[:16] == "2020-01-10T23:00"
    xr.testing.assert_identical(got.load(), xr.open_dataset(src).sel(time=slice("2020-01-03", "2020-01-10")))


def test_select_time_partial_dates_on_a_descending_coordinate(tmp_path):
    """xarray refuses date strings on a descending time index; chunkmill selects the instants
    xarray selects on the same coordinate sorted ascending, in the coordinate's order."""
    src = tmp_path / "down.nc"
    hourly_file(src, descending=True)
    target = tmp_path / "down.zarr"
    oracle.ok("convert", src, target, "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress",
              "--select", "time=2020-01-10:2020-01-03")
    want = (xr.open_dataset(src).sortby("time").sel(time=slice("2020-01-03", "2020-01-10"))
            .isel(time=slice(None, None, -1)))
    assert want.sizes["time"] == 8 * 24
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)


def test_select_time_partial_dates_in_a_noleap_calendar(tmp_path):
    src = tmp_path / "nl.nc"
    hourly_file(src, hours=24 * 70, calendar="noleap")
    target = tmp_path / "nl.zarr"
    oracle.ok("convert", src, target, "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress",
              "--select", "time=2020-02:2020-02-28")
    cftime = xr.coders.CFDatetimeCoder(use_cftime=True)
    want = xr.open_dataset(src, decode_times=cftime).sel(time=slice("2020-02", "2020-02-28"))
    got = xr.open_zarr(target, decode_times=cftime).load()
    assert got.sizes["time"] == want.sizes["time"] == 28 * 24
    np.testing.assert_array_equal(got["v"].values, want["v"].values)


# ----------------------------------------------------------------------------------------------
# Item 13: every check before the first write


def nothing_written(tmp_path, target) -> None:
    assert not target.exists(), f"{target} was created"
    assert not list(tmp_path.glob("*.work")), "a work dir was created"


@pytest.mark.parametrize("codec", ["zstd:99", "zstd:23", "gzip:10", "blosc:lz5:5", "blosc:lz4:10", "blosc", "lz4"])
def test_codec_zstd_99_refused_at_argument_time(tmp_path, codec):
    src = tmp_path / "p.nc"
    packed_file(src, "i2", None, None)
    target = tmp_path / "c.zarr"
    r = convert(src, target, "--codec", codec)
    assert r.returncode == 2 and "--codec" in r.stderr, oracle.describe(r)
    nothing_written(tmp_path, target)


def two_variables(path) -> None:
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("x", N)
    ds.createDimension("y", 3)
    for name in ("air", "precip"):
        v = ds.createVariable(name, "f4", ("x", "y"))
        v[:] = np.ones((N, 3))
    ds.close()


@pytest.mark.parametrize("renames,code", [
    (["air=precip"], 3),  # precip exists
    (["air=rain", "precip=rain"], 3),  # two renames to one name
    (["x=y"], 3),  # a dimension renamed to another's name
    (["air=../escape"], 2),  # not a plain name
    (["air=a", "air=b"], 2),  # renamed twice
])
def test_rename_air_precip_when_precip_exists_refused_before_writing(tmp_path, renames, code):
    src = tmp_path / "two.nc"
    two_variables(src)
    target = tmp_path / "r.zarr"
    args = [a for r in renames for a in ("--rename", r)]
    r = convert(src, target, *args)
    assert r.returncode == code and "--rename" in r.stderr, oracle.describe(r)
    nothing_written(tmp_path, target)
    assert not (tmp_path / "escape").exists()
    # Dropping the variable that held the name makes it free, as in xarray.
    if renames == ["air=precip"]:
        oracle.ok("convert", src, target, "--chunks", "x=-1", "--max-mem", "64MB", "--no-progress",
                  "--drop", "precip", "--rename", "air=precip")
        want = xr.open_dataset(src).drop_vars("precip").rename(air="precip")
        xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)


@pytest.mark.parametrize("where", ["missing/r.html", "."])
def test_report_parent_missing_refused_before_the_job_runs(tmp_path, where):
    src = tmp_path / "p.nc"
    packed_file(src, "i2", None, None)
    target = tmp_path / "rep.zarr"
    r = convert(src, target, "--report", tmp_path / where)
    assert r.returncode == 3 and "--report" in r.stderr, oracle.describe(r)
    nothing_written(tmp_path, target)


def test_virtualize_output_parent_missing_refused_before_scanning(tmp_path):
    src = tmp_path / "p.nc"
    packed_file(src, "i2", None, None)
    out = tmp_path / "missing" / "refs.json"
    r = oracle.run("virtualize", src, "--output", out, "--no-progress")
    assert r.returncode == 3 and "does not exist" in r.stderr, oracle.describe(r)
    assert not (tmp_path / "missing").exists()


def test_selection_outside_the_coordinate_refused_before_writing(tmp_path):
    src = tmp_path / "h.nc"
    hourly_file(src)
    target = tmp_path / "e.zarr"
    r = convert(src, target, "--select", "time=2021-01-01:2021-02-01")
    assert r.returncode == 3 and "selects nothing" in r.stderr, oracle.describe(r)
    nothing_written(tmp_path, target)


# ----------------------------------------------------------------------------------------------
# Item 10: plans checked when read


def zarr_source(path, fill: float) -> None:
    arr = zarr.create_array(str(path), shape=(64, 8), chunks=(4, 8), dtype="f4", zarr_format=3)
    arr[...] = np.full((64, 8), fill, "f4")


def prepared(tmp_path):
    """A rechunk prepared from `tmp_path/a` with relative paths, and its plan."""
    a = tmp_path / "a"
    a.mkdir()
    zarr_source(a / "src.zarr", 1.0)
    r = subprocess.run([str(oracle.chunkmill_bin()), "rechunk", "src.zarr", "t.zarr", "--chunks", "64,8",
                        "--max-mem", "64MB", "--no-progress", "--work-dir", "work", "--prepare"],
                       cwd=a, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return a, json.loads((a / "work" / "plan.json").read_text())


def worker(plan_dir, stage, cwd, tasks="0..1"):
    return subprocess.run([str(oracle.chunkmill_bin()), "worker", "--plan", str(plan_dir), "--stage", stage,
                           "--tasks", tasks, "--no-progress"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_prepare_stores_absolute_paths_a_worker_elsewhere_reads_the_same_source(tmp_path):
    a, plan = prepared(tmp_path)
    urls = json.dumps(plan)
    assert str(a / "src.zarr") in urls and str(a / "t.zarr") in urls
    # Another directory with another src.zarr: the worker must still read a/src.zarr.
    b = tmp_path / "b"
    b.mkdir()
    zarr_source(b / "src.zarr", 9.0)
    status = json.loads(oracle.ok("status", a / "work", "--json").stdout)
    for stage in status["stages"]:
        r = worker(a / "work", stage["name"], b, f"0..{stage['tasks']}")
        assert r.returncode == 0, r.stderr
    assert not (b / "t.zarr").exists()
    np.testing.assert_array_equal(zarr.open_array(str(a / "t.zarr"))[...], np.ones((64, 8), "f4"))


def edit_plan(a, plan, edit) -> dict:
    plan = json.loads(json.dumps(plan))
    edit(plan)
    (a / "work" / "plan.json").write_text(json.dumps(plan))
    return plan


def copy_stage(plan):
    return plan["stages"][0]["kind"]


@pytest.mark.parametrize("name,edit,field", [
    ("block_size_0", lambda p: copy_stage(p)["blocks"]["axes"][0].update(size=0), "chunk size 0"),
    ("blocks_not_aligned", lambda p: copy_stage(p)["blocks"]["axes"][0].update(size=3), "blocks"),
    ("stage_name_dotdot", lambda p: p["stages"][0].update(name="../../evil"), "stages[0].name"),
    ("stage_name_slash", lambda p: p["stages"][0].update(name="a/b"), "stages[0].name"),
    ("zarr_path_escapes", lambda p: copy_stage(p)["output"].update(path="../x"), "output"),
    ("cleanup_everything", lambda p: p["cleanup"].append([p["stages"][0]["kind"]["output"]["url"], ""]), "cleanup"),
])
def test_hand_edited_plan_is_refused_by_worker(tmp_path, name, edit, field):
    a, plan = prepared(tmp_path)
    stage = plan["stages"][0]["name"]
    if name == "blocks_not_aligned":
        out = copy_stage(plan)["output"]["grid"]["axes"][0]
        assert out["size"] % 3 != 0
    edited = edit_plan(a, plan, edit)
    before = sorted(p for p in tmp_path.rglob("*") if p.name != "plan.json")
    r = worker(a / "work", edited["stages"][0]["name"] if name.startswith("stage") else stage, a)
    assert r.returncode == 3 and field in r.stderr, f"{name}: {r.returncode} {r.stderr}"
    assert r.stderr.strip().count("\n") == 0
    assert sorted(p for p in tmp_path.rglob("*") if p.name != "plan.json") == before
    assert not (tmp_path / "evil").exists()


def test_relative_urls_in_a_plan_are_resolved_against_its_directory(tmp_path):
    a, plan = prepared(tmp_path)

    def relative(p):
        for stage in p["stages"]:
            for side in ("input", "output"):
                end = stage["kind"][side]
                end["url"] = os.path.relpath(end["url"], a / "work")
    edited = edit_plan(a, plan, relative)
    b = tmp_path / "b"
    b.mkdir()
    zarr_source(b / "src.zarr", 9.0)
    status = json.loads(oracle.ok("status", a / "work", "--json").stdout)
    assert [s["name"] for s in status["stages"]] == [s["name"] for s in edited["stages"]]
    for stage in status["stages"]:
        r = worker(a / "work", stage["name"], b, f"0..{stage['tasks']}")
        assert r.returncode == 0, r.stderr
    assert not (b / "t.zarr").exists()
    np.testing.assert_array_equal(zarr.open_array(str(a / "t.zarr"))[...], np.ones((64, 8), "f4"))
