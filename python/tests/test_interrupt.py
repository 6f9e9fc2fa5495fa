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


def open_files() -> set[str]:
    """The paths this process has open."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


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
    chunkmill.virtualize(many_files, concat_dim="time", output=tmp_path / "full.json", threads=1)

    # Ctrl-C once the scan has opened one of the inputs. An optimised scan of these 400 small
    # files can end within Python's next signal check (50 ms): then the call completes and
    # writes before the interrupt is seen, and is tried again. Without the cancel flag every
    # try writes the references.
    inputs = set(many_files)
    for _ in range(10):
        with ctrl_c_when(lambda: not inputs.isdisjoint(open_files())), pytest.raises(KeyboardInterrupt):
            chunkmill.virtualize(many_files, concat_dim="time", output=out, threads=1)
        if not out.exists():
            break
        out.unlink()
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


# A script that runs one rechunk from Python, as a user's would. It runs in a process of its
# own: the pytest interpreter's memory (xarray, dask) leaves no room in a 64 MB budget, which
# the small stages these tests need require. On Ctrl-C it says whether a SIGTERM handler was
# left in the interpreter, and exits 130.
DRIVER = """
import sys
import chunkmill

def sigterm_caught():
    with open("/proc/self/status") as f:
        mask = next(line.split()[1] for line in f if line.startswith("SigCgt:"))
    return int(mask, 16) >> 14 & 1

src, target, executor, workers, resume = sys.argv[1:]
before = sigterm_caught()
plan = chunkmill.rechunk(src, {"time": -1, "lat": 6, "lon": 6}, "64MB", target, executor=executor,
                         workers=int(workers), resume=resume == "1")
try:
    plan.execute(progress=False)
except KeyboardInterrupt:
    print("interrupted", before, sigterm_caught(), flush=True)
    sys.exit(130)
print("done", plan.report["tasks_skipped"], plan.plan["tasks"], flush=True)
"""


def processes_naming(path) -> list[str]:
    """The command lines of the processes that name `path` (workers of a run on it)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(path) in line:
                out.append(line)
    return out


def interrupted_then_resumed(tmp_path, executor: str, workers: int, after_interrupt) -> None:
    """Runs a rechunk on `executor` from a Python script, sends it Ctrl-C while task 2 of the
    first stage straggles (the CHUNKMILL_TEST_SLOW_TASK hook holds it for 60 s), calls
    `after_interrupt(straggler_pid)`, then resumes and compares the bytes with a threads run
    of the command."""
    data = engine_source(tmp_path / "src.zarr")
    script = Path(sys.executable).parent / "chunkmill"
    subprocess.run([str(script), "rechunk", str(tmp_path / "src.zarr"), str(tmp_path / "ref.zarr"), "--chunks",
                    "time=-1,lat=6,lon=6", "--max-mem", "64MB", "--zarr-format", "3", "--quiet"],
                   check=True, timeout=300)
    flag, target, work = tmp_path / "slow-task", tmp_path / "t.zarr", tmp_path / "t.zarr.work"
    args = [sys.executable, "-c", DRIVER, str(tmp_path / "src.zarr"), str(target), executor, str(workers)]
    env = {**os.environ, "CHUNKMILL_TEST_SLOW_TASK": f"2:{flag}"}
    driver = subprocess.Popen([*args, "0"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (flag.exists() and flag.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), driver.communicate(timeout=60)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    # Stopped at once (the straggler would have held the run for a minute) and cleanly: no
    # handler of its own left for SIGTERM.
    assert driver.returncode == 130, err
    assert out.split() == ["interrupted", "0", "0"], (out, err)
    after_interrupt(int(flag.read_text()))
    # Without the interrupt the run would have gone on to the end and removed its work dir.
    assert work.exists()
    resumed = subprocess.run([*args, "1"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    word, skipped, tasks = resumed.stdout.split()
    assert word == "done" and 0 < int(skipped) < int(tasks)
    assert not work.exists()
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(target) == files(tmp_path / "ref.zarr")
    import zarr

    for name, values in data.items():
        np.testing.assert_array_equal(zarr.open_array(target / name)[...], values)


def test_ctrl_c_stops_a_processes_run_and_resume_finishes_it(tmp_path):
    def workers_gone(straggler: int) -> None:
        # Killed and reaped by the driver before it raised KeyboardInterrupt: none runs on.
        assert not os.path.exists(f"/proc/{straggler}")
        assert processes_naming(tmp_path / "t.zarr.work") == []

    interrupted_then_resumed(tmp_path, "processes", 4, workers_gone)


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


def test_ctrl_c_cancels_a_slurm_run_from_python_and_resume_finishes_it(tmp_path):
    """scripts/test starts a one-node SLURM (scripts/slurm-local) and sets
    CHUNKMILL_REQUIRE_SLURM=1; without one this test skips."""
    problem = _slurm_problem()
    if problem is not None:
        if os.environ.get("CHUNKMILL_REQUIRE_SLURM") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)

    def arrays_cancelled(_straggler: int) -> None:
        deadline = time.monotonic() + 30
        while chunkmill_jobs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert chunkmill_jobs() == []

    interrupted_then_resumed(tmp_path, "slurm", 2, arrays_cancelled)
