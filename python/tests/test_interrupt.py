"""Ctrl-C during a job: the scan stops between files, KeyboardInterrupt is raised, nothing is
written, and the same call then completes."""

from __future__ import annotations

import os
import signal
import threading
import time

import netCDF4
import numpy as np
import pytest

import chunkmill


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

    timer = threading.Timer(full / 10, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        chunkmill.virtualize(many_files, concat_dim="time", output=out, threads=1)
    timer.join()
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
    started = time.perf_counter()
    chunkmill.rechunk(tmp_path / "src.zarr", chunks, "256MB", tmp_path / "ref.zarr", workers=1).execute(progress=False)
    full = time.perf_counter() - started

    target, work = tmp_path / "t.zarr", tmp_path / "t.zarr.work"
    plan = chunkmill.rechunk(tmp_path / "src.zarr", chunks, "256MB", target, workers=1)
    timer = threading.Timer(full / 3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        plan.execute(progress=False)
    timer.join()
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
