"""`chunkmill virtualize` of many files: what only shows at scale (open files, references
past one write buffer), read back by xarray through fsspec and compared with the originals."""

from __future__ import annotations

import resource
import subprocess

import netCDF4
import numpy as np
import xarray as xr

import oracle

NLON = 200  # orography is 800 bytes: over the 500-byte inline threshold, so a combine reads it


def write_file(path, index: int, nt: int = 2) -> None:
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", None)
        ds.createDimension("lon", NLON)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "hours since 2000-01-01"
        t[:] = index * nt + np.arange(nt)
        lon = ds.createVariable("lon", "f4", ("lon",))
        lon[:] = np.linspace(0, 358.2, NLON)
        # A variable without the concat dimension, the same in every file: the combine compares
        # it in every input, through its references.
        orography = ds.createVariable("orography", "f4", ("lon",))
        orography[:] = np.cos(np.linspace(0, 6, NLON)) * 1000
        air = ds.createVariable("air", "f4", ("time", "lon"), chunksizes=(1, NLON), zlib=True)
        air[:] = np.random.default_rng(index).random((nt, NLON), dtype=np.float32)


def open_refs(path) -> xr.Dataset:
    return xr.open_dataset("reference://", engine="zarr", chunks=None,
                           backend_kwargs={"consolidated": False, "storage_options": {"fo": str(path)}})


def limit_open_files(n: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return apply


def test_more_inputs_than_open_files_allowed(tmp_path):
    """150 inputs under a limit of 64 open files: the combine compares orography (a referenced,
    not inlined, variable without the concat dimension) in every input. It used to keep every
    input open until the comparison ended and failed with "Too many open files"."""
    files = [tmp_path / f"f{i:03d}.nc" for i in range(150)]
    for i, f in enumerate(files):
        write_file(f, i)
    out = tmp_path / "refs.json"
    cmd = [str(oracle.chunkmill_bin()), "virtualize", str(tmp_path / "f*.nc"), "--output", str(out),
           "--concat-dim", "time", "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=oracle.TIMEOUT,
                       stdin=subprocess.DEVNULL, preexec_fn=limit_open_files(64))
    assert r.returncode == 0, oracle.describe(r)
    got = open_refs(out).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="nested", concat_dim="time",
                             data_vars="minimal", coords="minimal", compat="override").load()
    xr.testing.assert_identical(got, want)


def test_metadata_held_once_is_the_first_inputs_whole(tmp_path):
    """Scans are folded as they arrive: an input whose attributes equal an earlier scan's keeps
    only those the combine compares. Inputs given out of order (the first to arrive is not the
    first in time): the references carry the attributes of the input first in time whole, as
    xarray's open_mfdataset (combine_by_coords, attributes of the first) does — including one
    input whose attributes differ, which must not lend them to the others."""
    files = [tmp_path / f"f{i:02d}.nc" for i in range(12)]
    for i, f in enumerate(files):
        write_file(f, i)
        with netCDF4.Dataset(f, "a") as ds:
            ds.title = "alike"
            ds.history = "made by the test"
            ds["air"].long_name = "air temperature"
            ds["air"].comment = "the same in every file" if i != 5 else "only in file 5"
            ds["time"].standard_name = "time"
    given = files[7:] + files[:7]
    out = tmp_path / "refs.json"
    cmd = [str(oracle.chunkmill_bin()), "virtualize", *map(str, given), "--output", str(out),
           "--concat-dim", "time", "--no-progress", "--workers", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=oracle.TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, oracle.describe(r)
    got = open_refs(out)
    want = xr.open_mfdataset([str(f) for f in given], combine="by_coords")
    assert got.attrs == want.attrs and got.attrs["title"] == "alike"
    for name in ("air", "time", "lon", "orography"):
        assert got[name].attrs == want[name].attrs, name
    assert got["air"].attrs["comment"] == "the same in every file"
    np.testing.assert_array_equal(got["air"].values, want["air"].values)
