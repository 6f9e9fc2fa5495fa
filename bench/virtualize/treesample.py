#!/usr/bin/env python3
"""Sample a process tree until its root exits: summed RSS and PSS, and CPU time (Linux, stdlib).

    treesample.py PID --out FILE [--interval 0.1]

The peers fork workers (kerchunk: multiprocessing.Pool; VirtualiZarr: a forkserver and its
ProcessPoolExecutor workers). /usr/bin/time -v then reports the largest single process, and
its user/sys times miss workers nobody waits for (a forkserver's). Every INTERVAL seconds this
sums over every descendant of PID (PID itself, /usr/bin/time, excluded):
  - VmRSS (pages shared after fork are counted once per process: an upper bound),
  - Pss from /proc/PID/smaps_rollup (shared pages split between their users: the tree's real
    footprint),
and keeps, per process, the last utime+stime seen; their sum is the tree's CPU time (what a
process used after its last sample is missed: a lower bound). It also records the most
processes the tree held and the most rustc processes running outside it (a compile beside the
benchmark).
"""

import argparse
import json
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def scan():
    kids, comms, cpu = {}, {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(b")") + 2:].split()
        pid = int(d)
        kids.setdefault(int(rest[1]), []).append(pid)
        comms[pid] = s[s.find(b"(") + 1:s.rfind(b")")]
        cpu[pid] = (int(rest[11]) + int(rest[12])) / HZ  # utime + stime
    return kids, comms, cpu


def rss_pss(pid):
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
    except (OSError, IndexError, ValueError):
        pass
    return rss, pss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    args = ap.parse_args()
    peak_rss = peak_pss = peak_procs = max_rustc = samples = 0
    last_cpu = {}
    while os.path.exists(f"/proc/{args.pid}"):
        kids, comms, cpu = scan()
        stack, desc = list(kids.get(args.pid, [])), []
        while stack:
            p = stack.pop()
            desc.append(p)
            stack.extend(kids.get(p, []))
        tot_rss = tot_pss = 0
        for p in desc:
            r, s = rss_pss(p)
            tot_rss += r
            tot_pss += s
            if p in cpu:
                last_cpu[(p, comms.get(p))] = cpu[p]
        peak_rss = max(peak_rss, tot_rss)
        peak_pss = max(peak_pss, tot_pss)
        peak_procs = max(peak_procs, len(desc))
        inside = set(desc)
        max_rustc = max(max_rustc, sum(1 for p, c in comms.items() if c == b"rustc" and p not in inside))
        samples += 1
        time.sleep(args.interval)
    with open(args.out, "w") as f:
        json.dump({"peak_tree_rss_bytes": peak_rss, "peak_tree_pss_bytes": peak_pss, "max_processes": peak_procs,
                   "tree_cpu_s": sum(last_cpu.values()), "samples": samples, "max_rustc_outside": max_rustc,
                   "interval_s": args.interval}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
