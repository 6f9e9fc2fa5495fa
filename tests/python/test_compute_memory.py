"""Memory utilisation of `chunkmill compute`, in the spirit of Cubed's memory-utilisation tests:
every operation runs under a small `--max-mem` on data a few times larger than it, the peak
resident memory the run measures (the process, not an estimate) stays within the budget, and
measured/projected is reported. `pytest -s` prints the table:

    op | data | budget | projected task | tasks that fit the task budget | peak RSS | peak/budget |
    peak/projected

"projected" is what the plan says one task holds at most (`max_projected_mem`); "peak/projected"
compares the whole process (its baseline included, and the tasks that ran at once) with that.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import oracle

BUDGET = 100_000_000
SHAPE = (192, 250, 250)  # float64: 96 MB an array, 192 MB for the two (twice the budget); chunks of 2 MB
CHUNKS = (4, 250, 250)

OPS = {
    "elementwise": "a = sqrt(abs(x)) * 2 + where(x > 0, x, y) - exp(y / 10)",
    "astype": "a = x.astype('float32')",
    "sum": "a = x.sum('t')",
    "mean": "a = x.mean('t')",
    "min": "a = x.min('t')",
    "max": "a = x.max('t')",
    "std": "a = x.std('t')",
    "var": "a = x.var('t', ddof=1)",
    "count": "a = x.count('t')",
    "argmin": "a = x.argmin('t')",
    "argmax": "a = x.argmax('t')",
    "reduce lat,lon": "a = x.mean(['lat', 'lon'])",
    "isel": "a = x.isel(t=slice(None, None, -3), lat=slice(10, 200))",
    "anomaly": "a = x - x.mean('t')",
    "concat": "a = concat([x.isel(t=slice(0, 90)), y.isel(t=slice(90, None))], dim='t')",
    "concat new dim": "a = concat([x, y], dim='run')",
    "stack": "a = x.stack(cell=['lat', 'lon'])",
    "broadcast_like": "a = x.isel(t=0).broadcast_like(y) + y",
    "rechunk": "a = x.rechunk(t=-1, lat=10)",
    "quadratic means": "a = mean(x ** 2, dim='t'); b = mean(y ** 2, dim='t'); c = mean(x * y, dim='t')",
}

ROWS: list[str] = []


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "in.zarr"
    rng = np.random.default_rng(11)
    x = rng.normal(size=SHAPE)
    y = rng.normal(size=SHAPE)
    x[rng.random(SHAPE) < 0.01] = np.nan
    dims = ("t", "lat", "lon")
    xr.Dataset({"x": (dims, x), "y": (dims, y)}).to_zarr(
        path, encoding={"x": {"chunks": CHUNKS}, "y": {"chunks": CHUNKS}})
    yield path
    print("\n" + "\n".join([
        f"{'op':<16} {'data':>7} {'budget':>7} {'proj.task':>9} {'fit/task':>8} {'peak RSS':>8} {'peak/budget':>11} {'peak/proj':>9}",
        *ROWS,
    ]))


@pytest.mark.parametrize("op", list(OPS))
def test_compute_stays_within_its_budget(tmp_path, data, op):
    args = ["--input", f"ds={data}", *OPS[op].split("; "), "--output", tmp_path / "o.zarr",
            "--max-mem", str(BUDGET)]
    plan = json.loads(oracle.ok("plan", "compute", *args, "--json").stdout)
    report = json.loads(oracle.ok("compute", *args, "--json", "--no-progress").stdout)
    projected = plan["max_projected_mem"]
    peak = report["peak_rss"]
    data_bytes = 2 * np.prod(SHAPE) * 8
    ROWS.append(
        f"{op:<16} {data_bytes / 1e6:>5.0f}MB {BUDGET / 1e6:>5.0f}MB {projected / 1e6:>7.1f}MB "
        f"{plan['task_budget'] // max(projected, 1):>8} {peak / 1e6:>6.1f}MB {peak / BUDGET:>11.2f} {peak / projected:>9.2f}")
    assert projected <= plan["task_budget"]
    assert peak <= BUDGET, (op, peak, projected)
