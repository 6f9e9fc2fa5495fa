"""`chunkmill compute`'s structural operations (concat, stack, broadcast_like, rechunk) against
xarray, plans that share reads or split a fused task that would not fit, and errors that come
from the data (integer division by zero, argmin of an all-NaN slice)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import oracle
from test_compute import compute, make_input


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in.zarr"
    return path, make_input(path)


def close(out, want):
    assert out.dims == want.dims, (out.dims, want.dims)
    assert out.dtype == want.dtype, (out.dtype, want.dtype)
    np.testing.assert_allclose(out.values, want.values, rtol=2e-6, atol=1e-6, equal_nan=True)


STRUCTURAL = {
    # Along an existing dimension, with pieces that cut the input chunks (5) unevenly.
    "a = concat([air.isel(time=slice(0, 7)), air.isel(time=slice(7, 16)) * 2, air.isel(time=slice(16, None))], dim='time')":
        lambda d: xr.concat([d.air.isel(time=slice(0, 7)), d.air.isel(time=slice(7, 16)) * 2,
                             d.air.isel(time=slice(16, None))], dim="time"),
    # Along a new dimension; float32 and float64 parts give float64 as numpy does.
    "a = concat([air, air.astype('float64') - 1], dim='member')":
        lambda d: xr.concat([d.air, d.air.astype("float64") - 1], dim="member"),
    # A selection of a concatenation: reversed, across the seam.
    "a = concat([air.isel(lon=slice(0, 6)), air.isel(lon=slice(6, None)) + 1], dim='lon').isel(lon=slice(None, None, -2), time=4)":
        lambda d: xr.concat([d.air.isel(lon=slice(0, 6)), d.air.isel(lon=slice(6, None)) + 1], dim="lon")
        .isel(lon=slice(None, None, -2), time=4),
    "a = air.stack(cell=['lat', 'lon'])": lambda d: d.air.stack(cell=("lat", "lon")).drop_vars(["cell", "lat", "lon"]),
    "a = (air * 2).stack(cell=['lon', 'time']).mean('cell')": lambda d: (d.air * 2).stack(cell=("lon", "time")).mean("cell"),
    "a = n.broadcast_like(air) + 0": lambda d: d.n.broadcast_like(d.air) + 0,
    "a = air.isel(time=0).broadcast_like(n.isel(lat=0))": lambda d: d.air.isel(time=0).broadcast_like(d.n.isel(lat=0)),
    "a = air.rechunk(time=-1, lat=2)": lambda d: d.air,
    # Integers and booleans: int32 parts stay int32, a bool stack stays bool, an int32 source
    # is rechunked by copying its chunks as stored.
    "a = concat([n, n * 2, n - 1], dim='k')": lambda d: xr.concat([d.n, d.n * 2, d.n - 1], dim="k"),
    "a = (air > 280).stack(cell=['time', 'lon'])": lambda d: (d.air > 280).stack(cell=("time", "lon")).drop_vars(["cell", "time", "lon"]),
    "a = n.rechunk(lat=-1, lon=2) + n.isel(lon=0).broadcast_like(n)":
        lambda d: d.n + d.n.isel(lon=0).drop_vars("lon").broadcast_like(d.n),
    "a = (air.rechunk(time=-1) - air.mean('time')).std('time')": lambda d: (d.air - d.air.mean("time")).std("time"),
}


@pytest.mark.parametrize("expr", list(STRUCTURAL))
def test_compute_structural_ops_match_xarray(tmp_path, src, expr):
    path, ds = src
    out = compute(tmp_path, path, expr, max_mem="64MB")
    want = STRUCTURAL[expr](ds).compute()
    close(out.a, want.drop_vars([c for c in want.coords if c not in out.a.coords]))


def test_concat_keeps_the_joined_coordinate_and_rechunk_writes_its_chunks(tmp_path, src):
    path, ds = src
    out = compute(tmp_path, path, "a = concat([air.isel(time=slice(0, 9)), air.isel(time=slice(9, None))], dim='time')",
                  "r = air.chunk(time=-1, lon=3)", max_mem="64MB")
    np.testing.assert_array_equal(out.time.values, ds.time.values)
    assert out.r.encoding["chunks"] == (23, 3, 3)
    np.testing.assert_array_equal(out.r.values, ds.air.values)


def test_rechunk_plan_shows_copy_stages(tmp_path, src):
    path, _ = src
    plan = json.loads(oracle.ok("plan", "compute", "--input", f"ds={path}", "m = (air.rechunk(time=-1) ** 2).mean('time')",
                                "--output", tmp_path / "o.zarr", "--max-mem", "64MB", "--json").stdout)
    kinds = [s["kind"] for s in plan["stages"]]
    assert "rechunk" in kinds and kinds.index("rechunk") < kinds.index("partial"), kinds


@pytest.mark.parametrize("expr, words", [
    ("a = concat([air, n], dim='lat')", ["concat", "same dimensions"]),
    ("a = air.stack(cell=['lat', 'lon']).isel(cell=0)", ["stacked dimension 'cell'"]),
    ("a = air.rechunk(tim=3)", ["no dimension 'tim'"]),
    ("a = air.broadcast_like(air.isel(lat=slice(0, 2)))", ["dimension 'lat' has size"]),
])
def test_structural_misuse_is_one_line(tmp_path, src, expr, words):
    path, _ = src
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", expr, "--output", out, "--max-mem", "64MB", "--no-progress")
    oracle.assert_one_error_line(r, codes=[2], mentions=words)
    assert not out.exists()


def test_means_of_one_input_share_one_read(tmp_path):
    # The quadratic means workload: u², v², u·v averaged over time in one run.
    path = tmp_path / "uv.zarr"
    rng = np.random.default_rng(3)
    u = rng.normal(size=(40, 30, 20))
    v = rng.normal(size=(40, 30, 20))
    xr.Dataset({"u": (("time", "y", "x"), u), "v": (("time", "y", "x"), v)}).to_zarr(
        path, encoding={"u": {"chunks": (7, 30, 20)}, "v": {"chunks": (7, 30, 20)}})
    script = ["uu = mean(u ** 2, dim='time')", "vv = mean(v ** 2, dim='time')", "uv = mean(u * v, dim='time')"]
    # One worker: one task per output block reads every time chunk (no combine round, whose
    # reads of the states would count too).
    args = ["--input", f"ds={path}", *script, "--output", tmp_path / "o.zarr", "--max-mem", "64MB", "--workers", "1"]
    plan = json.loads(oracle.ok("plan", "compute", *args, "--json").stdout)
    partial = [s for s in plan["stages"] if s["kind"] == "partial"]
    assert len(partial) == 1, plan["stages"]
    # u and v read once each: 2 × 40 × 30 × 20 float64.
    assert partial[0]["bytes_read"] == 2 * u.nbytes
    single = json.loads(oracle.ok("plan", "compute", "--input", f"ds={path}", script[2], "--output", tmp_path / "p.zarr",
                                  "--max-mem", "64MB", "--workers", "1", "--json").stdout)
    assert plan["bytes_read"] == single["bytes_read"]
    report = json.loads(oracle.ok("compute", *args, "--json").stdout)
    assert report["bytes_read"] == 2 * u.nbytes
    out = xr.open_zarr(tmp_path / "o.zarr")
    np.testing.assert_allclose(out.uu.values, (u ** 2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(out.vv.values, (v ** 2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(out.uv.values, (u * v).mean(0), rtol=1e-12)


def test_a_fused_task_that_does_not_fit_is_split_not_refused(tmp_path):
    path = tmp_path / "big.zarr"
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 600, 600))
    xr.Dataset({"x": (("t", "y", "z"), x)}).to_zarr(path, encoding={"x": {"chunks": (2, 600, 600)}})
    expr = "a = sqrt(abs(((x + 1) * (x - 1)) * ((x + 2) * (x - 2)))) + exp(x / 9) * cos(x)"
    # 110MB: tasks evaluate tile by tile, so the fused task (one block held, a tile per
    # operation: about 57 MB) needs more than the 48 MB a task may hold; each split part fits.
    args = ["--input", f"ds={path}", expr, "--output", tmp_path / "o.zarr", "--max-mem", "110MB"]
    plan = json.loads(oracle.ok("plan", "compute", *args, "--json").stdout)
    splits = [s for s in plan["stages"] if s["name"].endswith("split-map")]
    assert splits and plan["bytes_intermediate"] > 0
    assert plan["max_projected_mem"] <= plan["task_budget"]
    # What the intermediates hold is a result the unfused plan writes too.
    ops = plan["unfused"][0]["operations"]
    assert all(s["label"].split(": ")[1].split(" written")[0] in ops for s in splits), (splits, ops)
    # With room for the fused task there is no intermediate.
    roomy = json.loads(oracle.ok("plan", "compute", *args[:-1], "1GB", "--json").stdout)
    assert roomy["bytes_intermediate"] == 0
    oracle.ok("compute", *args, "--no-progress")
    want = np.sqrt(np.abs(((x + 1) * (x - 1)) * ((x + 2) * (x - 2)))) + np.exp(x / 9) * np.cos(x)
    np.testing.assert_allclose(xr.open_zarr(tmp_path / "o.zarr").a.values, want, rtol=1e-12)
    assert not (tmp_path / "o.zarr.work").exists()


def data_error(tmp_path, path, expr, words):
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", expr, "--output", out, "--max-mem", "64MB", "--no-progress",
                   "--retries", "0")
    oracle.assert_one_error_line(r, codes=[1], mentions=words)
    # The output appears only complete: nothing of it is there.
    assert not out.exists()
    return out


def test_integer_division_by_zero_in_the_data_fails_and_leaves_no_output(tmp_path, src):
    path, ds = src
    # The divisor is 0 at one place of the data (not a literal 0, which is refused when checked).
    out = data_error(tmp_path, path, "q = n // (n - n.isel(lat=0, lon=0))", ["integer division by zero", "'//'"])
    data_error(tmp_path, path, "q = air * 0 + n % (n - n.isel(lat=3, lon=2))", ["integer division by zero", "'%'"])
    # Fixed, the same command runs (the earlier run's leftovers in the work dir are its own).
    oracle.ok("compute", "--input", f"ds={path}", "q = n // where(n == 0, 1, n)", "--output", out, "--max-mem", "64MB",
              "--no-progress")
    np.testing.assert_array_equal(xr.open_zarr(out).q.values, ds.n.values // np.where(ds.n.values == 0, 1, ds.n.values))


def test_argmin_of_an_all_nan_slice_raises_as_xarray(tmp_path, src):
    path, ds = src
    air = ds.air.load()
    air[:, 2, 3] = np.nan
    with pytest.raises(ValueError, match="All-NaN slice"):
        air.argmin("time")
    data_error(tmp_path, path, "i = where(lat == lat.isel(lat=2), nan, air).argmin('time')", ["argmin", "all-NaN slice"])
