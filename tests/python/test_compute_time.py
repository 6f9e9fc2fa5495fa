"""`chunkmill compute`'s CF-time grouping against xarray (with cftime for the non-standard
calendars): `resample` and `groupby` reductions, group-wise arithmetic (anomalies), `sel` by date,
for every calendar, on data with NaNs and irregular last chunks; bad keys, frequencies and dates
refused with one line and nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import oracle

CALENDARS = ["standard", "proleptic_gregorian", "noleap", "all_leap", "360_day"]
REDUCTIONS = ["mean", "sum", "min", "max", "std", "var", "count"]


def make_input(path, calendar, start="2000-11-20", periods=500, freq="D", chunks=(37, 2, 3), dtype="float32"):
    """`air(time, lat, lon)` with CF times in `calendar`, 10 % NaN, every last chunk partial."""
    rng = np.random.default_rng(11)
    times = xr.date_range(start, periods=periods, freq=freq, calendar=calendar, use_cftime=True)
    air = rng.normal(280, 10, (periods, 3, 4)).astype(dtype)
    air[rng.random(air.shape) < 0.1] = np.nan
    ds = xr.Dataset(
        {"air": (("time", "lat", "lon"), air, {"units": "K"})},
        coords={"time": times, "lat": [60.0, 45.0, 30.0], "lon": [0.0, 90.0, 180.0, 270.0]},
    )
    ds.time.encoding = {"units": f"hours since {start}", "calendar": calendar, "dtype": "int64"}
    ds.to_zarr(path, encoding={"air": {"chunks": chunks}}, zarr_format=3, consolidated=False)
    return opened(path, calendar)


def opened(path, calendar):
    """As a user opens it: numpy datetimes for the Gregorian calendars, cftime objects else."""
    coder = xr.coders.CFDatetimeCoder(use_cftime=calendar not in ("standard", "proleptic_gregorian"))
    return xr.open_zarr(path, decode_times=coder, consolidated=False).load()


def compute(tmp_path, src, *assignments, name="out.zarr", max_mem="256MB"):
    out = tmp_path / name
    oracle.ok("compute", "--input", f"ds={src}", *assignments, "--output", out, "--max-mem", max_mem,
              "--no-progress")
    return xr.open_zarr(out, consolidated=False)


def same(got, want, rtol=1e-5, atol=1e-5):
    """Equal dims, dtype, coordinate labels and values; float32 within what xarray's float32
    arithmetic loses (ours accumulates in float64)."""
    assert got.dims == want.dims, (got.dims, want.dims)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got.values, want.values, rtol=rtol, atol=atol, equal_nan=True)
    for d in want.dims:
        if d in want.coords:
            assert list(got[d].values) == list(want[d].values), d


@pytest.fixture(params=CALENDARS)
def daily(request, tmp_path):
    path = tmp_path / "in.zarr"
    return path, make_input(path, request.param)


def test_groupby_climatologies_match_xarray(tmp_path, daily):
    path, ds = daily
    keys = ["month", "season", "dayofyear"]
    ops = ["mean", "sum", "max", "std", "count"]
    script = [f"{op}_{k} = air.groupby('time.{k}').{op}()" for k in keys for op in ops]
    out = compute(tmp_path, path, *script)
    for k in keys:
        for op in ops:
            same(out[f"{op}_{k}"], getattr(ds.air.groupby(f"time.{k}"), op)().compute())


@pytest.mark.parametrize("freq", ["1MS", "QS-DEC", "1YS", "2MS"])
def test_resample_reductions_match_xarray(tmp_path, daily, freq):
    path, ds = daily
    script = [f"{op}_ = air.resample(time='{freq}').{op}()" for op in REDUCTIONS]
    out = compute(tmp_path, path, *script)
    for op in REDUCTIONS:
        want = getattr(ds.air.resample(time=freq), op)().compute()
        same(out[f"{op}_"], want)
    # Decoded as xarray decodes what it writes: datetime64 or cftime objects of the calendar.
    assert list(out.time.values) == list(want.time.values)


@pytest.mark.parametrize("calendar", CALENDARS)
def test_resample_daily_of_six_hourly_data_with_empty_days(tmp_path, calendar):
    path = tmp_path / "in.zarr"
    ds = make_input(path, calendar, start="2001-02-20", periods=90, freq="6h", chunks=(7, 3, 4))
    keep = [i for i in range(90) if not 20 <= i < 31]  # days 6 and 7 lose all their times
    src = tmp_path / "gap.zarr"
    gap = ds.isel(time=keep)
    gap.time.encoding = ds.time.encoding
    gap.to_zarr(src, encoding={"air": {"chunks": (7, 3, 4)}}, zarr_format=3, consolidated=False)
    gap = opened(src, calendar)
    out = compute(tmp_path, src, "m = air.resample(time='1D').mean()", "c = air.resample(time='1D').count()")
    same(out.m, gap.air.resample(time="1D").mean().compute())
    same(out.c, gap.air.resample(time="1D").count().compute())


def test_anomalies_by_month_match_xarray(tmp_path, daily):
    path, ds = daily
    out = compute(tmp_path, path, "clim = air.groupby('time.month').mean()",
                  "anom = air.groupby('time.month') - clim",
                  "z = (air.groupby('time.season') - air.groupby('time.season').mean()) / air.std('time')")
    clim = ds.air.groupby("time.month").mean()
    same(out.clim, clim.compute())
    # A difference of float32 values near 280: within two float32 ulps of 280.
    same(out.anom, (ds.air.groupby("time.month") - clim).compute().drop_vars("month"), atol=1e-4)
    z = (ds.air.groupby("time.season") - ds.air.groupby("time.season").mean()) / ds.air.std("time")
    same(out.z, z.compute().drop_vars("season"), atol=1e-4)


def test_anomalies_against_a_climatology_read_back(tmp_path, daily):
    path, ds = daily
    clim = tmp_path / "clim.zarr"
    oracle.ok("compute", "--input", f"ds={path}", "clim = air.groupby('time.month').mean().isel(month=slice(0, 6))",
              "--output", clim, "--no-progress")
    out = tmp_path / "anom.zarr"
    oracle.ok("compute", "--input", f"ds={path}", "--input", f"c={clim}#clim",
              "anom = air.groupby('time.month') - c", "--output", out, "--no-progress")
    want = ds.air.groupby("time.month") - ds.air.groupby("time.month").mean().isel(month=slice(0, 6))
    # Months the climatology lacks are NaN, as xarray gives them.
    same(xr.open_zarr(out, consolidated=False).anom, want.compute().drop_vars("month"), atol=1e-4)


def test_anomalies_carry_the_group_of_each_time_as_xarray(tmp_path, daily):
    path, ds = daily
    by_month = ds.air.groupby("time.month")
    out = compute(tmp_path, path, "anom = air.groupby('time.month') - air.groupby('time.month').mean()")
    want = by_month - by_month.mean()
    assert "month" in out.coords and out.month.dims == want.month.dims == ("time",)
    assert out.month.dtype == want.month.dtype
    assert list(out.month.values) == list(want.month.values)
    # Selected along time, the seasons follow the selection; a reduction over time drops them.
    by_season = ds.air.groupby("time.season")
    out = compute(tmp_path, path,
                  "part = (air.groupby('time.season') - air.groupby('time.season').mean()).isel(time=slice(10, 200, 3))",
                  name="part.zarr")
    want = (by_season - by_season.mean()).isel(time=slice(10, 200, 3))
    assert list(out.season.values) == list(want.season.values) and out.season.dims == ("time",)
    # xarray's season means accumulate in float32: a few float32 ulps of 280 apart.
    same(out.part, want.drop_vars("season").compute(), atol=3e-4)
    out = compute(tmp_path, path, "m = (air.groupby('time.month') - air.groupby('time.month').mean()).max('time')",
                  name="m.zarr")
    assert "month" not in out.coords and "month" not in out.variables
    assert "month" not in (by_month - by_month.mean()).max("time").coords


def test_sel_by_date_matches_xarray(tmp_path, daily):
    path, ds = daily
    out = compute(tmp_path, path, "a = air.sel(time=slice('2001-01', '2001-06-15')).mean('time')",
                  "b = air.sel(time='2001-03-01')", "c = air.sel(time='2001-02').sum('time')",
                  "d = air.sel(time=slice(None, '2001-01-10')).max('time')")
    same(out.a, ds.air.sel(time=slice("2001-01", "2001-06-15")).mean("time").compute())
    # numpy datetimes: one label, the dimension goes; cftime: always a slice (xarray's rules).
    same(out.b, ds.air.sel(time="2001-03-01").compute())
    same(out.c, ds.air.sel(time="2001-02").sum("time").compute())
    same(out.d, ds.air.sel(time=slice(None, "2001-01-10")).max("time").compute())


def test_many_time_blocks_add_a_combine_round_with_the_same_values(tmp_path):
    path = tmp_path / "in.zarr"
    # 2200 one-day chunks in 35 blocks of 64, one partial task each for 24 workers (two tasks
    # a worker would fold none): more pieces than one finish task merges (a combine round).
    ds = make_input(path, "noleap", periods=2200, chunks=(1, 3, 4), dtype="float64")
    common = ["--input", f"ds={path}", "m = air.groupby('time.month').std()", "--max-mem", "64MB",
              "--workers", "24"]
    r = oracle.ok("plan", "compute", *common, "--output", tmp_path / "o.zarr", "--json")
    import json

    kinds = [s["name"].split("-", 1)[1] for s in json.loads(r.stdout)["stages"]]
    assert any("group-combine" in k for k in kinds), kinds
    out = tmp_path / "out.zarr"
    oracle.ok("compute", *common, "--output", out, "--no-progress")
    out = xr.open_zarr(out, consolidated=False)
    same(out.m, ds.air.groupby("time.month").std().compute(), rtol=1e-9)


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_group_partial_tasks_that_fold_several_blocks_match_xarray(tmp_path, calendar):
    """Four years in 3-day chunks: blocks of 64 chunks, two or more folded into each
    partial task's states (`plan` says "folded a task"), a task's blocks and the pieces of
    consecutive tasks sharing months. Climatologies and anomalies equal xarray's."""
    path = tmp_path / "in.zarr"
    ds = make_input(path, calendar, periods=1460, chunks=(3, 3, 4))
    script = ["clim = air.groupby('time.month').mean()", "anom = air.groupby('time.month') - clim",
              "sd = air.groupby('time.month').std()", "n = air.groupby('time.season').count()"]
    common = ["--input", f"ds={path}", *script, "--max-mem", "256MB", "--workers", "2"]
    plan = oracle.ok("plan", "compute", *common, "--output", tmp_path / "p.zarr").stdout
    assert "folded a task" in plan, plan
    out = tmp_path / "out.zarr"
    oracle.ok("compute", *common, "--output", out, "--no-progress")
    out = xr.open_zarr(out, consolidated=False)
    by_month = ds.air.groupby("time.month")
    clim = by_month.mean()
    same(out.clim, clim.compute())
    # xarray's float32 means accumulate in float32 (a few ulps of 280 off): the anomalies
    # against the float64 means stored as float32, as ours are, within an ulp of 280.
    air64 = ds.air.astype("float64")
    clim32 = air64.groupby("time.month").mean().astype("float32").astype("float64")
    exact = (air64.groupby("time.month") - clim32).astype("float32")
    same(out.anom, exact.compute().drop_vars("month"), atol=4e-5)
    same(out.sd, by_month.std().compute())
    same(out.n, ds.air.groupby("time.season").count().compute())


@pytest.mark.parametrize("extra", [["--max-mem", "70MB"], ["--max-mem", "1GB", "--workers", "2"]])
def test_a_climatology_in_several_finish_blocks_is_chunked_as_them(tmp_path, extra):
    """The finish step's blocks of months are chosen after the output was named: halved when
    12 months of 300 × 300 states do not fit the budget, or cut for the workers (blocks of 6
    months, 2.2 MB). The output is chunked as they are, and holds every month's values (the
    budget's halving once wrote every block into the first chunk)."""
    path = tmp_path / "in.zarr"
    rng = np.random.default_rng(3)
    times = xr.date_range("2001-01-01", periods=24, freq="MS", calendar="noleap", use_cftime=True)
    air = rng.normal(280, 10, (24, 300, 300)).astype("float32")
    air[rng.random(air.shape) < 0.1] = np.nan
    ds = xr.Dataset({"air": (("time", "lat", "lon"), air)}, coords={"time": times})
    ds.time.encoding = {"units": "days since 2001-01-01", "calendar": "noleap"}
    ds.to_zarr(path, encoding={"air": {"chunks": (2, 300, 300)}}, zarr_format=3, consolidated=False)
    ds = opened(path, "noleap")
    out = tmp_path / "out.zarr"
    # 70 MB leaves no room for the anomalies' blocks: the climatology alone.
    anom = [] if "70MB" in extra else ["anom = air.groupby('time.month') - clim"]
    oracle.ok("compute", "--input", f"ds={path}", "clim = air.groupby('time.month').mean()", *anom,
              "--output", out, "--no-progress", *extra)
    got = xr.open_zarr(out, consolidated=False)
    clim = ds.air.groupby("time.month").mean()
    same(got.clim, clim.compute())
    assert got.clim.encoding["chunks"][0] < 12, got.clim.encoding["chunks"]
    if not anom:
        return
    air64 = ds.air.astype("float64")
    clim32 = air64.groupby("time.month").mean().astype("float32").astype("float64")
    exact = (air64.groupby("time.month") - clim32).astype("float32")
    same(got.anom, exact.compute().drop_vars("month"), atol=4e-5)


BAD = {
    "m = air.groupby('time.fortnight').mean()": ["unknown key 'time.fortnight'", "time.month"],
    "m = air.resample(time='1W').mean()": ["frequency '1W' is not supported"],
    "m = air.groupby('lat.month').mean()": ["'lat' is not a cf time coordinate"],
    "m = air.sel(time='2001-02-30')": ["'2001-02-30' is not a date of the standard calendar"],
    "m = air.groupby('time.month').argmax()": ["argmax of groups is not supported"],
}


@pytest.mark.parametrize("expr", list(BAD))
def test_bad_time_input_is_one_line_and_writes_nothing(tmp_path, expr):
    path = tmp_path / "in.zarr"
    make_input(path, "standard", periods=40)
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", expr, "--output", out, "--no-progress")
    oracle.assert_one_error_line(r, codes=[2], mentions=BAD[expr])
    assert not out.exists()
    assert not (tmp_path / "out.zarr.work").exists()


def test_a_budget_no_group_task_fits_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "big.zarr"
    # One 32 MB chunk: reading it as float64 and folding it into monthly states cannot fit.
    times = xr.date_range("2001-01-01", periods=100, freq="D", calendar="noleap", use_cftime=True)
    xr.Dataset({"x": (("time", "y", "z"), np.zeros((100, 200, 200)))}, coords={"time": times}).to_zarr(
        path, encoding={"x": {"chunks": (100, 200, 200)}}, consolidated=False)
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", "m = x.groupby('time.month').mean()", "--output", out,
                   "--max-mem", "128MB", "--no-progress")
    oracle.assert_one_error_line(r, codes=[3], mentions=["m = mean(…) by time.month", "one task needs"])
    assert not out.exists() and not (tmp_path / "out.zarr.work").exists()
