#!/usr/bin/env python3
"""chunkmill's Python package against xarray's engines and VirtualiZarr's HDF parser (issue 12).

    bench/python/run.py [--files 365] [--data bench/data/virtualize] [--threads 2]

Over the daily NetCDF-4 files of the virtualize benchmark (bench/virtualize/make_data.py,
written on first use): day_000.nc .. day_364.nc, time=24, lat=180, lon=360, air and uwnd
float32 deflated. Each case runs in a fresh process (wall, user+sys CPU and peak RSS of that
process):

  open-E       xr.open_mfdataset(files, engine=E, parallel=True, chunks={})   E = chunkmill,
               h5netcdf, netcdf4 (dask threads, --threads of them)
  mean-E       the same, then ds["air"].mean("time").compute()
  virtual      chunkmill.open_virtual_mfdataset(files, concat_dim="time") (combined in Rust)
               then the same mean
  vz-chunkmill virtualizarr.open_virtual_dataset(url, parser=chunkmill.virtualizarr.Parser())
               for every file
  vz-hdf       the same with VirtualiZarr's HDFParser

A case that crashes (netcdf4 under dask threads) is reported with its signal. Results:
bench/out/python-results.md and .json; means are compared between cases (max abs diff).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ["open-chunkmill", "open-h5netcdf", "open-netcdf4", "mean-chunkmill", "mean-h5netcdf",
         "mean-netcdf4", "virtual", "vz-chunkmill", "vz-hdf"]


def child(case: str, files: list[str], threads: int) -> dict:
    import dask
    import numpy as np
    import xarray as xr

    dask.config.set(scheduler="threads", num_workers=threads)
    t0 = time.perf_counter()
    out: dict = {}
    if case.startswith(("open-", "mean-")):
        engine = case.split("-", 1)[1]
        ds = xr.open_mfdataset(files, engine=engine, parallel=True, chunks={})
        out["open_s"] = time.perf_counter() - t0
        if case.startswith("mean-"):
            out["mean"] = np.asarray(ds["air"].mean("time").compute()).astype("f8").tolist()
    elif case == "virtual":
        import chunkmill

        ds = chunkmill.open_virtual_mfdataset(files, concat_dim="time", chunks={})
        out["open_s"] = time.perf_counter() - t0
        out["mean"] = np.asarray(ds["air"].mean("time").compute()).astype("f8").tolist()
    else:
        import virtualizarr
        from obspec_utils.registry import ObjectStoreRegistry
        from obstore.store import LocalStore

        registry = ObjectStoreRegistry({"file://": LocalStore()})
        if case == "vz-chunkmill":
            import chunkmill.virtualizarr

            parser = chunkmill.virtualizarr.Parser()
        else:
            from virtualizarr.parsers import HDFParser

            parser = HDFParser()
        for f in files:
            virtualizarr.open_virtual_dataset(Path(f).as_uri(), registry=registry, parser=parser)
    out["wall_s"] = time.perf_counter() - t0
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=365)
    ap.add_argument("--data", default=str(ROOT / "bench/data/virtualize"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--child")
    args = ap.parse_args()
    data = Path(args.data)
    files = [str(data / f"day_{d:03d}.nc") for d in range(args.files)]
    if args.child:
        print(json.dumps(child(args.child, files, args.threads)))
        return 0
    subprocess.run([sys.executable, str(ROOT / "bench/virtualize/make_data.py"), str(data),
                    "--files", str(args.files), "--no-big"], check=True)
    results = {}
    out_dir = ROOT / "bench/out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in args.cases.split(","):
        t0 = time.perf_counter()
        with open(out_dir / "child.out", "w+") as so, open(out_dir / "child.err", "w+") as se:
            p = subprocess.Popen([sys.executable, __file__, "--child", case, "--files",
                                  str(args.files), "--data", str(data), "--threads",
                                  str(args.threads)], stdout=so, stderr=se)
            # wait4 gives this child's own CPU time and peak RSS.
            _, status, usage = os.wait4(p.pid, 0)
            so.seek(0)
            se.seek(0)
            stdout, stderr = so.read(), se.read()
        code = os.waitstatus_to_exitcode(status)
        r = {"process_wall_s": time.perf_counter() - t0,
             "cpu_s": usage.ru_utime + usage.ru_stime,
             "peak_rss_mb": usage.ru_maxrss / 1024, "returncode": code}
        if code == 0:
            r.update(json.loads(stdout.strip().splitlines()[-1]))
        else:
            r["error"] = stderr.strip().splitlines()[-1:] or [f"exit {code}"]
        results[case] = r
        print(case, {k: v for k, v in r.items() if k != "mean"}, flush=True)
    means = {c: r.pop("mean") for c, r in results.items() if "mean" in r}
    import numpy as np

    ref = next(iter(means.values()), None)
    for c, m in means.items():
        results[c]["mean_max_abs_diff"] = float(np.nanmax(np.abs(np.array(m) - np.array(ref))))
    out = out_dir
    (out / "python-results.json").write_text(json.dumps(results, indent=1))
    lines = [f"files: {args.files}, dask threads: {args.threads}", "",
             "| case | wall s (in process) | process wall s | CPU s | peak RSS MB | result |",
             "|---|---|---|---|---|---|"]
    for c, r in results.items():
        res = r.get("error", [""])[0] if r["returncode"] else f"ok {r.get('mean_max_abs_diff', '')}"
        lines.append(f"| {c} | {r.get('wall_s', float('nan')):.2f} | {r['process_wall_s']:.2f} | "
                     f"{r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | {res} |")
    (out / "python-results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
