"""Real collections are messy (issue 14): checks apply to the variables a conversion chooses. A
variable nobody asked for that is missing from one file, or differs between files, no longer
blocks `convert --variables`; without `--variables` the refusal names the variable, the file and
the flags that get around it. xarray's `open_mfdataset` of the same files is the oracle."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

import oracle


def write_day(path, day: int, *, with_w: bool, station_height: float) -> None:
    """`v(time, x)` every day, with CF time bounds; `w(time, x)` only where `with_w`;
    `height(x)`, a static variable whose values change from file to file."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("x", 3)
        ds.createDimension("nv", 2)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2020-01-01"
        t.bounds = "time_bnds"
        t[:] = np.arange(2) + 2 * day
        b = ds.createVariable("time_bnds", "f8", ("time", "nv"))
        b[:] = np.stack([t[:], t[:] + 1], axis=1)
        ds.createVariable("x", "i4", ("x",))[:] = np.arange(3)
        v = ds.createVariable("v", "f4", ("time", "x"))
        v[:] = np.arange(6, dtype="f4").reshape(2, 3) + 10 * day
        if with_w:
            ds.createVariable("w", "f4", ("time", "x"))[:] = np.ones((2, 3))
        ds.createVariable("height", "f4", ("x",))[:] = np.full(3, station_height)


def collection(tmp_path):
    files = [tmp_path / f"d{i}.nc" for i in range(3)]
    for i, f in enumerate(files):
        write_day(f, i, with_w=i != 1, station_height=10.0 + i)
    return files


def convert(files, target, *extra):
    return oracle.run("convert", *files, target, "--chunks", "time=-1", "--max-mem", "64MB",
                      "--concat-dim", "time", "--no-progress", *extra)


def test_variables_not_asked_for_do_not_block_the_conversion(tmp_path):
    files = collection(tmp_path)
    target = tmp_path / "v.zarr"
    r = convert(files, target, "--variables", "v")
    assert r.returncode == 0, oracle.describe(r)
    got = xr.open_zarr(str(target)).load()
    # What an xarray user writes for "v of every file, along time".
    want = xr.concat([xr.open_dataset(f)[["v"]].load() for f in files], dim="time")
    assert sorted(got.data_vars) == ["v"]
    np.testing.assert_array_equal(got.v.values, want.v.values)
    np.testing.assert_array_equal(got.time.values, want.time.values)
    np.testing.assert_array_equal(got.x.values, want.x.values)


def test_a_variable_missing_from_one_file_is_refused_naming_it_and_the_way_around(tmp_path):
    files = collection(tmp_path)
    target = tmp_path / "all.zarr"
    r = convert(files, target, "--compat", "override")
    oracle.assert_one_error_line(r, codes={3}, mentions=["w", "d1.nc", "--variables"])
    assert not target.exists()
    # virtualize names its own way around it.
    r = oracle.run("virtualize", *files, "--output", tmp_path / "r.json", "--concat-dim", "time",
                   "--compat", "override", "--no-progress")
    oracle.assert_one_error_line(r, codes={3}, mentions=["w", "--drop w"])
    r = oracle.run("virtualize", *files, "--output", tmp_path / "r.json", "--concat-dim", "time",
                   "--compat", "override", "--drop", "w", "--no-progress")
    assert r.returncode == 0, oracle.describe(r)


# Per-file reference dates (issue 14, item 2) ------------------------------------------------

def write_hours_since_that_day(path, day: int, *, calendar: str, dtype: str, vary_unit=False):
    """A day of 6-hourly values whose time reads `hours since <that day>` (model output often
    does), with CF bounds; `vary_unit` writes the odd days in minutes instead."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("x", 2)
        ds.createDimension("nv", 2)
        t = ds.createVariable("time", dtype, ("time",))
        # Day `day` after 2021-02-27, spelled in the file's own calendar (Feb has 28 days in
        # standard 2021 and noleap, 30 in 360_day).
        month, dom = (2, 27 + day)
        limit = 30 if calendar == "360_day" else 28
        while dom > limit:
            month, dom = month + 1, dom - limit
            limit = 30 if calendar == "360_day" else 31
        minutes = vary_unit and day % 2 == 1
        t.units = f"{'minutes' if minutes else 'hours'} since 2021-{month:02d}-{dom:02d} 00:00:00"
        t.calendar = calendar
        t.bounds = "time_bnds"
        step = 360 if minutes else 6
        t[:] = np.arange(4) * step
        b = ds.createVariable("time_bnds", dtype, ("time", "nv"))
        b[:] = np.stack([t[:], t[:] + step], axis=1)
        ds.createVariable("v", "f4", ("time", "x"))[:] = (
            np.arange(8, dtype="f4").reshape(4, 2) + 100 * day)


def hours_collection(tmp_path, n=4, **kw):
    files = [tmp_path / f"h{i}.nc" for i in range(n)]
    for i, f in enumerate(files):
        write_hours_since_that_day(f, i, **kw)
    return files


def mfdataset(files):
    return xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load()


def assert_times_equal(got: xr.Dataset, want: xr.Dataset) -> None:
    np.testing.assert_array_equal(got.v.values, want.v.values)
    assert list(got.time.values) == list(want.time.values)
    assert list(got.time_bnds.values.ravel()) == list(want.time_bnds.values.ravel())


@pytest.mark.parametrize("calendar,dtype,vary_unit", [
    ("standard", "i4", False),
    ("noleap", "f8", False),
    ("360_day", "i8", True),
])
def test_per_file_reference_dates_are_rebased_like_open_mfdataset(tmp_path, calendar, dtype,
                                                                  vary_unit):
    files = hours_collection(tmp_path, calendar=calendar, dtype=dtype, vary_unit=vary_unit)
    want = mfdataset(files)
    target = tmp_path / "t.zarr"
    r = convert(files, target)
    assert r.returncode == 0, oracle.describe(r)
    got = xr.open_zarr(str(target), decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load()
    assert_times_equal(got, want)
    assert got.time.encoding["units"].startswith("hours since 2021-02-27")
    # References: the re-based coordinate and bounds are inlined.
    refs = tmp_path / "refs.json"
    r = oracle.run("virtualize", *files, "--output", refs, "--concat-dim", "time", "--no-progress")
    assert r.returncode == 0, oracle.describe(r)
    got = xr.open_dataset("reference://", engine="zarr", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
                          backend_kwargs={"storage_options": {"fo": str(refs)},
                                          "consolidated": False}).load()
    assert_times_equal(got, want)


def test_per_file_reference_dates_in_other_calendars_are_refused(tmp_path):
    files = hours_collection(tmp_path, n=2, calendar="standard", dtype="f8")
    with netCDF4.Dataset(files[1], "a") as ds:
        ds["time"].calendar = "noleap"
    r = convert(files, tmp_path / "t.zarr")
    oracle.assert_one_error_line(r, codes={3}, mentions=["calendar", "h1.nc"])
    assert not (tmp_path / "t.zarr").exists()


def test_files_given_out_of_order_are_ordered_by_their_rebased_times(tmp_path):
    files = hours_collection(tmp_path, calendar="standard", dtype="i4")
    target = tmp_path / "t.zarr"
    r = convert(list(reversed(files)), target)
    assert r.returncode == 0, oracle.describe(r)
    assert_times_equal(xr.open_zarr(str(target), decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load(), mfdataset(files))


# CF bounds and auxiliary coordinates (issue 14, item 5) --------------------------------------

def write_curvilinear_day(path, day: int) -> None:
    """A curvilinear grid as ocean and regional models write it: `v(time, y, x)` with 2-d
    auxiliary coordinates `lat(y, x)`/`lon(y, x)` named in its `coordinates` attribute, their
    bounds `lat_bnds(y, x, nv4)`, and `time_bnds(time, nv)` along the concat dimension."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("y", 3)
        ds.createDimension("x", 4)
        ds.createDimension("nv", 2)
        ds.createDimension("nv4", 4)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t.bounds = "time_bnds"
        t[:] = np.arange(2) + 2 * day + 0.5
        ds.createVariable("time_bnds", "f8", ("time", "nv"))[:] = np.stack(
            [t[:] - 0.5, t[:] + 0.5], axis=1)
        yy, xx = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
        lat = ds.createVariable("lat", "f4", ("y", "x"))
        lat.units, lat.standard_name, lat.bounds = "degrees_north", "latitude", "lat_bnds"
        lat[:] = 40 + yy + 0.1 * xx
        lon = ds.createVariable("lon", "f4", ("y", "x"))
        lon.units, lon.standard_name = "degrees_east", "longitude"
        lon[:] = -10 + xx + 0.1 * yy
        ds.createVariable("lat_bnds", "f4", ("y", "x", "nv4"))[:] = (
            lat[:][..., None] + np.array([-0.5, -0.5, 0.5, 0.5], dtype="f4"))
        v = ds.createVariable("v", "f4", ("time", "y", "x"))
        v.coordinates = "lat lon"
        v[:] = np.arange(24, dtype="f4").reshape(2, 3, 4) + 100 * day


def test_bounds_and_auxiliary_coordinates_follow_their_coordinate(tmp_path):
    files = [tmp_path / f"c{i}.nc" for i in range(3)]
    for i, f in enumerate(files):
        write_curvilinear_day(f, i)
    want = xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override", decode_coords="all").load()
    target = tmp_path / "c.zarr"
    r = convert(files, target)
    assert r.returncode == 0, oracle.describe(r)
    refs = tmp_path / "c.json"
    r = oracle.run("virtualize", *files, "--output", refs, "--concat-dim", "time", "--no-progress")
    assert r.returncode == 0, oracle.describe(r)
    opened = {
        "convert": xr.open_zarr(str(target), decode_coords="all"),
        "virtualize": xr.open_dataset("reference://", engine="zarr", decode_coords="all",
                                      backend_kwargs={"storage_options": {"fo": str(refs)},
                                                      "consolidated": False}),
    }
    for how, got in opened.items():
        got = got.load()
        # The same coordinates (aux and bounds included) and data variables as xarray's.
        assert sorted(got.coords) == sorted(want.coords), how
        assert sorted(got.data_vars) == sorted(want.data_vars), how
        for name in ["lat", "lon", "lat_bnds", "time_bnds", "time", "v"]:
            assert got[name].dims == want[name].dims, (how, name)
            np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=how)
        # xarray moves `bounds` into the encoding when it decodes the bounds as coordinates.
        assert got.lat.encoding["bounds"] == want.lat.encoding["bounds"] == "lat_bnds", how
    # An auxiliary coordinate that differs between files is refused like any static variable.
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        write_curvilinear_day(bad / f"c{i}.nc", i)
    with netCDF4.Dataset(bad / "c2.nc", "a") as ds:
        ds["lat"][0, 0] = -99
    r = convert(sorted(bad.glob("*.nc")), tmp_path / "d.zarr")
    oracle.assert_one_error_line(r, codes={3}, mentions=["lat", "c2.nc", "--compat override"])


# Per-file fill values and packing under --decode-cf (issue 14, item 3) ----------------------

def write_encoded_day(path, day: int, *, fill: float, scale: float, missing=None) -> None:
    """`t(time, x)` packed in int16 with this file's own scale and `_FillValue` (and maybe a
    `missing_value`), and a float `p(time, x)` with this file's own `_FillValue`; one masked
    element in each."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("x", 3)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2020-01-01"
        t[:] = np.arange(2) + 2 * day
        packed = ds.createVariable("t", "i2", ("time", "x"), fill_value=int(fill))
        packed.scale_factor = np.float32(scale)
        packed.add_offset = np.float32(250.0)
        if missing is not None:
            packed.missing_value = np.int16(missing)
        raw = (np.arange(6).reshape(2, 3) * 7 + day).astype("i2")
        raw[1, day % 3] = int(fill)
        if missing is not None:
            raw[0, 2] = missing
        packed.set_auto_maskandscale(False)
        packed[:] = raw
        p = ds.createVariable("p", "f4", ("time", "x"), fill_value=np.float32(fill))
        values = np.arange(6, dtype="f4").reshape(2, 3) + 10 * day
        values[0, day % 3] = fill
        p.set_auto_mask(False)
        p[:] = values


def test_per_file_fill_values_and_packing_decode_like_open_mfdataset(tmp_path):
    files = [tmp_path / f"e{i}.nc" for i in range(3)]
    write_encoded_day(files[0], 0, fill=-999, scale=0.01)
    write_encoded_day(files[1], 1, fill=-9999, scale=0.02, missing=-1)
    write_encoded_day(files[2], 2, fill=-999, scale=0.01)
    want = xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override").load()
    assert np.isnan(want.t.values).sum() == 4 and np.isnan(want.p.values).sum() == 3
    target = tmp_path / "e.zarr"
    r = convert(files, target, "--decode-cf")
    assert r.returncode == 0, oracle.describe(r)
    got = xr.open_zarr(str(target)).load()
    for name in ("t", "p"):
        np.testing.assert_array_equal(got[name].values, want[name].values.astype(got[name].dtype))
        # Decoded in the type xarray decodes in, whatever each file's packing.
        assert got[name].dtype == want[name].dtype, name
    # Without --decode-cf (and in references) one array cannot hold several encodings: refused,
    # saying why and the way around it.
    r = convert(files, tmp_path / "raw.zarr")
    oracle.assert_one_error_line(r, codes={3}, mentions=["e1.nc", "--decode-cf"])
    r = oracle.run("virtualize", *files, "--output", tmp_path / "r.json", "--concat-dim", "time",
                   "--no-progress")
    oracle.assert_one_error_line(r, codes={3}, mentions=["e1.nc", "references cannot"])


@pytest.mark.parametrize("extra,pick", [
    (["--isel", "time=1:5"], dict(time=slice(1, 5))),
    (["--reverse", "time"], dict(time=slice(None, None, -1))),
    (["--isel", "time=1:6", "--reverse", "time", "--cast", "t=float32"],
     dict(time=slice(5, 0, -1))),
])
def test_per_file_decoding_follows_selections(tmp_path, extra, pick):
    files = [tmp_path / f"e{i}.nc" for i in range(3)]
    write_encoded_day(files[0], 0, fill=-999, scale=0.01)
    write_encoded_day(files[1], 1, fill=-9999, scale=0.02, missing=-1)
    write_encoded_day(files[2], 2, fill=-999, scale=0.01)
    want = xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                             coords="minimal", compat="override").load().isel(**pick)
    target = tmp_path / "e.zarr"
    r = convert(files, target, "--decode-cf", *extra)
    assert r.returncode == 0, oracle.describe(r)
    got = xr.open_zarr(str(target)).load()
    for name in ("t", "p"):
        np.testing.assert_array_equal(got[name].values, want[name].values.astype(got[name].dtype))
    np.testing.assert_array_equal(got.time.values, want.time.values)
