"""Ctrl-C during a job: the scan stops between files, KeyboardInterrupt is raised, nothing is
written, and the same call then completes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest

import chunkmill


@contextlib.contextmanager
def ctrl_c_when(trigger):
    """Sends this process SIGINT (Ctrl-C) once `trigger()` is true, from a thread that stops
    when the block ends: a signal never outlives its test. (A timer that fired after a run had
    already finished used to interrupt whatever test came next, such as the Lithops one.)"""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if trigger():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def after(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


@pytest.fixture(scope="module")
def many_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("many_small")
    paths = []
    for i in range(400):
        path = str(root / f"f_{i:03d}.nc")
        with netCDF4.Dataset(path, "w") as f:
            f.createDimension("time", 1)
            t = f.createVariable("time", "f8", ("time",))
            t.units = "days since 2000-01-01"
            v = f.createVariable("v", "f4", ("time",))
            t[:] = [i]
            v[:] = np.array([i], dtype="f4")
        paths.append(path)
    return paths


def test_ctrl_c_stops_virtualize_before_anything_is_written(many_files, tmp_path):
    out = tmp_path / "refs.json"
    started = time.perf_counter()
    chunkmill.virtualize(many_files, concat_dim="time", output=tmp_path / "full.json", threads=1)
    full = time.perf_counter() - started

    with ctrl_c_when(after(full / 10)), pytest.raises(KeyboardInterrupt):
        chunkmill.virtualize(many_files, concat_dim="time", output=out, threads=1)
    # Without the cancel flag the scan would have run on and the references been written.
    assert not out.exists()
    assert not list(tmp_path.glob("refs.json*"))
    # The interrupted call left nothing behind that keeps it from running again.
    report = chunkmill.virtualize(many_files, concat_dim="time", output=out, threads=1)
    assert len(report["files"]) == len(many_files)
    assert out.read_bytes() == (tmp_path / "full.json").read_bytes()


def many_arrays(path) -> dict[str, np.ndarray]:
    """A group of many small arrays: one stage each, run one after the other."""
    import zarr

    group = zarr.open_group(path, mode="w")
    out = {}
    for i in range(60):
        data = np.random.default_rng(i).random((40, 12)).astype("f4")
        group.create_array(f"v{i:02d}", shape=data.shape, chunks=(1, 12), dtype="f4")[:] = data
        out[f"v{i:02d}"] = data
    return out


def markers(work) -> int:
    return sum(len(files) for _, _, files in os.walk(work)) if os.path.exists(work) else 0


def test_ctrl_c_stops_a_rechunk_between_tasks_and_resume_finishes_it(tmp_path):
    data = many_arrays(tmp_path / "src.zarr")
    chunks = {name: (40, 3) for name in data}
    chunkmill.rechunk(tmp_path / "src.zarr", chunks, "256MB", tmp_path / "ref.zarr", workers=1).execute(progress=False)

    target, work = tmp_path / "t.zarr", tmp_path / "t.zarr.work"
    plan = chunkmill.rechunk(tmp_path / "src.zarr", chunks, "256MB", target, workers=1)
    # Ctrl-C once a few of the 60 one-task stages are done (their markers are written).
    with ctrl_c_when(lambda: markers(work) > 5), pytest.raises(KeyboardInterrupt):
        plan.execute(progress=False)
    # Stopped part-way: without the interrupt flag the run would have gone on to the end and
    # removed its work dir.
    assert work.exists() and 0 < markers(work)
    report_plan = chunkmill.rechunk(tmp_path / "src.zarr", chunks, "256MB", target, workers=1, resume=True)
    report_plan.execute(progress=False)
    assert 0 < report_plan.report["tasks_skipped"] < len(data)
    assert not work.exists()
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(target) == files(tmp_path / "ref.zarr")
    import zarr

    for name, values in data.items():
        np.testing.assert_array_equal(zarr.open_array(target / name)[...], values)


def children() -> list[int]:
    """The processes this interpreter started that are still there (zombies included)."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out.append(int(entry))
    return out


def engine_source(path) -> dict[str, np.ndarray]:
    """Two arrays whose rechunk at 64MB goes through an intermediate: four stages of four or
    five tasks, each slice a `chunkmill worker` process on the processes executor."""
    import zarr

    group = zarr.open_group(path, mode="w")
    out = {}
    for i, name in enumerate(["a", "b"]):
        data = np.random.default_rng(i).random((400, 30, 30)).astype("f4")
        group.create_array(name, shape=data.shape, chunks=(4, 30, 30), dtype="f4",
                           dimension_names=("time", "lat", "lon"))[:] = data
        out[name] = data
    return out


def interrupted_then_resumed(tmp_path, monkeypatch, executor: str, **kwargs) -> chunkmill.Rechunked:
    """Runs a rechunk on `executor`, Ctrl-C while task 2 of the first stage straggles, checks
    what the interrupt left, then resumes it and checks the bytes against a threads run."""
    data = engine_source(tmp_path / "src.zarr")
    chunks = {"time": -1, "lat": 6, "lon": 6}
    # The reference, on threads, by the command: this interpreter's own memory (xarray, dask)
    # leaves no room for tasks in a 64 MB budget.
    script = Path(sys.executable).parent / "chunkmill"
    subprocess.run([str(script), "rechunk", str(tmp_path / "src.zarr"), str(tmp_path / "ref.zarr"), "--chunks",
                    "time=-1,lat=6,lon=6", "--max-mem", "64MB", "--zarr-format", "3", "--quiet"],
                   check=True, timeout=300)
    flag = tmp_path / "slow-task"
    monkeypatch.setenv("CHUNKMILL_TEST_SLOW_TASK", f"2:{flag}")
    target, work = tmp_path / "t.zarr", tmp_path / "t.zarr.work"
    plan = chunkmill.rechunk(tmp_path / "src.zarr", chunks, "64MB", target, executor=executor, **kwargs)
    with ctrl_c_when(lambda: flag.exists() and flag.read_text().strip() != ""), pytest.raises(KeyboardInterrupt):
        plan.execute(progress=False)
    # Stopped where it was: without the interrupt the run would have waited out the straggler,
    # gone on to the end and removed its work dir.
    assert work.exists()
    monkeypatch.delenv("CHUNKMILL_TEST_SLOW_TASK")
    resumed = chunkmill.rechunk(tmp_path / "src.zarr", chunks, "64MB", target, executor=executor,
                                resume=True, **kwargs)
    resumed.execute(progress=False)
    assert 0 < resumed.report["tasks_skipped"] < plan.plan["tasks"]
    assert not work.exists()
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(target) == files(tmp_path / "ref.zarr")
    import zarr

    for name, values in data.items():
        np.testing.assert_array_equal(zarr.open_array(target / name)[...], values)
    return plan


def test_ctrl_c_stops_a_processes_run_and_resume_finishes_it(tmp_path, monkeypatch):
    before = set(children())
    flag = tmp_path / "slow-task"

    original = chunkmill.Rechunked.execute

    def execute_and_check(self, **kwargs):
        try:
            return original(self, **kwargs)
        except KeyboardInterrupt:
            # The worker processes were killed and reaped before the interrupt was raised:
            # none runs on (the straggler would for a minute) and none is a zombie.
            straggler = int(flag.read_text())
            assert not os.path.exists(f"/proc/{straggler}")
            assert set(children()) <= before
            raise

    monkeypatch.setattr(chunkmill.Rechunked, "execute", execute_and_check)
    interrupted_then_resumed(tmp_path, monkeypatch, "processes", workers=1)


def caught(sig: int) -> bool:
    """Whether this process has a handler for `sig` at the C level (Python's own table, which
    ``signal.getsignal`` shows, does not see a handler installed by native code)."""
    with open("/proc/self/status") as f:
        mask = next(line.split()[1] for line in f if line.startswith("SigCgt:"))
    return bool(int(mask, 16) >> (sig - 1) & 1)


def _slurm_problem() -> str | None:
    import re
    import shutil
    import subprocess

    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on PATH"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not re.search(r"idle|mix|alloc", r.stdout):
        return f"no SLURM node is up: {r.stdout.strip()} {r.stderr.strip()}"
    return None


def chunkmill_jobs() -> list[str]:
    import subprocess

    r = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True, timeout=30)
    return [j for j in r.stdout.split() if j.startswith("chunkmill-")]


def test_ctrl_c_cancels_a_slurm_run_from_python_and_resume_finishes_it(tmp_path, monkeypatch):
    """scripts/test starts a one-node SLURM (scripts/slurm-local) and sets
    CHUNKMILL_REQUIRE_SLURM=1; without one this test skips."""
    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("CHUNKMILL_REQUIRE_SLURM") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    sigterm_caught = caught(signal.SIGTERM)
    original = chunkmill.Rechunked.execute

    def execute_and_check(self, **kwargs):
        try:
            return original(self, **kwargs)
        except KeyboardInterrupt:
            # Every array this run submitted was cancelled before the interrupt was raised.
            deadline = time.monotonic() + 30
            while chunkmill_jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert chunkmill_jobs() == []
            raise

    monkeypatch.setattr(chunkmill.Rechunked, "execute", execute_and_check)
    interrupted_then_resumed(tmp_path, monkeypatch, "slurm", workers=2)
    # The run left no handler of its own in the interpreter: SIGTERM still ends it.
    assert caught(signal.SIGTERM) == sigterm_caught
