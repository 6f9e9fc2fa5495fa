"""`chunkmill compute` against numpy/xarray: random arrays with irregular last chunks and NaNs,
each operation of the language, a memory budget, and bad input refused before anything is
written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

import oracle

SHAPE = (23, 7, 11)  # chunks (5, 3, 4): every last chunk is partial


def make_input(path, zarr_format=3, mean=280.0, dtype="float32"):
    rng = np.random.default_rng(7)
    air = rng.normal(mean, 10, SHAPE).astype(dtype)
    air[rng.random(SHAPE) < 0.1] = np.nan
    ds = xr.Dataset(
        {
            "air": (("time", "lat", "lon"), air, {"units": "K", "long_name": "air temperature"}),
            "n": (("lat", "lon"), rng.integers(-50, 50, SHAPE[1:]).astype("int32")),
        },
        coords={"time": np.arange(23.0), "lat": np.linspace(75, 15, 7), "lon": np.arange(200, 211.0)},
    )
    ds["time"].attrs = {"units": "days since 2000-01-01", "calendar": "standard"}
    enc = {"air": {"chunks": (5, 3, 4)}, "n": {"chunks": (3, 4), "fill_value": None}}
    ds.to_zarr(path, encoding=enc, zarr_format=zarr_format, consolidated=zarr_format == 2)
    return xr.open_zarr(path)


def compute(tmp_path, src, *assignments, max_mem="256MB", extra=()):
    out = tmp_path / "out.zarr"
    oracle.ok("compute", "--input", f"ds={src}", *assignments, "--output", out,
              "--max-mem", max_mem, "--no-progress", *extra)
    return xr.open_zarr(out)


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in.zarr"
    return path, make_input(path)


ELEMENTWISE = {
    "a = air * 2 - 1 / air": lambda d: d.air * 2 - 1 / d.air,
    "a = air // 7 + air % 7": lambda d: d.air // 7 + d.air % 7,
    "a = (air - 270) ** 2": lambda d: (d.air - 270) ** 2,
    "a = (air > 280) & ~(air > 290) | isnan(air)": lambda d: ((d.air > 280) & ~(d.air > 290)) | d.air.isnull(),
    "a = where(air > 280, air, n)": lambda d: xr.where(d.air > 280, d.air, d.n),
    "a = abs(air - 280) + sqrt(air) + exp(air / 300) + log(air) + log10(air)":
        lambda d: abs(d.air - 280) + np.sqrt(d.air) + np.exp(d.air / 300) + np.log(d.air) + np.log10(d.air),
    "a = sin(air) + cos(air) + tan(air) + arctan2(air, n)":
        lambda d: np.sin(d.air) + np.cos(d.air) + np.tan(d.air) + np.arctan2(d.air, d.n),
    "a = floor(air) - ceil(air) + clip(air, 270, 290)":
        lambda d: np.floor(d.air) - np.ceil(d.air) + d.air.clip(270, 290),
    "a = air.fillna(0) + n.astype('float64')": lambda d: d.air.fillna(0) + d.n.astype("float64"),
    "a = n // 3 + n % 3 + n * n": lambda d: d.n // 3 + d.n % 3 + d.n * d.n,
    "a = air.fillna(0).astype('int16')": lambda d: d.air.fillna(0).astype("int16"),
}


@pytest.mark.parametrize("expr", list(ELEMENTWISE))
def test_compute_elementwise_matches_xarray(tmp_path, src, expr):
    path, ds = src
    out = compute(tmp_path, path, expr)
    want = ELEMENTWISE[expr](ds).compute()
    assert out.a.dims == want.dims
    assert out.a.dtype == want.dtype, (out.a.dtype, want.dtype)
    # float32 functions are evaluated in float64 and rounded once: within a float32 ulp or two.
    np.testing.assert_allclose(out.a.values, want.transpose(*out.a.dims).values, rtol=2e-6, atol=1e-6, equal_nan=True)


REDUCTIONS = ["sum", "mean", "min", "max", "std", "var", "count", "argmin", "argmax"]


@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("dim", ["time", "lon"])
def test_compute_reductions_skip_nan_like_xarray(tmp_path, src, op, dim):
    path, ds = src
    # Small chunks along the reduced axis and a small budget: several combine rounds.
    out = compute(tmp_path, path, f"r = air.{op}('{dim}')", max_mem="64MB")
    want = getattr(ds.air, op)(dim).compute()
    assert out.r.dims == want.dims
    assert out.r.dtype == want.dtype
    np.testing.assert_allclose(out.r.values, want.values, rtol=1e-5, equal_nan=True)
    if op == "mean":
        assert out.r.attrs["cell_methods"] == f"{dim}: mean"
        assert out.r.attrs["units"] == "K"


def test_compute_var_is_stable_with_a_large_mean(tmp_path):
    path = tmp_path / "big.zarr"
    ds = make_input(path, mean=1e8, dtype="float64")
    out = compute(tmp_path, path, "v = air.var('time')", "s = std(air, dim=['time', 'lat'], ddof=1)")
    # A one-pass sum of squares would lose everything here (mean² ~ 1e16, variance ~ 100).
    np.testing.assert_allclose(out.v.values, np.nanvar(ds.air.values, axis=0), rtol=1e-7)
    np.testing.assert_allclose(out.s.values, ds.air.std(["time", "lat"], ddof=1).values, rtol=1e-7)


def test_compute_anomaly_of_a_reduction_and_selections(tmp_path, src):
    path, ds = src
    out = compute(tmp_path, path, "anom = air.isel(time=slice(None, None, -2)) - air.mean('time')")
    want = ds.air.isel(time=slice(None, None, -2)) - ds.air.mean("time")
    # numpy accumulates a float32 mean in float32, chunkmill in float64: an ulp of 280 apart.
    np.testing.assert_allclose(out.anom.values, want.values, rtol=1e-5, atol=1e-4, equal_nan=True)
    np.testing.assert_array_equal(out.time.values, want.time.values)
    out = xr.open_zarr(oracle.ok("compute", "--input", f"ds={path}", "x = air.sel(lat=slice(60, 30), lon=205).isel(time=3)",
                                 "--output", tmp_path / "sel.zarr", "--max-mem", "64MB", "--no-progress") and tmp_path / "sel.zarr")
    want = ds.air.sel(lat=slice(60, 30), lon=205).isel(time=3)
    np.testing.assert_allclose(out.x.values, want.values, equal_nan=True)
    np.testing.assert_array_equal(out.lat.values, want.lat.values)


def test_compute_v2_output_opens_in_xarray(tmp_path, src):
    path, ds = src
    out = compute(tmp_path, path, "m = air.max('time')", "c = (air > 280).sum('lat')", extra=("--zarr-format", "2", "--chunks", "lat=2"))
    np.testing.assert_allclose(out.m.values, ds.air.max("time").values, equal_nan=True)
    np.testing.assert_array_equal(out.c.values, (ds.air > 280).sum("lat").values)
    assert out.m.encoding["chunks"] == (2, 4)


def test_compute_peak_rss_stays_within_the_budget(tmp_path):
    # Tasks of about 60-120 MB projected under 160 MB: before each task gave its freed blocks
    # back (and identity reads were copied once more), a run like this peaked above its budget.
    path = tmp_path / "mem.zarr"
    rng = np.random.default_rng(1)
    data = rng.normal(size=(120, 200, 200))
    xr.Dataset({"x": (("t", "y", "z"), data)}).to_zarr(path, encoding={"x": {"chunks": (20, 200, 200)}})
    args = ["--input", f"ds={path}", "m = (x * x).mean('t')", "a = x - x.mean('t')",
            "--output", tmp_path / "o.zarr", "--max-mem", "160MB"]
    plan = json.loads(oracle.ok("plan", "compute", *args, "--json").stdout)
    report = json.loads(oracle.ok("compute", *args, "--json").stdout)
    assert report["peak_rss"] <= 160_000_000, (report["peak_rss"], plan["max_projected_mem"])
    assert plan["max_projected_mem"] <= plan["task_budget"]
    out = xr.open_zarr(tmp_path / "o.zarr")
    np.testing.assert_allclose(out.m.values, (data * data).mean(0), rtol=1e-10)
    np.testing.assert_allclose(out.a.values, data - data.mean(0), rtol=1e-9, atol=1e-12)


def test_compute_refuses_a_budget_no_task_fits(tmp_path):
    path = tmp_path / "big.zarr"
    # One 32 MB chunk: reading it as float64 and reducing it cannot fit in 128 MB.
    xr.Dataset({"x": (("t", "y", "z"), np.zeros((100, 200, 200)))}).to_zarr(
        path, encoding={"x": {"chunks": (100, 200, 200)}})
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", "m = x.mean('t')", "--output", out, "--max-mem", "128MB",
                   "--no-progress")
    line = oracle.assert_one_error_line(r, codes=[3], mentions=["m = mean(", "one task needs", "would fit"])
    assert not out.exists() and not (tmp_path / "out.zarr.work").exists()
    # The budget the message names is enough.
    fits = line.split("; --max-mem ")[1].split(" would fit")[0].replace(" ", "")
    oracle.ok("compute", "--input", f"ds={path}", "m = x.mean('t')", "--output", out, "--max-mem", fits,
              "--no-progress")


BAD = {
    "m = air.mean('tim')": (2, ["no dimension 'tim'", "1:"]),
    "m = airr + 1": (2, ["unknown variable 'airr'", "1:5"]),
    "m = median(air)": (2, ["unknown function 'median'"]),
    "m = (air + 1": (2, ["1:13", "expected ')'"]),
    "m = n // 0": (2, ["integer division by zero"]),
    "m = air + air.isel(lat=slice(0, 3))": (2, ["dimension 'lat' has size 7", "3"]),
    "m = air.sel(time='2000-02-30')": (2, ["1:18", "'2000-02-30' is not a date of the standard calendar"]),
    "m = air.sel(lat=44.0, method='nearest', tolerance=0.5)": (2, ["no label 44", "tolerance=0.5"]),
    "m = air.sel(lon=199.0, method='pad')": (2, ["no label 199", "method='pad'"]),
    "m = air.sel(lat=44.0, method='closest')": (2, ["method 'closest'"]),
    "m = air.sel(lat=slice(60, 30), method='nearest')": (2, ["method= takes one number"]),
    "m = air.sel(lat=45.0, tolerance=1)": (2, ["tolerance needs a method"]),
}


SEL_INEXACT = {
    "a = air.sel(lat=44.0, lon=203.4, method='nearest')":
        lambda d: d.air.sel(lat=44.0, lon=203.4, method="nearest"),
    "a = air.sel(lat=50.0, method='nearest').mean('time')":  # a tie, on a descending coordinate
        lambda d: d.air.sel(lat=50.0, method="nearest").mean("time"),
    "a = air.sel(lon=204.5, method='nearest')":  # a tie, on an increasing one
        lambda d: d.air.sel(lon=204.5, method="nearest"),
    "a = air.sel(lat=44.0, method='pad') - air.sel(lat=44.0, method='bfill')":
        lambda d: d.air.sel(lat=44.0, method="pad") - d.air.sel(lat=44.0, method="bfill"),
    "a = air.sel(lon=199.0, method='backfill', tolerance=1.5) + air.sel(lon=300.0, method='ffill')":
        lambda d: d.air.sel(lon=199.0, method="backfill", tolerance=1.5) + d.air.sel(lon=300.0, method="ffill"),
}


@pytest.mark.parametrize("expr", list(SEL_INEXACT))
def test_sel_with_a_method_picks_the_labels_xarray_picks(tmp_path, src, expr):
    path, ds = src
    got = compute(tmp_path, path, expr)
    want = SEL_INEXACT[expr](ds).compute()
    assert got.a.dims == want.dims
    for dim in want.dims:  # the picked label shows in the values (the selected scalar
        # coordinate itself is not written)
        np.testing.assert_array_equal(got.a[dim].values, want[dim].values, err_msg=f"{expr}: {dim}")
    np.testing.assert_allclose(got.a.values, want.values, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("expr", list(BAD))
def test_compute_bad_input_is_one_line_and_writes_nothing(tmp_path, src, expr):
    path, _ = src
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", expr, "--output", out, "--max-mem", "64MB", "--no-progress")
    code, mentions = BAD[expr]
    oracle.assert_one_error_line(r, codes=[code], mentions=mentions)
    assert not out.exists()
    assert not (tmp_path / "out.zarr.work").exists()


def test_plan_compute_shows_fusion_and_projections(tmp_path, src):
    path, _ = src
    r = oracle.ok("plan", "compute", "--input", f"ds={path}", "a = sqrt(abs(air * 2 - 1)) + 3", "--output",
                  tmp_path / "o.zarr", "--max-mem", "64MB", "--json")
    plan = json.loads(r.stdout)
    assert [s["kind"] for s in plan["stages"]] == ["map"] * 4  # a, then time/lat/lon coordinates
    assert len(plan["unfused"][0]["operations"]) == 5
    assert plan["stages"][0]["tasks"] == 5 * 3 * 3
    assert plan["bytes_intermediate"] == 0
    assert 0 < plan["max_projected_mem"] <= plan["task_budget"]
    assert not (tmp_path / "o.zarr").exists()


def test_compute_runs_on_processes_and_resumes_after_a_worker(tmp_path, src):
    path, ds = src
    want = ds.air.std("time").values
    args = ["compute", "--input", f"ds={path}", "s = air.std('time')", "--max-mem", "64MB", "--no-progress"]
    out = tmp_path / "p.zarr"
    oracle.ok(*args, "--output", out, "--executor", "processes")
    np.testing.assert_allclose(xr.open_zarr(out).s.values, want, rtol=1e-5)
    # Prepared, its first stage run by `chunkmill worker`, finished by --resume, which skips it.
    out = tmp_path / "w.zarr"
    oracle.ok(*args, "--output", out, "--prepare")
    plan = json.loads((tmp_path / "w.zarr.work" / "plan.json").read_text())
    first = plan["stages"][0]
    assert first["kind"]["kind"] == "compute"
    oracle.ok("worker", "--plan", tmp_path / "w.zarr.work", "--stage", "0", "--tasks", "0..2", "--no-progress")
    report = json.loads(oracle.ok(*args, "--output", out, "--resume", "--json").stdout)
    assert report["tasks_skipped"] == 2
    np.testing.assert_allclose(xr.open_zarr(out).s.values, want, rtol=1e-5)


def test_a_resume_with_other_workers_runs_the_plan_it_resumes(tmp_path, src):
    """A compute's blocks follow --workers (whose default is twice the cores): a run resumed
    with another count, or on a node with other cores, planned another job and was refused
    (exit 3, "the work dir holds plan … of another job"). As rechunk and convert, the resume
    now finds the worker count the stored plan was cut for and runs that plan."""
    path, ds = src
    args = ["compute", "--input", f"ds={path}", "s = air.std('time')", "--max-mem", "64MB",
            "--no-progress"]
    out = tmp_path / "w.zarr"
    oracle.ok(*args, "--output", out, "--workers", "24", "--prepare")
    stored = json.loads((tmp_path / "w.zarr.work" / "plan.json").read_text())
    assert stored["stages"][0]["kind"]["kind"] == "compute"
    oracle.ok("worker", "--plan", tmp_path / "w.zarr.work", "--stage", "0", "--tasks", "0..2",
              "--no-progress")
    # The premise: one worker cuts other blocks, so its plan is another.
    other = json.loads(oracle.ok("plan", *args, "--output", tmp_path / "x.zarr", "--workers", "1",
                                 "--json").stdout)
    assert other["plan_id"] != stored["plan_id"]
    report = json.loads(oracle.ok(*args, "--output", out, "--workers", "1", "--resume",
                                  "--json").stdout)
    assert report["plan_id"] == stored["plan_id"]
    assert report["tasks_skipped"] == 2, report
    np.testing.assert_allclose(xr.open_zarr(out).s.values, ds.air.std("time").values, rtol=1e-5)


@pytest.mark.parametrize("expr", ["s = air.std('time')", "c = air.groupby('time.month').mean()"])
def test_a_resume_runs_again_the_tasks_whose_intermediate_pieces_were_lost(tmp_path, src, expr):
    """Intermediate pieces are never synced: a power loss may take a piece whose task marker
    survived. A resumed run looks for the pieces of done tasks that a task not done reads,
    and runs again those whose pieces are missing or short; values equal numpy's."""
    path, ds = src
    want = ds.air.std("time").values if expr.startswith("s") else ds.air.mean("time").values[None]
    # 24 workers: partial blocks of one chunk, so the partial step writes pieces.
    args = ["compute", "--input", f"ds={path}", expr, "--max-mem", "64MB", "--workers", "24",
            "--no-progress"]
    out = tmp_path / "w.zarr"
    oracle.ok(*args, "--output", out, "--prepare")
    plan = json.loads((tmp_path / "w.zarr.work" / "plan.json").read_text())
    partial = plan["stages"][0]
    piece_out = partial["kind"]["outputs"][0]
    assert "pieces" in json.dumps(piece_out).lower(), piece_out
    oracle.ok("worker", "--plan", tmp_path / "w.zarr.work", "--stage", "0", "--tasks", "0..4", "--no-progress")
    # The partial step's pieces, each task's one, under the work dir's intermediates.
    pieces = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name.startswith("c0-"))
    assert len(pieces) == 4, pieces
    pieces[0].unlink()
    pieces[1].write_bytes(pieces[1].read_bytes()[:8])
    report = json.loads(oracle.ok(*args, "--output", out, "--resume", "--json").stdout)
    assert report["tasks_skipped"] == 2, report
    got = xr.open_zarr(out)[expr[0]].values
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_compute_report_shows_the_compute_stages(tmp_path, src):
    path, _ = src
    report = tmp_path / "report.html"
    oracle.ok("compute", "--input", f"ds={path}", "m = air.mean('time')", "--output", tmp_path / "o.zarr",
              "--max-mem", "64MB", "--no-progress", "--report", report)
    page = report.read_text()
    assert "00-m-partial" in page and "mean(over time)" in page


def test_compute_maps_of_one_input_share_one_read(tmp_path, src):
    path, ds = src
    exprs = ["a = air * 2", "b = sqrt(abs(air - 280)) + n"]
    r = oracle.ok("plan", "compute", "--input", f"ds={path}", *exprs, "--output", tmp_path / "o.zarr",
                  "--max-mem", "256MB", "--json")
    plan = json.loads(r.stdout)
    maps = [s for s in plan["stages"] if s["kind"] == "maps"]
    assert len(maps) == 1 and "one read shared" in maps[0]["label"], plan["stages"]
    # One pass over air (float32) and n (int32).
    assert maps[0]["bytes_read"] == ds.air.size * 4 + ds.n.size * 4
    out = compute(tmp_path, path, *exprs)
    np.testing.assert_allclose(out.a.values, (ds.air * 2).values, rtol=1e-7, equal_nan=True)
    want = (np.sqrt(abs(ds.air - 280)) + ds.n).transpose(*out.b.dims).values
    np.testing.assert_allclose(out.b.values, want, rtol=2e-6, equal_nan=True)


def test_compute_temp_dir_reused_after_a_failure_but_foreign_files_refused(tmp_path, src):
    path, ds = src
    temp = tmp_path / "temp"
    out = tmp_path / "out.zarr"
    args = ["--input", f"ds={path}", "--output", out, "--temp", temp, "--max-mem", "64MB", "--no-progress"]
    # A column that is all NaN: argmin fails after the reduction's pieces were written to --temp.
    data = ds.air.values.copy()
    data[:, 0, 0] = np.nan
    holed = tmp_path / "holed.zarr"
    ds.assign(air=(ds.air.dims, data, ds.air.attrs)).to_zarr(holed, encoding={"air": {"chunks": (5, 3, 4)}})
    args[1] = f"ds={holed}"
    r = oracle.run("compute", *args, "a = air - air.argmin('time')")
    assert r.returncode == 1, oracle.describe(r)
    assert any(p.is_file() for p in temp.rglob("*")), "the failed run left its intermediates"
    # The same --temp, a fixed expression: the intermediates are chunkmill's own.
    oracle.ok("compute", *args, "a = air - air.fillna(0).argmin('time')")
    want = ds.assign(air=(ds.air.dims, data)).air
    want = want - want.fillna(0).argmin("time")
    np.testing.assert_allclose(xr.open_zarr(out).a.values, want.values, equal_nan=True)
    # The run that succeeded removed the --temp the failed one created; a file chunkmill did
    # not write is refused before anything runs, and left alone.
    assert not temp.exists()
    temp.mkdir()
    (temp / "notes.txt").write_text("mine")
    out2 = tmp_path / "out2.zarr"
    args[args.index(out)] = out2
    r = oracle.run("compute", *args, "a = air * 2")
    oracle.assert_one_error_line(r, codes=[3], mentions=["notes.txt", "did not write"])
    assert (temp / "notes.txt").read_text() == "mine" and not out2.exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unwritten_chunks_read_as_the_fill_value_after_tasks_with_data(tmp_path, workers):
    """Tasks reuse their thread's buffers: a chunk that was never written must read as the
    array's fill value, never as what the previous task left in the buffer. With one worker
    every task follows one with data on the same thread."""
    import zarr

    path = tmp_path / "holes.zarr"
    rng = np.random.default_rng(11)
    x = zarr.create_array(path, shape=(40, 6, 8), chunks=(5, 6, 8), dtype="float32", fill_value=7.5,
                          dimension_names=["time", "lat", "lon"])
    # chunks 0-2 and 5 hold data; 3, 4, 6, 7 are never written
    for t0 in (0, 5, 10, 25):
        x[t0:t0 + 5] = rng.normal(280, 10, (5, 6, 8)).astype("float32")
    want = x[:]
    stored = sorted(p.relative_to(path / "c").parts[0] for p in (path / "c").rglob("*") if p.is_file())
    assert stored == ["0", "1", "2", "5"], stored  # the holes really are unwritten
    out = tmp_path / "out.zarr"
    oracle.ok("compute", "--input", f"x={path}", "a = x * 2 + 1", "m = x.mean('time')",
              "s = x.isel(time=slice(12, 38)).max('time')", "--output", out, "--max-mem", "64MB",
              "--workers", workers, "--no-progress")
    got = xr.open_zarr(out)
    np.testing.assert_array_equal(got.a.values, want * 2 + 1)
    np.testing.assert_allclose(got.m.values, want.astype("float64").mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(got.s.values, want[12:38].max(axis=0))


def test_partial_tasks_that_fold_several_blocks_match_numpy(tmp_path):
    """Blocks stop growing at 32 MB of values; a partial task then folds several blocks into
    one state (`plan` says "folded a task"). Each statistic, argmax's index across the folded
    blocks included, equals numpy's."""
    import zarr

    path = tmp_path / "long.zarr"
    rng = np.random.default_rng(5)
    data = rng.normal(0, 1, (1200, 100, 100)).astype("float32")
    data[rng.random(data.shape) < 0.05] = np.nan
    data[1100, 3, 4] = 50.0  # argmax in the last folded block of the first task's successor
    data[60, 7, 8] = 60.0  # and in the second block of the first task
    x = zarr.create_array(path, shape=data.shape, chunks=(50, 100, 100), dtype="float32",
                          fill_value=np.nan, dimension_names=["time", "lat", "lon"])
    x[:] = data
    stmts = ["m = x.mean('time')", "s = x.std('time')", "a = x.argmax('time')", "n = x.count('time')"]
    common = ["--input", f"x={path}", *stmts, "--max-mem", "512MB", "--workers", "1"]
    plan = oracle.ok("plan", "compute", *common, "--output", tmp_path / "p.zarr").stdout
    assert "folded a task" in plan, plan
    out = tmp_path / "out.zarr"
    oracle.ok("compute", *common, "--output", out, "--no-progress")
    got = xr.open_zarr(out)
    want = data.astype("float64")
    np.testing.assert_allclose(got.m.values, np.nanmean(want, axis=0), rtol=1e-5)
    np.testing.assert_allclose(got.s.values, np.nanstd(want, axis=0), rtol=1e-5)
    np.testing.assert_array_equal(got.a.values, np.nanargmax(want, axis=0))
    np.testing.assert_array_equal(got.n.values, np.count_nonzero(~np.isnan(data), axis=0))
    assert got.a.values[3, 4] == 1100 and got.a.values[7, 8] == 60


def test_reductions_over_kept_boxes_match_xarray_for_each_stored_type(tmp_path):
    """A block whose kept part is larger than one cache-sized box is folded box by box, each
    tile's reads decoded from their stored type (float32, float64, int16 with a _FillValue,
    uint8) once for every reduction; irregular last chunks along every axis, NaNs, a reversed
    read (gathered, not a run) and a product. Each equals xarray's."""
    rng = np.random.default_rng(11)
    shape = (13, 150, 95)  # chunks (4, 120, 80): a block's kept part (9600) is cut in boxes
    f32 = rng.normal(280, 10, shape).astype("float32")
    f32[rng.random(shape) < 0.1] = np.nan
    f32[:, 5, 7] = np.nan  # an all-NaN column: mean NaN, count 0
    i16 = rng.integers(-300, 300, shape).astype("int16")
    i16[rng.random(shape) < 0.1] = -999  # the fill value: missing, as xarray masks it
    dims = ("time", "lat", "lon")
    ds = xr.Dataset({
        "f": (dims, f32),
        "d": (dims, rng.normal(-5, 3, shape)),
        "i": (dims, i16),
        "u": (dims, rng.integers(0, 255, shape).astype("uint8")),
    })
    enc = {k: {"chunks": (4, 120, 80)} for k in ds.data_vars}
    enc["i"]["_FillValue"] = -999
    path = tmp_path / "in.zarr"
    ds.to_zarr(path, encoding=enc, zarr_format=3, consolidated=False)
    ds = xr.open_zarr(path)
    stmts = {
        "fm = f.mean('time')": ds.f.mean("time"),
        "fs = f.std('time')": ds.f.std("time"),
        "fn = f.min('time')": ds.f.min("time"),
        "fa = f.fillna(0).argmax('time')": ds.f.fillna(0).argmax("time"),
        "fc = f.count('time')": ds.f.count("time"),
        "ff = (f * f).mean('time')": (ds.f * ds.f).mean("time"),
        "fr = f.isel(lat=slice(None, None, -1)).sum('time')": ds.f.isel(lat=slice(None, None, -1)).sum("time"),
        "dm = d.mean('time')": ds.d.mean("time"),
        "dv = d.var('time')": ds.d.var("time"),
        "im = i.mean('time')": ds.i.mean("time"),
        "ix = i.max('time')": ds.i.max("time"),
        "um = u.mean('time')": ds.u.mean("time"),
        "us = (u * d).sum('time')": (ds.u * ds.d).sum("time"),
    }
    out = tmp_path / "out.zarr"
    oracle.ok("compute", "--input", f"ds={path}", *stmts, "--output", out,
              "--max-mem", "256MB", "--no-progress")
    got = xr.open_zarr(out)
    for stmt, want in stmts.items():
        name = stmt.split(" =")[0]
        want = want.compute()
        assert got[name].dtype == want.dtype, (stmt, got[name].dtype, want.dtype)
        np.testing.assert_allclose(got[name].values, want.values, rtol=1e-5, equal_nan=True,
                                   err_msg=stmt)


def test_cf_packed_inputs_unpack_as_xarray_decodes_them(tmp_path):
    """Inputs packed as archives pack them (int16 with scale_factor, add_offset and a
    _FillValue; uint8 with a scale alone; int32 with an offset alone; a one-element list as
    netCDF tools write it) read as xarray decodes them: float64, masked, unpacked, through a
    plain read, a reduction, a groupby mean and an irregular last chunk; the outputs carry no
    packing for a reader to apply again."""
    rng = np.random.default_rng(5)
    shape = (30, 9, 13)  # chunks (7, 4, 5): every last chunk partial
    dims = ("time", "lat", "lon")
    temp = rng.normal(285, 12, shape)
    temp[rng.random(shape) < 0.1] = np.nan
    ds = xr.Dataset(
        {
            "t": (dims, temp, {"units": "K"}),
            "c": (dims, rng.uniform(0, 1, shape)),
            "p": (dims, rng.normal(101325, 800, shape)),
        },
        coords={"time": np.arange(30.0), "lat": np.linspace(-40, 40, 9), "lon": np.arange(13.0)},
    )
    ds["time"].attrs = {"units": "days since 2001-01-01", "calendar": "standard"}
    enc = {
        "t": {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0, "_FillValue": -32767,
              "chunks": (7, 4, 5)},
        "c": {"dtype": "uint8", "scale_factor": 1 / 250, "_FillValue": None, "chunks": (7, 4, 5)},
        "p": {"dtype": "int32", "add_offset": 100000.0, "_FillValue": None, "chunks": (7, 4, 5)},
    }
    path = tmp_path / "packed.zarr"
    ds.to_zarr(path, encoding=enc, zarr_format=3, consolidated=False)
    # netCDF tools write attributes as one-element lists; xarray takes the element
    root = zarr.open_group(path, mode="r+")
    root["p"].attrs["add_offset"] = [100000.0]
    packed = xr.open_zarr(path, consolidated=False)
    assert packed.t.encoding["dtype"] == np.int16 and packed.t.dtype == np.float64
    stmts = {
        "tt = t": packed.t,
        "tm = t.mean('time')": packed.t.mean("time"),
        "ta = t - t.mean('time')": packed.t - packed.t.mean("time"),
        "cs = (c * p).sum('lat')": (packed.c * packed.p).sum("lat"),
        "pm = p.max('lon')": packed.p.max("lon"),
        "tg = t.groupby('time.month').mean('time')": packed.t.groupby("time.month").mean("time"),
    }
    out = tmp_path / "out.zarr"
    oracle.ok("compute", "--input", f"ds={path}", *stmts, "--output", out, "--max-mem", "256MB",
              "--no-progress")
    got = xr.open_zarr(out)
    for stmt, want in stmts.items():
        name = stmt.split(" =")[0]
        want = want.compute()
        assert got[name].dtype == want.dtype == np.float64, (stmt, got[name].dtype, want.dtype)
        if name == "tt":  # each value unpacked as xarray does it, bit for bit
            np.testing.assert_array_equal(got[name].values, want.values, err_msg=stmt)
        else:  # sums in another order than numpy's pairwise one (anomalies cancel: atol)
            np.testing.assert_allclose(got[name].values, want.values, rtol=1e-12, atol=1e-9, equal_nan=True,
                                       err_msg=stmt)
        raw = zarr.open_array(out, path=name)
        assert not {"scale_factor", "add_offset"} & set(raw.attrs), (stmt, dict(raw.attrs))


def test_an_integer_scale_alone_is_refused_before_writing(tmp_path):
    """xarray would "unpack" an integer scale_factor without an add_offset into an integer
    type: compute refuses it, naming the array, and writes nothing."""
    path = tmp_path / "in.zarr"
    xr.Dataset({"v": (("x",), np.arange(10, dtype="int16"))}).to_zarr(path, zarr_format=3, consolidated=False)
    zarr.open_array(path, path="v", mode="r+").attrs["scale_factor"] = 2
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", "m = v.mean('x')", "--output", out,
                   "--max-mem", "64MB", "--no-progress")
    oracle.assert_one_error_line(r, codes=[2, 3], mentions=["scale_factor", "integer"])
    assert not out.exists()
    assert not (tmp_path / "out.zarr.work").exists()


def test_integer_arithmetic_wraps_as_numpy_does(tmp_path):
    """Integer results beyond their type's range wrap around as numpy's do (int16 products and
    sums, uint8 sums, negation and abs and floor division of the minimum), and integer sums
    accumulate in int64 as numpy's do."""
    path = tmp_path / "in.zarr"
    xr.Dataset({
        "n": (("x",), np.array([300, -300, 200, 32767, -32768, 7], dtype="int16")),
        "u": (("x",), np.array([200, 100, 255, 0, 1, 2], dtype="uint8")),
    }).to_zarr(path, zarr_format=3, consolidated=False)
    ds = xr.open_zarr(path, consolidated=False)
    with np.errstate(over="ignore"):
        stmts = {
            "a = n * n": ds.n * ds.n,
            "b = n + n - 7": ds.n + ds.n - 7,
            "c = u + u": ds.u + ds.u,
            "d = -n": -ds.n,
            "e = abs(n)": abs(ds.n),
            "g = n // -1": ds.n // -1,
            "s = (n * n).sum()": (ds.n * ds.n).sum(),
        }
        wants = {stmt: want.compute() for stmt, want in stmts.items()}
    out = tmp_path / "out.zarr"
    oracle.ok("compute", "--input", f"ds={path}", *stmts, "--output", out, "--max-mem", "64MB", "--no-progress")
    got = xr.open_zarr(out, consolidated=False)
    for stmt, want in wants.items():
        name = stmt.split(" =")[0]
        assert got[name].dtype == want.dtype, (stmt, got[name].dtype, want.dtype)
        np.testing.assert_array_equal(got[name].values, want.values, err_msg=stmt)


def test_a_dimension_named_x_selects_like_any_other(tmp_path):
    """`v.sel(x=…)`, `v.isel(x=…)` and `v.chunk(x=…)` took the keyword `x` for the array the
    method is called on (the argument's name), not the dimension `x`: every selection on the
    commonest name of a projected grid's dimension failed ("'x' has no coordinate to select
    by; dimensions: ")."""
    rng = np.random.default_rng(11)
    ds = xr.Dataset({"v": (("y", "x"), rng.normal(size=(5, 8)))},
                    coords={"y": np.arange(5.0) * 10, "x": np.array([0, 10, 20, 30, 40, 50, 60, 70])})
    path = tmp_path / "xy.zarr"
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    ds = xr.open_zarr(path, consolidated=False)
    stmts = {
        "a = v.sel(x=23, method='nearest')": ds.v.sel(x=23, method="nearest"),
        "b = v.sel(x=40)": ds.v.sel(x=40),
        "c = v.isel(x=slice(1, 6, 2)).mean('y')": ds.v.isel(x=slice(1, 6, 2)).mean("y"),
        "d = v.chunk(x=3).sum('x')": ds.v.chunk(x=3).sum("x"),
    }
    got = compute(tmp_path, path, *stmts)
    for stmt, want in stmts.items():
        name = stmt.split(" =")[0]
        assert got[name].dims == want.dims, stmt
        np.testing.assert_allclose(got[name].values, want.values, rtol=1e-12, err_msg=stmt)


def test_unsigned_bytes_are_refused_rather_than_read_with_the_wrong_sign(tmp_path):
    """A packed int8 array with `_Unsigned = "true"` (netCDF-3 bytes): xarray reads the bytes as
    uint8 before unpacking; compute read them signed, and every value above 127 came out 256
    scale steps too low, silently. Refused now, naming the attribute, nothing written."""
    raw = np.array([[-56, 3], [100, -1]], dtype="int8")
    path = tmp_path / "in.zarr"
    xr.Dataset({"v": (("x", "y"), raw)}).to_zarr(path, zarr_format=3, consolidated=False)
    attrs = zarr.open_array(path, path="v", mode="r+").attrs
    attrs.update({"_Unsigned": "true", "scale_factor": 0.5, "add_offset": 1.0})
    want = xr.open_zarr(path, consolidated=False).v.mean("x").values
    np.testing.assert_array_equal(want, [(200 + 100) / 2 * 0.5 + 1, (3 + 255) / 2 * 0.5 + 1])
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", "m = v.mean('x')", "--output", out,
                   "--max-mem", "64MB", "--no-progress")
    oracle.assert_one_error_line(r, codes=[2, 3], mentions=["_Unsigned"])
    assert not out.exists()


def test_sel_with_a_method_refuses_a_repeated_label_as_xarray_does(tmp_path):
    """pandas finds no nearest label in a coordinate holding one twice (xarray raises); compute
    picked one of them."""
    ds = xr.Dataset({"v": (("t",), np.arange(5.0))}, coords={"t": [1.0, 2.0, 2.0, 3.0, 4.0]})
    path = tmp_path / "in.zarr"
    ds.to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(Exception, match="uniquely valued"):
        xr.open_zarr(path, consolidated=False).v.sel(t=2.1, method="nearest")
    out = tmp_path / "out.zarr"
    r = oracle.run("compute", "--input", f"ds={path}", "m = v.sel(t=2.1, method='nearest')",
                   "--output", out, "--max-mem", "64MB", "--no-progress")
    oracle.assert_one_error_line(r, codes=[2], mentions=["label 2 more than once"])
    assert not out.exists()


@pytest.mark.parametrize("missing", [[-32767], [-32767, 7]])
def test_a_missing_value_list_masks_every_value_in_it(tmp_path, missing):
    """`missing_value` as a list (netCDF tools write one-element lists; CF allows several):
    xarray masks each value before unpacking; compute ignored the list, so a packed array's
    missing values came out as numbers (-32767 × 0.5 = -16383.5)."""
    raw = np.array([[1, -32767, 3], [4, 5, 7]], dtype="int16")
    path = tmp_path / "in.zarr"
    xr.Dataset({"v": (("x", "y"), raw)}).to_zarr(path, zarr_format=3, consolidated=False)
    zarr.open_array(path, path="v", mode="r+").attrs.update({"missing_value": missing, "scale_factor": 0.5})
    want = xr.open_zarr(path, consolidated=False).v
    assert int(want.isnull().sum()) == len(missing), "the premise: xarray masks each listed value"
    got = compute(tmp_path, path, "m = v * 1", "s = v.sum('y')")
    np.testing.assert_array_equal(got.m.values, want.values)
    np.testing.assert_array_equal(got.s.values, want.sum("y").values)
