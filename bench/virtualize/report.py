#!/usr/bin/env python3
"""Build the virtualize benchmark's tables from run.sh's raw files.

    report.py RAW_DIR --md OUT.md --json OUT.json

RAW_DIR holds, per run NAME (chunkmill-json, kerchunk-parquet, ...): NAME.meta.json (run.sh),
NAME.time (/usr/bin/time -v), NAME.tree.json (treepeak.py), NAME.stdout (the peers' phase
times); plus env.json, verify.json, listing.json, list-load.json, output-sizes.txt.
MB = 10^6 bytes. files/s = files / whole-process wall. "x chunkmill" = chunkmill's files/s
divided by the row's (= row wall / chunkmill wall), against chunkmill in the same format
(or its JSON run, marked "vs JSON", when chunkmill has no such format).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import load_json, output_sizes, parse_time_v  # noqa: E402

ORDER = ["chunkmill-json", "chunkmill-parquet", "kerchunk-json", "kerchunk-parquet",
         "virtualizarr-json", "virtualizarr-parquet"]
LABELS = {
    "chunkmill": "chunkmill virtualize",
    "kerchunk": "kerchunk (SingleHdf5ToZarr, Pool({w}) + MultiZarrToZarr)",
    "virtualizarr": "VirtualiZarr (open_virtual_mfdataset, HDFParser, {w} processes)",
}
BAR_SPEEDUP = 30        # chunkmill files/s >= 30x each peer's
BAR_RSS_MB = 100        # chunkmill peak RSS < 100 MB
BAR_LIST_MS = 20        # 50 000-chunk index listed in < 20 ms
BAR_KERCHUNK_X = 60     # issue 13: >= 60x kerchunk on the 365 files
BAR_10K_WALL_S = 3.0    # issue 13, item 3: 10 000 files scanned and combined in < 3 s ...
BAR_10K_RSS_MB = 200    # ... with peak RSS < 200 MB


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--md", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--set", choices=["365", "10k"], default="365")
    args = ap.parse_args()
    raw = args.raw

    env = load_json(os.path.join(raw, "env.json"), {})
    verify = {r["name"]: r for r in load_json(os.path.join(raw, "verify.json"), [])}
    sizes = output_sizes(raw)
    rows = []
    for name in ORDER:
        meta = load_json(os.path.join(raw, f"{name}.meta.json"))
        if meta is None:
            continue
        row = {"name": name, **meta}
        row.update(parse_time_v(os.path.join(raw, f"{name}.time")))
        tree = load_json(os.path.join(raw, f"{name}.tree.json"), {})
        if tree:
            row["tree_peak_rss_mb"] = tree["peak_tree_rss_bytes"] / 1e6
            row["tree_peak_pss_mb"] = tree.get("peak_tree_pss_bytes", 0) / 1e6
            row["tree_max_processes"] = tree["max_processes"]
            row["tree_cpu_s"] = tree.get("tree_cpu_s")
            row["rustc_during"] = tree.get("max_rustc_outside")
        if "user_s" in row:
            # time -v misses workers nobody waits for (a forkserver's); the sampler misses the
            # last tenth of a second of each process: take the larger
            row["cpu_s"] = max(row["user_s"] + row["sys_s"], row.get("tree_cpu_s") or 0.0)
        if "machine_busy_cpu_s" in row and "cpu_s" in row:
            row["other_cpu_s"] = max(0.0, row["machine_busy_cpu_s"] - row["cpu_s"])
        try:
            lines = open(os.path.join(raw, f"{name}.stdout")).read().strip().splitlines()
            if lines and lines[-1].startswith("{"):
                row["in_process"] = json.loads(lines[-1])
        except (OSError, ValueError):
            pass
        v = verify.get(name)
        if v is not None:
            row["verified"] = "equal (values, all refs)" if v["ok"] else "WRONG: " + "; ".join(v["problems"])
        ext = "json" if row["format"] == "json" else "parq"
        if f"{row['tool']}.{ext}" in sizes:
            row["output_bytes"] = sizes[f"{row['tool']}.{ext}"]
        runs = load_json(os.path.join(raw, f"{name}.runs.json"))
        row["time_v_wall_s"] = row.get("wall_s")
        if runs and runs.get("status") == "ok":
            # the precise median of the repeated runs replaces time -v's 1/100 s figure
            row["runs"] = runs
            row["wall_s"] = runs["median_s"]
            row["wall_source"] = f"median of {runs['repeat']} runs (perf_counter + wait4)"
        if row.get("status") == "ok" and row.get("wall_s"):
            row["files_per_s"] = row["files"] / row["wall_s"]
        rows.append(row)

    for k in LABELS:
        LABELS[k] = LABELS[k].format(w=env.get("workers", "?"))
    cm = {r["format"]: r for r in rows if r["tool"] == "chunkmill" and r.get("status") == "ok"}

    def ratio(r):
        if r.get("status") != "ok":
            return "—", None
        ref = cm.get(r["format"])
        mark = ""
        if ref is None and "json" in cm:
            ref, mark = cm["json"], " (vs JSON)"
        if ref is None:
            return "—", None
        x = r["wall_s"] / ref["wall_s"]
        return f"{x:.1f}{mark}", x

    md = []
    md.append("| tool | format | files | wall s | files/s | peak RSS MB (time -v) | tree PSS / RSS MB, procs (sampled) "
              "| x chunkmill (files/s) | CPU s | others' CPU s / rustc | output MB | check |")
    md.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        st = r.get("status")
        if st == "skipped":
            md.append(f"| {LABELS[r['tool']]} | {r['format']} | {r['files']} | (skipped: {r.get('note', '')}) "
                      "| — | — | — | — | — | — | — | — |")
            continue
        wall = (f"{r['wall_s']:.2f}" if st == "ok" and "runs" not in r else
                f"{r['wall_s']:.3f} † ({min(r['runs']['walls_s']):.3f}–{max(r['runs']['walls_s']):.3f}; "
                f"time -v {r['time_v_wall_s']:.2f})" if st == "ok" else
                f"> {r['timeout_s']} (timed out)" if st == "timeout" else f"failed (exit {r.get('rc')})")
        fps = f"{r['files_per_s']:.1f}" if "files_per_s" in r else "—"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "—"
        tree = (f"{r['tree_peak_pss_mb']:.0f} / {r['tree_peak_rss_mb']:.0f}, {r['tree_max_processes']}"
                if r.get("tree_max_processes") else "— (ended before a sample)")
        rat, x = ratio(r)
        r["x_chunkmill"] = x
        cpu = (f"{r['cpu_s']:.2f}" if r["cpu_s"] < 1 else f"{r['cpu_s']:.1f}") if "cpu_s" in r else "—"
        other = f"{r['other_cpu_s']:.1f}" if "other_cpu_s" in r else "?"
        size = f"{r['output_bytes'] / 1e6:.2f}" if "output_bytes" in r else "—"
        check = r.get("verified", "not checked" if st == "ok" else "—")
        md.append(f"| {LABELS[r['tool']]} | {r['format']} | {r['files']} | {wall} | {fps} | {rss} | {tree} | {rat} "
                  f"| {cpu} | {other} / {r.get('rustc_during', '?')} | {size} | {check} |")

    notes = []
    if any("runs" in r for r in rows):
        notes.append("† chunkmill: after its /usr/bin/time -v run (peak RSS, CPU), the same command ran again, one "
                     "untimed warm-up then N timed runs, each a whole process timed with perf_counter around "
                     "Popen + os.wait4 (bench/virtualize/runtimes.py): median (min–max); time -v's own wall, "
                     "to 1/100 s, in brackets. The peers ran once each (seconds long).")
    # phases of the peers, measured inside their process
    phase_lines = []
    for r in rows:
        ip = r.get("in_process")
        if ip and "phases" in ip:
            ph = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in ip["phases"].items())
            phase_lines.append(f"- {r['name']}: {ph}")

    listing = load_json(os.path.join(raw, "listing.json"))
    lload = load_json(os.path.join(raw, "list-load.json"), {})
    lmd = []
    if listing:
        lmd.append("| command (whole process) | min ms | median ms | peak RSS MB | in-process listing | check |")
        lmd.append("|---|---:|---:|---:|---|---|")
        for r in listing["results"]:
            if r["status"] != "ok":
                lmd.append(f"| {r['name']} | failed (exit {r.get('rc')}) | — | — | — | — |")
                continue
            ip = r.get("in_process", {}).get("phases", {})
            inproc = "; ".join(f"{k[:-2]} {v * 1e3:.0f} ms" for k, v in ip.items()) or "—"
            chk = []
            if "byte_ranges" in r:
                chk.append(f"byte_ranges {r['byte_ranges']}")
            if "chunk_refs" in r:
                chk.append(f"{r['chunk_refs']} refs, {r['inlined']} inlined")
            lmd.append(f"| {r['name']}: `{' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(r['command']))}` "
                       f"| {r['min_s'] * 1e3:.1f} | {r['median_s'] * 1e3:.1f} | {r['peak_rss_mb']:.0f} | {inproc} "
                       f"| {', '.join(chk) or '—'} |")

    # the bar
    bar = []
    if args.set == "10k":
        for fmt, c in sorted(cm.items()):
            bar.append(f"- chunkmill {fmt}: {c['files']} files in {c['wall_s']:.2f} s (bar < {BAR_10K_WALL_S:.0f} s): "
                       f"{'met' if c['wall_s'] < BAR_10K_WALL_S else 'NOT met'}; peak RSS {c['peak_rss_mb']:.0f} MB "
                       f"(bar < {BAR_10K_RSS_MB} MB): {'met' if c['peak_rss_mb'] < BAR_10K_RSS_MB else 'NOT met'}")
    for fmt, c in sorted(cm.items()):
        if args.set == "10k":
            break
        for r in rows:
            if r["tool"] == "chunkmill" or r.get("status") != "ok":
                continue
            if r["format"] != fmt and not (fmt == "json" and r["format"] not in cm):
                continue
            x = r["wall_s"] / c["wall_s"]
            bar.append(f"- chunkmill {fmt} vs {r['name']}: {x:.1f}x the files/s (bar ≥ {BAR_SPEEDUP}x): "
                       f"{'met' if x >= BAR_SPEEDUP else 'NOT met'}")
        bar.append(f"- chunkmill {fmt} peak RSS {c['peak_rss_mb']:.0f} MB (bar < {BAR_RSS_MB} MB): "
                   f"{'met' if c['peak_rss_mb'] < BAR_RSS_MB else 'NOT met'}")
        k = next((r for r in rows if r["tool"] == "kerchunk" and r["format"] == fmt and r.get("status") == "ok"), None)
        if k is not None:
            x = k["wall_s"] / c["wall_s"]
            bar.append(f"- issue 13: chunkmill {fmt} {x:.1f}x kerchunk {fmt} (bar ≥ {BAR_KERCHUNK_X}x): "
                       f"{'met' if x >= BAR_KERCHUNK_X else 'NOT met'}")
    if listing:
        ci = next((r for r in listing["results"] if r["name"] == "chunkmill-inspect" and r["status"] == "ok"), None)
        if ci:
            ms = ci["min_s"] * 1e3
            bar.append(f"- chunkmill inspect of the 50 000-chunk file: {ms:.1f} ms best, {ci['median_s'] * 1e3:.1f} ms "
                       f"median, whole process (bar < {BAR_LIST_MS} ms): {'met' if ci['median_s'] * 1e3 < BAR_LIST_MS else 'NOT met'}")

    text = [f"## virtualize benchmark, {env.get('date', '?')}", "",
            f"{env.get('files')} daily files ({'the 10 000-file collection' if args.set == '10k' else 'the 365-file set'}), peers' pools of {env.get('workers')} processes; "
            f"machine: {env.get('nproc')} CPUs, {env.get('mem_gb')} GiB, Linux {env.get('kernel')}, Python {env.get('python')}; "
            f"load at start: `{env.get('uptime_start', '?')}`; at end: `{env.get('uptime_end', '?')}`", "",
            "\n".join(md), ""] + ([" ".join(notes), ""] if notes else [])
    if phase_lines:
        text += ["Phases inside the peers' processes:", "", "\n".join(phase_lines), ""]
    if lmd:
        text += [f"Listing {listing['expect']} chunks of `{listing['file']}` (chunks {tuple(listing['chunk_shape'])}); "
                 f"load before {lload.get('load_before', '?')}, after {lload.get('load_after', '?')}:", "", "\n".join(lmd), ""]
        if listing.get("problems"):
            text += ["**Listing check failures:** " + "; ".join(listing["problems"]), ""]
    if bar:
        title = "The bar of issue 13, item 3:" if args.set == "10k" else "The bars of issue 3, item 8 and issue 13:"
        text += [title, "", "\n".join(bar), ""]
    text += ["Versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
             + f", HDF5 {env.get('hdf5')}; chunkmill {env.get('chunkmill_version')} ({env.get('chunkmill')}, "
             f"built {env.get('chunkmill_built')})", ""]
    out = "\n".join(text)
    print(out)
    with open(args.md, "w") as f:
        f.write(out)
    with open(args.json, "w") as f:
        json.dump({"env": env, "set": args.set, "rows": rows, "listing": listing, "listing_load": lload, "bar": bar}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
