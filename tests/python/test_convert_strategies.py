"""How `chunkmill convert` moves data that does not fit one task: through raw intermediate
pieces, compressed ones (LZ4, Zstandard-1), or by re-reading the sources (multipass), as its cost
model prices them. `CHUNKMILL_COSTS` gives the model's coefficients (MB/s), so each strategy can
be made the cheapest here; whichever runs, xarray must read the result equal to
`xarray.open_mfdataset` of the same files. A run through compressed pieces killed and resumed
with some pieces corrupted or cut short must not trust them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

import oracle

NT, NLAT, NLON, DAYS = 24, 72, 144, 8
CHUNKS = "time=-1,lat=12,lon=16"

# Coefficients (MB/s) that make one strategy the cheapest: everything else slow or pieces free.
FORCE = {
    "raw": "defaults,zlib_decode=1,write=1000000,read=1000000,lz4_encode=0.01,zstd1_encode=0.01",
    "lz4": "defaults,zlib_decode=1,write=0.5,read=0.5,lz4_encode=1000000,lz4_decode=1000000,zstd1_encode=0.01",
    "zstd1": "defaults,zlib_decode=1,write=0.5,read=0.5,zstd1_encode=1000000,zstd_decode=1000000,lz4_encode=0.01",
    "multipass": "defaults,zlib_decode=100000000,write=0.001,read=0.001,lz4_encode=0.001,zstd1_encode=0.001",
}


def write_day(path: Path, day: int) -> None:
    """A day of a smooth field in whole time slices (the benchmark's `air` layout), rounded so
    that LZ4 and Zstandard find something to compress, with a masked value."""
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("time", None)
    ds.createDimension("lat", NLAT)
    ds.createDimension("lon", NLON)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2020-01-01"
    t[:] = np.arange(NT) + NT * day
    ds.createVariable("lat", "f4", ("lat",))[:] = np.linspace(88.75, -88.75, NLAT)
    ds.createVariable("lon", "f4", ("lon",))[:] = np.arange(NLON) * 2.5
    v = ds.createVariable("wind", "f4", ("time", "lat", "lon"), zlib=True, complevel=4,
                          chunksizes=(1, NLAT, NLON), fill_value=np.float32(-9999.0))
    tt, yy, xx = np.meshgrid(np.arange(NT) + NT * day, np.arange(NLAT), np.arange(NLON), indexing="ij")
    values = np.round(10 * np.sin(xx / 9.0 + tt / 30.0) + 5 * np.cos(yy / 7.0), 1).astype("f4")
    values = np.ma.array(values, mask=np.zeros(values.shape, bool))
    values.mask[0, 3, 4] = True
    v[:] = values
    ds.close()


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    files = [root / f"day{d:02d}.nc" for d in range(DAYS)]
    for d, f in enumerate(files):
        write_day(f, d)
    return files


def env(strategy: str) -> dict:
    return {**os.environ, "CHUNKMILL_COSTS": FORCE[strategy]}


def args(files, target, *extra):
    return ["convert", *map(str, files), str(target), "--chunks", CHUNKS, "--max-mem", "64MB",
            "--concat-dim", "time", "--no-progress", *extra]


def planned(files, target, strategy: str, *extra) -> dict:
    r = oracle.run("plan", *args(files, target, "--json", *extra), env=env(strategy))
    assert r.returncode == 0, oracle.describe(r)
    plan = json.loads(r.stdout)
    return next(a for a in plan["arrays"] if a["path"] == "wind"), plan


def want(files) -> xr.Dataset:
    return xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()


def kill_at_slow_task(argv, environment, task, flag):
    """Runs chunkmill with `argv` and kills it (SIGKILL, whole session) once it holds task
    number `task` (the binary's CHUNKMILL_TEST_SLOW_TASK hook writes `flag` there)."""
    proc = subprocess.Popen([str(oracle.chunkmill_bin()), *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True,
                            env={**environment, "CHUNKMILL_TEST_SLOW_TASK": f"{task}:{flag}"})
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flag.exists(), f"never reached the slow task: {proc.poll()}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.parametrize("strategy", ["raw", "lz4", "zstd1", "multipass"])
def test_each_strategy_the_model_picks_gives_what_open_mfdataset_reads(tmp_path, days, strategy):
    target = tmp_path / "t.zarr"
    wind, plan = planned(days, target, strategy)
    if strategy == "multipass":
        assert wind["strategy"] == "multipass", wind
        assert "pieces" not in wind
    else:
        assert wind["strategy"] in ("intermediate", "multistage"), wind
        assert wind["pieces"] == strategy, wind
    # The others were priced too, and dearer.
    assert wind["alternatives"] and all(
        a["estimated_seconds"] >= wind["estimated_seconds"] * 0.999 for a in wind["alternatives"])
    assert plan["cost_model"]["origin"]["kind"] == "environment"
    r = oracle.run(*args(days, target), env=env(strategy))
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want(days))
    assert not Path(f"{target}.work").exists()


def test_plan_prints_the_chosen_strategy_its_rivals_and_why(tmp_path, days):
    r = oracle.run("plan", *args(days, tmp_path / "t.zarr"), env=env("lz4"))
    assert r.returncode == 0, oracle.describe(r)
    line = next(l for l in r.stdout.splitlines() if l.startswith("array wind"))
    assert "intermediate (lz4 pieces)" in line or "multistage (lz4 pieces)" in line, r.stdout
    assert "why: " in r.stdout and "raw pieces" in r.stdout and "priced: " in r.stdout
    assert "cost model (CHUNKMILL_COSTS" in r.stdout
    bad = oracle.run("plan", *args(days, tmp_path / "t.zarr"),
                     env={**os.environ, "CHUNKMILL_COSTS": "write=fast"})
    oracle.assert_one_error_line(bad, codes={2}, mentions=["CHUNKMILL_COSTS", "write=fast"])


@pytest.mark.parametrize("codec", ["lz4", "zstd1"])
def test_resume_after_kill_never_trusts_a_cut_or_corrupt_compressed_piece(tmp_path, days, codec):
    target = tmp_path / "t.zarr"
    # Two at a time: the write stage has more tasks than the read stage.
    two = ("--workers", "2")
    wind, plan = planned(days, target, codec, *two)
    stages = [s for s in plan["stages"] if s["label"].startswith("wind")]
    first, second = stages[0]["tasks"], stages[1]["tasks"]
    assert second > first, stages
    # Task `first` of any stage is first reached in the second stage, whose inputs are all
    # written: the run is killed while it reads them.
    kill_at_slow_task(args(days, target, *two), env(codec), first, tmp_path / "slow.pid")
    pieces = sorted(p for p in Path(f"{target}.work", "intermediate").rglob("*") if p.is_file())
    assert pieces, "the killed run left no pieces"
    head = pieces[0].read_bytes()
    assert head[:4] == b"CMPC", "pieces are not compressed"
    # What a lost write may leave: one piece cut short, one with a byte changed, one zeroed.
    for i, piece in enumerate(pieces):
        data = bytearray(piece.read_bytes())
        if i % 3 == 0:
            data = data[: len(data) - 7]
        elif i % 3 == 1:
            data[len(data) // 2 + 16] ^= 0x5A
        else:
            data = bytearray(len(data))
        piece.write_bytes(bytes(data))
    r = oracle.run(*args(days, target, *two, "--resume"), env=env(codec))
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want(days))


def test_resume_plans_with_the_coefficients_recorded_although_the_cache_was_deleted(tmp_path, days):
    """The cost model's coefficients come from a cache file; a resume must not depend on it:
    numbers measured again (here: a real disk against the slow one cached) would plan another
    job, whose id the work dir's plan refuses."""
    target = tmp_path / "t.zarr"
    # Two at a time: the write stage has more tasks than the read stage.
    two = ("--workers", "2")
    cache = tmp_path / "cache"
    (cache / "chunkmill").mkdir(parents=True)
    # A cache that makes LZ4 pieces the cheapest, under both build flavours' names.
    forced = dict(item.split("=") for item in FORCE["lz4"].split(",")[1:])
    numbers = {**{k: 1000.0 for k in ("zlib_decode", "zstd_decode", "lz4_decode", "shuffle",
                                      "lz4_encode", "zstd1_encode", "write", "read")},
               **{k: float(v) for k, v in forced.items()}}
    dev = os.stat(tmp_path).st_dev
    for suffix in ("", "-debug"):
        (cache / "chunkmill" / f"costs-dev{dev}{suffix}.json").write_text(json.dumps(numbers))
    base = {k: v for k, v in os.environ.items() if k != "CHUNKMILL_COSTS"}
    cached = {**base, "XDG_CACHE_HOME": str(cache)}
    r = oracle.run("plan", *args(days, target, "--json", *two), env=cached)
    assert r.returncode == 0, oracle.describe(r)
    plan = json.loads(r.stdout)
    assert plan["cost_model"]["origin"]["kind"] == "cached", plan["cost_model"]
    wind = next(a for a in plan["arrays"] if a["path"] == "wind")
    assert wind["pieces"] == "lz4", wind
    stages = [s for s in plan["stages"] if s["label"].startswith("wind")]
    kill_at_slow_task(args(days, target, *two), cached, stages[0]["tasks"], tmp_path / "slow.pid")
    for f in (cache / "chunkmill").iterdir():
        f.unlink()
    # The premise: measured again, this machine plans another job.
    fresh = {**base, "XDG_CACHE_HOME": str(tmp_path / "fresh-cache")}
    r = oracle.run("plan", *args(days, tmp_path / "other.zarr", "--json", *two), env=fresh)
    assert r.returncode == 0, oracle.describe(r)
    other = next(a for a in json.loads(r.stdout)["arrays"] if a["path"] == "wind")
    assert other.get("pieces") != "lz4", other
    r = oracle.run(*args(days, target, *two, "--resume"), env=cached)
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want(days))
    assert not Path(f"{target}.work").exists()


@pytest.mark.skipif(not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and two cores")
def test_resume_on_a_machine_with_fewer_cores_plans_the_run_it_resumes(tmp_path, days):
    """Plan kinds are compared at the machine's core count, so a job killed on two cores and
    resumed on one (a batch job requeued on a smaller node) planned another job, which no
    worker count turns into the run's, and the resume was refused (exit 3). The resume now
    plans with the cores the run recorded."""
    target = tmp_path / "t.zarr"
    four = ("--workers", "4")

    def argv(*extra):
        return [a if a != "64MB" else "90MB" for a in args(days, target, *extra)]
    costs = {**os.environ, "CHUNKMILL_COSTS": "defaults,zlib_decode=10,write=100,read=100"}
    one_core = ("taskset", "-c", str(min(os.sched_getaffinity(0))))

    def plan(launcher):
        r = subprocess.run([*launcher, str(oracle.chunkmill_bin()), "plan",
                            *argv("--json", *four)],
                           capture_output=True, text=True, env=costs, timeout=120)
        assert r.returncode == 0, r.stderr
        p = json.loads(r.stdout)
        return p, next(a for a in p["arrays"] if a["path"] == "wind")

    on_two, wind_two = plan(())
    on_one, wind_one = plan(one_core)
    # The premise: two cores make small tasks, two at a time, the cheaper kind; one core
    # decodes each source chunk once in one large task.
    assert wind_one["strategy"] == "direct", wind_one
    assert wind_two["strategy"] != "direct", wind_two
    assert on_one["plan_id"] != on_two["plan_id"]
    # Killed at its first task: the work dir holds the two-core plan.
    kill_at_slow_task(argv(*four), costs, 0, tmp_path / "slow.pid")
    assert Path(f"{target}.work").exists()
    r = subprocess.run([*one_core, str(oracle.chunkmill_bin()), *argv(*four, "--resume")],
                       capture_output=True, text=True, env=costs, timeout=300)
    assert r.returncode == 0, r.stderr
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want(days))
    assert not Path(f"{target}.work").exists()
