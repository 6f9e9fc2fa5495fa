"""Data safety (issue 9): a target, work dir or `--output` is replaced only when it is what
chunkmill would have written, and never when it is, holds or lies inside an input or the
current directory (exit 3, naming the path, nothing changed: every file of a sandbox keeps its
sha256); a failed `--overwrite` leaves the old target; two jobs on one target cannot run at
once; a run killed at random moments and resumed gives the same files, byte for byte, as an
uninterrupted run, and nothing else.

CHUNKMILL_TEST_KILLS sets how many random kill -9 moments the kill test uses (default 10)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import oracle

SHAPE, CHUNKS, SPEC = (40, 12, 12), (4, 12, 12), "time=-1,lat=6,lon=6"
STRAYS = (".chunkmill-partial", ".chunkmill-lock", ".chunkmill-new", ".chunkmill-old")


def run(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(oracle.chunkmill_bin()), *map(str, args)], capture_output=True, text=True,
                          timeout=oracle.TIMEOUT, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL)


def rechunk(src, tgt, *extra, cwd=None, env=None):
    return run("rechunk", src, tgt, "--chunks", SPEC, "--max-mem", "64MB", "--no-progress", *extra,
               cwd=cwd, env=env)


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (symlinks recorded as their target), by relative path."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if (Path(dirpath) / d).is_symlink()]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def strays(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if any(s in p.name for s in STRAYS))


@pytest.fixture()
def sandbox(tmp_path):
    """A user's directory: a Zarr source, NetCDF inputs, scripts, unrelated files, a symlink."""
    box = tmp_path / "sandbox"
    (box / "data").mkdir(parents=True)
    (box / "scripts").mkdir()
    (box / "precious").mkdir()
    data = oracle.write_series(box / "data" / "src.zarr", SHAPE, CHUNKS)
    oracle.write_day_nc(box / "data" / "a.nc", 0)
    oracle.write_day_nc(box / "data" / "b.nc", 1)
    (box / "scripts" / "run.sh").write_text("#!/bin/sh\necho keep me\n")
    (box / "precious" / "thesis.tex").write_text("\\documentclass{article}\n")
    (box / "precious" / "config.json").write_text('{"not": "references"}\n')
    (box / "notes.txt").write_text("field notes\n")
    (box / "link_to_src").symlink_to(box / "data" / "src.zarr")
    return box, data


def assert_refused(r, *mentions):
    oracle.assert_one_error_line(r, codes={3}, mentions=mentions)


# ---------------------------------------------------------------------------------------------
# one regression test per reported case (each refused with exit 3, the sandbox unchanged)


def test_dot_as_target_is_refused_and_the_current_directory_untouched(sandbox):
    box, _ = sandbox
    before = hashes(box)
    for target in (".", "./", "data/.."):
        r = rechunk("data/src.zarr", target, "--overwrite", cwd=box)
        assert_refused(r, target)
        assert "current directory" in r.stderr
    assert hashes(box) == before


def test_parent_of_source_as_target_is_refused(sandbox):
    box, _ = sandbox
    before = hashes(box)
    r = rechunk(box / "data" / "src.zarr", box / "data", "--overwrite")
    assert_refused(r, str(box / "data"))
    assert "holds the input" in r.stderr
    assert hashes(box) == before


def test_unrelated_non_zarr_directory_with_overwrite_is_refused(sandbox):
    box, _ = sandbox
    before = hashes(box)
    for target in (box / "precious", box / "notes.txt"):
        r = rechunk(box / "data" / "src.zarr", target, "--overwrite")
        assert_refused(r, str(target))
        assert "not a Zarr store" in r.stderr
    assert hashes(box) == before


def test_convert_target_that_is_the_inputs_directory_is_refused(sandbox):
    box, _ = sandbox
    before = hashes(box)
    data = box / "data"
    for inputs in ([data / "a.nc", data / "b.nc"], [str(data / "*.nc")]):
        r = run("convert", *inputs, data, "--chunks", "time=-1", "--max-mem", "64MB", "--concat-dim", "time",
                "--overwrite", "--no-progress")
        assert_refused(r, str(data))
    r = run("convert", data / "a.nc", data / "a.nc", "--chunks", "time=-1", "--max-mem", "64MB", "--overwrite",
            "--no-progress")
    assert_refused(r, "a.nc")
    assert hashes(box) == before


@pytest.mark.parametrize("fmt", ["kerchunk-json", "kerchunk-parquet", "icechunk"])
def test_virtualize_output_that_is_an_input_or_holds_one_is_refused(sandbox, fmt):
    box, _ = sandbox
    before = hashes(box)
    data = box / "data"
    for output in (data / "a.nc", data, box / "precious", box / "precious" / "config.json"):
        r = run("virtualize", data / "a.nc", data / "b.nc", "--concat-dim", "time", "--format", fmt,
                "--output", output, "--overwrite", "--no-progress")
        assert_refused(r, output.name)
    r = run("virtualize", data / "a.nc", "--format", fmt, "--output", ".", "--overwrite", "--no-progress", cwd=box)
    assert_refused(r)
    assert hashes(box) == before
    # The references chunkmill wrote are replaced by --overwrite; nothing is left beside them.
    out = box / f"refs.{fmt}"
    for _ in range(2):
        oracle.ok("virtualize", data / "a.nc", "--format", fmt, "--output", out, "--overwrite", "--no-progress")
    assert strays(box) == []


def test_aliases_of_the_source_as_target_are_refused(sandbox):
    box, data = sandbox
    before = hashes(box)
    for target in ("./data/src.zarr/", str(box / "data" / "src.zarr"), "link_to_src", "data/./src.zarr",
                   "scripts/../data/src.zarr"):
        for extra in ([], ["--overwrite"], ["--overwrite", "--resume"]):
            r = rechunk("data/src.zarr", target, *extra, cwd=box)
            assert_refused(r, target)
    assert hashes(box) == before
    np.testing.assert_array_equal(zarr.open_array(box / "data" / "src.zarr", path="v")[...], data)


def test_target_inside_the_source_is_refused(sandbox):
    box, _ = sandbox
    before = hashes(box)
    for extra in ([], ["--overwrite"]):
        r = rechunk("data/src.zarr", "data/src.zarr/inner.zarr", *extra, cwd=box)
        assert_refused(r, "inner.zarr")
        assert "lies inside the input" in r.stderr
    assert hashes(box) == before


def test_target_inside_a_zarr_store_that_is_no_input_is_refused(sandbox):
    """convert's inputs are the NetCDF files; src.zarr is no input of it, yet a target inside
    it would add a node to that store (zarr-python would list inner.zarr as its subgroup)."""
    box, _ = sandbox
    before = hashes(box)
    for extra in ([], ["--overwrite"]):
        r = run("convert", "data/a.nc", "data/b.nc", "data/src.zarr/inner.zarr", "--concat-dim", "time",
                "--chunks", "time=-1", "--max-mem", "64MB", "--no-progress", *extra, cwd=box)
        assert_refused(r, "inner.zarr")
        assert "lies inside the Zarr store" in r.stderr
    assert hashes(box) == before


def test_work_dir_and_temp_that_hold_or_lie_in_an_input_are_refused(sandbox):
    box, _ = sandbox
    before = hashes(box)
    src, tgt = box / "data" / "src.zarr", box / "t.zarr"
    for flag, place in (("--work-dir", box / "data"), ("--work-dir", src / "w"), ("--temp", src),
                        ("--temp", box / "data"), ("--work-dir", tgt), ("--work-dir", box / "precious")):
        r = rechunk(src, tgt, flag, place)
        assert_refused(r, str(place))
    assert hashes(box) == before
    assert not tgt.exists()


def test_failed_overwrite_leaves_the_old_target_readable_and_equal(sandbox):
    box, data = sandbox
    src, tgt = box / "data" / "src.zarr", box / "out.zarr"
    # The old target: chunkmill's own output with other chunks.
    r = run("rechunk", src, tgt, "--chunks", "time=8,lat=12,lon=12", "--max-mem", "64MB", "--no-progress")
    assert r.returncode == 0, oracle.describe(r)
    old = oracle.tree_files(tgt)
    r = rechunk(src, tgt, "--overwrite", "--retries", "0", env={"CHUNKMILL_TEST_FAULT_RATE": "1"})
    assert r.returncode == 1, oracle.describe(r)
    assert oracle.tree_files(tgt) == old, "a failed --overwrite changed the old target"
    assert zarr.open_array(tgt, path="v").chunks == (8, 12, 12)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)
    # The same command with --resume finishes the job and swaps the new target in.
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--overwrite", "--resume"))
    oracle.ok(*oracle.rechunk_args(src, box / "ref.zarr", SPEC, "64MB"))
    assert oracle.tree_files(tgt) == oracle.tree_files(box / "ref.zarr")
    assert strays(box) == [] and not Path(f"{tgt}.work").exists()


def test_overwrite_replaces_a_zarr_store_and_keep_work_keeps_the_work_dir(sandbox):
    box, data = sandbox
    src, tgt = box / "data" / "src.zarr", box / "out.zarr"
    oracle.ok(*oracle.rechunk_args(src, tgt, "time=8,lat=12,lon=12", "64MB"))
    assert not Path(f"{tgt}.work").exists(), "the default work dir is removed after success"
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--overwrite", "--keep-work"))
    assert zarr.open_array(tgt, path="v").chunks == (40, 6, 6)
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)
    work = Path(f"{tgt}.work")
    assert (work / "plan.json").exists() and not (work / "lock").exists()
    r = oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--overwrite", "--resume", "--keep-work"))
    assert "already complete" in r.stdout
    assert strays(box) == []


def test_every_overwrite_target_source_combination_leaves_the_sandbox_unchanged(sandbox, tmp_path):
    """The hostile matrix: every target that is, holds or lies in an input, the current
    directory, its parent, or is not chunkmill's, with and without --overwrite/--resume, for
    each job (and as work dir, --temp, --output); every file of the sandbox (and of its parent)
    keeps its sha256."""
    box, _ = sandbox
    before = hashes(tmp_path)
    of_src = ["data/src.zarr", "./data/src.zarr/", str(box / "data/src.zarr"), "link_to_src",
              "data/src.zarr/inner.zarr", "data/src.zarr/v", "scripts/../data/src.zarr"]
    others = [".", "./", "..", "data", "data/", "precious", "precious/", "scripts", "scripts/run.sh", "notes.txt",
              "data/a.nc", "./data/../data/b.nc", str(tmp_path)]
    flags = ([], ["--overwrite"], ["--overwrite", "--resume"])
    rechunk_src = ["rechunk", "data/src.zarr"]
    convert_src = ["convert", "data/src.zarr"]
    convert_nc = ["convert", "data/a.nc", "data/b.nc", "--concat-dim", "time"]
    plan = ["--chunks", "time=-1", "--max-mem", "64MB", "--no-progress"]
    runs = 0
    for target in of_src + others:
        for extra in flags:
            jobs = [[*rechunk_src, target], [*convert_src, target],
                    [*rechunk_src, "fresh.zarr", "--work-dir", target], [*rechunk_src, "fresh.zarr", "--temp", target]]
            if target in others:
                jobs.append([*convert_nc, target])
            for args in jobs:
                r = run(*args, *plan, *extra, cwd=box)
                assert r.returncode in (2, 3), f"accepted:\n{oracle.describe(r)}"
                assert "panicked" not in r.stderr, oracle.describe(r)
                runs += 1
        if target in others or target != "data/src.zarr/inner.zarr":
            for fmt in ("kerchunk-json", "kerchunk-parquet", "icechunk"):
                r = run("virtualize", "data/a.nc", "data/b.nc", "--concat-dim", "time", "--format", fmt,
                        "--output", target, "--overwrite", "--no-progress", cwd=box)
                assert r.returncode in (2, 3), f"accepted:\n{oracle.describe(r)}"
                runs += 1
        assert hashes(tmp_path) == before, f"the sandbox changed after target {target!r}"
    assert runs > 300
    assert not (box / "fresh.zarr").exists()


# ---------------------------------------------------------------------------------------------
# locks


def test_two_concurrent_runs_on_one_target_the_second_is_refused_naming_the_holder(sandbox, tmp_path):
    box, data = sandbox
    src, tgt = box / "data" / "src.zarr", tmp_path / "out.zarr"
    flag = tmp_path / "slow.pid"
    args = oracle.rechunk_args(src, tgt, SPEC, "64MB", "--workers", "1")
    first = subprocess.Popen([str(oracle.chunkmill_bin()), *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "CHUNKMILL_TEST_SLOW_TASK": f"0:{flag}"})
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flag.exists(), f"the first run never reached its slow task: {first.poll()}"
        # The same job again; the same target through another work dir; another target
        # through the same work dir: each is refused, naming the first run's pid.
        for extra, target in (([], tgt), (["--work-dir", tmp_path / "other.work"], tgt),
                              (["--work-dir", f"{tgt}.work"], tmp_path / "other.zarr")):
            r = oracle.run(*oracle.rechunk_args(src, target, SPEC, "64MB", *extra))
            oracle.assert_one_error_line(r, codes={3}, mentions=[f"pid {first.pid}"], pattern="in use")
        assert not (tmp_path / "other.zarr").exists() and not (tmp_path / "other.work").exists()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    # The killed run's lock is stale: a resumed run takes it over and finishes.
    oracle.ok(*oracle.rechunk_args(src, tgt, SPEC, "64MB", "--resume"))
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)
    assert strays(tmp_path) == [] and not Path(f"{tgt}.work").exists()


# ---------------------------------------------------------------------------------------------
# kill -9 at random moments


@pytest.fixture(scope="module")
def kill_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("kill") / "src.zarr"
    return path, oracle.write_series(path, (400, 60, 60), (4, 60, 60))


def test_kill_9_at_random_moments_then_resume_gives_the_same_files(tmp_path, kill_source):
    """An --overwrite of an older target, killed with SIGKILL at random moments (anywhere:
    planning, metadata, tasks, consolidation, the swap, the cleanup), each time run again with
    --resume: until it completes, the target is always the old store, file for file; at the end
    it is the uninterrupted run's, file for file and byte for byte (consolidated metadata
    included), and no temporary file, lock, staging store or work dir is left anywhere."""
    src, data = kill_source
    spec, extra = "time=-1,lat=6,lon=6", ["--workers", "2"]
    ref = tmp_path / "ref.zarr"
    oracle.ok(*oracle.rechunk_args(src, ref, spec, "64MB", *extra))
    # How long one --overwrite run takes (what every run below is), to kill within it.
    t0 = time.monotonic()
    oracle.ok(*oracle.rechunk_args(src, ref, spec, "64MB", *extra, "--overwrite"))
    duration = time.monotonic() - t0
    tgt = tmp_path / "t.zarr"
    oracle.ok(*oracle.rechunk_args(src, tgt, "time=16,lat=60,lon=60", "64MB"))
    old = oracle.tree_files(tgt)
    want = oracle.tree_files(ref)
    moments = int(os.environ.get("CHUNKMILL_TEST_KILLS", "10"))
    rng = random.Random(20261207)
    kills, current = 0, old
    for _ in range(moments):
        args = oracle.rechunk_args(src, tgt, spec, "64MB", *extra, "--overwrite", "--resume")
        proc = subprocess.Popen([str(oracle.chunkmill_bin()), *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.02, 0.95) * duration)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        now = oracle.tree_files(tgt)
        if proc.returncode == 0:
            assert now == want
        else:
            # Until the swap the old target is whole; after it, the new one.
            assert now in (current, want), "a killed --overwrite run left a mixed target"
        current = now
    print(f"{kills} of {moments} runs killed; one run takes {duration:.2f} s")
    assert kills >= min(moments, 3), f"only {kills} runs were killed"
    oracle.ok(*oracle.rechunk_args(src, tgt, spec, "64MB", *extra, "--overwrite", "--resume"))
    got = oracle.tree_files(tgt)
    assert sorted(got) == sorted(want), f"files differ: {sorted(set(got) ^ set(want))[:5]}"
    assert [k for k in want if got[k] != want[k]] == []
    np.testing.assert_array_equal(zarr.open_array(tgt, path="v")[...], data)
    assert strays(tmp_path) == [], strays(tmp_path)
    assert not Path(f"{tgt}.work").exists()


def test_s3_prefix_without_zarr_metadata_is_refused_and_a_zarr_target_replaced(tmp_path):
    """On S3 a prefix cannot be renamed: --overwrite replaces only a prefix whose root holds
    Zarr metadata, and a job holds a lease object in its work dir while it runs."""
    import s3fs

    fs = s3fs.S3FileSystem(**oracle.s3_options())
    src = tmp_path / "src.zarr"
    data = oracle.write_series(src, SHAPE, CHUNKS)
    foreign = oracle.s3_prefix("foreign")
    fs.pipe(f"{foreign[5:]}/notes.txt", b"not zarr")
    r = rechunk(src, foreign, "--overwrite")
    assert_refused(r, foreign)
    assert "not a Zarr store" in r.stderr
    assert fs.cat(f"{foreign[5:]}/notes.txt") == b"not zarr"
    # A Zarr target written by chunkmill is replaced; the lease and the work dir are gone after.
    target = oracle.s3_prefix("target")
    oracle.ok(*oracle.rechunk_args(src, target, "time=8,lat=12,lon=12", "64MB"))
    oracle.ok(*oracle.rechunk_args(src, target, SPEC, "64MB", "--overwrite"))
    store = zarr.storage.FsspecStore.from_url(target, storage_options=oracle.s3_options(), read_only=True)
    arr = zarr.open_group(store, mode="r")["v"]
    assert arr.chunks == (40, 6, 6)
    np.testing.assert_array_equal(arr[...], data)
    assert not fs.exists(f"{target[5:]}.work/lock") and fs.find(f"{target[5:]}.work") == []
