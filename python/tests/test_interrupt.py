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
