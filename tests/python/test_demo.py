"""`chunkmill demo` (what scripts/demo runs) works from scratch, and its output opens in xarray
with no flags and equals its source."""

import xarray as xr

import oracle


def test_demo_runs_and_xarray_agrees(tmp_path):
    r = oracle.ok("demo", "--dir", tmp_path / "demo", "--no-progress")
    assert "verified" in r.stdout
    src = xr.open_zarr(tmp_path / "demo" / "source.zarr").load()
    out = xr.open_zarr(tmp_path / "demo" / "by-time-series.zarr")
    assert out.air.encoding["chunks"] == (720, 9, 18)
    xr.testing.assert_identical(out.load(), src)
