#!/usr/bin/env python3
"""Codec-bound floor for the rechunk benchmark.

Reads every stored chunk of a local Zarr array (format 2 or 3, zstd-compressed,
no filters), decompresses it and compresses it again with zstd level 1, once,
with no rechunking and no writes. That is the least work any rechunker must do
on this workload: every byte has to be decoded once and encoded once (a
rechunker with an intermediate store does it twice).

Timed in one process with 1 worker thread and with N worker threads (default
2; numcodecs' Zstd releases the GIL, so threads do scale, and the script prints
the speed-up so that is visible). Each variant runs --repeat times (default 2)
after one untimed pass that pulls the files into the page cache, and the best
time is the floor (all times are kept in the JSON). File reads are inside the
timing (from the page cache). Results go to stdout and, with --json, to a file.

With --write-dir DIR, each variant also writes every re-encoded chunk to its own
file under DIR and syncs it (as a rechunker's target values must be durable),
so the floor includes writing the target bytes once; DIR is emptied after each
run. The CPU time of the process (user + system) is recorded beside the wall
time: on a shared machine it is the steadier measure.
"""

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import zarr


def chunk_paths(path: str):
    """Paths of every stored chunk file of the array at the root of `path`."""
    arr = zarr.open_array(path, mode="r")
    meta = arr.metadata
    fmt = meta.zarr_format
    grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
    if fmt == 2:
        sep = getattr(meta, "dimension_separator", ".") or "."
        comp = meta.compressor
        if comp is None or getattr(comp, "codec_id", None) != "zstd" or meta.filters:
            sys.exit(f"codec_floor: expected a zstd compressor and no filters, got {comp!r} / {meta.filters!r}")
    else:
        enc = meta.chunk_key_encoding
        sep = enc.separator
        names = [c.to_dict()["name"] for c in meta.codecs]
        if names != ["bytes", "zstd"]:
            sys.exit(f"codec_floor: expected codecs [bytes, zstd], got {names}")
    import itertools

    out = []
    for idx in itertools.product(*grid):
        key = sep.join(str(i) for i in idx)
        if fmt == 3:
            key = "c" + sep + key if getattr(enc, "name", "default") == "default" else key
        p = os.path.join(path, key)
        if os.path.exists(p):
            out.append(p)
    return arr, out


def run(paths, workers: int, level: int, write_dir=None):
    dec = numcodecs.Zstd()
    enc = numcodecs.Zstd(level=level)

    def one(p):
        with open(p, "rb") as f:
            raw = f.read()
        decoded = dec.decode(raw)
        encoded = enc.encode(decoded)
        if write_dir is not None:
            fd = os.open(os.path.join(write_dir, os.path.basename(p)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, encoded)
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(raw), len(decoded), len(encoded)

    if write_dir is not None:
        os.makedirs(write_dir, exist_ok=True)
    cpu0 = os.times()
    t0 = time.perf_counter()
    if workers == 1:
        res = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            res = list(ex.map(one, paths, chunksize=1))
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    if write_dir is not None:
        for name in os.listdir(write_dir):
            os.remove(os.path.join(write_dir, name))
    stored = sum(r[0] for r in res)
    decoded = sum(r[1] for r in res)
    reencoded = sum(r[2] for r in res)
    return {
        "workers": workers,
        "wall_s": wall,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "writes": write_dir is not None,
        "chunks": len(res),
        "stored_bytes": stored,
        "decoded_bytes": decoded,
        "reencoded_bytes": reencoded,
        "decoded_MB_per_s": decoded / wall / 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="local Zarr array store, e.g. bench/data/src.zarr")
    ap.add_argument("--threads", type=int, default=2, help="worker threads for the parallel run (default 2)")
    ap.add_argument("--level", type=int, default=1, help="zstd level for re-encoding (default 1)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per variant; the best counts (default 2)")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--write-dir", help="also write (and sync) every re-encoded chunk to a file here; emptied after each run")
    args = ap.parse_args()

    arr, paths = chunk_paths(args.src)
    if not paths:
        sys.exit(f"codec_floor: no chunk files found under {args.src}")
    for p in paths:  # untimed: page cache
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    results = []
    for w in sorted({1, args.threads}):
        tries = [run(paths, w, args.level, args.write_dir) for _ in range(max(1, args.repeat))]
        r = min(tries, key=lambda x: x["wall_s"])
        r["all_wall_s"] = [round(x["wall_s"], 3) for x in tries]
        results.append(r)
        print(
            f"codec_floor: {w} thread(s): {r['wall_s']:.2f} s for {r['chunks']} chunks, "
            f"{r['decoded_bytes'] / 1e9:.2f} GB decoded ({r['decoded_MB_per_s']:.0f} MB/s), "
            f"re-encoded to {r['reencoded_bytes'] / 1e9:.2f} GB{' and written' if args.write_dir else ''}, "
            f"CPU {r['cpu_s']:.2f} s (best of {r['all_wall_s']})",
            flush=True,
        )
    if len(results) == 2:
        print(f"codec_floor: speed-up with {args.threads} threads: {results[0]['wall_s'] / results[1]['wall_s']:.2f}x")
    doc = {
        "src": args.src,
        "shape": list(arr.shape),
        "chunks": list(arr.chunks),
        "level": args.level,
        "numcodecs": numcodecs.__version__,
        "zarr": zarr.__version__,
        "runs": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
