#!/usr/bin/env python3
"""Check the compute benchmark's outputs against numpy (not measured).

    verify.py WORKLOAD --src IN.zarr --json OUT.json NAME=OUT.zarr [NAME=OUT.zarr ...]

The reference is computed here with numpy in float64, one source chunk at a time:
  quadratic   uu, vv, uv = sum over time of u*u, v*v, u*v, divided by the number of steps;
  anomalies   clim[m] = mean of u over the steps of calendar month m (months decoded by
              xarray from the CF time), anom = u - clim[month of the step], every element.
Each output array (opened with zarr-python, OUT.zarr/NAME) must have the reference's shape
and agree to max |out - ref| <= 1e-5 * max |ref| (the outputs are float32: one float32
rounding of values of that size is ~6e-8 of them; summation order and float32 accumulators,
as dask's mean of float32 uses, stay well inside). Prints one line per output; exit 1 if any
differs.
"""

import argparse
import json
import sys

import numpy as np
import xarray as xr
import zarr

RTOL = 1e-5


def chunk_starts(arr):
    step = arr.chunks[0]
    return range(0, arr.shape[0], step)


def quadratic_ref(src):
    g = zarr.open_group(src, mode="r")
    u, v = g["u"], g["v"]
    acc = {k: np.zeros(u.shape[1:], np.float64) for k in ("uu", "vv", "uv")}
    for t in chunk_starts(u):
        a = u[t:t + u.chunks[0]].astype(np.float64)
        b = v[t:t + u.chunks[0]].astype(np.float64)
        acc["uu"] += (a * a).sum(0)
        acc["vv"] += (b * b).sum(0)
        acc["uv"] += (a * b).sum(0)
    return {k: s / u.shape[0] for k, s in acc.items()}


def months(src):
    with xr.open_zarr(src, consolidated=True) as ds:
        return ds["time"].dt.month.values - 1


def climatology(src, m):
    u = zarr.open_group(src, mode="r")["u"]
    total = np.zeros((12,) + u.shape[1:], np.float64)
    count = np.zeros(12, np.int64)
    for t in chunk_starts(u):
        a = u[t:t + u.chunks[0]].astype(np.float64)
        mm = m[t:t + a.shape[0]]
        np.add.at(total, mm, a)
        count += np.bincount(mm, minlength=12)
    present = count > 0
    return total[present] / count[present][:, None, None], np.flatnonzero(present)


def compare(name, got, ref):
    if got.shape != ref.shape:
        return f"{name}: shape {got.shape} != {ref.shape}"
    scale = float(np.max(np.abs(ref))) or 1.0
    diff = float(np.max(np.abs(got.astype(np.float64) - ref)))
    if not np.isfinite(diff) or diff > RTOL * scale:
        return f"{name}: max |diff| {diff:.3g} > {RTOL} x max |ref| ({scale:.3g})"
    return None


def check(workload, src, path, ref, m, clim):
    problems, worst = [], {}
    try:
        g = zarr.open_group(path, mode="r")
    except Exception as e:  # noqa: BLE001
        return [f"cannot open: {type(e).__name__}: {e}"], worst
    if workload == "quadratic":
        for k, r in ref.items():
            if k not in g:
                problems.append(f"{k} missing")
                continue
            got = g[k][...]
            p = compare(k, got, r)
            worst[k] = float(np.max(np.abs(got.astype(np.float64) - r)))
            if p:
                problems.append(p)
        return problems, worst
    for k in ("clim", "anom"):
        if k not in g:
            problems.append(f"{k} missing")
    if problems:
        return problems, worst
    got = g["clim"][...]
    p = compare("clim", got, clim)
    worst["clim"] = float(np.max(np.abs(got.astype(np.float64) - clim))) if got.shape == clim.shape else None
    if p:
        problems.append(p)
    u = zarr.open_group(src, mode="r")["u"]
    a = g["anom"]
    if a.shape != u.shape:
        return problems + [f"anom: shape {a.shape} != {u.shape}"], worst
    # month m's climatology sits at row position[m] of clim (months absent from the data have none)
    position = {int(mo): i for i, mo in enumerate(ref)}
    scale, diff = 0.0, 0.0
    for t in chunk_starts(u):
        x = u[t:t + u.chunks[0]].astype(np.float64)
        rows = [position[int(mo)] for mo in m[t:t + x.shape[0]]]
        r = x - clim[rows]
        o = a[t:t + x.shape[0]].astype(np.float64)
        scale = max(scale, float(np.max(np.abs(r))))
        diff = max(diff, float(np.max(np.abs(o - r))))
    worst["anom"] = diff
    if not np.isfinite(diff) or diff > RTOL * (scale or 1.0):
        problems.append(f"anom: max |diff| {diff:.3g} > {RTOL} x max |ref| ({scale:.3g})")
    return problems, worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=["quadratic", "anomalies"])
    ap.add_argument("--src", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("outputs", nargs="+")
    args = ap.parse_args()
    m = clim = None
    if args.workload == "quadratic":
        ref = quadratic_ref(args.src)
    else:
        m = months(args.src)
        clim, ref = climatology(args.src, m)
    results = []
    for spec in args.outputs:
        name, _, path = spec.partition("=")
        problems, worst = check(args.workload, args.src, path, ref, m, clim)
        results.append({"name": name, "path": path, "ok": not problems, "problems": problems,
                        "max_abs_diff": worst, "rtol_of_max": RTOL})
        status = "OK (equal numpy float64 within 1e-5 of the largest value)" if not problems \
            else "WRONG: " + "; ".join(problems)
        print(f"verify: {args.workload} {name}: {status}", file=sys.stderr)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
