"""The SLURM executor against a real SLURM (slurmctld, slurmd and munge on this machine, started
by scripts/test through scripts/slurm-local with MaxArraySize=8): a rechunk through job arrays
equals the same rechunk on threads byte for byte; stages are chained; arrays stay under
MaxArraySize; a worker killed mid-task is resubmitted and the run completes; a task that keeps
failing is reported with its reason; Ctrl-C cancels every job and --resume finishes.

Without a SLURM these tests skip, unless CHUNKMILL_REQUIRE_SLURM=1 (set by scripts/test), which
turns the skip into a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import zarr

import oracle

SHAPE, CHUNKS, SPEC = (400, 60, 60), (4, 60, 60), "time=-1,lat=6,lon=6"
# Small enough that the plan goes through an intermediate store: two stages to chain.
BUDGET = "64MB"


def _slurm_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not re.search(r"idle|mix|alloc", r.stdout):
        return f"no SLURM node is up: {r.stdout.strip()} {r.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("CHUNKMILL_REQUIRE_SLURM") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return {"max_array": int(re.search(r"MaxArraySize\s*=\s*(\d+)", config).group(1))}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("slurm") / "src.zarr"
    return path, oracle.write_series(path, SHAPE, CHUNKS)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, source):
    src, _ = source
    ref = tmp_path_factory.mktemp("slurm-ref") / "threads.zarr"
    oracle.ok(*oracle.rechunk_args(src, ref, SPEC, BUDGET, "--workers", "2"))
    return ref


def same_tree(a, b):
    fa, fb = oracle.tree_files(a), oracle.tree_files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []


def slurm_args(src, tgt, work, *extra):
    return oracle.rechunk_args(src, tgt, SPEC, BUDGET, "--executor", "slurm", "--workers", "4",
                               "--work-dir", work, *extra)


def no_jobs_left():
    r = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True)
    return [j for j in r.stdout.split() if j.startswith("chunkmill-")] == []


def test_slurm_rechunk_equals_threads_byte_for_byte(tmp_path, slurm, source, reference):
    src, data = source
    plan = json.loads(oracle.ok("plan", *oracle.rechunk_args(src, tmp_path / "p.zarr", SPEC, BUDGET), "--json").stdout)
    assert len(plan["stages"]) >= 2, "the test wants chained stages"
    tgt, work = tmp_path / "slurm.zarr", tmp_path / "work"
    r = oracle.ok(*slurm_args(src, tgt, work, "--json"))
    report = json.loads(r.stdout)
    assert report["tasks_run"] == sum(s["tasks"] for s in plan["stages"])
    same_tree(reference, tgt)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)
    # One array per stage, each with at most MaxArraySize elements, each element's log present.
    logs = sorted(p.name for p in (work / "slurm-logs").iterdir())
    for stage in plan["stages"]:
        elements = {m.group(1) for n in logs if (m := re.fullmatch(rf"chunkmill-{stage['name']}-\d+_(\d+)\.log", n))}
        assert 1 <= len(elements) <= slurm["max_array"], (stage["name"], logs)
        if stage["tasks"] > slurm["max_array"]:
            assert len(elements) == slurm["max_array"] or len(elements) < stage["tasks"]
    assert no_jobs_left()


def test_slurm_worker_killed_mid_task_is_resubmitted(tmp_path, slurm, source, reference):
    src, data = source
    tgt, work, flag = tmp_path / "t.zarr", tmp_path / "work", tmp_path / "slow-task"
    env = {**os.environ, "CHUNKMILL_TEST_SLOW_TASK": f"3:{flag}"}
    driver = subprocess.Popen([str(oracle.chunkmill_bin()), *map(str, slurm_args(src, tgt, work, "--json"))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (flag.exists() and flag.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the hook should have slowed the worker of task 3"
    os.kill(int(flag.read_text()), signal.SIGKILL)  # the worker, mid-task, on a SLURM node
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert json.loads(out)["retries"] >= 1
    same_tree(reference, tgt)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)


def test_slurm_task_that_keeps_failing_is_reported(tmp_path, slurm, source):
    src, _ = source
    tgt, work = tmp_path / "t.zarr", tmp_path / "work"
    r = oracle.run(*slurm_args(src, tgt, work, "--retries", "1"), env={"CHUNKMILL_TEST_FAULT_RATE": "1"})
    assert r.returncode == 1, oracle.describe(r)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "injected fault" in lines[0], r.stderr
    assert no_jobs_left()
    # The markers of nothing; a resume without the fault finishes the run.
    oracle.ok(*slurm_args(src, tgt, work, "--resume"))
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], source[1])


def test_ctrl_c_cancels_every_job_and_resume_finishes(tmp_path, slurm, source, reference):
    src, data = source
    tgt, work, flag = tmp_path / "t.zarr", tmp_path / "work", tmp_path / "slow-task"
    env = {**os.environ, "CHUNKMILL_TEST_SLOW_TASK": f"5:{flag}"}
    driver = subprocess.Popen([str(oracle.chunkmill_bin()), *map(str, slurm_args(src, tgt, work))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (flag.exists() and flag.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists()
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    assert "interrupted" in err and "--resume" in err
    deadline = time.monotonic() + 30
    while not no_jobs_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert no_jobs_left(), "Ctrl-C must cancel the arrays"
    status = json.loads(oracle.ok("status", work, "--json").stdout)
    assert not status["complete"]
    oracle.ok(*slurm_args(src, tgt, work, "--resume"))
    same_tree(reference, tgt)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)



def test_slurm_options_reach_sbatch(tmp_path, slurm, source, reference):
    src, data = source
    # --slurm-opt is passed to sbatch as it is: a partition that does not exist is sbatch's error.
    r = oracle.run(*slurm_args(src, tmp_path / "bad.zarr", tmp_path / "bad-work", "--slurm-opt",
                               "--partition=no-such-partition"))
    assert r.returncode == 1 and "no-such-partition" in r.stderr, oracle.describe(r)
    assert len(r.stderr.strip().splitlines()) == 1
    # Valid options, an explicit batch of 5 tasks per element and a log dir of our own.
    tgt, work, logs = tmp_path / "t.zarr", tmp_path / "work", tmp_path / "logs"
    oracle.ok(*slurm_args(src, tgt, work, "--slurm-opt", "--partition=debug --time=00:10:00",
                          "--slurm-tasks-per-job", "5", "--slurm-log-dir", logs))
    plan = json.loads(oracle.ok("plan", *oracle.rechunk_args(src, tmp_path / "p.zarr", SPEC, BUDGET), "--json").stdout)
    names = [p.name for p in logs.iterdir()]
    for stage in plan["stages"]:
        elements = [n for n in names if n.startswith(f"chunkmill-{stage['name']}-")]
        assert len(elements) == -(-stage["tasks"] // 5), (stage, names)
    same_tree(reference, tgt)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)


def test_slurm_straggling_element_gets_a_backup(tmp_path, slurm, source, reference):
    """The element holding task 3 straggles (the test-only hook holds its worker for 60 s): once
    half the elements are done it gets a one-element backup array, which finishes its tasks;
    the straggler is cancelled and the later stage, cancelled with it, is submitted again."""
    src, data = source
    tgt, work, flag = tmp_path / "t.zarr", tmp_path / "work", tmp_path / "slow-task"
    r = oracle.run(*slurm_args(src, tgt, work, "--json"), env={"CHUNKMILL_TEST_SLOW_TASK": f"3:{flag}"})
    assert r.returncode == 0, oracle.describe(r)
    assert flag.exists(), "the hook should have slowed the worker of task 3"
    assert json.loads(r.stdout)["backups"] >= 1
    assert no_jobs_left()
    same_tree(reference, tgt)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)


def test_virtualize_and_convert_run_on_slurm(slurm, tmp_path):
    """The scan of `virtualize` as SLURM array tasks, and a `convert` whose tasks read the
    references from the work dir, equal their runs on threads."""
    import xarray as xr

    from test_convert import collection, mfdataset
    from test_virtualize import normalized_refs

    files = collection(tmp_path, days=3)
    threads, on_slurm = tmp_path / "threads.json", tmp_path / "slurm.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", threads, "--concat-dim", "time", "--no-progress")
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", on_slurm, "--concat-dim", "time", "--no-progress",
              "--executor", "slurm", "--files-per-task", "1", "--work-dir", tmp_path / "scan-work",
              timeout=600)
    assert normalized_refs(on_slurm) == normalized_refs(threads)
    target = tmp_path / "cache.zarr"
    oracle.ok("convert", str(tmp_path / "day*.nc"), target, "--concat-dim", "time", "--chunks", "time=-1,lat=12,lon=16",
              "--max-mem", BUDGET, "--select", "lat=60:-60", "--decode-cf", "--executor", "slurm", "--no-progress",
              timeout=600)
    got = oracle.open_xr_no_flags(target).load()
    xr.testing.assert_identical(got, mfdataset(files).sel(lat=slice(60, -60)))


def test_slurm_with_target_and_work_dir_on_s3(tmp_path, slurm, source):
    """Target and work dir (plan.json, markers) on the S3 server scripts/test starts (moto on
    127.0.0.1): the array elements read the plan from S3 and write chunks and markers there,
    with the endpoint and credentials the driver's environment passes through sbatch. Values
    checked against numpy after copying the target back to a local store."""
    prefix = oracle.s3_prefix("slurm")
    src, data = source
    tgt, work = f"{prefix}/t.zarr", f"{prefix}/work"
    plan = json.loads(oracle.ok("plan", *oracle.rechunk_args(src, tgt, SPEC, BUDGET, "--work-dir", work),
                                "--json").stdout)
    r = oracle.ok(*slurm_args(src, tgt, work, "--slurm-log-dir", tmp_path / "logs", "--json"))
    assert json.loads(r.stdout)["tasks_run"] == sum(s["tasks"] for s in plan["stages"])
    assert json.loads(oracle.ok("status", work, "--json").stdout)["complete"]
    assert any((tmp_path / "logs").iterdir())
    back = tmp_path / "back.zarr"
    oracle.ok(*oracle.rechunk_args(tgt, back, SPEC, BUDGET))
    np.testing.assert_array_equal(zarr.open_array(back, path="v")[...], data)
    assert no_jobs_left()
