#!/usr/bin/env python3
"""Listing benchmark: how long it takes to list the 50 000 chunks of one HDF5 variable.

    listing.py FILE.nc --var v --expect 50000 --raw RAW_DIR --python PY [--chunkmill BIN]
               [--repeat 7]

Each command is a whole process, started with subprocess and reaped with os.wait4
(runtimes.py), so the figure is process wall time (perf_counter, sub-millisecond); it runs
once untimed under /usr/bin/time -f %M (warm-up: file in the page cache, binary loaded; peak
RSS), then REPEAT times; min and median are reported. Commands:
  chunkmill-inspect     chunkmill inspect FILE --json           (lists every chunk: byte_ranges)
  chunkmill-virtualize  chunkmill virtualize FILE --output R.json --format kerchunk-json
                        (lists and writes 50 000 references)
  h5py-chunk-iter       peers.py h5py-chunk-iter FILE --var v  (H5Dchunk_iter through h5py;
                        its in-process chunk_iter time is reported too)
  kerchunk-single       peers.py kerchunk-one FILE --out R.json (SingleHdf5ToZarr + json.dump)
Checks (not timed): inspect's byte_ranges for VAR equals EXPECT; the chunk references that
chunkmill virtualize and kerchunk wrote equal h5py's chunk_iter (grid index, offset, size) one
for one. Writes RAW_DIR/listing.json; exits 1 if a check fails.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import runtimes  # noqa: E402


def bench(name, cmd, raw, repeat):
    out = os.path.join(raw, f"list-{name}.out")
    res = {"name": name, **runtimes.repeat(cmd, out, repeat)}
    if res["status"] != "ok":
        print(f"listing: {name}: FAILED (exit {res['rc']}): {' '.join(cmd)}\n{res['stderr_tail']}", file=sys.stderr)
        return res
    try:
        with open(out) as f:
            last = f.read().strip().splitlines()
        if last and last[-1].startswith("{") and name.startswith(("h5py", "kerchunk")):
            res["in_process"] = json.loads(last[-1])
    except (OSError, ValueError):
        pass
    print(f"listing: {name}: min {res['min_s'] * 1e3:.1f} ms, median {res['median_s'] * 1e3:.1f} ms, "
          f"peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr)
    return res


def chunk_table_from_refs(path, var):
    with open(path) as f:
        doc = json.load(f)
    refs = doc.get("refs", doc)
    zarray = refs[f"{var}/.zarray"]
    meta = json.loads(zarray) if isinstance(zarray, str) else zarray
    sep = meta.get("dimension_separator", ".")
    table = {}
    inline = 0
    for k, v in refs.items():
        if not k.startswith(var + "/") or k.split("/")[-1].startswith("."):
            continue
        idx = tuple(int(i) for i in k.split("/", 1)[1].split(sep))
        if isinstance(v, list) and len(v) == 3:
            table[idx] = (int(v[1]), int(v[2]))
        else:
            inline += 1
    return table, inline


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--var", default="v")
    ap.add_argument("--expect", type=int, default=50000)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--chunkmill")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    peers = os.path.join(HERE, "peers.py")
    f = args.file
    results, problems, to_check = [], [], []

    if args.chunkmill:
        r = bench("chunkmill-inspect", [args.chunkmill, "inspect", f, "--json"], args.raw, args.repeat)
        if r["status"] == "ok":
            with open(os.path.join(args.raw, "list-chunkmill-inspect.out")) as fh:
                doc = json.load(fh)
            var = next((v for v in doc.get("variables", []) if v.get("path", "").strip("/") == args.var
                        or v.get("name") == args.var), None)
            n = var.get("byte_ranges") if var else None
            r["byte_ranges"] = n
            if n != args.expect:
                problems.append(f"chunkmill inspect reports byte_ranges={n!r} for {args.var}, expected {args.expect}")
        results.append(r)
        refs_out = os.path.join(args.raw, "list-chunkmill-refs.json")
        r = bench("chunkmill-virtualize", [args.chunkmill, "virtualize", f, "--output", refs_out,
                                           "--format", "kerchunk-json", "--overwrite", "--no-progress", "--quiet"],
                  args.raw, args.repeat)
        if r["status"] == "ok":
            to_check.append((r, "chunkmill virtualize", refs_out))
        results.append(r)

    results.append(bench("h5py-chunk-iter", [args.python, peers, "h5py-chunk-iter", f, "--var", args.var],
                         args.raw, args.repeat))
    kref = os.path.join(args.raw, "list-kerchunk-refs.json")
    r = bench("kerchunk-single", [args.python, peers, "kerchunk-one", f, "--out", kref], args.raw,
              max(1, args.repeat // 3))
    if r["status"] == "ok":
        to_check.append((r, "kerchunk", kref))
    results.append(r)

    # --- checks (after the timings: the parent stays small while it starts the commands)
    truth_path = os.path.join(args.raw, "list-truth.json")
    subprocess.run([args.python, peers, "h5py-chunk-iter", f, "--var", args.var, "--out", truth_path],
                   check=True, stdout=subprocess.DEVNULL)
    with open(truth_path) as fh:
        truth_list = json.load(fh)
    with open(os.path.join(args.raw, "list-truth.meta"), "w") as fh:
        fh.write(str(len(truth_list)))
    # chunk_offset is in array elements; the grid index divides it by the chunk shape
    import h5py

    with h5py.File(f, "r") as h:
        cshape = h[args.var].chunks
    truth = {tuple(o // c for o, c in zip(off, cshape)): (b, s) for off, b, s in truth_list}
    if len(truth) != args.expect:
        problems.append(f"h5py lists {len(truth)} chunks, expected {args.expect}")

    for r, what, path in to_check:
        table, inline = chunk_table_from_refs(path, args.var)
        r["chunk_refs"], r["inlined"] = len(table), inline
        if table != truth:
            missing = len(set(truth) - set(table))
            wrong = sum(1 for k in table if k in truth and table[k] != truth[k])
            problems.append(f"{what} references differ from h5py chunk_iter: {len(table)} refs "
                            f"({inline} inlined), {missing} missing, {wrong} with other offset/size")

    for p in problems:
        print(f"listing: WRONG: {p}", file=sys.stderr)
    with open(os.path.join(args.raw, "listing.json"), "w") as fh:
        json.dump({"file": f, "var": args.var, "expect": args.expect, "chunk_shape": list(cshape),
                   "results": results, "problems": problems}, fh, indent=1)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
