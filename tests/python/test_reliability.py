"""Failures and batch engines: injected task faults are retried and give the same bytes; a run
whose tasks fail exits 1 and resumes; `chunkmill worker` runs the stages of a stored plan (the
batch-engine entry point) and `chunkmill status` follows it; a plan of another version is
refused. The fault hook (CHUNKMILL_TEST_FAULT_RATE) exists for these tests only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

import oracle

SHAPE, CHUNKS, SPEC = (400, 60, 60), (4, 60, 60), "time=-1,lat=6,lon=6"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("rel") / "src.zarr"
    return path, oracle.write_series(path, SHAPE, CHUNKS)


def rechunk(src, tgt, *extra, env=None):
    return oracle.run(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "4", *extra), env=env)


def same_tree(a, b):
    fa, fb = oracle.tree_files(a), oracle.tree_files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []


def test_injected_faults_are_retried_and_give_the_same_bytes(tmp_path, source):
    src, data = source
    oracle.ok(*oracle.rechunk_args(src, tmp_path / "ref.zarr", SPEC, "64MB", "--workers", "4"))
    r = rechunk(src, tmp_path / "faulty.zarr", "--retries", "8", "--json", env={"CHUNKMILL_TEST_FAULT_RATE": "0.1"})
    assert r.returncode == 0, oracle.describe(r)
    report = json.loads(r.stdout)
    assert report["retries"] > 0, "the fault hook should have failed some attempts"
    same_tree(tmp_path / "ref.zarr", tmp_path / "faulty.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "faulty.zarr", path="v")[...], data)


def test_failed_tasks_exit_1_and_the_run_resumes(tmp_path, source):
    src, data = source
    tgt, work = tmp_path / "t.zarr", tmp_path / "work"
    r = rechunk(src, tgt, "--retries", "0", "--work-dir", work, env={"CHUNKMILL_TEST_FAULT_RATE": "0.5"})
    assert r.returncode == 1, oracle.describe(r)
    assert "injected fault" in r.stderr and r.stderr.strip().count("\n") == 0
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "4", "--work-dir", work, "--resume"))
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)


def test_worker_runs_the_stages_of_a_stored_plan(tmp_path, source):
    src, data = source
    tgt, work = tmp_path / "t.zarr", tmp_path / "work"
    # The driver only prepares: plan.json and the target's metadata, no task run.
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "4", "--work-dir", work, "--prepare"))
    status = json.loads(oracle.ok("status", work, "--json").stdout)
    assert not status["complete"] and all(s["done"] == 0 for s in status["stages"])
    # Each stage in its own worker processes, two slices each, as a batch engine would.
    for stage in status["stages"]:
        n, half = stage["tasks"], stage["tasks"] // 2
        oracle.ok("worker", "--plan", work / "plan.json", "--stage", stage["name"], "--tasks", f"0..{half}", "--no-progress")
        mid = json.loads(oracle.ok("status", work, "--json").stdout)
        assert next(s for s in mid["stages"] if s["name"] == stage["name"])["done"] == half
        oracle.ok("worker", "--plan", work, "--stage", stage["name"], "--tasks", f"{half}..{n}", "--no-progress")
    status = json.loads(oracle.ok("status", work, "--json").stdout)
    assert all(s["pending"] == 0 for s in status["stages"])
    # The driver, resumed, finds every task done and finishes (consolidated metadata, cleanup).
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "4", "--work-dir", work, "--resume"))
    assert json.loads(oracle.ok("status", work, "--json").stdout)["complete"]
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)
    oracle.ok(*oracle.rechunk_args(src, tmp_path / "ref.zarr", SPEC, "64MB", "--workers", "4"))
    same_tree(tmp_path / "ref.zarr", tgt)


def test_worker_refuses_another_plan_version_and_unknown_tasks(tmp_path, source):
    src, _ = source
    tgt, work = tmp_path / "t.zarr", tmp_path / "work"
    rechunk(src, tgt, "--retries", "0", "--work-dir", work, env={"CHUNKMILL_TEST_FAULT_RATE": "1"})
    plan = json.loads((work / "plan.json").read_text())
    stage = plan["stages"][0]["name"]
    r = oracle.run("worker", "--plan", work, "--stage", "nope", "--tasks", "0..1")
    assert r.returncode == 3 and "no stage 'nope'" in r.stderr, oracle.describe(r)
    r = oracle.run("worker", "--plan", work, "--stage", stage, "--tasks", "0..100000")
    assert r.returncode == 3 and "tasks 0..100000" in r.stderr, oracle.describe(r)
    plan["format"] = 999
    (work / "plan.json").write_text(json.dumps(plan))
    r = oracle.run("worker", "--plan", work, "--stage", stage, "--tasks", "0..1")
    assert r.returncode == 3 and "plan format 999" in r.stderr, oracle.describe(r)


def _markers(work):
    if not work.exists():
        return 0
    return sum(1 for p in work.rglob("*") if p.is_file() and p.parent.parent.parent == work
               and p.name.isdigit() and "intermediate" not in p.parts)


@pytest.fixture(scope="module")
def larger_source(tmp_path_factory):
    """46 MB: with a 64 MB budget and one worker, some 40 tasks to kill in between."""
    path = tmp_path_factory.mktemp("rel-big") / "src.zarr"
    return path, oracle.write_series(path, (800, 120, 120), (4, 120, 120))


def test_killed_at_twenty_moments_then_resumed_gives_the_same_bytes(tmp_path, larger_source):
    """SIGKILL of the driver at 20 moments of one job (each resumed run is killed again after a
    random number of further tasks, 0 to 2, complete), then a final resume: the target equals
    an uninterrupted run's, byte for byte, so no torn chunk or piece was ever trusted."""
    import os
    import random
    import signal
    import subprocess
    import time

    src, data = larger_source
    ref = tmp_path / "ref.zarr"
    oracle.ok(*oracle.rechunk_args(src, ref, SPEC, "64MB", "--workers", "1"))
    tgt, work = tmp_path / "t.zarr", tmp_path / "work"
    rng = random.Random(20261122)
    kills = 0
    for attempt in range(20):
        args = oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "1", "--work-dir", work)
        if attempt:
            args.append("--resume")
        before = _markers(work)
        wanted = before + rng.randint(0, 2)
        proc = subprocess.Popen([str(oracle.chunkmill_bin()), *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _markers(work) < wanted and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.005))  # land anywhere inside the next task, not only at its start
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
    assert kills >= 10, f"only {kills} runs were killed mid-way"
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "1", "--work-dir", work, "--resume"))
    same_tree(ref, tgt)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)


def test_processes_executor_gives_the_same_bytes_as_threads(tmp_path, source):
    src, data = source
    oracle.ok(*oracle.rechunk_args(src, tmp_path / "threads.zarr", SPEC, "64MB", "--workers", "4"))
    r = oracle.ok(*oracle.rechunk_args(src, tmp_path / "procs.zarr", SPEC, "64MB", "--workers", "2",
                                       "--executor", "processes", "--json"))
    assert json.loads(r.stdout)["tasks_run"] > 1
    same_tree(tmp_path / "threads.zarr", tmp_path / "procs.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "procs.zarr", path="v")[...], data)


def test_processes_executor_retries_failed_workers_then_reports(tmp_path, source):
    src, data = source
    # Tasks fail inside the worker processes; each slice is given to new processes.
    r = rechunk(src, tmp_path / "t.zarr", "--executor", "processes", "--retries", "6",
                env={"CHUNKMILL_TEST_FAULT_RATE": "0.2"})
    assert r.returncode == 0, oracle.describe(r)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "t.zarr", path="v")[...], data)
    r = rechunk(src, tmp_path / "u.zarr", "--executor", "processes", "--retries", "0",
                env={"CHUNKMILL_TEST_FAULT_RATE": "1"})
    assert r.returncode == 1 and "injected fault" in r.stderr, oracle.describe(r)


def test_processes_executor_backs_up_a_straggler(tmp_path, source):
    """One worker process straggles (the test-only hook makes the first process that runs task 3
    sleep 60 s): a backup process runs its slice, wins, and the straggler is killed."""
    src, data = source
    flag = tmp_path / "slowed-once"
    r = rechunk(src, tmp_path / "t.zarr", "--executor", "processes", "--json",
                env={"CHUNKMILL_TEST_SLOW_TASK": f"3:{flag}"})
    assert r.returncode == 0, oracle.describe(r)
    assert flag.exists(), "the hook should have slowed one process"
    assert json.loads(r.stdout)["backups"] >= 1
    oracle.ok(*oracle.rechunk_args(src, tmp_path / "ref.zarr", SPEC, "64MB", "--workers", "4"))
    same_tree(tmp_path / "ref.zarr", tmp_path / "t.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "t.zarr", path="v")[...], data)


def test_threads_executor_backs_up_a_straggler(tmp_path, source):
    """A task straggles on a thread (the test-only hook holds the first copy of task 3 for up to
    60 s, yielding to a backup as a copy task does between chunks): a backup copy on an idle
    thread wins, the straggler stops, and the bytes are those of a plain run."""
    import time

    src, data = source
    flag = tmp_path / "slowed-once"
    started = time.monotonic()
    r = rechunk(src, tmp_path / "t.zarr", "--json", env={"CHUNKMILL_TEST_SLOW_TASK": f"3:{flag}"})
    assert r.returncode == 0, oracle.describe(r)
    assert flag.exists(), "the hook should have slowed one task"
    assert json.loads(r.stdout)["backups"] == 1
    assert time.monotonic() - started < 50, "the run waited for the straggler instead of its backup"
    oracle.ok(*oracle.rechunk_args(src, tmp_path / "ref.zarr", SPEC, "64MB", "--workers", "4"))
    same_tree(tmp_path / "ref.zarr", tmp_path / "t.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "t.zarr", path="v")[...], data)


def test_report_has_the_plan_and_every_task(tmp_path, source):
    src, _ = source
    report = tmp_path / "run.html"
    plan = json.loads(oracle.ok("plan", *oracle.rechunk_args(src, tmp_path / "t.zarr", SPEC, "64MB", "--workers", "4"), "--json").stdout)
    oracle.ok(*oracle.rechunk_args(src, tmp_path / "t.zarr", SPEC, "64MB", "--workers", "4", "--report", report))
    page = report.read_text()
    assert page.startswith("<!doctype html>") and plan["plan_id"] in page
    tasks = sum(s["tasks"] for s in plan["stages"])
    # Per task: a timeline bar, a projection mark and a peak-RSS dot.
    assert page.count('<rect class="task"') == tasks
    assert page.count('<line class="projected"') == tasks
    assert page.count('<circle class="rss"') == tasks
    for s in plan["stages"]:
        assert s["name"] in page


def test_worker_batches_follow_the_index_variable(tmp_path, source):
    """The batch-engine entry point without SLURM's help: --batch N --index-env VAR runs the
    VAR-th batch of N tasks; an index past the end is refused with exit 3."""
    src, data = source
    tgt, work = tmp_path / "t.zarr", tmp_path / "work"
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--work-dir", work, "--prepare"))
    status = json.loads(oracle.ok("status", work, "--json").stdout)
    first = status["stages"][0]
    r = oracle.run("worker", "--plan", work, "--stage", first["name"], "--batch", "7", "--index-env", "JOB_COMPLETION_INDEX",
                   "--no-progress", env={"JOB_COMPLETION_INDEX": "1"})
    assert r.returncode == 0, oracle.describe(r)
    after = json.loads(oracle.ok("status", work, "--json").stdout)["stages"][0]
    assert after["done"] == min(7, first["tasks"] - 7)
    past = first["tasks"] // 7 + 1
    r = oracle.run("worker", "--plan", work, "--stage", first["name"], "--batch", "7", "--index-env", "JOB_COMPLETION_INDEX",
                   env={"JOB_COMPLETION_INDEX": str(past)})
    assert r.returncode == 3 and "starts at task" in r.stderr, oracle.describe(r)


def test_processes_executor_with_everything_on_s3(tmp_path, source):
    """Source, target, work dir and intermediates on the S3 server scripts/test starts (moto on
    127.0.0.1): worker processes read plan.json from S3 and write markers there. Checked against
    the numpy data after copying the target back to a local store."""
    prefix = oracle.s3_prefix("processes")
    src, data = source
    s3_src, s3_dst, work = f"{prefix}/src.zarr", f"{prefix}/dst.zarr", f"{prefix}/work"
    oracle.ok(*oracle.rechunk_args(src, s3_src, "time=8,lat=60,lon=60", "64MB"))
    r = oracle.ok(*oracle.rechunk_args(s3_src, s3_dst, SPEC, "64MB", "--executor", "processes", "--workers", "2",
                                       "--work-dir", work, "--json"))
    assert json.loads(r.stdout)["tasks_run"] > 2
    assert json.loads(oracle.ok("status", work, "--json").stdout)["complete"]
    back = tmp_path / "back.zarr"
    oracle.ok(*oracle.rechunk_args(s3_dst, back, SPEC, "64MB"))
    np.testing.assert_array_equal(zarr.open_array(back, path="v")[...], data)


def test_output_cut_short_by_its_reader_is_not_a_panic(tmp_path, source):
    """`chunkmill status WORK | head -1`: when the reader of its output has gone, chunkmill ends
    as command-line tools do (SIGPIPE), not with a panic."""
    import os
    import signal
    import subprocess

    src, _ = source
    work = tmp_path / "work"
    rechunk(src, tmp_path / "t.zarr", "--work-dir", work, "--prepare")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before chunkmill writes a byte
    try:
        r = subprocess.run([str(oracle.chunkmill_bin()), "status", str(work)], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert "panicked" not in r.stderr, r.stderr
    assert r.returncode == -signal.SIGPIPE, (r.returncode, r.stderr)
