"""Helpers shared by bench/*/report.py: reading `/usr/bin/time -v` output and JSON files."""

import json
import os
import re

# `/usr/bin/time -v` fields the reports use, by the key they are stored under.
TIME_V_FIELDS = [
    ("user_s", r"User time \(seconds\): (\S+)"),
    ("sys_s", r"System time \(seconds\): (\S+)"),
    ("maxrss_kib", r"Maximum resident set size \(kbytes\): (\d+)"),
    ("major_faults", r"Major \(requiring I/O\) page faults: (\d+)"),
    ("fs_outputs", r"File system outputs: (\d+)"),
    ("exit_status", r"Exit status: (\d+)"),
    ("cpu_percent", r"Percent of CPU this job got: (\d+)%"),
]


def parse_time_v(path):
    """Wall, CPU, peak RSS (KiB, and MB of 10^6 bytes) and the other fields above, from one
    `/usr/bin/time -v` file; {} when it is missing."""
    out = {}
    if not os.path.exists(path):
        return out
    text = open(path).read()
    m = re.search(r"Elapsed \(wall clock\) time .*?: (\S+)", text)
    if m:
        secs = 0.0
        for p in m.group(1).split(":"):
            secs = secs * 60 + float(p)
        out["wall_s"] = secs
    for key, pat in TIME_V_FIELDS:
        m = re.search(pat, text)
        if m:
            out[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    if "maxrss_kib" in out:
        out["peak_rss_mb"] = out["maxrss_kib"] * 1024 / 1e6
    return out


def load_json(path, default=None):
    """The JSON document at `path`, or `default` when it is missing or not JSON."""
    if os.path.exists(path):
        with open(path) as f:
            try:
                return json.load(f)
            except ValueError:
                return default
    return default


def output_sizes(raw):
    """Bytes per output (by base name) from RAW/output-sizes.txt (`du -sb` lines), if any."""
    sizes = {}
    path = os.path.join(raw, "output-sizes.txt")
    if os.path.exists(path):
        for line in open(path):
            n, p = line.split(None, 1)
            sizes[os.path.basename(p.strip())] = int(n)
    return sizes


def read_list(path):
    """The input files listed one per line in `path`, as absolute paths."""
    with open(path) as f:
        return [os.path.abspath(line.strip()) for line in f if line.strip()]


def parse_chunks(spec):
    """`time=-1,lat=18` → {"time": -1, "lat": 18}."""
    return {k.strip(): int(v) for k, v in (p.split("=") for p in spec.split(","))}


def same(a, b):
    """Equal shapes and values, NaN equal to NaN for floats."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
