#!/usr/bin/env python3
"""chunkmill's Python package against xarray's engines and VirtualiZarr's HDF parser (issue 12).

    bench/python/run.py [--files 365] [--data bench/data/virtualize] [--threads 2] [--repeat 3]
                        [--cases open-chunkmill,...] [--out bench/out]

Run it with the python of a venv where the package is installed from a RELEASE build
(``maturin develop --release``; a plain ``maturin develop`` leaves the Rust unoptimised) and
xarray, h5netcdf, netCDF4, dask and virtualizarr are importable.

Over the daily NetCDF-4 files of the virtualize benchmark (bench/virtualize/make_data.py,
written on first use): day_000.nc .. day_364.nc, time=24, lat=180, lon=360, air and uwnd
float32 deflated. Each case runs in a fresh process, --repeat times, alternating cases so a
burst of load on a shared machine hits every case alike (wall, user+sys CPU and peak RSS of
that process):

  open-E       xr.open_mfdataset(files, engine=E, parallel=True, chunks={})   E = chunkmill,
               h5netcdf, netcdf4 (dask threads, --threads of them)
  mean-E       the same, then ds["air"].mean("time").compute()
  virtual      chunkmill.open_virtual_mfdataset(files, concat_dim="time", chunks={}) (scanned
               and combined in Rust, one lazy Dataset), then the same mean
  parse-chunkmill  chunkmill.virtualizarr.Parser()(url, registry) for every file: the parser
               alone (its ManifestStore)
  parse-hdf    the same with VirtualiZarr's HDFParser
  vz-chunkmill virtualizarr.open_virtual_dataset(url, registry, parser=chunkmill.virtualizarr.Parser())
               for every file (the parser, then VirtualiZarr's Dataset with its loaded coordinates)
  vz-hdf       the same with VirtualiZarr's HDFParser

"open s" is the time to the opened Dataset inside the process (imports excluded); "wall s"
adds the mean where there is one; the CPU columns are the process's CPU time (all threads)
over the same spans, which a loaded machine disturbs less than wall time. A case that crashes (netcdf4 under dask threads) is
reported with its exit status. The means are compared between cases (max abs difference),
and the two parsers' manifests (every chunk's offset and length, per file and variable) by a
digest. Results: OUT/python-results.md and .json, and the bars of issue 12 as ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ["open-chunkmill", "open-h5netcdf", "open-netcdf4", "mean-chunkmill", "mean-h5netcdf",
         "mean-netcdf4", "virtual", "parse-chunkmill", "parse-hdf", "vz-chunkmill", "vz-hdf"]


def manifest_digest(datasets: list) -> str:
    """A digest of every chunk's offset and length (per file, variable and chunk), the same
    for two parsers that found the same chunks."""
    import numpy as np

    h = hashlib.sha256()
    for vds in datasets:
        for name in sorted(vds.variables):
            data = vds[name].variable.data
            manifest = getattr(data, "manifest", None)
            if manifest is None:  # a loaded (not virtual) variable
                h.update(f"{name}:loaded:{np.asarray(data).tobytes().hex()[:64]}".encode())
                continue
            h.update(name.encode())
            h.update(np.ascontiguousarray(manifest._offsets, dtype="<u8").tobytes())
            h.update(np.ascontiguousarray(manifest._lengths, dtype="<u8").tobytes())
    return h.hexdigest()[:16]


def child(case: str, files: list[str], threads: int) -> dict:
    import dask
    import numpy as np
    import xarray as xr

    dask.config.set(scheduler="threads", num_workers=threads)
    out: dict = {}
    if case.startswith(("open-", "mean-")):
        engine = case.split("-", 1)[1]
        if engine == "chunkmill":
            import chunkmill  # noqa: F401  (imported before the clock, as xarray imports the others)
        elif engine == "h5netcdf":
            import h5netcdf  # noqa: F401
        else:
            import netCDF4  # noqa: F401
        t0, c0 = time.perf_counter(), time.process_time()
        ds = xr.open_mfdataset(files, engine=engine, parallel=True, chunks={})
        out["open_s"], out["open_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        if case.startswith("mean-"):
            out["mean"] = np.asarray(ds["air"].mean("time").compute()).astype("f8").tolist()
    elif case == "virtual":
        import chunkmill

        t0, c0 = time.perf_counter(), time.process_time()
        ds = chunkmill.open_virtual_mfdataset(files, concat_dim="time", chunks={})
        out["open_s"], out["open_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        out["mean"] = np.asarray(ds["air"].mean("time").compute()).astype("f8").tolist()
    else:
        import virtualizarr
        from obspec_utils.registry import ObjectStoreRegistry
        from obstore.store import LocalStore

        registry = ObjectStoreRegistry({"file://": LocalStore()})
        if case.endswith("-chunkmill"):
            import chunkmill.virtualizarr

            parser = chunkmill.virtualizarr.Parser()
        else:
            from virtualizarr.parsers import HDFParser

            parser = HDFParser()
        t0, c0 = time.perf_counter(), time.process_time()
        if case.startswith("parse-"):
            for f in files:
                parser(Path(f).as_uri(), registry)
        else:
            opened = [virtualizarr.open_virtual_dataset(Path(f).as_uri(), registry=registry, parser=parser)
                      for f in files]
        out["open_s"], out["open_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        if case.startswith("vz-"):
            out["digest"] = manifest_digest(opened)
    out["wall_s"], out["work_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    return out


def run_case(case: str, args: argparse.Namespace, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    with open(out_dir / "child.out", "w+") as so, open(out_dir / "child.err", "w+") as se:
        p = subprocess.Popen([sys.executable, __file__, "--child", case, "--files", str(args.files),
                              "--data", args.data, "--threads", str(args.threads)], stdout=so, stderr=se)
        # wait4 gives this child's own CPU time and peak RSS.
        _, status, usage = os.wait4(p.pid, 0)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    code = os.waitstatus_to_exitcode(status)
    r = {"process_wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime,
         "peak_rss_mb": usage.ru_maxrss / 1024, "returncode": code}
    if code == 0:
        r.update(json.loads(stdout.strip().splitlines()[-1]))
    else:
        r["error"] = (stderr.strip().splitlines()[-1:] or [f"exit {code}"])[0]
    return r


def summarize(runs: list[dict]) -> dict:
    """The median of each figure over the runs that succeeded (all of them if none did)."""
    ok = [r for r in runs if r["returncode"] == 0] or runs
    out = {"runs": len(runs), "failed": sum(r["returncode"] != 0 for r in runs)}
    for key in ("open_s", "open_cpu_s", "wall_s", "work_cpu_s", "process_wall_s", "cpu_s", "peak_rss_mb"):
        values = [r[key] for r in ok if key in r]
        if values:
            out[key] = statistics.median(values)
            out[f"{key}_min"] = min(values)
    for key in ("mean", "digest", "error"):
        for r in runs:
            if key in r:
                out[key] = r[key]
                break
    return out


def ratios(results: dict) -> list[str]:
    """The bars of issue 12, as measured (medians)."""
    def get(case: str, key: str) -> float | None:
        r = results.get(case)
        return r.get(key) if r and not r.get("failed") else None

    lines = []
    for what, slow, fast, key, bar in (
        ("mean, chunkmill vs h5netcdf", "mean-h5netcdf", "mean-chunkmill", "wall_s", 3),
        ("open, chunkmill vs h5netcdf", "open-h5netcdf", "open-chunkmill", "open_s", 2),
        ("open, open_virtual_mfdataset vs h5netcdf", "open-h5netcdf", "virtual", "open_s", 20),
        ("VirtualiZarr parser, chunkmill vs HDFParser", "parse-hdf", "parse-chunkmill", "open_s", 20),
        # Not a bar of the issue, which is the parser's: VirtualiZarr's own work after the
        # parser returns (its Dataset, the coordinates it loads) is the same for both parsers
        # and most of this time.
        ("open_virtual_dataset, chunkmill parser vs HDFParser", "vz-hdf", "vz-chunkmill", "open_s", None),
    ):
        cpu_key = "work_cpu_s" if key == "wall_s" else "open_cpu_s"
        s, f = get(slow, key), get(fast, key)
        sc, fc = get(slow, cpu_key), get(fast, cpu_key)
        wanted = "—" if bar is None else f"≥ {bar}×"
        if s is None or f is None:
            lines.append(f"| {what} | n/a | n/a | {wanted} | not measured |")
            continue
        cpu = f"{sc / fc:.1f}×" if sc and fc else "n/a"
        verdict = "for comparison" if bar is None else ("met" if s / f >= bar else "MISSED") + " (wall)"
        lines.append(f"| {what} | {s / f:.1f}× | {cpu} | {wanted} | {verdict} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=365)
    ap.add_argument("--data", default=str(ROOT / "bench/data/virtualize"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--out", default=str(ROOT / "bench/out"))
    ap.add_argument("--child")
    args = ap.parse_args()
    data = Path(args.data)
    files = [str(data / f"day_{d:03d}.nc") for d in range(args.files)]
    if args.child:
        print(json.dumps(child(args.child, files, args.threads)))
        return 0
    subprocess.run([sys.executable, str(ROOT / "bench/virtualize/make_data.py"), str(data),
                    "--files", str(args.files), "--no-big"], check=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = args.cases.split(",")
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    for i in range(args.repeat):
        for case in cases:
            r = run_case(case, args, out_dir)
            runs[case].append(r)
            shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "mean"}
            print(f"[{i + 1}/{args.repeat}] {case} {shown}", flush=True)
    results = {c: summarize(rs) for c, rs in runs.items()}
    import numpy as np

    means = {c: np.array(r.pop("mean")) for c, r in results.items() if "mean" in r}
    ref = next(iter(means.values()), None)
    for c, m in means.items():
        results[c]["mean_max_abs_diff"] = float(np.nanmax(np.abs(m - ref)))
    (out_dir / "python-results.json").write_text(json.dumps({"runs": runs_without_means(runs),
                                                             "summary": results}, indent=1))
    lines = [f"files: {args.files}, dask threads: {args.threads}, runs per case: {args.repeat} "
             "(medians; min in brackets)", "",
             "| case | open s | open CPU s | wall s | CPU s | process wall s | process CPU s | peak RSS MB | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c, r in results.items():
        if "error" in r and r["failed"] == r["runs"]:
            res = f"failed {r['failed']}/{r['runs']}: {r['error']}"
        else:
            res = "ok" if not r["failed"] else f"failed {r['failed']}/{r['runs']} ({r.get('error', '')})"
            if "mean_max_abs_diff" in r:
                res += f", mean diff {r['mean_max_abs_diff']:.2g}"
            if "digest" in r:
                res += f", manifests {r['digest']}"

        def fig(key: str) -> str:
            return f"{r[key]:.2f} [{r[key + '_min']:.2f}]" if key in r else "–"

        lines.append(f"| {c} | {fig('open_s')} | {fig('open_cpu_s')} | {fig('wall_s')} | {fig('work_cpu_s')} | "
                     f"{fig('process_wall_s')} | {fig('cpu_s')} | {r.get('peak_rss_mb', float('nan')):.0f} | {res} |")
    lines += ["", "| bar | wall | CPU | wanted | |", "|---|---|---|---|---|", *ratios(results)]
    (out_dir / "python-results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def runs_without_means(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {c: [{k: v for k, v in r.items() if k != "mean"} for r in rs] for c, rs in runs.items()}


if __name__ == "__main__":
    sys.exit(main())
