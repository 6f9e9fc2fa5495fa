#!/usr/bin/env python3
"""Codec-bound floor for the convert benchmark.

The least work any converter must do on this workload, timed without the converting: every
stored chunk of the source files is read (from the page cache) and decoded once (inflate, then
unshuffle where the file says so), and every chunk of the target is encoded once with zstd at
the target's level; optionally the encoded target chunks are written and synced. Nothing is
rechunked in the timed parts: the target chunks are assembled, untimed, from a second decode.

    codec_floor.py --list FILES.txt --vars air,uwnd --chunks time=-1,lat=18,lon=36 [--workers 2]

Inflate is libdeflate (the `deflate` package; the library chunkmill itself uses) when it is
installed, else CPython's zlib. Parallel variants run in forked worker processes, each taking
an equal share of the chunks, so no GIL can skew them; the pool is started before the clock.
Each variant runs --repeat times and the best counts. The CPU of decode + encode on 1 worker
divided by the cores is the ideal floor of a perfectly parallel tool (no overhead, every wait
for the device hidden behind work);
the N-worker variant is what N processes reach in practice. Results go to stdout and --json.
Memory: the compressed chunks (about the inputs' size) plus two copies of one variable.
"""

import argparse
import itertools
import json
import multiprocessing as mp
import os
import shutil
import sys
import time

import h5py
import numcodecs
import numpy as np

try:
    import deflate

    INFLATE = "libdeflate (deflate %s)" % getattr(deflate, "__version__", "?")
except ImportError:  # the floor is then zlib's, slower than chunkmill's inflate: said in the output
    deflate = None
    import zlib

    INFLATE = "zlib (CPython)"

# Work shared with forked workers through copy-on-write globals (set before each pool starts).
_CHUNKS = []   # (compressed bytes, decoded length, element size if shuffled else 0)
_TARGETS = []  # C-ordered bytes of each target chunk
_LEVEL = 1
_WRITE_DIR = None


def _inflate(blob, n):
    if deflate is not None:
        return deflate.zlib_decompress(blob, n)
    return zlib.decompress(blob)


def _decode_share(bounds):
    lo, hi = bounds
    cpu0 = time.process_time()
    unshuffles = {}
    total = 0
    for blob, n, shuffle in _CHUNKS[lo:hi]:
        raw = _inflate(blob, n)
        if shuffle:
            codec = unshuffles.setdefault(shuffle, numcodecs.Shuffle(elementsize=shuffle))
            raw = codec.decode(raw)
        total += len(raw)
    return total, time.process_time() - cpu0


def _encode_share(bounds):
    lo, hi = bounds
    cpu0 = time.process_time()
    zstd = numcodecs.Zstd(level=_LEVEL)
    total = 0
    for i in range(lo, hi):
        encoded = zstd.encode(_TARGETS[i])
        total += len(encoded)
        if _WRITE_DIR is not None:
            fd = os.open(os.path.join(_WRITE_DIR, str(i)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, encoded)
                os.fsync(fd)
            finally:
                os.close(fd)
    return total, time.process_time() - cpu0


def shares(n, workers):
    step = -(-n // workers)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def timed(fn, n, workers, repeat):
    """Best wall, the CPU the shares used, and their output, of `fn` over `workers` shares."""
    best = None
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        if pool is not None:
            pool.map(len, [()] * workers)  # started and scheduled before the clock
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            if pool is None:
                parts = [fn((0, n))]
            else:
                parts = pool.map(fn, shares(n, workers), chunksize=1)
            wall = time.perf_counter() - t0
            out, cpu = sum(p[0] for p in parts), sum(p[1] for p in parts)
            if best is None or wall < best[0]:
                best = (wall, cpu, out)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return best


def parse_chunks(spec, dims, shape):
    want = dict(kv.split("=") for kv in spec.split(","))
    return [shape[i] if int(want.get(d, -1)) == -1 else int(want[d]) for i, d in enumerate(dims)]


def main() -> int:
    global _CHUNKS, _TARGETS, _LEVEL, _WRITE_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", required=True, help="file with one source path per line, in time order")
    ap.add_argument("--vars", default="air,uwnd")
    ap.add_argument("--concat-dim", default="time")
    ap.add_argument("--chunks", required=True, help="target chunks, e.g. time=-1,lat=18,lon=36")
    ap.add_argument("--level", type=int, default=1, help="zstd level of the target (default 1)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--write-dir", help="also write and sync every encoded target chunk here (emptied after)")
    ap.add_argument("--json")
    args = ap.parse_args()
    _LEVEL = args.level
    files = [ln.strip() for ln in open(args.list) if ln.strip()]
    names = args.vars.split(",")

    # Untimed: where every stored chunk is, read into memory (the page cache's copy).
    chunks = []
    for path in files:
        with h5py.File(path, "r") as f, open(path, "rb") as raw:
            for name in names:
                d = f[name]
                if d.compression != "gzip":
                    sys.exit(f"codec_floor: {path}:{name} is {d.compression!r}, expected gzip (zlib)")
                n = int(np.prod(d.chunks)) * d.dtype.itemsize
                shuffle = d.dtype.itemsize if d.shuffle else 0
                for i in range(d.id.get_num_chunks()):
                    info = d.id.get_chunk_info(i)
                    raw.seek(info.byte_offset)
                    chunks.append((raw.read(info.size), n, shuffle))
    _CHUNKS = chunks
    stored = sum(len(c[0]) for c in chunks)

    results = {"inflate": INFLATE, "files": len(files), "source_chunks": len(chunks), "stored_bytes": stored,
               "decode": [], "encode": []}
    for w in sorted({1, args.workers}):
        wall, cpu, decoded = timed(_decode_share, len(chunks), w, args.repeat)
        results["decode"].append({"workers": w, "wall_s": wall, "cpu_s": cpu, "decoded_bytes": decoded})
        print(f"codec_floor: decode {len(chunks)} source chunks, {w} worker(s): {wall:.2f} s, CPU {cpu:.2f} s, "
              f"{decoded / 1e9:.2f} GB ({decoded / wall / 1e6:.0f} MB/s; {INFLATE})", flush=True)
    _CHUNKS = []
    del chunks

    # Untimed: each variable whole (decoded again by h5py), cut into its target chunks.
    encode = {w: [0.0, 0.0, 0, 0] for w in sorted({1, args.workers})}
    if args.write_dir:
        os.makedirs(args.write_dir, exist_ok=True)
    _WRITE_DIR = args.write_dir
    for name in names:
        parts = []
        for path in files:
            with h5py.File(path, "r") as f:
                parts.append(f[name][...])
                dims = [os.path.basename(dim[0].name) if len(dim) else f"dim{i}" for i, dim in enumerate(f[name].dims)]
        whole = np.concatenate(parts, axis=0)
        del parts
        target = parse_chunks(args.chunks, dims, whole.shape)
        grid = [range(0, s, c) for s, c in zip(whole.shape, target)]
        _TARGETS = [np.ascontiguousarray(whole[tuple(slice(o, o + c) for o, c in zip(origin, target))]).tobytes()
                    for origin in itertools.product(*grid)]
        del whole
        for w in encode:
            wall, cpu, enc = timed(_encode_share, len(_TARGETS), w, args.repeat)
            e = encode[w]
            e[0] += wall
            e[1] += cpu
            e[2] += sum(len(t) for t in _TARGETS)
            e[3] += enc
            if args.write_dir:
                for entry in os.listdir(args.write_dir):
                    os.remove(os.path.join(args.write_dir, entry))
        _TARGETS = []
    if args.write_dir:
        shutil.rmtree(args.write_dir, ignore_errors=True)
    for w, (wall, cpu, raw_bytes, enc) in encode.items():
        results["encode"].append({"workers": w, "wall_s": wall, "cpu_s": cpu, "target_bytes": raw_bytes,
                                  "encoded_bytes": enc, "writes": bool(args.write_dir)})
        print(f"codec_floor: encode {raw_bytes / 1e9:.2f} GB of target chunks with zstd level {args.level}"
              f"{' and write them' if args.write_dir else ''}, {w} worker(s): {wall:.2f} s, CPU {cpu:.2f} s "
              f"({raw_bytes / wall / 1e6:.0f} MB/s, to {enc / 1e9:.2f} GB)", flush=True)

    one = next(d for d in results["decode"] if d["workers"] == 1)["wall_s"] + \
        next(e for e in results["encode"] if e["workers"] == 1)["wall_s"]
    # CPU, not wall: waiting for the device overlaps with the codecs in any parallel tool
    one_cpu = next(d for d in results["decode"] if d["workers"] == 1)["cpu_s"] + \
        next(e for e in results["encode"] if e["workers"] == 1)["cpu_s"]
    many = next(d for d in results["decode"] if d["workers"] == args.workers)["wall_s"] + \
        next(e for e in results["encode"] if e["workers"] == args.workers)["wall_s"]
    cores = os.cpu_count() or 1
    results.update({"floor_1_worker_s": one, "floor_workers": args.workers, "floor_n_workers_s": many,
                    "cores": cores, "floor_1_worker_cpu_s": one_cpu,
                    "ideal_floor_s": one_cpu / min(cores, args.workers)})
    print(f"codec_floor: decode + encode once: {one:.2f} s on 1 worker, {many:.2f} s on {args.workers}; "
          f"ideal on {min(cores, args.workers)} cores (1 worker's CPU / cores) {one_cpu / min(cores, args.workers):.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
