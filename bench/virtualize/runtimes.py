#!/usr/bin/env python3
"""Time a short command precisely: REPEAT whole-process runs after one untimed warm-up.

    runtimes.py --repeat 5 --out FILE.json [--stdout FILE] -- CMD ARGS...

/usr/bin/time -v prints wall time to 1/100 s, too coarse for a run of a few tens of
milliseconds. Here the command is started with subprocess.Popen and reaped with os.wait4:
wall = perf_counter around start and reap (process start included). The peak RSS comes from
the untimed warm-up run, made under /usr/bin/time -f %M. Writes
{"walls_s": [...], "min_s", "median_s", "max_s", "peak_rss_mb", "rc"} and exits with the
command's exit code if a run fails.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_once(cmd, stdout_path):
    with open(stdout_path, "wb") as out, open(stdout_path + ".err", "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    return wall, ru.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)


def repeat(cmd, stdout_path, n):
    """Returns a result dict; status "failed" (with rc and stderr tail) if any run fails.

    The untimed warm-up run goes through /usr/bin/time -f %M for the peak RSS: os.wait4's
    ru_maxrss of a child started from Python includes the Python parent's own footprint
    (Linux carries the pre-exec high-water mark over exec), so it is not used."""
    rss_file = stdout_path + ".maxrss"
    walls = []
    for i in range(n + 1):
        run = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd if i == 0 else cmd
        w, _, rc = run_once(run, stdout_path)
        if rc != 0:
            with open(stdout_path + ".err", "rb") as f:
                err = f.read().decode(errors="replace")[-800:]
            return {"command": cmd, "status": "failed", "rc": rc, "stderr_tail": err}
        if i > 0:
            walls.append(w)
    with open(rss_file) as f:
        rss_kib = int(f.read().split()[-1])
    return {"command": cmd, "status": "ok", "rc": 0, "walls_s": walls, "min_s": min(walls),
            "median_s": statistics.median(walls), "max_s": max(walls), "peak_rss_mb": rss_kib * 1024 / 1e6,
            "repeat": n, "warmup": 1}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stdout", default=os.devnull)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    stdout = args.stdout if args.stdout != os.devnull else args.out + ".stdout"
    res = repeat(cmd, stdout, args.repeat)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    if res["status"] != "ok":
        print(f"runtimes: FAILED (exit {res['rc']}): {' '.join(cmd)}\n{res['stderr_tail']}", file=sys.stderr)
        return res["rc"] or 1
    print(f"runtimes: min {res['min_s'] * 1e3:.1f} ms, median {res['median_s'] * 1e3:.1f} ms, "
          f"max {res['max_s'] * 1e3:.1f} ms over {args.repeat} runs, peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
