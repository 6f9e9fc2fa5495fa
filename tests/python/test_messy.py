"""Real collections are messy (issue 14): checks apply to the variables a conversion chooses. A
variable nobody asked for that is missing from one file, or differs between files, no longer
blocks `convert --variables`; without `--variables` the refusal names the variable, the file and
the flags that get around it. xarray's `open_mfdataset` of the same files is the oracle."""

from __future__ import annotations

import netCDF4
import numpy as np
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
