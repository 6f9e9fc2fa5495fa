#!/usr/bin/env python3
"""Check the rechunk benchmark's outputs against the source (unmeasured step).

    verify.py SRC --chunks 8760,18,36 NAME=OUT [NAME=OUT ...] [--json FILE]

For each output: it must open with zarr-python 3 (format 2 or 3), have the
source's shape and dtype and the target chunks, and hold exactly the source's
values. The check is
  * a sample of full time series (corners, centre and a few fixed points),
    compared bit for bit, and
  * (unless --sample-only) the whole array, compared bit for bit, one band of
    target chunks at a time.
The source is read once into memory (2.27 GB for the benchmark array) and
shared by every output, so verifying N outputs costs one source read plus one
read of each output.
"""

import argparse
import json
import sys
import time

import numpy as np
import zarr


def open_output(path: str, shape):
    """The array at the root of `path`, or the one array of that shape in a group."""
    try:
        return zarr.open_array(path, mode="r")
    except Exception:  # noqa: BLE001 - fall back to a group
        g = zarr.open_group(path, mode="r")
        cands = [a for _, a in g.arrays() if tuple(a.shape) == tuple(shape)]
        if len(cands) != 1:
            raise ValueError(f"{path}: not an array, and {len(cands)} arrays of shape {shape} in the group")
        return cands[0]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def check(name, path, src_arr, src, target, sample_only, points):
    res = {"name": name, "path": path, "ok": False, "problems": []}
    t0 = time.perf_counter()
    try:
        out = open_output(path, src.shape)
    except Exception as e:  # noqa: BLE001
        res["problems"].append(f"cannot open: {e}")
        return res
    res["zarr_format"] = out.metadata.zarr_format
    res["shape"] = list(out.shape)
    res["chunks"] = list(out.chunks)
    shards = getattr(out, "shards", None)
    res["shards"] = list(shards) if shards else None
    if tuple(out.shape) != tuple(src.shape):
        res["problems"].append(f"shape {out.shape} != source {src.shape}")
    if out.dtype != src.dtype:
        res["problems"].append(f"dtype {out.dtype} != source {src.dtype}")
    if tuple(out.chunks) != tuple(target) and (not shards or tuple(shards) != tuple(target)):
        res["problems"].append(f"chunks {out.chunks} (shards {shards}) != target {tuple(target)}")
    if res["problems"]:
        return res

    # Sample of full time series.
    bad = []
    for (i, j) in points:
        if not np.array_equal(bits(out[:, i, j]), bits(src[:, i, j])):
            bad.append((i, j))
    res["series_checked"] = len(points)
    if bad:
        res["problems"].append(f"time series differ at (lat, lon) index {bad}")

    if not sample_only:
        band = target[1]
        n_diff = 0
        for a in range(0, src.shape[1], band):
            b = min(src.shape[1], a + band)
            got = out[:, a:b, :]
            want = src[:, a:b, :]
            if not np.array_equal(bits(got), bits(want)):
                n_diff += int(np.count_nonzero(got.view(np.uint32) != want.view(np.uint32))) if got.dtype.itemsize == 4 else -1
        res["full_compare"] = True
        if n_diff:
            res["problems"].append(f"{n_diff} elements differ in the full comparison")
    else:
        res["full_compare"] = False
    res["ok"] = not res["problems"]
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("outputs", nargs="+", metavar="NAME=OUT")
    ap.add_argument("--chunks", default="8760,18,36")
    ap.add_argument("--sample-only", action="store_true", help="skip the full comparison")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    target = tuple(int(v) for v in args.chunks.split(","))

    src_arr = zarr.open_array(args.src, mode="r")
    t0 = time.perf_counter()
    src = src_arr[...]
    print(f"verify: source read in {time.perf_counter() - t0:.1f} s", flush=True)
    nlat, nlon = src.shape[1], src.shape[2]
    points = sorted({(0, 0), (0, nlon - 1), (nlat - 1, 0), (nlat - 1, nlon - 1), (nlat // 2, nlon // 2),
                     (17, 35), (18, 36), (91, 200), (123, 359), (179, 181)})
    points = [(min(i, nlat - 1), min(j, nlon - 1)) for i, j in points]

    results = []
    for spec in args.outputs:
        name, _, path = spec.partition("=")
        r = check(name, path, src_arr, src, target, args.sample_only, points)
        results.append(r)
        status = "OK" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
        what = "full array + " if r.get("full_compare") else ""
        print(f"verify: {name}: {status} ({what}{r.get('series_checked', 0)} time series; "
              f"format {r.get('zarr_format')}, chunks {r.get('chunks')}, shards {r.get('shards')})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
