"""The memory promise at every budget: `--max-mem` is known before the work starts and holds.

For rechunk, convert and a compute reduction, on small generated data whose tasks are bound by
the budget, a sweep of budgets checks that

* `plan` and the run agree: both accept, or both refuse with exit 3 (one memory model);
* an accepted run's peak resident memory, measured from outside by the kernel (``wait4``'s
  ``ru_maxrss``: the largest peak of the process and of every worker process it waited for), is
  within the budget, and its values equal numpy's;
* a refusal writes nothing and names a budget (``--max-mem NMB would fit``) that `plan` and the
  run then accept, while one megabyte less is still refused;
* the report's peak is the true maximum: with the processes executor it includes the workers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import oracle

MB = 1_000_000
# 48 MB leaves nothing for tasks beside the baseline allowance and the reserve; 64 MB refuses
# the smallest task of some of the jobs below; the others are accepted with tasks of a few to
# a hundred megabytes.
BUDGETS = [48, 64, 80, 96, 128, 256]
SHAPE = (96, 160, 320)  # float32: 19.7 MB, several times what a task holds at the small budgets
SOURCE_CHUNKS = (4, 160, 320)  # 0.8 MB
TARGET = "96,16,32"
# The files' chunks are smaller: at the tightest budgets convert reads each source chunk several
# times (multipass), which costs far less with small chunks.
FILE_CHUNKS = (4, 40, 80)
FITS = re.compile(r"--max-mem (\d+)MB would fit")


# Started by a small interpreter of its own: Linux carries a process's high-water mark over
# exec, so a chunkmill started straight from this test process (hundreds of MB with numpy and
# the data) would report this process's peak. The launcher forks (its copy holds a few MB),
# execs chunkmill and reaps it with wait4, whose ru_maxrss is the largest peak of chunkmill and
# of every worker process chunkmill itself reaped.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def measured(*args) -> tuple[int, int, str, str]:
    """Runs chunkmill; returns its exit code, the peak resident memory in bytes of the largest
    of its processes (the kernel's count), stdout and stderr."""
    rss = Path(os.environ.get("TMPDIR", "/tmp")) / f"chunkmill-maxrss-{os.getpid()}"
    cmd = [sys.executable, "-S", "-c", LAUNCHER, rss, oracle.chunkmill_bin(), *args]
    r = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, timeout=oracle.TIMEOUT,
                       env={**os.environ, "NO_COLOR": "1"}, stdin=subprocess.DEVNULL)
    peak_kib = int(rss.read_text())
    rss.unlink()
    return r.returncode, peak_kib * 1024, r.stdout, r.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets")
    values = oracle.smooth(SHAPE, "float32", seed=5)
    source = root / "src.zarr"
    group = zarr.open_group(source, mode="w", zarr_format=3)
    z = group.create_array("air", shape=SHAPE, chunks=SOURCE_CHUNKS, dtype="float32",
                           dimension_names=["time", "lat", "lon"])
    z[:] = values
    zarr.consolidate_metadata(source)
    files = []
    per_file = SHAPE[0] // 4
    for i in range(4):
        path = root / f"day{i}.nc"
        with netCDF4.Dataset(path, "w") as ds:
            ds.createDimension("time", None)
            ds.createDimension("lat", SHAPE[1])
            ds.createDimension("lon", SHAPE[2])
            t = ds.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            t[:] = np.arange(i * per_file, (i + 1) * per_file)
            v = ds.createVariable("air", "f4", ("time", "lat", "lon"), zlib=True, complevel=1,
                                  chunksizes=FILE_CHUNKS)
            v[:] = values[i * per_file:(i + 1) * per_file]
        files.append(path)
    return {"values": values, "source": source, "files": files, "root": root}


def job_args(job: str, data, target: Path, budget_mb: int) -> list:
    """The arguments of `chunkmill JOB` (and `chunkmill plan JOB`) at `budget_mb`."""
    common = ["--max-mem", f"{budget_mb}MB", "--no-progress"]
    if job == "rechunk":
        return [data["source"], target, "--chunks", TARGET, *common]
    if job == "convert":
        return [*data["files"], target, "--chunks", "time=-1,lat=16,lon=32", *common]
    return ["--input", f"ds={data['source']}", "m = air.mean('time')", "--output", target,
            "--chunks", "lat=40,lon=320", *common]


def expected(job: str, data) -> tuple[str, np.ndarray]:
    """The array the job writes, and its values computed with numpy."""
    if job in ("rechunk", "convert"):
        return "air", data["values"]
    return "m", data["values"].astype("float64").mean(axis=0)


def check_values(job: str, data, target: Path) -> None:
    name, want = expected(job, data)
    got = zarr.open_group(target, mode="r")[name]
    if job == "compute":
        np.testing.assert_allclose(got[...], want, rtol=1e-6)
    else:
        np.testing.assert_array_equal(got[...], want)


def plan_code(job: str, data, target: Path, budget_mb: int) -> tuple[int, str]:
    r = oracle.run("plan", job, *job_args(job, data, target, budget_mb))
    assert r.returncode in (0, 3), oracle.describe(r)
    assert not target.exists(), "plan wrote the target"
    return r.returncode, r.stderr


def assert_refusal_names_a_budget_that_fits(job: str, data, tmp_path: Path, message: str) -> None:
    found = FITS.search(message)
    assert found, message
    fits = int(found.group(1))
    target = tmp_path / f"fit{fits}.zarr"
    assert plan_code(job, data, target, fits - 1)[0] == 3, f"{fits - 1} MB would fit too"
    assert plan_code(job, data, target, fits)[0] == 0
    code, peak, _, err = measured(job, *job_args(job, data, target, fits))
    assert code == 0, err
    assert peak <= fits * MB, f"{job} at --max-mem {fits}MB (the budget named): peak {peak / MB:.1f} MB"
    check_values(job, data, target)


@pytest.mark.parametrize("job", ["rechunk", "convert", "compute"])
def test_plan_and_run_agree_and_runs_stay_within_every_budget(tmp_path, data, job):
    outcomes, refusals = {}, []
    for budget in BUDGETS:
        target = tmp_path / f"out{budget}.zarr"
        planned, plan_err = plan_code(job, data, target, budget)
        code, peak, _, err = measured(job, *job_args(job, data, target, budget))
        outcomes[budget] = code
        assert code == planned, f"--max-mem {budget}MB: plan exited {planned}, the run {code}: {err}"
        if code == 3:
            assert not target.exists() and not Path(f"{target}.work").exists(), "a refusal wrote"
            refusals.append((err, plan_err))
            continue
        assert code == 0, err
        assert peak <= budget * MB, f"{job} --max-mem {budget}MB: measured peak RSS {peak / MB:.1f} MB"
        check_values(job, data, target)
    # The sweep covers both sides of the line.
    assert outcomes[BUDGETS[0]] == 3 and outcomes[BUDGETS[-1]] == 0, outcomes
    for err, plan_err in refusals:
        # Plan and run name the same budget.
        assert FITS.search(err) and FITS.search(plan_err), (err, plan_err)
        assert FITS.search(err).group(1) == FITS.search(plan_err).group(1), (err, plan_err)


@pytest.mark.parametrize("job", ["rechunk", "convert", "compute"])
def test_a_refusal_names_the_smallest_budget_that_fits(tmp_path, data, job):
    target = tmp_path / "out.zarr"
    code, _, _, err = measured(job, *job_args(job, data, target, 48))
    assert code == 3, err
    assert not target.exists() and not Path(f"{target}.work").exists()
    assert_refusal_names_a_budget_that_fits(job, data, tmp_path, err)


def test_the_report_peak_is_the_largest_of_every_process(tmp_path, data):
    """With worker processes the parent holds little; its report must still give the workers'
    peak (each within the budget), not its own."""
    target = tmp_path / "out.zarr"
    code, peak, out, err = measured("rechunk", *job_args("rechunk", data, target, 96), "--json",
                                    "--executor", "processes")
    assert code == 0, err
    report = json.loads(out)
    assert peak <= 96 * MB, f"a process peaked at {peak / MB:.1f} MB"
    # The kernel's figure is read after the parent exits; the report's just before.
    assert report["peak_rss"] >= 0.97 * peak, (report["peak_rss"], peak)
    check_values("rechunk", data, target)


def test_tasks_that_fit_one_at_a_time_stay_within_the_budget_on_many_threads(tmp_path):
    """At --max-mem 96MB one 33 MB task fits at a time. Four worker threads that each ran one
    in turn each kept a task's worth of freed heap in their own allocator arena: 121 MB."""
    source = tmp_path / "src.zarr"
    shape = (480, 180, 360)  # float32, 124 MB
    values = np.random.default_rng(3).random(shape, dtype="float32")
    z = zarr.create_array(source, shape=shape, chunks=(24, 180, 360), dtype="float32", zarr_format=3)
    z[:] = values
    target = tmp_path / "out.zarr"
    args = ["rechunk", source, target, "--chunks", "480,18,36", "--max-mem", "96MB", "--workers", "4",
            "--no-progress"]
    plan = json.loads(oracle.ok("plan", *args, "--json").stdout)
    assert plan["max_projected_mem"] > plan["task_budget"] / 2, "tasks must fit only one at a time"
    code, peak, _, err = measured(*args)
    assert code == 0, err
    assert peak <= 96 * MB, f"measured peak RSS {peak / MB:.1f} MB"
    np.testing.assert_array_equal(zarr.open_array(target, mode="r")[...], values)
