"""Files with groups: `chunkmill convert` writes every group's metadata (with the file's group
attributes) and consolidates it, so the target opens in zarr-python and xarray with no flags, and
each group reads equal to `xarray.open_dataset(file, group=…)` of the same files."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import oracle


def write_grouped(path, day: int) -> None:
    """`/v` at the root, `/sub/w` and `/sub/deeper/x` below, each group with an attribute."""
    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    ds.title = "root"
    ds.createDimension("time", None)
    ds.createDimension("y", 4)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "days since 2020-01-01"
    t[:] = np.arange(3) + 3 * day
    v = ds.createVariable("v", "f4", ("time", "y"), zlib=True, chunksizes=(1, 4))
    v[:] = np.arange(12, dtype="f4").reshape(3, 4) + 100 * day
    sub = ds.createGroup("sub")
    sub.purpose = "a subgroup"
    w = sub.createVariable("w", "i4", ("time", "y"))
    w[:] = np.arange(12, dtype="i4").reshape(3, 4) * (day + 1)
    deeper = sub.createGroup("deeper")
    deeper.level = np.int32(2)
    x = deeper.createVariable("x", "f8", ("y",))
    x[:] = np.linspace(0, 1, 4)
    ds.close()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_convert_of_a_file_with_groups_writes_every_group(tmp_path, zarr_format):
    src = tmp_path / "g.nc"
    write_grouped(src, 0)
    target = tmp_path / "g.zarr"
    oracle.ok("convert", src, target, "--chunks", "time=-1", "--max-mem", "64MB",
              "--zarr-format", zarr_format, "--no-progress")
    # zarr-python: consolidated (the default) and not.
    for consolidated in (True, False):
        root = zarr.open_group(str(target), mode="r", use_consolidated=consolidated)
        assert root.attrs["title"] == "root"
        assert root["sub"].attrs["purpose"] == "a subgroup"
        assert root["sub/deeper"].attrs["level"] == 2
        np.testing.assert_array_equal(root["sub/w"][:], np.arange(12).reshape(3, 4))
    # xarray, group by group, against netCDF4's reading of the file.
    for group in (None, "sub", "sub/deeper"):
        got = xr.open_zarr(str(target), group=group).load()
        want = xr.open_dataset(src, group=group, engine="netcdf4").load()
        xr.testing.assert_equal(got, want)
        assert got.attrs == want.attrs


def test_collection_with_groups_converts_and_reads_back(tmp_path):
    files = [tmp_path / f"d{i}.nc" for i in range(2)]
    for i, f in enumerate(files):
        write_grouped(f, i)
    target = tmp_path / "c.zarr"
    oracle.ok("convert", *files, target, "--chunks", "time=-1", "--max-mem", "64MB",
              "--concat-dim", "time", "--no-progress")
    root = xr.open_zarr(str(target)).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    xr.testing.assert_equal(root, want)
    sub = xr.open_zarr(str(target), group="sub").load()
    np.testing.assert_array_equal(
        sub["w"].values, np.concatenate([np.arange(12).reshape(3, 4) * (i + 1) for i in range(2)])
    )


# --group PATH (issue 14): one group of the inputs becomes the output's root ------------------

def test_convert_group_equals_open_dataset_group(tmp_path):
    files = [tmp_path / f"g{d}.nc" for d in range(2)]
    for d, f in enumerate(files):
        write_grouped(f, d)
    target = tmp_path / "sub.zarr"
    r = oracle.run("convert", *files, target, "--group", "/sub", "--concat-dim", "time",
                   "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress")
    assert r.returncode == 0, oracle.describe(r)
    want = xr.open_mfdataset(files, group="sub", combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override").load()
    got = xr.open_zarr(str(target)).load()
    assert sorted(got.data_vars) == ["w"]
    np.testing.assert_array_equal(got.w.values, want.w.values)
    assert got.attrs["purpose"] == "a subgroup"
    # The group's subgroups come along, below the new root.
    deeper = xr.open_zarr(str(target), group="deeper").load()
    np.testing.assert_array_equal(deeper.x.values,
                                  xr.open_dataset(files[0], group="sub/deeper").x.values)
    assert "v" not in zarr.open_group(str(target), mode="r")


def test_virtualize_group_equals_open_dataset_group(tmp_path):
    src = tmp_path / "g.nc"
    write_grouped(src, 0)
    refs = tmp_path / "sub.json"
    r = oracle.run("virtualize", src, "--output", refs, "--group", "sub/deeper", "--no-progress")
    assert r.returncode == 0, oracle.describe(r)
    got = xr.open_dataset("reference://", engine="zarr",
                          backend_kwargs={"storage_options": {"fo": str(refs)},
                                          "consolidated": False}).load()
    xr.testing.assert_identical(got, xr.open_dataset(src, group="sub/deeper").load())


def test_an_unknown_group_is_refused_naming_the_groups_there_are(tmp_path):
    src = tmp_path / "g.nc"
    write_grouped(src, 0)
    for args in (["convert", src, tmp_path / "t.zarr", "--chunks", "time=-1"],
                 ["virtualize", src, "--output", tmp_path / "r.json"]):
        r = oracle.run(*args, "--group", "sbu", "--no-progress")
        oracle.assert_one_error_line(r, codes={2}, mentions=["sbu", "/sub", "/sub/deeper"])
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "r.json").exists()


def test_convert_group_of_a_zarr_store(tmp_path):
    src = tmp_path / "g.nc"
    write_grouped(src, 0)
    whole = tmp_path / "all.zarr"
    oracle.ok("convert", src, whole, "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress")
    part = tmp_path / "sub.zarr"
    oracle.ok("convert", whole, part, "--group", "sub", "--chunks", "time=1", "--max-mem", "64MB",
              "--no-progress")
    xr.testing.assert_identical(xr.open_zarr(str(part)).load(),
                                xr.open_zarr(str(whole), group="sub").load())
    r = oracle.run("convert", whole, tmp_path / "x.zarr", "--group", "nope", "--chunks", "time=1",
                   "--no-progress")
    oracle.assert_one_error_line(r, codes={2}, mentions=["nope"])
