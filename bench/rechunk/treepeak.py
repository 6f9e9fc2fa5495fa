#!/usr/bin/env python3
"""Sample the summed RSS of a process tree until its root exits (Linux, stdlib only).

    treepeak.py PID --out FILE [--interval 0.2]

/usr/bin/time -v reports the peak RSS of the largest single process it waited
for, which is the whole tree's peak only when the tool runs in one process (all
the threads-based schedulers here do). This sampler sums VmRSS over every
descendant of PID (PID itself excluded: it is /usr/bin/time) every INTERVAL
seconds, so a tool that forks workers is still measured as a tree. Sampling can
miss short spikes, so the table reports /usr/bin/time's figure and this one
next to it; it also records how many processes the tree held at most, and the
most rustc processes seen running outside the tree at once (a compile running
beside the benchmark, which skews its figures on a 2-core machine).
"""

import argparse
import json
import os
import sys
import time


def children_map():
    kids = {}
    comms = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split after the last ')'
        rest = s[s.rfind(b")") + 2:].split()
        ppid = int(rest[1])
        kids.setdefault(ppid, []).append(int(d))
        comms[int(d)] = s[s.find(b"(") + 1:s.rfind(b")")]
    return kids, comms


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.2)
    args = ap.parse_args()

    peak = 0
    peak_procs = 0
    samples = 0
    max_rustc = 0
    while os.path.exists(f"/proc/{args.pid}"):
        kids, comms = children_map()
        stack = list(kids.get(args.pid, []))
        desc = []
        while stack:
            p = stack.pop()
            desc.append(p)
            stack.extend(kids.get(p, []))
        total = sum(rss_bytes(p) for p in desc)
        if total > peak:
            peak = total
        peak_procs = max(peak_procs, len(desc))
        inside = set(desc)
        max_rustc = max(max_rustc, sum(1 for p, c in comms.items() if c == b"rustc" and p not in inside))
        samples += 1
        time.sleep(args.interval)
    with open(args.out, "w") as f:
        json.dump({"peak_tree_rss_bytes": peak, "max_processes": peak_procs, "samples": samples, "max_rustc_outside": max_rustc,
                   "interval_s": args.interval}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
