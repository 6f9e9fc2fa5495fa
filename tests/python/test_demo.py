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


def test_demo_shows_the_netcdf_path_and_netcdf4_agrees(tmp_path):
    """The demo's second half (issue 9, first contact): NetCDF files that netCDF4-python reads,
    references to them, and a time-series cache equal to the files read by netCDF4 and
    concatenated by numpy."""
    import netCDF4
    import numpy as np

    demo = tmp_path / "demo"
    r = oracle.ok("demo", "--dir", demo, "--no-progress")
    assert "$ chunkmill virtualize" in r.stdout and "$ chunkmill convert" in r.stdout, r.stdout
    files = sorted((demo / "data").glob("air_*.nc"))
    assert len(files) == 10
    parts, hours = [], []
    for f in files:
        with netCDF4.Dataset(f) as ds:
            assert ds.file_format == "NETCDF3_CLASSIC"
            parts.append(ds["air"][:].filled())
            hours.append(ds["time"][:].filled())
            assert ds["time"].units == "hours since 2020-01-01 00:00:00"
    want = np.concatenate(parts)
    np.testing.assert_array_equal(np.concatenate(hours), np.arange(240))
    out = xr.open_zarr(demo / "air-time-series.zarr")
    assert out.air.encoding["chunks"] == (240, 9, 18)
    np.testing.assert_array_equal(out.air.values, want)
    # the hourly series of the rechunked source is the same formula: the first 240 hours agree
    src = xr.open_zarr(demo / "source.zarr")
    np.testing.assert_array_equal(src.air.values[:240], want)


def test_demo_replaces_an_earlier_demo_but_nothing_else(tmp_path):
    demo = tmp_path / "demo"
    (demo / "source.zarr").mkdir(parents=True)
    (demo / "thesis.tex").write_text("years of work")
    r = oracle.run("demo", "--dir", demo, "--no-progress")
    assert r.returncode == 3 and "thesis.tex" in r.stderr, oracle.describe(r)
    assert (demo / "thesis.tex").read_text() == "years of work"
    (demo / "thesis.tex").unlink()
    (demo / "data").mkdir()
    (demo / "data" / "field-notes.nc").write_text("mine")
    r = oracle.run("demo", "--dir", demo, "--no-progress")
    assert r.returncode == 3 and "data/field-notes.nc" in r.stderr, oracle.describe(r)
    assert (demo / "data" / "field-notes.nc").read_text() == "mine"
