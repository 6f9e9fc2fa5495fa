"""Hostile command lines, generated: a few hundred seeded-random invocations of every command
against a sandbox full of sentinel files, with one invariant for all of them (issue 9):

* no panic: no "panicked at" on stderr, and the exit code is one of 0, 1, 2, 3;
* no hang: each call has a timeout;
* nothing outside the target and its work dir changed: the sha256 of every sentinel file (the
  sources, the NetCDF inputs, scripts, a precious directory, a file beside the working
  directory) is the same before and after, and no file appeared outside the target, its work
  dir or the declared output;
* the target is either correct or absent/unchanged: when the run exits 0 the target opens in
  zarr-python (or json) with the values numpy computes from the inputs; when it exits 2 or 3
  a new target is absent and an existing one unchanged;
* inputs the issue says must be refused (duplicate or overlapping files, a concat dimension no
  file has, a flag repeated with the same name, a target that holds or encloses an input) are
  not accepted with exit 0.

Each case runs in a fresh copy of one template sandbox, so cases are independent; they run a
few at a time. CHUNKMILL_HOSTILE_SEED and CHUNKMILL_HOSTILE_CASES change the draw (defaults:
seed 9, 300 cases). A failure lists every failing case with its command line, exit code, stderr
and the invariant it broke.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import zarr

import oracle

SEED = int(os.environ.get("CHUNKMILL_HOSTILE_SEED", "9"))
CASES = int(os.environ.get("CHUNKMILL_HOSTILE_CASES", "300"))
CALL_TIMEOUT = 15  # seconds (a call here takes under 3); a hang is a failure
ALLOWED_CODES = {0, 1, 2, 3}

NT, NLAT, NLON = 4, 6, 8  # per NetCDF file
HOURS = {"a.nc": 0, "b.nc": 4, "c.nc": 8, "overlap.nc": 2}  # first hour of each file
LAT = np.linspace(50.0, 0.0, NLAT)  # descending, as archives often are
LON = np.arange(NLON) * 10.0


def air(hours: np.ndarray) -> np.ndarray:
    t = hours[:, None, None]
    y = np.arange(NLAT)[None, :, None]
    x = np.arange(NLON)[None, None, :]
    return (250.0 + t * 0.5 + y * 3.0 + x * 0.25).astype("float32")


def orog() -> np.ndarray:
    return (np.arange(NLAT * NLON).reshape(NLAT, NLON) * 1.5).astype("float32")


# ---------------------------------------------------------------------------------------------
# the template sandbox


def _write_nc(path: Path, first_hour: int) -> None:
    hours = np.arange(first_hour, first_hour + NT, dtype="float64")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.createDimension("time", None)
        ds.createDimension("lat", NLAT)
        ds.createDimension("lon", NLON)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "hours since 2020-01-01 00:00:00"
        t.calendar = "standard"
        t[:] = hours
        ds.createVariable("lat", "f8", ("lat",))[:] = LAT
        ds.createVariable("lon", "f8", ("lon",))[:] = LON
        a = ds.createVariable("air", "f4", ("time", "lat", "lon"), chunksizes=(2, NLAT, NLON), zlib=True)
        a.units = "K"
        a[:] = air(hours)
        ds.createVariable("orog", "f4", ("lat", "lon"))[:] = orog()


def _write_zarr(path: Path) -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    hours = np.arange(12, dtype="int64")
    a = root.create_array("air", shape=(12, NLAT, NLON), chunks=(4, NLAT, NLON), dtype="float32",
                          dimension_names=("time", "lat", "lon"))
    a[:] = air(hours.astype("float64"))
    t = root.create_array("time", shape=(12,), chunks=(12,), dtype="int64", dimension_names=("time",))
    t[:] = hours
    t.attrs["units"] = "hours since 2020-01-01"
    la = root.create_array("lat", shape=(NLAT,), chunks=(NLAT,), dtype="float64", dimension_names=("lat",))
    la[:] = LAT
    lo = root.create_array("lon", shape=(NLON,), chunks=(NLON,), dtype="float64", dimension_names=("lon",))
    lo[:] = LON
    oracle.consolidate(path)


GOOD_PLAN_SOURCE = "planned.zarr"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """case/outside.txt beside case/w, the working directory of every call."""
    root = tmp_path_factory.mktemp("hostile-template")
    (root / "outside.txt").write_text("a file beside the working directory\n")
    w = root / "w"
    (w / "data").mkdir(parents=True)
    for name, first in HOURS.items():
        _write_nc(w / "data" / name, first)
    _write_zarr(w / "src.zarr")
    _write_zarr(w / "old.zarr")  # a previous output: --overwrite may replace it
    (w / "precious" / "sub").mkdir(parents=True)
    (w / "precious" / "notes.txt").write_text("years of field notes\n")
    (w / "precious" / "sub" / "x.bin").write_bytes(bytes(range(256)))
    (w / "scripts").mkdir()
    (w / "scripts" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (w / "odd").mkdir()
    (w / "odd" / "empty.nc").write_bytes(b"")
    (w / "odd" / "text.nc").write_text("this is not NetCDF\n")
    (w / "odd" / "dir.nc").mkdir()
    (w / "odd" / "dir.nc" / "inside.txt").write_text("a directory named like a file\n")
    full = (w / "data" / "a.nc").read_bytes()
    (w / "odd" / "trunc.nc").write_bytes(full[: len(full) // 2])
    (w / "odd" / "notzarr.zarr").mkdir()
    (w / "odd" / "notzarr.zarr" / "readme.txt").write_text("named .zarr, holds none\n")
    os.symlink("src.zarr", w / "link_src.zarr")
    os.symlink("data/a.nc", w / "link_a.nc")
    (w / "list.txt").write_text("data/a.nc\ndata/b.nc\n")
    return root


def _prepare(w: Path) -> None:
    """A real plan to hand-edit: a prepared rechunk of src.zarr, made in the case's own copy
    (a plan may hold absolute paths, which must point into this copy)."""
    r = _run_in(w, ["rechunk", "src.zarr", GOOD_PLAN_SOURCE, "--chunks", "time=12,lat=3,lon=4",
                    "--max-mem", "64MB", "--prepare", "--no-progress", "--work-dir", "job.work"])
    assert r.returncode == 0, oracle.describe(r)


def _run_in(cwd: Path, args: list[str], timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env.pop("CHUNKMILL_TEST_FAULT_RATE", None)
    return subprocess.run([str(oracle.chunkmill_bin()), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    argv: list[str]
    # Paths (relative to w) the call may create or change: its target, work dir, output.
    may_write: list[str] = field(default_factory=list)
    # What a successful run must have written, checked with numpy: ("zarr", path, {array: values})
    # or ("json", path) for references.
    expect: tuple | None = None
    # The issue says this input must be refused: exit 0 is a failure.
    must_refuse: str | None = None
    # The target (relative to w): after exit 2 or 3 nothing under it may differ.
    target: str | None = None
    # Set up before the call (a FIFO, a hand-edited plan), given the case's w.
    setup: str | None = None


SRC_ALIASES = ["src.zarr", "./src.zarr/", "@ABS@/src.zarr", "link_src.zarr", "src.zarr/.", "../w/src.zarr",
               "data/../src.zarr"]
NEW_TARGETS = ["new.zarr", "out/new.zarr", "@ABS@/new2.zarr", "./new3.zarr/"]
HOSTILE_TARGETS = {
    # target → why it must be refused
    ".": "the working directory",
    "..": "an ancestor of the working directory",
    "precious": "a directory that is not a Zarr store",
    "data": "the directory of the inputs",
    "scripts/run.sh": "a file that is not a Zarr store",
    "odd/notzarr.zarr": "a directory that is not a Zarr store",
    "src.zarr/inner.zarr": "a path inside the source",
}
SOURCE_AS_TARGET = ["src.zarr", "./src.zarr/", "@ABS@/src.zarr", "link_src.zarr", "src.zarr/."]


def _chunks(rng: random.Random) -> tuple[str, bool | None]:
    """A chunk spec and whether it is valid for src.zarr (None: depends on the other flags, as
    chunks by position do on a single array)."""
    if rng.random() < 0.05:
        return "12,3,4", None
    good = ["time=-1,lat=3,lon=4", "time=12,lat=2", "lat=3", "time=5,lat=6,lon=8", "time=-1"]
    bad = ["time=0", "tiem=4", "time=-2", "12,3", "time=a", "", ",,", "time=4,time=5", "1,2,3,4",
           "lat=3,7", "time=99999999999999999999", "lat=3;lon=4"]
    if rng.random() < 0.6:
        return rng.choice(good), True
    return rng.choice(bad), False


def _mem(rng: random.Random) -> tuple[list[str], bool]:
    good = [["--max-mem", "64MB"], ["--max-mem", "128MiB"], ["--max-mem", "1GB"], []]
    # (a budget larger than the machine is not refused: nothing says how much a job will get)
    bad = [["--max-mem", "0"], ["--max-mem", "-5MB"], ["--max-mem", "64XB"], ["--max-mem", "1KB"],
           ["--max-mem", "nan"]]
    if rng.random() < 0.8:
        return rng.choice(good), True
    return rng.choice(bad), False


def _codec(rng: random.Random) -> tuple[list[str], bool]:
    good = [[], [], ["--codec", "zstd:3"], ["--codec", "none"], ["--codec", "gzip:5"], ["--codec", "blosc:lz4:5"]]
    bad = [["--codec", "zstd:99"], ["--codec", "lzma"], ["--codec", "gzip:-1"], ["--codec", "blosc:nope:5"],
           ["--codec", ""], ["--codec", "zstd:"]]
    if rng.random() < 0.85:
        return rng.choice(good), True
    return rng.choice(bad), False


def src_values() -> dict:
    hours = np.arange(12, dtype="float64")
    return {"air": air(hours), "lat": LAT, "lon": LON, "time": np.arange(12, dtype="int64")}


def gen_rechunk(rng: random.Random) -> Case:
    source = rng.choice(SRC_ALIASES)
    kind = rng.random()
    must_refuse = None
    if kind < 0.45:
        target = rng.choice(NEW_TARGETS)
        may = [target.replace("@ABS@/", ""), target.replace("@ABS@/", "").rstrip("/") + ".work"]
    elif kind < 0.6:
        target, may = "old.zarr", ["old.zarr", "old.zarr.work"]
    elif kind < 0.8:
        target = rng.choice(list(HOSTILE_TARGETS))
        must_refuse = f"target is {HOSTILE_TARGETS[target]}"
        may = [target.rstrip("/") + ".work"] if target not in (".", "..", "src.zarr/inner.zarr") else []
    else:
        target = rng.choice(SOURCE_AS_TARGET)
        must_refuse = "the target is the source"
        may = []
    chunks, chunks_ok = _chunks(rng)
    mem, mem_ok = _mem(rng)
    codec, codec_ok = _codec(rng)
    argv = ["rechunk", source, target, "--no-progress", *mem, *codec]
    if rng.random() < 0.9:
        argv += ["--chunks", chunks]
        if chunks_ok is False:
            must_refuse = must_refuse or f"--chunks '{chunks}' is not valid for src.zarr"
    if not mem_ok:
        must_refuse = must_refuse or f"{mem} is not a usable budget"
    if not codec_ok:
        must_refuse = must_refuse or f"{codec} is not a codec"
    if rng.random() < 0.5:
        argv.append("--overwrite")
    if rng.random() < 0.1:
        argv.append("--resume")
    if rng.random() < 0.15:
        argv += ["--array", "air", "--array", "air"]
        must_refuse = must_refuse or "--array given twice"
    elif rng.random() < 0.1:
        argv += ["--array", rng.choice(["air", "ari", ""])]
    if rng.random() < 0.1:
        argv += ["--workers", rng.choice(["0", "1", "3", "-1", "x"])]
    if rng.random() < 0.1:
        argv += ["--shards", rng.choice(["time=12,lat=6,lon=8", "time=5", "0,0,0"])]
    if rng.random() < 0.1:
        argv += ["--zarr-format", rng.choice(["2", "3", "4"])]
    values = src_values()
    if "--array" in argv and argv[argv.index("--array") + 1] == "air":
        values = {"air": values["air"]}
    expect = ("zarr", target, values) if chunks_ok is not False and mem_ok and codec_ok else None
    if chunks_ok is None and "--chunks" in argv:
        expect = None
    return Case(argv, may_write=may, expect=expect, must_refuse=must_refuse, target=target)


def _nc_inputs(rng: random.Random) -> tuple[list[str], list[int] | None, str | None]:
    """Inputs, the first hours of the files concatenated in order (None when not modelled) and a
    reason the inputs must be refused."""
    r = rng.random()
    if r < 0.35:
        files = rng.sample(["a.nc", "b.nc", "c.nc"], rng.choice([1, 2, 3]))
        alias = rng.choice(["data/{}", "./data/{}", "@ABS@/data/{}", "data/../data/{}"])
        firsts = sorted(HOURS[f] for f in files)
        return [alias.format(f) for f in files], firsts, None
    if r < 0.45:
        return ["data/[abc].nc"], [0, 4, 8], None
    if r < 0.5:
        return ["@list.txt"], [0, 4], None
    if r < 0.6:
        f = rng.choice(["a.nc", "b.nc"])
        return [f"data/{f}", rng.choice([f"data/{f}", f"./data/{f}", "link_a.nc" if f == "a.nc" else f"data/{f}"])], \
            None, "the same file twice"
    if r < 0.68:
        return ["data/a.nc", "data/overlap.nc"], None, "overlapping time ranges"
    if r < 0.75:
        return [rng.choice(["data/*.zz", "nothing/*.nc", "data/[.nc"])], None, "a glob that matches nothing"
    odd = rng.choice(["odd/empty.nc", "odd/text.nc", "odd/trunc.nc", "odd/dir.nc", "missing.nc", "odd/fifo.nc"])
    return ["data/a.nc", odd] if rng.random() < 0.5 else [odd], None, f"an unreadable input ({odd})"


def gen_convert(rng: random.Random) -> Case:
    inputs, firsts, refuse = _nc_inputs(rng)
    setup = "fifo" if any("fifo" in i for i in inputs) else None
    tk = rng.random()
    if tk < 0.6:
        target = rng.choice(NEW_TARGETS)
        may = [target.replace("@ABS@/", ""), target.replace("@ABS@/", "").rstrip("/") + ".work"]
    elif tk < 0.7:
        target, may = "old.zarr", ["old.zarr", "old.zarr.work"]
    else:
        target = rng.choice(list(HOSTILE_TARGETS) + ["data/a.nc", "data"])
        refuse = refuse or f"target {target} is not a Zarr output"
        may = [target.rstrip("/") + ".work"] if target not in (".", "..", "src.zarr/inner.zarr") else []
    argv = ["convert", *inputs, target, "--no-progress"]
    concat = rng.random()
    if concat < 0.75:
        argv += ["--concat-dim", "time"]
    elif concat < 0.85:
        dim = rng.choice(["tiem", "lat", "level"])
        argv += ["--concat-dim", dim]
        if dim != "lat":
            refuse = refuse or "a concat dimension no file has"
        elif len(inputs) > 1 or "[" in inputs[0] or inputs[0].startswith("@"):
            refuse = refuse or "files concatenated along lat, which they share: repeated latitudes"
        firsts = None
    chunks, chunks_ok = _chunks(rng)
    argv += ["--chunks", chunks if rng.random() < 0.8 else "time=-1,lat=3,lon=4"]
    if argv[argv.index("--chunks") + 1] == chunks and not chunks_ok:
        firsts = None
        if chunks_ok is False:
            refuse = refuse or f"--chunks '{chunks}' is not valid for the inputs"
    mem, mem_ok = _mem(rng)
    codec, codec_ok = _codec(rng)
    argv += mem + codec
    if not (mem_ok and codec_ok):
        firsts = None
        refuse = refuse or f"{mem} {codec}: not a usable budget or codec"
    name, reverse, isel = "air", False, None
    t = rng.random()
    if t < 0.15:
        argv += ["--reverse", "lat"]
        reverse = True
    elif t < 0.25:
        argv += ["--reverse", "lat", "--reverse", "lat"]
        refuse = refuse or "--reverse given twice"
    elif t < 0.32:
        argv += ["--reverse", rng.choice(["lta", "air", ""])]
        firsts = None
    elif t < 0.42:
        argv += ["--rename", "air=temperature"]
        name = "temperature"
    elif t < 0.48:
        argv += ["--rename", "air=t1", "--rename", "air=t2"]
        refuse = refuse or "--rename of the same name twice"
    elif t < 0.55:
        argv += ["--isel", "time=1:3"]
        isel = (1, 3)
    elif t < 0.6:
        argv += ["--isel", "time=0:2", "--isel", "time=1:3"]
        refuse = refuse or "--isel of the same dimension twice"
    elif t < 0.65:
        argv += ["--select", "lat=10:30", "--select", "lat=0:20"]
        refuse = refuse or "--select of the same dimension twice"
    elif t < 0.7:
        argv += ["--drop", "orog", "--drop", "orog"]
        refuse = refuse or "--drop given twice"
    elif t < 0.75:
        argv += [rng.choice(["--select", "--isel", "--cast", "--rename", "--tile"]),
                 rng.choice(["lat", "=", "lat=", "lat=a:b", "air=int99", "x=y=z", "lat=3:1:2"])]
        firsts = None
    if rng.random() < 0.3:
        argv.append("--overwrite")
    expect = None
    if firsts is not None and refuse is None:
        hours = np.concatenate([np.arange(f, f + NT, dtype="float64") for f in firsts])
        values = air(hours)
        if isel:
            values = values[isel[0]:isel[1]]
        if reverse:
            values = values[:, ::-1, :]
        expect = ("zarr", target, {name: values})
    return Case(argv, may_write=may, expect=expect, must_refuse=refuse, setup=setup, target=target)


def gen_virtualize(rng: random.Random) -> Case:
    inputs, firsts, refuse = _nc_inputs(rng)
    setup = "fifo" if any("fifo" in i for i in inputs) else None
    fmt = rng.choice(["kerchunk-json", "kerchunk-json", "kerchunk-parquet", "icechunk", "kerchunk"])
    ok = rng.random()
    if ok < 0.6:
        output = rng.choice(["refs.json", "out/refs.json", "@ABS@/refs2.json", "refs.parq", "refs.icechunk"])
        may = [output.replace("@ABS@/", ""), output.replace("@ABS@/", "") + ".work"]
    else:
        output = rng.choice(["data/a.nc", "data", "precious", ".", "src.zarr", "link_a.nc", "scripts/run.sh"])
        refuse = refuse or f"--output {output} holds inputs or user data"
        may = [output + ".work"] if output not in (".",) else []
    argv = ["virtualize", *inputs, "--output", output, "--format", fmt, "--no-progress"]
    if rng.random() < 0.8:
        argv += ["--concat-dim", rng.choice(["time", "time", "time", "tiem"])]
        if argv[-1] == "tiem":
            refuse = refuse or "a concat dimension no file has"
    # Without --concat-dim, several files join along the dimension unlimited in all of them
    # (time): inferred and printed, not refused.
    if rng.random() < 0.4:
        argv.append("--overwrite")
    expect = ("refs", output, fmt) if refuse is None and fmt == "kerchunk-json" else None
    return Case(argv, may_write=may, expect=expect, must_refuse=refuse, setup=setup, target=output)


def gen_inspect(rng: random.Random) -> Case:
    path = rng.choice(["src.zarr", "./src.zarr/", "link_src.zarr", "data/a.nc", "odd/empty.nc", "odd/text.nc",
                       "odd/trunc.nc", "odd/dir.nc", "odd/notzarr.zarr", "missing", "precious", ".", "odd/fifo.nc",
                       "job.work", "list.txt", "src.zarr/air", "src.zarr/air/c/0/0/0"])
    return Case(["inspect", path] + (["--json"] if rng.random() < 0.5 else []),
                setup="fifo" if "fifo" in path else None)


PLAN_EDITS = ["zero-block", "dotdot-stage", "garbage", "empty", "other-url", "absolute-stage", "huge-block",
              "negative", "missing-field"]


def gen_worker(rng: random.Random) -> Case:
    edit = rng.choice(PLAN_EDITS + ["none"])
    stage = rng.choice(["0", "1", "999", "../x", "a0-s0", ""])
    tasks = rng.choice(["0..1", "0..=0", "5..2", "0..99999999999999999999", "x", "0"])
    if rng.random() < 0.3:
        argv = ["status", rng.choice(["job.work", "job.work/", "src.zarr", "planned.zarr", "missing.work", "odd/empty.nc"])]
    else:
        argv = ["worker", "--plan", rng.choice(["job.work", "job.work/plan.json", "./job.work/"]), "--stage", stage,
                "--tasks", tasks, "--no-progress"]
    return Case(argv, may_write=["job.work", GOOD_PLAN_SOURCE], setup=f"plan:{edit}")


def gen_resume(rng: random.Random) -> Case:
    """--resume of the prepared plan with flags that may differ from the first run."""
    argv = ["rechunk", "src.zarr", GOOD_PLAN_SOURCE, "--no-progress", "--work-dir", "job.work", "--resume",
            "--chunks", rng.choice(["time=12,lat=3,lon=4", "time=12,lat=3,lon=4", "time=12,lat=2,lon=4"]),
            "--max-mem", rng.choice(["64MB", "64MB", "128MB"])]
    if rng.random() < 0.5:
        argv += ["--workers", rng.choice(["1", "2", "7"])]
    spec = argv[argv.index("--chunks") + 1]
    mem = argv[argv.index("--max-mem") + 1]
    expect = ("zarr", GOOD_PLAN_SOURCE, src_values()) if spec == "time=12,lat=3,lon=4" and mem == "64MB" else None
    return Case(argv, may_write=["job.work", GOOD_PLAN_SOURCE], expect=expect, setup="plan:none",
                target=GOOD_PLAN_SOURCE)


GENERATORS = [(gen_rechunk, 30), (gen_convert, 30), (gen_virtualize, 18), (gen_inspect, 8), (gen_worker, 8),
              (gen_resume, 6)]


def generate(seed: int, n: int) -> list[Case]:
    rng = random.Random(seed)
    gens = [g for g, w in GENERATORS for _ in range(w)]
    return [rng.choice(gens)(rng) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# running one case


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_fifo():
                out[rel] = "fifo"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _edit_plan(w: Path, edit: str) -> None:
    plan_path = w / "job.work" / "plan.json"
    if edit == "none":
        return
    if edit == "garbage":
        plan_path.write_text("{ this is not json")
        return
    if edit == "empty":
        plan_path.write_text("")
        return
    plan = json.loads(plan_path.read_text())
    text = json.dumps(plan)
    if edit == "zero-block":
        text = _replace_blocks(plan, 0)
    elif edit == "huge-block":
        text = _replace_blocks(plan, 10**15)
    elif edit == "negative":
        text = text.replace('"projected_mem": ', '"projected_mem": -')
    elif edit == "dotdot-stage":
        plan["stages"][0]["name"] = "../../escaped"
        text = json.dumps(plan)
    elif edit == "absolute-stage":
        plan["stages"][0]["name"] = str(w.parent / "abs-stage")
        text = json.dumps(plan)
    elif edit == "other-url":
        text = text.replace("src.zarr", "precious")
    elif edit == "missing-field":
        plan["stages"][0].pop("kind", None)
        text = json.dumps(plan)
    plan_path.write_text(text)


def _replace_blocks(plan: dict, value: int) -> str:
    """Every chunk size of every block grid in the plan set to ``value``."""

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "blocks" and isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, list) and vv and all(isinstance(x, int) for x in vv) and kk != "shape":
                            v[kk] = [value] * len(vv)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(plan)
    return json.dumps(plan)


def _resolve(w: Path, arg: str) -> str:
    return arg.replace("@ABS@", str(w))


def _under(rel: str, roots: list[str]) -> bool:
    return any(rel == r or rel.startswith(r.rstrip("/") + "/") for r in roots if r)


def _norm(w: Path, p: str) -> str:
    """A path argument as a path relative to w, lexically normalised (symlinks not followed)."""
    return os.path.relpath(os.path.normpath(os.path.join(w, _resolve(w, p))), w)


def _check_target(w: Path, case: Case, before: dict[str, str]) -> str | None:
    if case.expect is None:
        return None
    kind, path = case.expect[0], _norm(w, case.expect[1])
    full = w / path
    if kind == "zarr":
        try:
            group = zarr.open_group(str(full), mode="r")
            for name, expected in case.expect[2].items():
                got = group[name][...]
                if got.shape != expected.shape or not np.array_equal(got, expected):
                    return f"{path}/{name}: values differ from numpy's (shape {got.shape} vs {expected.shape})"
        except Exception as e:  # noqa: BLE001 - any failure to open is the finding
            return f"exit 0 but {path} does not open in zarr-python: {type(e).__name__}: {e}"
    elif kind == "refs":
        try:
            doc = json.loads(full.read_text())
            if "refs" not in doc and not any(k.endswith(".zarray") or k.endswith("zarr.json") for k in doc):
                return f"{path}: not kerchunk references"
        except Exception as e:  # noqa: BLE001
            return f"exit 0 but {path} is not JSON references: {e}"
    return None


def run_case(template: Path, scratch: Path, index: int, case: Case) -> str | None:
    """The broken invariant of one case, or None."""
    root = scratch / f"case{index:04d}"
    shutil.copytree(template, root, symlinks=True)
    w = root / "w"
    if case.setup == "fifo":
        os.mkfifo(w / "odd" / "fifo.nc")
    elif case.setup and case.setup.startswith("plan:"):
        _prepare(w)
        _edit_plan(w, case.setup.split(":", 1)[1])
    before = _hashes(root)
    argv = [_resolve(w, a) for a in case.argv]
    try:
        r = _run_in(w, argv)
    except subprocess.TimeoutExpired:
        return f"hang: no exit within {CALL_TIMEOUT} s\n    $ chunkmill {' '.join(case.argv)}  (setup {case.setup})"
    problems = []
    if "panicked at" in r.stderr or "RUST_BACKTRACE" in r.stderr:
        problems.append("panic")
    if r.returncode not in ALLOWED_CODES:
        problems.append(f"exit code {r.returncode} not in {sorted(ALLOWED_CODES)}")
    after = _hashes(root)
    may = [("w/" + _norm(w, p)) for p in case.may_write]
    target_roots = [("w/" + _norm(w, case.target))] if case.target else []
    for rel, digest in before.items():
        if rel not in after:
            if not _under(rel, may):
                problems.append(f"removed {rel}")
        elif after[rel] != digest and not _under(rel, may):
            problems.append(f"changed {rel}")
    for rel in after.keys() - before.keys():
        if not _under(rel, may):
            problems.append(f"created {rel} outside the target and work dir")
    if r.returncode in (2, 3):
        for rel in after.keys() | before.keys():
            if _under(rel, target_roots) and before.get(rel) != after.get(rel):
                problems.append(f"exit {r.returncode} but the target changed: {rel}")
                break
    if r.returncode == 0 and case.must_refuse:
        problems.append(f"accepted (exit 0) although it must be refused: {case.must_refuse}")
    if r.returncode == 0 and not problems:
        bad = _check_target(w, case, before)
        if bad:
            problems.append(bad)
    if problems:
        return f"{'; '.join(problems[:6])}\n    $ chunkmill {' '.join(case.argv)}  (setup {case.setup})\n" \
               f"    exit {r.returncode}; stderr: {r.stderr.strip()[-600:]}"
    shutil.rmtree(root, ignore_errors=True)
    return None


def test_generation_is_seeded_and_covers_every_command():
    a, b = generate(SEED, 60), generate(SEED, 60)
    assert [c.argv for c in a] == [c.argv for c in b]
    commands = {c.argv[0] for c in generate(SEED, CASES)}
    assert {"rechunk", "convert", "virtualize", "inspect", "worker", "status"} <= commands


def test_hostile_invocations_break_nothing(template, tmp_path):
    cases = generate(SEED, CASES)
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {pool.submit(run_case, template, tmp_path, i, c): i for i, c in enumerate(cases)}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            if result:
                failures.append((futures[future], result))
    failures.sort()
    report = "\n".join(f"case {i}: {text}" for i, text in failures)
    assert not failures, f"{len(failures)} of {len(cases)} hostile invocations broke an invariant:\n{report}"
