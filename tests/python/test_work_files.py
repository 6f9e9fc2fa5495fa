"""What a job reads and writes in its work dir and intermediates dir is checked before its first
write: a work file that is a directory, a FIFO, a socket or a symbolic link leading out of the
work dir (put there by someone else: chunkmill writes only regular files and directories) is
refused with exit 3, naming the path and what it is, everything unchanged, and nothing hangs.
And after a successful run no directory the job created for its intermediates is left, while
a `--temp` that existed before stays, and jobs sharing one `--temp` keep out of each other's
pieces."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import oracle

# A hang of the fixed binary is a failure; seconds, not the suite's 5 minutes.
HANG = 30
SPEC = "time=-1,lat=6,lon=6"


def run(*args, env=None):
    try:
        return oracle.run(*args, timeout=HANG, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chunkmill {' '.join(map(str, args[:2]))} hung (> {HANG} s)")


def snapshot(root: Path) -> dict:
    """Every entry under root by relative path: its kind, and a regular file's sha256 or a
    link's target. Nothing is opened but regular files (a FIFO would block)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            mode = os.lstat(p).st_mode
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(mode):
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = (stat.S_IFMT(mode), None)
    return out


def job_args(job: str, box: Path) -> list:
    """The command of `job` in the sandbox `box` (inputs in box/in, target box/out.zarr)."""
    src, a, b, target = box / "in" / "src.zarr", box / "in" / "a.nc", box / "in" / "b.nc", box / "out.zarr"
    common = ["--max-mem", "64MB", "--workers", "1", "--no-progress"]
    if job == "rechunk":
        return ["rechunk", src, target, "--chunks", SPEC, *common]
    if job == "convert":
        return ["convert", a, b, target, "--chunks", "time=-1,x=4", "--concat-dim", "time", *common]
    if job == "append":
        return ["convert", b, target, "--chunks", "time=6,x=8", "--concat-dim", "time", "--append",
                "time", *common]
    return ["compute", "--input", f"ds={src}", "m = v.mean('time')", "--output", target, *common]


def make_box(root: Path) -> Path:
    box = root / "box"
    (box / "in").mkdir(parents=True)
    oracle.write_series(box / "in" / "src.zarr", (40, 12, 12), (4, 12, 12))
    oracle.write_day_nc(box / "in" / "a.nc", 0)
    oracle.write_day_nc(box / "in" / "b.nc", 1)
    (box / "outside.json").write_text('{"cores": 1}\n')
    return box


def prepare(job: str, root: Path) -> Path:
    """A sandbox whose work dir a run of `job` prepared (plan and work files written, the
    target's metadata created, no task run): what `--resume` continues. Made where the test
    runs it: the plan holds absolute paths."""
    box = make_box(root)
    if job == "append":
        oracle.ok("convert", box / "in" / "a.nc", box / "out.zarr", "--chunks", "time=6,x=8",
                  "--max-mem", "64MB", "--no-progress")
    oracle.ok(*job_args(job, box), "--prepare")
    assert (box / "out.zarr.work" / "plan.json").is_file()
    return box


def make_fifo(p: Path) -> None:
    os.mkfifo(p)


def make_socket(p: Path) -> None:
    # Bound by a relative name: a full pytest path may exceed the 108 bytes of sun_path.
    cwd = os.getcwd()
    os.chdir(p.parent)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(p.name)
    finally:
        os.chdir(cwd)


BAD = {
    "directory": (lambda p: p.mkdir(), "directory"),
    "fifo": (make_fifo, "FIFO"),
    "socket": (make_socket, "socket"),
    "link-outside": (lambda p: p.symlink_to(p.parents[2] / "outside.json"), "outside"),
}

CASES = [(job, name, kind)
         for job in ("rechunk", "convert", "append", "compute")
         for name in ("plan.json", "cores.json", "lock", "append.json")
         for kind in BAD
         if not (name == "cores.json" and job == "compute")  # compute plans no kinds by cores
         if not (name == "append.json" and job != "append")
         if not (name == "lock" and kind not in ("fifo", "directory"))]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Per job, a prepared sandbox and a pristine copy of it; `restore(job)` puts the copy back
    at the sandbox's own path (its plan holds absolute paths) and returns that path."""
    boxes = {job: prepare(job, tmp_path_factory.mktemp(job))
             for job in ("rechunk", "convert", "append", "compute")}
    for box in boxes.values():
        shutil.copytree(box, box.with_name("pristine"), symlinks=True)

    def restore(job: str) -> Path:
        box = boxes[job]
        shutil.rmtree(box)
        shutil.copytree(box.with_name("pristine"), box, symlinks=True)
        return box

    return restore


@pytest.mark.parametrize("job", ["rechunk", "convert", "append", "compute"])
def test_the_premise_a_prepared_work_dir_resumes(prepared, job):
    box = prepared(job)
    r = oracle.ok(*job_args(job, box), "--resume", "--json")
    assert json.loads(r.stdout)["tasks_run"] > 0


@pytest.mark.parametrize("job,name,kind", CASES)
def test_a_work_file_of_another_kind_is_refused_before_anything_is_written(prepared, job, name,
                                                                          kind):
    """The hostile pass's cases: `cores.json` a directory failed the resume with exit 1 after the
    target was written; a FIFO hung it forever. Every job now refuses, naming the path."""
    box = prepared(job)
    path = box / "out.zarr.work" / name
    if path.exists():
        path.unlink()
    make, says = BAD[kind]
    make(path)
    before = snapshot(box)
    r = run(*job_args(job, box), "--resume")
    oracle.assert_one_error_line(r, codes={3}, mentions=[str(path), says])
    assert snapshot(box) == before


# Deeper in the work dir, in --temp, and beside the target: rechunk, which writes them all.
DEEP = [
    ("{work}/intermediate", "fifo", "FIFO"),
    ("{work}/intermediate", "file", "keeps a directory"),
    ("{plan}", "file", "keeps a directory"),
    ("{plan}/complete.json", "directory", "directory"),
    ("{plan}/000-0", "file", "keeps a directory"),
    ("{plan}/000-0/0", "fifo", "FIFO"),
    ("{work}/swap.json", "fifo", "FIFO"),
    ("{piece}", "fifo", "FIFO"),
    ("{piece}", "link-outside", "outside"),
    ("{box}/.out.zarr.chunkmill-lock", "fifo", "FIFO"),
]


@pytest.mark.parametrize("where,kind,says", DEEP)
def test_a_marker_piece_or_lock_of_another_kind_is_refused(tmp_path, where, kind, says):
    box = make_box(tmp_path)
    big_source(box)
    with_temp = where == "{piece}"
    args = job_args("rechunk", box) + (["--temp", box / "scratch"] if with_temp else [])
    oracle.ok(*args, "--prepare")
    work = box / "out.zarr.work"
    # Two tasks of the first stage done: their markers and pieces exist.
    oracle.ok("worker", "--plan", work, "--stage", "0", "--tasks", "0..2", "--no-progress")
    plan = next(p for p in work.iterdir() if p.is_dir() and len(p.name) == 16)
    pieces = sorted(p for p in (box / "scratch").rglob("*") if p.is_file()) if with_temp else []
    assert not with_temp or pieces, "the premise: the first stage writes pieces to --temp"
    path = Path(where.format(work=work, plan=plan, box=box, piece=pieces[0] if pieces else ""))
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if kind == "file":
        path.write_text("x")
    else:
        BAD[kind][0](path)
    before = snapshot(box)
    r = run(*args, "--resume")
    oracle.assert_one_error_line(r, codes={3}, mentions=[str(path), says])
    assert snapshot(box) == before


def test_status_and_worker_refuse_a_fifo_instead_of_blocking(tmp_path):
    box = make_box(tmp_path)
    oracle.ok(*job_args("rechunk", box), "--prepare")
    work = box / "out.zarr.work"
    plan = work / json.loads((work / "plan.json").read_text())["plan_id"]
    plan.mkdir()
    os.mkfifo(plan / "complete.json")
    before = snapshot(box / "out.zarr")
    r = run("status", work)
    oracle.assert_one_error_line(r, codes={3}, mentions=[str(plan / "complete.json"), "FIFO"])
    (work / "plan.json").unlink()
    os.mkfifo(work / "plan.json")
    r = run("worker", "--plan", work / "plan.json", "--stage", "0", "--tasks", "0..1", "--no-progress")
    oracle.assert_one_error_line(r, codes={3}, mentions=[str(work / "plan.json"), "FIFO"])
    assert snapshot(box / "out.zarr") == before


# ---------------------------------------------------------------------------------------------
# What a successful run leaves of its intermediates: nothing it created.


def big_source(box: Path) -> np.ndarray:
    """400 steps: rechunked in 64MB through intermediate pieces."""
    return oracle.write_series(box / "in" / "src.zarr", (400, 60, 60), (4, 60, 60))


def assert_rechunked(target: Path, data: np.ndarray) -> None:
    np.testing.assert_array_equal(zarr.open_array(target, path="v")[...], data)


def test_temp_directories_the_job_created_are_removed_after_success(tmp_path):
    box = make_box(tmp_path)
    data = big_source(box)
    temp = box / "scratch" / "job"
    r = oracle.ok(*job_args("rechunk", box), "--temp", temp, "--json")
    assert "intermediate" in oracle.ok("plan", *job_args("rechunk", box)[:-1], "--temp", temp).stdout
    assert_rechunked(box / "out.zarr", data)
    assert not (box / "scratch").exists(), sorted(map(str, (box / "scratch").rglob("*")))
    assert r.returncode == 0


def test_a_temp_dir_that_existed_stays_and_the_default_one_goes_with_keep_work(tmp_path):
    box = make_box(tmp_path)
    data = big_source(box)
    scratch = box / "scratch"
    scratch.mkdir()
    oracle.ok(*job_args("rechunk", box), "--temp", scratch)
    assert_rechunked(box / "out.zarr", data)
    assert scratch.is_dir() and list(scratch.iterdir()) == []
    # Without --temp the pieces go under the work dir, which --keep-work keeps: not the
    # emptied intermediates dir.
    oracle.ok(*job_args("rechunk", box), "--overwrite", "--keep-work")
    assert_rechunked(box / "out.zarr", data)
    work = box / "out.zarr.work"
    assert not (work / "intermediate").exists(), sorted(p.name for p in work.iterdir())


def test_compute_removes_the_temp_dir_it_created(tmp_path):
    box = make_box(tmp_path)
    temp = box / "scratch"
    args = ["compute", "--input", f"ds={box / 'in' / 'src.zarr'}", "m = v.std('time')",
            "--output", box / "out.zarr", "--max-mem", "64MB", "--workers", "24", "--no-progress",
            "--temp", temp]
    plan = json.loads(oracle.ok("plan", *args, "--json").stdout)
    assert plan["bytes_intermediate"] > 0, "the premise: the plan writes pieces (to --temp)"
    oracle.ok(*args)
    want = zarr.open_array(box / "in" / "src.zarr", path="v")[...].std(axis=0)
    np.testing.assert_allclose(zarr.open_array(box / "out.zarr", path="m")[...], want, rtol=1e-5)
    assert not temp.exists(), sorted(map(str, temp.rglob("*")))


def test_two_jobs_sharing_one_temp_keep_out_of_each_others_pieces(tmp_path):
    """Job A stops (a slow task) after writing some pieces in a --temp it created; job B, on
    other data into another target, runs through the same --temp. B used to write, then erase,
    the same keys as A (`a0-s0/…`): A's pieces were gone. Now B leaves A's pieces as they were
    and A's directory with them; A, killed and resumed, completes with its own values and then
    removes the --temp it created."""
    box = make_box(tmp_path)
    data = big_source(box)
    other = oracle.write_series(box / "in" / "other.zarr", (400, 60, 60), (4, 60, 60)) * 2 + 1
    zarr.open_array(box / "in" / "other.zarr", path="v")[...] = other
    temp, flag = box / "scratch", tmp_path / "slow.pid"
    first = subprocess.Popen(
        [str(oracle.chunkmill_bin()), *map(str, job_args("rechunk", box)), "--temp", str(temp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "CHUNKMILL_TEST_SLOW_TASK": f"3:{flag}"})
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flag.exists(), f"the first run never reached its slow task: {first.poll()}"
        pieces = snapshot(temp)
        assert any(kind == "file" for kind, _ in pieces.values()), pieces
        oracle.ok("rechunk", box / "in" / "other.zarr", box / "other.zarr", "--chunks", SPEC,
                  "--max-mem", "64MB", "--workers", "1", "--no-progress", "--temp", temp)
        assert snapshot(temp) == pieces
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    np.testing.assert_array_equal(zarr.open_array(box / "other.zarr", path="v")[...], other)
    oracle.ok(*job_args("rechunk", box), "--temp", temp, "--resume")
    assert_rechunked(box / "out.zarr", data)
    assert not temp.exists(), sorted(map(str, temp.rglob("*")))


def failed_run_with_pieces(tmp_path):
    """A rechunk through `--temp` that fails part-way (injected faults, no retries) and leaves
    pieces there: its box, source values, --temp and command."""
    box = make_box(tmp_path)
    data = big_source(box)
    temp = box / "scratch"
    args = [*job_args("rechunk", box), "--temp", temp]
    r = run(*args, "--retries", "0", env={"CHUNKMILL_TEST_FAULT_RATE": "0.3"})
    assert r.returncode == 1, oracle.describe(r)
    assert any(p.is_file() for p in temp.rglob("*")), "the premise: a stage-0 task left pieces"
    return box, data, temp, args


def test_a_failed_run_keeps_its_pieces_for_the_resume(tmp_path):
    box, data, temp, args = failed_run_with_pieces(tmp_path)
    oracle.ok(*args, "--resume")
    assert_rechunked(box / "out.zarr", data)
    assert not temp.exists()


def test_the_end_of_a_run_removes_only_what_it_wrote_in_its_work_dir(tmp_path):
    """A finished job removes the work dir it chose; what someone put there meanwhile (a note,
    logs) used to go with it. Now only chunkmill's own entries go, and the dir stays with
    the rest, unchanged."""
    box = make_box(tmp_path)
    data = big_source(box)
    oracle.ok(*job_args("rechunk", box), "--prepare")
    work = box / "out.zarr.work"
    (work / "notes.txt").write_text("mine\n")
    (work / "logs").mkdir()
    (work / "logs" / "a.log").write_text("also mine\n")
    theirs = {k: v for k, v in snapshot(work).items() if k.split("/")[0] in ("notes.txt", "logs")}
    oracle.ok(*job_args("rechunk", box), "--resume")
    assert_rechunked(box / "out.zarr", data)
    assert snapshot(work) == theirs


def test_a_fresh_run_after_a_failed_one_leaves_none_of_its_pieces(tmp_path):
    """A run that failed left its pieces in its directory of --temp; the next run on the same
    target, a fresh start of another plan (more memory: a direct copy), wrote none there and so
    erased none of them: after its success they, and the --temp the failed run created, were
    left. A fresh start now abandons them; after success nothing is left."""
    box, data, temp, args = failed_run_with_pieces(tmp_path)
    direct = [a if a != "64MB" else "200MB" for a in args]
    assert json.loads(oracle.ok("plan", *direct[:-3], "--json").stdout)["bytes_intermediate"] == 0
    oracle.ok(*direct, "--overwrite")
    assert_rechunked(box / "out.zarr", data)
    assert not temp.exists(), sorted(map(str, temp.rglob("*")))


def test_an_edited_created_record_never_removes_a_directory_the_job_did_not_create(tmp_path):
    """`created.json` names the directories of --temp a job made, for the end of a (resumed) run
    to remove them. A record naming another empty directory (edited, or left by a run with
    another --temp) made the end of the run remove it. Now only ancestors of the job's own
    intermediates dir are candidates."""
    box = make_box(tmp_path)
    data = big_source(box)
    mine = box / "mine"
    mine.mkdir()
    temp = box / "scratch" / "job"
    args = [*job_args("rechunk", box), "--temp", temp]
    oracle.ok(*args, "--prepare")
    record = box / "out.zarr.work" / "created.json"
    created = json.loads(record.read_text())
    assert str(temp) in created["created"], created
    created["created"] += [str(mine), "mine"]
    record.write_text(json.dumps(created))
    oracle.ok(*args, "--resume")
    assert_rechunked(box / "out.zarr", data)
    assert mine.is_dir(), "a directory the job did not create was removed"
    assert not (box / "scratch").exists(), sorted(map(str, (box / "scratch").rglob("*")))


@pytest.mark.parametrize("where", ["work", "parent"])
def test_a_temp_that_is_or_holds_the_work_dir_is_refused(tmp_path, where):
    """`--temp` given as the work dir (or a directory holding it) was accepted for a fresh start
    and the work files went into it; a resume after a kill was then refused ("--temp holds
    cores.json, which chunkmill did not write"): a run that could never be resumed. Now it is
    refused before anything is written."""
    box = make_box(tmp_path)
    work = box / "jobs" / "w"
    temp = work if where == "work" else box / "jobs"
    before = snapshot(box)
    r = run(*job_args("rechunk", box), "--temp", temp, "--work-dir", work)
    oracle.assert_one_error_line(r, codes={3}, mentions=[str(temp), "work dir"])
    assert snapshot(box) == before


@pytest.mark.parametrize("flag", ["--temp", "--work-dir"])
def test_a_temp_or_work_dir_under_a_file_is_refused(tmp_path, flag):
    """`--temp FILE/sub` passed the checks and failed at its first erase (exit 1, "erase :
    Not a directory"), after the job had started; refused now (exit 3), naming the file."""
    box = make_box(tmp_path)
    under = box / "outside.json" / "sub"
    before = snapshot(box)
    r = run(*job_args("rechunk", box), flag, under)
    oracle.assert_one_error_line(r, codes={3}, mentions=[str(under), str(box / "outside.json")])
    assert snapshot(box) == before


def test_an_edited_created_record_never_removes_an_ancestor_the_job_did_not_create(tmp_path):
    """The record edited to name the user's directory holding --temp: once the job's own dirs
    were gone it was empty, and went too. Now a recorded dir goes only while it is the one the
    job made (its device and inode, recorded as it made it)."""
    box = make_box(tmp_path)
    data = big_source(box)
    mine = box / "mine"
    mine.mkdir()
    temp = mine / "job"
    args = [*job_args("rechunk", box), "--temp", temp]
    oracle.ok(*args, "--prepare")
    record = box / "out.zarr.work" / "created.json"
    created = json.loads(record.read_text())
    assert created["created"] == [str(temp)], created
    created["created"].append(str(mine))
    record.write_text(json.dumps(created))
    oracle.ok(*args, "--resume")
    assert_rechunked(box / "out.zarr", data)
    assert mine.is_dir() and list(mine.iterdir()) == [], "the user's directory was removed"
