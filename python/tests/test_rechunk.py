"""chunkmill.rechunk against rechunker (run in its own zarr-2 venv: rechunker 0.5.4 needs
zarr < 3) and zarr-python/numpy: values, chunks and attributes of arrays, groups and Datasets;
the distributed executors give the same bytes as threads; bad input raises the command's
exceptions with its messages."""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import chunkmill

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def rechunker_python() -> str | None:
    """The python of a venv with rechunker (CHUNKMILL_RECHUNKER_PYTHON, else the repo's
    .venv/bench-zarr2 made from bench/requirements-zarr2.txt)."""
    given = os.environ.get("CHUNKMILL_RECHUNKER_PYTHON")
    candidates = [given] if given else [str(REPO / ".venv/bench-zarr2/bin/python")]
    for python in candidates:
        if python and os.access(python, os.X_OK):
            return python
    return None


@pytest.fixture(scope="module")
def rechunker():
    python = rechunker_python()
    if python is None:
        if os.environ.get("CHUNKMILL_REQUIRE_RECHUNKER"):
            pytest.fail("CHUNKMILL_REQUIRE_RECHUNKER is set but no rechunker venv was found")
        pytest.skip("no rechunker venv (set CHUNKMILL_RECHUNKER_PYTHON)")

    def run(kind: str, source: Path, target_chunks, max_mem, target: Path) -> None:
        job = {"kind": kind, "source": str(source), "target_chunks": target_chunks, "max_mem": max_mem,
               "target": str(target), "temp": str(target) + ".tmp"}
        r = subprocess.run([python, str(HERE / "rechunker_oracle.py"), json.dumps(job)], capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr[-3000:]

    return run


def dataset() -> xr.Dataset:
    rng = np.random.default_rng(7)
    return xr.Dataset(
        {
            "air": (("time", "lat", "lon"), rng.normal(280, 5, (24, 6, 8)).astype("f4"),
                    {"units": "K", "long_name": "air temperature"}),
            "mask": (("lat", "lon"), rng.integers(0, 2, (6, 8)).astype("i2"), {"flag": 1}),
        },
        coords={"time": np.arange(24, dtype="i8"), "lat": np.linspace(-50, 50, 6), "lon": np.arange(8.0)},
        attrs={"title": "rechunk oracle", "version": 2},
    )


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory) -> Path:
    """A Zarr v2 store written by xarray (rechunker reads v2 only), thin chunks in time."""
    path = tmp_path_factory.mktemp("v2") / "src.zarr"
    dataset().to_zarr(path, zarr_format=2, encoding={"air": {"chunks": (1, 6, 8)}, "mask": {"chunks": (3, 8)}})
    return path


def assert_same_arrays(ours: Path, theirs: Path, names) -> None:
    a, b = zarr.open_group(ours, mode="r"), zarr.open_group(theirs, mode="r")
    assert dict(a.attrs) == dict(b.attrs)
    for name in names:
        x, y = a[name], b[name]
        assert x.chunks == y.chunks, name
        # rechunker encodes a Dataset's variables again through xarray, which copies the fill
        # value into the attributes as _FillValue; chunkmill keeps it in the array's metadata
        # only, as the source has it. Both read back the same (compared below).
        theirs_attrs = dict(y.attrs)
        fill = theirs_attrs.pop("_FillValue", None)
        assert dict(x.attrs) == theirs_attrs, name
        if fill is not None:
            np.testing.assert_equal(x.fill_value, fill)
        np.testing.assert_array_equal(x[...], y[...], err_msg=name)


def assert_same_datasets(ours: Path, theirs: Path) -> None:
    xr.testing.assert_identical(xr.open_zarr(ours).load(), xr.open_zarr(theirs).load())


def test_dataset_by_dimension_equals_rechunker(tmp_path, v2_store, rechunker):
    chunks = {"time": 12, "lat": 3}
    rechunker("dataset", v2_store, chunks, "64MB", tmp_path / "rechunker.zarr")
    plan = chunkmill.rechunk(xr.open_zarr(v2_store), chunks, "256MB", tmp_path / "ours.zarr")
    group = plan.execute(progress=False)
    assert isinstance(group, zarr.Group)
    assert_same_arrays(tmp_path / "ours.zarr", tmp_path / "rechunker.zarr", ["air", "mask", "time", "lat", "lon"])
    assert_same_datasets(tmp_path / "ours.zarr", tmp_path / "rechunker.zarr")
    # Coordinates follow the dimension chunks too, as rechunker does (not one whole chunk).
    assert zarr.open_array(tmp_path / "ours.zarr/time").chunks == (12,)
    xr.testing.assert_identical(xr.open_zarr(tmp_path / "ours.zarr").load(), dataset())


def test_dataset_by_variable_equals_rechunker(tmp_path, v2_store, rechunker):
    # rechunker needs the chunks of index coordinates (held in memory) named too.
    chunks = {"air": (24, 2, 4), "time": (6,), "lat": (3,), "lon": (8,)}
    rechunker("dataset", v2_store, chunks, "64MB", tmp_path / "rechunker.zarr")
    chunkmill.rechunk(xr.open_zarr(v2_store), chunks, "256MB", tmp_path / "ours.zarr").execute(progress=False)
    assert_same_arrays(tmp_path / "ours.zarr", tmp_path / "rechunker.zarr", ["air", "mask", "time", "lat", "lon"])
    assert_same_datasets(tmp_path / "ours.zarr", tmp_path / "rechunker.zarr")
    assert zarr.open_array(tmp_path / "ours.zarr/mask").chunks == (3, 8)


def test_group_by_array_equals_rechunker(tmp_path, v2_store, rechunker):
    chunks = {"air": {"time": 24, "lat": 1, "lon": 8}, "mask": None}
    rechunker("group", v2_store, chunks, "64MB", tmp_path / "rechunker.zarr")
    result = chunkmill.rechunk(zarr.open_group(v2_store, mode="r"), chunks, "256MB", tmp_path / "ours.zarr")
    result.execute(progress=False)
    assert_same_arrays(tmp_path / "ours.zarr", tmp_path / "rechunker.zarr", ["air", "mask"])


def test_array_equals_rechunker(tmp_path, v2_store, rechunker):
    rechunker("array", v2_store / "air", [24, 3, 2], "64MB", tmp_path / "rechunker.zarr")
    source = zarr.open_array(v2_store / "air", mode="r")
    out = chunkmill.rechunk(source, (24, 3, 2), "256MB", tmp_path / "ours.zarr").execute(progress=False)
    theirs = zarr.open_array(tmp_path / "rechunker.zarr", mode="r")
    assert isinstance(out, zarr.Array)
    assert out.chunks == theirs.chunks == (24, 3, 2)
    assert dict(out.attrs) == dict(theirs.attrs)
    np.testing.assert_array_equal(out[...], theirs[...])


def test_zarr3_array_against_numpy(tmp_path):
    data = np.arange(30 * 8, dtype="i4").reshape(30, 8)
    source = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(1, 8), dtype="i4",
                               attributes={"units": "m"}, dimension_names=("time", "x"))
    source[:] = data
    plan = chunkmill.rechunk(source, {"time": -1, "x": 2}, 256_000_000, tmp_path / "t.zarr")
    assert plan.plan["arrays"][0]["target_chunks"] == [30, 2]
    out = plan.execute(progress=False)
    assert out.chunks == (30, 2) and dict(out.attrs) == {"units": "m"}
    np.testing.assert_array_equal(out[...], data)
    assert out.metadata.zarr_format == 3
    assert plan.report is not None and plan.report["tasks_run"] >= 1


def test_plan_is_the_command_plan(tmp_path):
    """`.plan` is what `chunkmill plan rechunk --json` prints for the same request."""
    source = zarr.create_array(tmp_path / "a.zarr", shape=(40, 6), chunks=(1, 6), dtype="f8")
    source[:] = 1.0
    plan = chunkmill.rechunk(source, (40, 3), "256MB", tmp_path / "t.zarr").plan
    script = Path(sys.executable).parent / "chunkmill"
    r = subprocess.run([str(script), "plan", "rechunk", str(tmp_path / "a.zarr"), str(tmp_path / "t.zarr"),
                        "--chunks", "40,3", "--max-mem", "256MB", "--zarr-format", "3", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    command = json.loads(r.stdout)
    for key in ("plan_id", "tasks", "max_projected_mem", "stages", "arrays", "max_mem"):
        assert plan[key] == command[key], key
    assert "<table" in chunkmill.Rechunked._repr_html_(chunkmill.rechunk(source, (40, 3), "256MB", tmp_path / "u.zarr"))


def group_source(path: Path) -> dict[str, np.ndarray]:
    """Two arrays whose rechunk at ENGINE_BUDGET and ENGINE_WORKERS goes through an
    intermediate: four stages of five or six tasks, run one after the other."""
    group = zarr.open_group(path, mode="w")
    out = {}
    for i, name in enumerate(["a", "b"]):
        data = np.random.default_rng(i).random((400, 60, 60)).astype("f4")
        array = group.create_array(name, shape=data.shape, chunks=(4, 60, 60), dtype="f4",
                                   dimension_names=("time", "lat", "lon"))
        array[:] = data
        out[name] = data
    return out


# Tasks run in the engines' worker processes (dask's hold ~150 MB before any task), so the
# budget is large; many workers make the tasks small and the stages many-tasked.
ENGINE_BUDGET, ENGINE_WORKERS = "384MB", 128


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rechunk_group(src: Path, target: Path, executor="threads") -> chunkmill.Rechunked:
    return chunkmill.rechunk(src, {"time": -1, "lat": 6, "lon": 6}, ENGINE_BUDGET, target, executor=executor,
                             workers=ENGINE_WORKERS)


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    data = group_source(root / "src.zarr")
    # On threads, by the command (in a process of its own, as the engines' workers are).
    script = Path(sys.executable).parent / "chunkmill"
    subprocess.run([str(script), "rechunk", str(root / "src.zarr"), str(root / "threads.zarr"), "--chunks",
                    "time=-1,lat=6,lon=6", "--max-mem", ENGINE_BUDGET, "--workers", str(ENGINE_WORKERS),
                    "--zarr-format", "3", "--quiet"],
                   check=True, timeout=300)
    return root, data


def assert_many_slices(plan: chunkmill.Rechunked, parallelism: int) -> None:
    """The plan has several stages, each cut into several slices for the engine's workers:
    the stage barrier and the slicing are both exercised."""
    from chunkmill import _engines

    stages = plan.plan["stages"]
    assert len(stages) >= 3, stages
    for stage in stages:
        assert stage["tasks"] >= 2, stage
        assert len(_engines._slices(stage["tasks"], parallelism)) >= 2, stage


def test_dask_executor_equals_threads(threads_run):
    distributed = pytest.importorskip("distributed")
    root, data = threads_run
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        plan = rechunk_group(root / "src.zarr", root / "dask.zarr", executor=client)
        assert_many_slices(plan, 2)
        out = plan.execute(progress=False)
        # Every task ran in the cluster's worker processes; none was left for the closing run.
        assert plan.report["tasks_run"] == plan.plan["tasks"]
    assert tree(root / "dask.zarr") == tree(root / "threads.zarr")
    for name, values in data.items():
        np.testing.assert_array_equal(out[name][...], values)


def test_lithops_executor_equals_threads(threads_run, monkeypatch):
    pytest.importorskip("lithops")
    from chunkmill import _engines

    # Lithops has been seen to hang on a retried task: the run gives up after this long.
    monkeypatch.setattr(_engines, "LITHOPS_TIMEOUT", 120)
    root, data = threads_run
    executor = _engines.lithops_localhost()
    plan = rechunk_group(root / "src.zarr", root / "lithops.zarr", executor=executor)
    assert_many_slices(plan, _engines._Lithops(executor, 1).parallelism)
    # A hang that even Lithops' own timeout (SIGALRM, run by the main thread only) cannot end
    # becomes a failure with every thread's traceback, instead of a CI run that never ends.
    faulthandler.dump_traceback_later(600, exit=True)
    try:
        out = plan.execute(progress=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert plan.report["tasks_run"] == plan.plan["tasks"]
    assert tree(root / "lithops.zarr") == tree(root / "threads.zarr")
    for name, values in data.items():
        np.testing.assert_array_equal(out[name][...], values)


def command_error(*args: str) -> tuple[int, str]:
    script = Path(sys.executable).parent / "chunkmill"
    r = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stderr.strip().removeprefix("chunkmill: ")


def test_errors_are_the_command_errors(tmp_path):
    source = zarr.create_array(tmp_path / "a.zarr", shape=(10, 4), chunks=(1, 4), dtype="f4",
                               dimension_names=("time", "x"))
    source[:] = 0
    target = tmp_path / "t.zarr"
    # An unknown dimension: the command's usage error, word for word.
    with pytest.raises(chunkmill.UsageError) as e:
        chunkmill.rechunk(source, {"nope": 3}, "256MB", target)
    code, message = command_error("plan", "rechunk", str(tmp_path / "a.zarr"), str(target), "--chunks", "nope=3",
                                  "--max-mem", "256MB", "--zarr-format", "3")
    assert (code, str(e.value)) == (2, message) and e.value.exit_code == 2
    # A missing source is refused before anything is written.
    with pytest.raises(chunkmill.RefusedError, match="no such file or directory"):
        chunkmill.rechunk(tmp_path / "missing.zarr", (3, 4), "256MB", target)
    # Wrong types.
    for bad in [dict(target_chunks="3,4"), dict(max_mem=[1]), dict(max_mem=-5), dict(executor="beam"),
                dict(target_chunks=(3, 0)), dict(target_store=42), dict(target_options={"order": "F"})]:
        kwargs = dict(source=source, target_chunks=(3, 4), max_mem="256MB", target_store=target) | bad
        with pytest.raises(chunkmill.UsageError):
            chunkmill.rechunk(**kwargs)
    # A budget no plan fits.
    with pytest.raises(chunkmill.RefusedError, match="--max-mem"):
        chunkmill.rechunk(source, (3, 4), "1MB", target)
    assert not target.exists()
    # An existing target.
    chunkmill.rechunk(source, (10, 2), "256MB", target).execute(progress=False)
    with pytest.raises(chunkmill.RefusedError, match="target exists"):
        chunkmill.rechunk(source, (10, 2), "256MB", target).execute(progress=False)
    # A Dataset changed after opening is not the store's.
    with pytest.raises(chunkmill.UsageError, match="not the one of its store"):
        ds = xr.Dataset({"v": (("t",), np.arange(6.0))})
        ds.to_zarr(tmp_path / "d.zarr")
        chunkmill.rechunk(xr.open_zarr(tmp_path / "d.zarr").isel(t=slice(0, 3)), {"t": 1}, "256MB", tmp_path / "o")
