#!/usr/bin/env python3
"""Build the convert benchmark's results table from run.sh's raw files.

    report.py RAW_DIR --md OUT.md --json OUT.json

RAW_DIR holds, per tool NAME (chunkmill, xarray-dask, rechunker, xarray-dask-threads):
NAME.meta.json (run.sh), NAME.time (/usr/bin/time -v), NAME.tree.json
(bench/virtualize/treesample.py), NAME.stdout (chunkmill's --json report; the peers' phase
times); plus env.json, verify.json, chunkmill-plan.json, output-sizes.txt.
MB = 10^6 bytes, as the budget "1GB" = 10^9 bytes (chunkmill, dask and rechunker parse it so).
"x chunkmill" = tool wall / chunkmill wall. CPU s = the larger of time -v's user+sys (children
that were waited for) and the sampler's sum over the tree (misses each process's last 0.1 s).
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import load_json, output_sizes, parse_time_v  # noqa: E402

ORDER = ["chunkmill", "xarray-dask", "xarray-dask-h5netcdf", "xarray-dask-1gb", "xarray-dask-threads", "rechunker"]
LABELS = {
    "chunkmill": "chunkmill convert",
    "xarray-dask": "xarray + dask (open_mfdataset netcdf4, .chunk, to_zarr; LocalCluster {w} workers x 1 thread, memory_limit auto)",
    "xarray-dask-h5netcdf": "xarray + dask, the same with engine h5netcdf",
    "xarray-dask-1gb": "xarray + dask (h5netcdf) on a LocalCluster of {w} workers x {pw} ({mm} in all)",
    "xarray-dask-threads": "xarray + dask (h5netcdf), threaded scheduler ({w} threads, no memory limit)",
    "rechunker": "rechunker 0.5.4 (netcdf4; max_mem {mm}, execute() on the LocalCluster, memory_limit auto)",
}
BAR_SPEEDUP = 5           # chunkmill >= 5x faster than xarray + dask, same run (issue 4)
FLOOR_BAR_SPEEDUP = 8     # issue 13: >= 8x faster than xarray + dask (h5netcdf, threaded)
BUDGET_MB = 1000          # --max-mem 1GB


def last_json_line(path):
    """The JSON document a tool printed on stdout: the whole text, else its last {...} line."""
    try:
        text = open(path).read().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    raw = args.raw

    env = load_json(os.path.join(raw, "env.json"), {})
    verify = {r["name"]: r for r in load_json(os.path.join(raw, "verify.json"), [])}
    sizes = output_sizes(raw)
    workers = env.get("workers", 2)
    mm = env.get("max_mem", "1GB")
    try:
        per_worker = f"{int(float(re.sub('[^0-9.]', '', mm)) * 1000 / workers)} MB"
    except ValueError:
        per_worker = "?"
    labels = {k: v.format(w=workers, pw=per_worker, mm=mm) for k, v in LABELS.items()}

    rows = []
    for name in ORDER:
        meta = load_json(os.path.join(raw, f"{name}.meta.json"))
        if meta is None:
            continue
        row = {"name": name, "label": labels[name], **meta}
        row.update(parse_time_v(os.path.join(raw, f"{name}.time")))
        tree = load_json(os.path.join(raw, f"{name}.tree.json"), {})
        if tree:
            row["tree_peak_rss_mb"] = tree["peak_tree_rss_bytes"] / 1e6
            row["tree_peak_pss_mb"] = tree.get("peak_tree_pss_bytes", 0) / 1e6
            row["tree_max_processes"] = tree["max_processes"]
            row["tree_cpu_s"] = tree.get("tree_cpu_s")
            row["rustc_during"] = tree.get("max_rustc_outside")
        if "user_s" in row:
            row["cpu_s"] = max(row["user_s"] + row["sys_s"], row.get("tree_cpu_s") or 0.0)
        if "machine_busy_cpu_s" in row and "cpu_s" in row:
            row["other_cpu_s"] = max(0.0, row["machine_busy_cpu_s"] - row["cpu_s"])
        if row.get("status") == "failed":
            try:
                log = open(os.path.join(raw, f"{name}.log"), errors="replace").read()
            except OSError:
                log = ""
            restarts = log.count("exceeded 95% memory budget")
            errs = [ln.strip() for ln in log.splitlines()
                    if re.match(r"^[\w.]*(Error|Exception|KilledWorker)\b", ln.strip()) or ln.startswith("Fatal Python error")]
            row["failure"] = (errs[-1][:300] if errs else f"exit {row.get('rc')}") + \
                (f"; {restarts} worker restarts for exceeding 95% of memory_limit" if restarts else "")
        doc = last_json_line(os.path.join(raw, f"{name}.stdout"))
        if doc is not None:
            row["report"] = doc
        v = verify.get(name)
        if v is not None:
            row["verify"] = v
            row["verified"] = (f"equal (Zarr v{v.get('zarr_format')})" if v["ok"]
                               else "WRONG: " + "; ".join(v["problems"]))
        if f"{name}.zarr" in sizes:
            row["output_bytes"] = sizes[f"{name}.zarr"]
        if f"{name}.zarr.work" in sizes:
            row["work_dir_bytes"] = sizes[f"{name}.zarr.work"]
        if f"{name}-temp.zarr" in sizes:
            row["temp_bytes"] = sizes[f"{name}-temp.zarr"]
        rows.append(row)

    cm = next((r for r in rows if r["name"] == "chunkmill" and r.get("status") == "ok"), None)
    cm_wall = cm["wall_s"] if cm else None

    def wall(r):
        st = r.get("status")
        if st == "ok":
            return f"{r['wall_s']:.1f}"
        if st == "timeout":
            return f"> {r['timeout_s']} (timed out)"
        if st == "skipped":
            return "(skipped)"
        sig = r.get("rc", 0) - 128 if r.get("rc", 0) > 128 else None
        return f"failed (exit {r.get('rc')}{', signal ' + str(sig) if sig else ''}) after {r.get('wall_s', 0):.1f}"

    def ratio(r):
        if cm_wall is None or r.get("wall_s") is None:
            return "—"
        if r.get("status") == "ok":
            return f"{r['wall_s'] / cm_wall:.1f}"
        if r.get("status") == "timeout":
            return f"> {float(r['timeout_s']) / cm_wall:.1f}"
        return "—"

    def peak(r):
        return max(r.get("peak_rss_mb", 0.0), r.get("tree_peak_rss_mb", 0.0))

    md = []
    md.append("| tool | wall s | x chunkmill (wall) | CPU s | peak RSS MB, largest process (time -v) "
              "| tree RSS / PSS MB, procs (sampled) | within 1 GB | output MB | others' CPU s / rustc | check |")
    md.append("|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for r in rows:
        if r.get("status") == "skipped":
            md.append(f"| {r['label']} | (skipped: {r.get('note', '')}) | — | — | — | — | — | — | — | — |")
            continue
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "—"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "—"
        tree = (f"{r['tree_peak_rss_mb']:.0f} / {r['tree_peak_pss_mb']:.0f}, {r['tree_max_processes']}"
                if "tree_peak_rss_mb" in r else "—")
        within = "yes" if peak(r) <= BUDGET_MB else f"no ({peak(r) / BUDGET_MB:.1f}×)"
        out_mb = f"{r['output_bytes'] / 1e6:.0f}" if "output_bytes" in r else "—"
        other = f"{r['other_cpu_s']:.1f} / {r.get('rustc_during', '?')}" if "other_cpu_s" in r else "—"
        check = r.get("verified", "not checked" if r.get("status") == "ok" else "—")
        md.append(f"| {r['label']} | {wall(r)} | {ratio(r)} | {cpu} | {rss} | {tree} | {within} | {out_mb} | {other} | {check} |")

    bar = []
    if cm:
        for peer in ("xarray-dask", "xarray-dask-h5netcdf", "xarray-dask-1gb", "xarray-dask-threads"):
            r = next((x for x in rows if x["name"] == peer), None)
            if r is None or r.get("status") == "skipped":
                continue
            if r.get("status") == "ok":
                got = r["wall_s"] / cm_wall
                bar.append(f"- vs {r['label']}: needs ≥ {BAR_SPEEDUP}× faster, got {got:.2f}× → "
                           f"{'met' if got >= BAR_SPEEDUP else 'NOT met'}")
            elif r.get("status") == "timeout":
                got = float(r["timeout_s"]) / cm_wall
                bar.append(f"- vs {r['label']}: timed out; chunkmill > {got:.2f}× faster")
            else:
                bar.append(f"- vs {r['label']}: the peer failed ({wall(r)}), no ratio")
        bar.append(f"- chunkmill peak RSS ≤ {BUDGET_MB} MB: {peak(cm):.0f} MB → "
                   f"{'met' if peak(cm) <= BUDGET_MB else 'NOT met'}")
        bar.append(f"- chunkmill's output equals open_mfdataset of the originals: {cm.get('verified', 'not checked')}")

    floor = load_json(os.path.join(raw, "codec_floor.json"))
    floor_lines = []
    if floor:
        def pick(kind, w):
            return next((x for x in floor[kind] if x["workers"] == w), None)
        for w in sorted({x["workers"] for x in floor["decode"]}):
            d, e = pick("decode", w), pick("encode", w)
            if d and e:
                floor_lines.append(
                    f"- {w} worker(s): inflate {d['decoded_bytes'] / 1e9:.2f} GB {d['wall_s']:.1f} s + encode "
                    f"{e['target_bytes'] / 1e9:.2f} GB (zstd 1){' and write' if e.get('writes') else ''} "
                    f"{e['wall_s']:.1f} s = **{d['wall_s'] + e['wall_s']:.1f} s** (CPU {d['cpu_s'] + e['cpu_s']:.1f} s)")
        floor_lines.append(f"- ideal on {min(floor['cores'], floor['floor_workers'])} cores (the 1-worker floor's CPU "
                           f"divided among them: no overhead, no wait): **{floor['ideal_floor_s']:.1f} s**")
        if cm:
            floor_lines.append(f"- chunkmill: {cm_wall / floor['ideal_floor_s']:.2f}× the ideal floor, "
                               f"{cm_wall / floor['floor_n_workers_s']:.2f}× the {floor['floor_workers']}-worker floor")
        peer = next((x for x in rows if x["name"] == "xarray-dask-threads" and x.get("status") == "ok"), None)
        if peer:
            need = peer["wall_s"] / FLOOR_BAR_SPEEDUP
            floor_lines.append(
                f"- issue 13's bar, ≥ {FLOOR_BAR_SPEEDUP}× xarray + dask (h5netcdf, threaded): needs ≤ {need:.1f} s, "
                f"{need / floor['ideal_floor_s']:.2f}× the ideal floor"
                + (f" (below it: no tool can meet it on this machine with this codec)"
                   if need < floor["ideal_floor_s"] else "")
                + (f"; got {peer['wall_s'] / cm_wall:.2f}× → {'met' if peer['wall_s'] / cm_wall >= FLOOR_BAR_SPEEDUP else 'NOT met'}"
                   if cm else ""))

    phases = []
    for r in rows:
        rep = r.get("report")
        if r["name"] != "chunkmill" and isinstance(rep, dict) and "phases" in rep:
            ph = ", ".join(f"{k} {v:.1f}" for k, v in rep["phases"].items())
            phases.append(f"- {r['name']}: {ph} (s, in process)")

    text = ["## Convert benchmark results", ""]
    if env:
        text.append(f"Run {env.get('date', '')} on {env.get('cpu', '?')}, {env.get('nproc', '?')} cores, "
                    f"{env.get('mem_gb', '?')} GB RAM; {env.get('files')} daily files, chunks {env.get('chunks')}, "
                    f"budget {mm}, nice {env.get('nice')}. Load: {env.get('uptime_start', '')} → "
                    f"{env.get('uptime_end', '')}.")
        text.append("")
        text.append(f"chunkmill: `{env.get('chunkmill_command', '')}` ({env.get('chunkmill_version')}, built "
                    f"{env.get('chunkmill_built')})")
        text.append("")
    text.extend(md)
    text.append("")
    text.append(f"Peak RSS (time -v) is the largest single process; the sampled tree columns sum every "
                f"descendant every {env.get('sample_interval_s', 0.25)} s (dask's LocalCluster: a nanny and a worker process per worker, plus the "
                "client/scheduler process). 'within 1 GB' takes the larger of the two. Others' CPU: what the rest "
                "of the machine used while the tool ran, and the most rustc processes seen beside it.")
    if floor_lines:
        text.append("")
        text.append(f"Codec floor (bench/convert/codec_floor.py: every source chunk read from the page cache and "
                    f"inflated once with {floor['inflate']}, every target chunk encoded once, no converting; "
                    "best of its repeats, timed inside the process):")
        text.extend(floor_lines)
    if phases:
        text.append("")
        text.append("Peers' phases:")
        text.extend(phases)
    if cm and isinstance(cm.get("report"), dict):
        text.append("")
        text.append("chunkmill's --json report:")
        text.append("")
        text.append("```")
        text.append(json.dumps(cm["report"])[:3000])
        text.append("```")
    if bar:
        text.append("")
        text.append(f"The bar of issue 4 (chunkmill ≥ {BAR_SPEEDUP}× faster than xarray + dask in the same run, "
                    f"peak RSS within the {mm} budget):")
        text.extend(bar)
    for r in rows:
        if r.get("failure"):
            text.append(f"- {r['name']} failed: {r['failure']}")
        for n in (r.get("verify") or {}).get("notes", []):
            text.append(f"- note ({r['name']}): {n}")
    out = "\n".join(text) + "\n"
    print(out)
    with open(args.md, "w") as f:
        f.write(out)
    with open(args.json, "w") as f:
        json.dump({"env": env, "tools": rows, "bar": bar, "codec_floor": floor, "floor_lines": floor_lines,
                   "chunkmill_plan": load_json(os.path.join(raw, "chunkmill-plan.json"))}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
