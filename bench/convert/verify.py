#!/usr/bin/env python3
"""Check each converted Zarr store against the NetCDF files it came from (not measured).

    verify.py --list FILES.txt --chunks time=-1,lat=18,lon=36 --json OUT.json NAME=STORE [...]

The reference is xarray.open_mfdataset(FILES, combine="by_coords") of the originals, loaded once
(both data variables, 2 x 2.27 GB for 365 files). Each STORE is opened by xarray with no flags
(xr.open_zarr: consolidated metadata, CF decoding, as a user would) and must have:
  - the same variables (air, uwnd; coordinates time, lat, lon), dimensions and sizes;
  - time (decoded to datetime64 by CF units and calendar), lat and lon equal over the whole axis;
  - air and uwnd equal over the whole array, bit for bit (NaN = NaN, the decoded _FillValue),
    with the same dtype (float32);
  - the same variable attributes (units, standard_name, long_name) for air and uwnd;
  - on-disk chunks (zarr's) of air and uwnd equal to --chunks, -1 = whole axis.
Global attributes are compared and differences listed as notes (the title of day 0 is what
open_mfdataset keeps), not as failures. Prints one line per store; exit 1 if any differs.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import xarray as xr
import zarr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import parse_chunks, same  # noqa: E402

warnings.filterwarnings("ignore")

DATA_VARS = ("air", "uwnd")
ATTRS = ("units", "standard_name", "long_name")


def check(name, path, ref, want_chunks):
    t0 = time.perf_counter()
    problems, notes = [], []
    try:
        ds = xr.open_zarr(path)
    except Exception as e:  # noqa: BLE001 - report any failure to open
        return {"name": name, "path": path, "ok": False, "problems": [f"cannot open: {type(e).__name__}: {e}"]}
    for v in DATA_VARS + ("time", "lat", "lon"):
        if v not in ds.variables:
            problems.append(f"variable {v} missing")
    extra = sorted(set(ds.variables) - set(ref.variables))
    if extra:
        problems.append(f"unexpected variables {extra}")
    if dict(ds.sizes) != dict(ref.sizes):
        problems.append(f"sizes {dict(ds.sizes)} != {dict(ref.sizes)}")
    if problems:
        return {"name": name, "path": path, "ok": False, "problems": problems}
    for v in ("time", "lat", "lon"):
        if ds[v].dtype != ref[v].dtype:
            problems.append(f"{v} dtype {ds[v].dtype} != {ref[v].dtype}")
        if not same(ds[v].values, ref[v].values):
            problems.append(f"{v} values differ (first {ds[v].values[:2]} vs {ref[v].values[:2]})")
    group = zarr.open_group(path, mode="r")
    zarr_format = group.metadata.zarr_format if hasattr(group, "metadata") else None
    codecs = {}
    for v in DATA_VARS:
        if ds[v].dims != ref[v].dims:
            problems.append(f"{v} dims {ds[v].dims} != {ref[v].dims}")
            continue
        if ds[v].dtype != ref[v].dtype:
            problems.append(f"{v} dtype {ds[v].dtype} != {ref[v].dtype}")
        for a in ATTRS:
            if ds[v].attrs.get(a) != ref[v].attrs.get(a):
                problems.append(f"{v} attribute {a}: {ds[v].attrs.get(a)!r} != {ref[v].attrs.get(a)!r}")
        want = tuple(ref.sizes[d] if want_chunks.get(d, -1) == -1 else want_chunks[d] for d in ref[v].dims)
        got = tuple(group[v].chunks)
        if got != want:
            problems.append(f"{v} chunks {got} != {want}")
        arr = group[v]
        codecs[v] = str(getattr(arr, "compressors", None) or getattr(arr, "compressor", None))
        got_v = ds[v].values
        want_v = ref[v].values
        if not same(got_v, want_v):
            diff = ~((got_v == want_v) | (np.isnan(got_v) & np.isnan(want_v)))
            idx = np.argwhere(diff)
            problems.append(f"{v}: {int(diff.sum())} values differ, first at {tuple(int(i) for i in idx[0])}: "
                            f"{got_v[tuple(idx[0])]} vs {want_v[tuple(idx[0])]}")
        del got_v
    for k in sorted(set(ds.attrs) | set(ref.attrs)):
        if ds.attrs.get(k) != ref.attrs.get(k):
            notes.append(f"global attribute {k}: {ds.attrs.get(k)!r} (reference {ref.attrs.get(k)!r})")
    return {"name": name, "path": path, "ok": not problems, "problems": problems, "notes": notes,
            "zarr_format": zarr_format, "codecs": codecs, "check_s": time.perf_counter() - t0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", required=True)
    ap.add_argument("--chunks", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("stores", nargs="+", metavar="NAME=STORE")
    args = ap.parse_args()
    files = [line.strip() for line in open(args.list) if line.strip()]
    t0 = time.perf_counter()
    ref = xr.open_mfdataset(files, combine="by_coords").load()
    print(f"verify: reference open_mfdataset of {len(files)} files loaded in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    want_chunks = parse_chunks(args.chunks)
    results = []
    for item in args.stores:
        name, path = item.split("=", 1)
        r = check(name, path, ref, want_chunks)
        results.append(r)
        status = "equal to open_mfdataset (all values, coordinates, attributes, chunks)" if r["ok"] else \
            "DIFFERS: " + "; ".join(r["problems"])
        print(f"verify: {name}: {status}", file=sys.stderr)
        for n in r.get("notes", []):
            print(f"verify:   note: {n}", file=sys.stderr)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
