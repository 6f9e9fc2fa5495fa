"""`chunkmill virtualize` from the command line: the references it writes, read by xarray
through fsspec's reference filesystem, must equal xarray.open_mfdataset of the files; bad
inputs give one error line, a non-zero exit and no output."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

import oracle


def write_day(path, day: int, scale: float = 0.01, dtype="i2") -> None:
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("time", None)
    ds.createDimension("lat", 12)
    ds.createDimension("lon", 20)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2020-01-01"
    t.calendar = "standard"
    lat = ds.createVariable("lat", "f4", ("lat",))
    lat[:] = np.linspace(55, -55, 12)  # descending, as archives often are
    lon = ds.createVariable("lon", "f4", ("lon",))
    lon[:] = np.arange(20) * 18.0
    air = ds.createVariable("air", dtype, ("time", "lat", "lon"), zlib=True, shuffle=True,
                            chunksizes=(6, 12, 10), fill_value=-32767)
    air.scale_factor = scale
    air.add_offset = 250.0
    air.units = "K"
    rng = np.random.default_rng(day)
    t[:] = np.arange(24) + 24 * day
    values = 250 + 30 * rng.random((24, 12, 20))
    mask = np.zeros(values.shape, bool)
    mask[0, 0, :3] = True  # stored as the fill value, read back as NaN
    air[:] = np.ma.array(values, mask=mask)
    ds.title = "chunkmill virtualize test"
    ds.close()


def open_refs(path) -> xr.Dataset:
    return xr.open_dataset(
        "reference://", engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": {"fo": str(path)}},
    )


def test_references_equal_open_mfdataset(tmp_path):
    files = [tmp_path / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write_day(f, d)
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", refs, "--concat-dim", "time", "--no-progress")
    got = open_refs(refs).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    xr.testing.assert_identical(got, want)
    assert got.air.encoding["scale_factor"] == 0.01


def test_bad_file_is_named_and_skip_bad_continues(tmp_path):
    write_day(tmp_path / "day0.nc", 0)
    (tmp_path / "junk.nc").write_text("this is not netcdf")
    refs = tmp_path / "refs.json"
    r = oracle.run("virtualize", tmp_path / "day0.nc", tmp_path / "junk.nc", "--output", refs, "--concat-dim", "time")
    assert r.returncode == 3, oracle.describe(r)
    assert r.stderr.strip().count("\n") == 0 and "junk.nc" in r.stderr and "not an HDF5 or NetCDF" in r.stderr
    assert not refs.exists()
    r = oracle.ok("virtualize", tmp_path / "day0.nc", tmp_path / "junk.nc", "--output", refs,
                  "--concat-dim", "time", "--skip-bad", "--json")
    assert "junk.nc" in r.stderr
    got = open_refs(refs).load()
    xr.testing.assert_identical(got, xr.open_dataset(tmp_path / "day0.nc").load())


@pytest.mark.parametrize("change", ["scale_factor", "dtype"])
def test_inconsistent_files_are_refused(tmp_path, change):
    write_day(tmp_path / "day0.nc", 0)
    if change == "scale_factor":
        write_day(tmp_path / "day1.nc", 1, scale=0.02)
    else:
        write_day(tmp_path / "day1.nc", 1, dtype="i4")
    refs = tmp_path / "refs.json"
    r = oracle.run("virtualize", tmp_path / "day0.nc", tmp_path / "day1.nc", "--output", refs, "--concat-dim", "time")
    assert r.returncode == 3, oracle.describe(r)
    assert "day1.nc" in r.stderr and ("scale_factor" in r.stderr or "dtype" in r.stderr or "int" in r.stderr), r.stderr
    assert not refs.exists()


def test_existing_output_needs_overwrite(tmp_path):
    write_day(tmp_path / "day0.nc", 0)
    refs = tmp_path / "refs.json"
    refs.write_text("keep me")
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", refs)
    assert r.returncode != 0 and "--overwrite" in r.stderr
    assert refs.read_text() == "keep me"
    oracle.ok("virtualize", tmp_path / "day0.nc", "--output", refs, "--overwrite")
    xr.testing.assert_identical(open_refs(refs).load(), xr.open_dataset(tmp_path / "day0.nc").load())


def test_inspect_netcdf_and_references(tmp_path):
    import json

    import h5py

    write_day(tmp_path / "day0.nc", 0)
    write_day(tmp_path / "day1.nc", 1)
    doc = json.loads(oracle.ok("inspect", tmp_path / "day0.nc", "--json").stdout)
    air = next(v for v in doc["variables"] if v["path"] == "/air")
    with h5py.File(tmp_path / "day0.nc") as f:
        assert air["shape"] == list(f["air"].shape)
        assert air["chunk_shape"] == list(f["air"].chunks)
        assert air["byte_ranges"] == f["air"].id.get_num_chunks()
    assert air["dimensions"] == ["time", "lat", "lon"]
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", tmp_path / "day0.nc", tmp_path / "day1.nc", "--output", refs, "--concat-dim", "time")
    doc = json.loads(oracle.ok("inspect", refs, "--json").stdout)
    arrays = {a["path"]: a for a in doc["arrays"]}
    assert arrays["air"]["shape"] == [48, 12, 20] and arrays["air"]["chunks"] == [6, 12, 10]
    assert len(doc["files"]) == 2
