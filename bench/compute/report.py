#!/usr/bin/env python3
"""Build the compute benchmark's table from run.sh's raw files.

    report.py RAW_DIR --md OUT.md --json OUT.json

Per run NAME (TOOL-WORKLOAD): NAME.meta.json, NAME.time (/usr/bin/time -v), NAME.tree.json
(treesample.py), NAME.stdout; verify-WORKLOAD.json; env.json. MB = 10^6 bytes. CPU = the
larger of time -v's user+sys and the sampled tree's (a processes executor's workers). Peak
RSS: the largest single process (time -v) and the sampled sum over the tree.
"""

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import load_json, parse_time_v  # noqa: E402

TOOLS = ["chunkmill", "cubed-threads", "cubed-processes", "dask"]
WORKLOADS = ["quadratic", "anomalies"]
LABELS = {
    "chunkmill": "chunkmill compute",
    "cubed-threads": "cubed (threads executor, {w} workers)",
    "cubed-processes": "cubed (processes executor, {w} workers)",
    "dask": "xarray + dask (threaded scheduler, {w} threads; no memory bound)",
}
BAR_CUBED_X = 5.0  # issue 11: >= 5x faster than cubed at the same budget, faster than dask


def budget_bytes(text):
    m = re.fullmatch(r"([0-9.]+)\s*([KMGT]?)B?", text.strip().upper())
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    raw = args.raw
    env = load_json(os.path.join(raw, "env.json"), {})
    workers = env.get("workers", 2)
    budget = budget_bytes(env.get("max_mem", "")) or 0
    rows = []
    for workload in WORKLOADS:
        verify = {r["name"]: r for r in load_json(os.path.join(raw, f"verify-{workload}.json"), [])}
        for tool in TOOLS:
            name = f"{tool}-{workload}"
            meta = load_json(os.path.join(raw, f"{name}.meta.json"))
            if meta is None:
                continue
            row = dict(meta)
            row.update(parse_time_v(os.path.join(raw, f"{name}.time")))
            tree = load_json(os.path.join(raw, f"{name}.tree.json"), {})
            if tree:
                row["tree_peak_rss_mb"] = tree["peak_tree_rss_bytes"] / 1e6
                row["tree_cpu_s"] = tree.get("tree_cpu_s")
                row["tree_max_processes"] = tree.get("max_processes")
            if "user_s" in row:
                row["cpu_s"] = max(row["user_s"] + row["sys_s"], row.get("tree_cpu_s") or 0.0)
                row["other_cpu_s"] = max(0.0, row.get("machine_busy_cpu_s", 0.0) - row["cpu_s"])
            v = verify.get(name)
            if v is not None:
                row["verified"] = "equal (numpy, 1e-5)" if v["ok"] else "WRONG: " + "; ".join(v["problems"])
            rows.append(row)

    md = ["| workload | tool | wall s | chunkmill is | CPU s | peak RSS MB (largest process / tree) "
          "| within the budget | others' CPU s | output check |",
          "|---|---|---:|---:|---:|---:|---|---:|---|"]
    bar = []
    for workload in WORKLOADS:
        wrows = [r for r in rows if r["workload"] == workload]
        cm = next((r for r in wrows if r["tool"] == "chunkmill" and r["status"] == "ok"), None)
        for r in wrows:
            label = LABELS[r["tool"]].format(w=workers)
            if r["status"] != "ok":
                what = f"> {r['timeout_s']} (timed out)" if r["status"] == "timeout" else f"failed (exit {r['rc']})"
                md.append(f"| {workload} | {label} | {what} | — | — | — | — | — | — |")
                continue
            x = "—" if cm is None or r is cm else f"{r['wall_s'] / cm['wall_s']:.2f}× faster"
            r["x_chunkmill"] = None if cm is None else r["wall_s"] / cm["wall_s"]
            peak = max(r.get("peak_rss_mb", 0), r.get("tree_peak_rss_mb", 0))
            within = "—" if not budget or r["tool"] == "dask" else ("yes" if peak * 1e6 <= budget else
                                                                      f"no ({peak * 1e6 / budget:.1f}×)")
            md.append(f"| {workload} | {label} | {r['wall_s']:.1f} | {x} | {r.get('cpu_s', 0):.1f} | "
                      f"{r.get('peak_rss_mb', 0):.0f} / {r.get('tree_peak_rss_mb', 0):.0f} | {within} | "
                      f"{r.get('other_cpu_s', 0):.0f} | {r.get('verified', 'not checked')} |")
        if cm is None:
            continue
        for r in wrows:
            if r is cm or r["status"] != "ok":
                continue
            x = r["wall_s"] / cm["wall_s"]
            need = BAR_CUBED_X if r["tool"].startswith("cubed") else 1.0
            bar.append(f"- {workload}: chunkmill {x:.2f}× faster than {r['tool']} (bar ≥ {need:g}×): "
                       f"{'met' if x >= need else 'NOT met'}")
        peak = max(cm.get("peak_rss_mb", 0), cm.get("tree_peak_rss_mb", 0))
        if budget:
            bar.append(f"- {workload}: chunkmill peak RSS {peak:.0f} MB, budget {budget / 1e6:.0f} MB: "
                       f"{'met' if peak * 1e6 <= budget else 'NOT met'}")
    text = [f"## compute benchmark, {env.get('date', '?')}", "",
            f"Input {env.get('shape')} float32 ×2, chunks {env.get('chunks')}; budget {env.get('max_mem')}; "
            f"{env.get('nproc')} CPUs, Linux {env.get('kernel')}, Python {env.get('python')}; load at start "
            f"`{env.get('uptime_start', '?')}`, at end `{env.get('uptime_end', '?')}`", "", "\n".join(md), ""]
    if bar:
        text += ["The bar of issue 11 (one run, same machine):", "", "\n".join(bar), ""]
    text += ["Versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
             + f"; chunkmill {env.get('chunkmill_version')} ({env.get('chunkmill')})", ""]
    out = "\n".join(text)
    print(out)
    with open(args.md, "w") as f:
        f.write(out)
    with open(args.json, "w") as f:
        json.dump({"env": env, "rows": rows, "bar": bar}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
