#!/usr/bin/env python3
"""The Python peers of the virtualize benchmark; run.sh runs each as its own process.

    peers.py kerchunk     --list FILES.txt --format json|parquet --out PATH [--workers 2]
    peers.py virtualizarr --list FILES.txt --format json|parquet --out PATH [--workers 2]
    peers.py kerchunk-one FILE.nc --out PATH.json      (SingleHdf5ToZarr on one file, no combine)
    peers.py h5py-chunk-iter FILE.nc --var v           (list a dataset's chunks with H5Dchunk_iter)

FILES.txt holds one NetCDF path per line, in time order. Each mode does the whole job, from
import to the reference file closed, so the caller's /usr/bin/time sees all of it:

kerchunk      kerchunk.hdf.SingleHdf5ToZarr(path, inline_threshold=500).translate() on every
              file in a multiprocessing.Pool(WORKERS) (fork), then
              kerchunk.combine.MultiZarrToZarr(refs, concat_dims=["time"],
              identical_dims=["lat", "lon"]).translate(), then JSON (ujson.dump, as kerchunk's
              docs do) or Parquet (kerchunk.df.refs_to_dataframe, record_size 100 000).
virtualizarr  virtualizarr.open_virtual_mfdataset(file:// URLs, registry={"file://": obstore
              LocalStore}, parser=HDFParser(), combine="nested", concat_dim="time",
              coords="minimal", compat="override", parallel=ProcessPoolExecutor(WORKERS,
              forkserver)) (the settings VirtualiZarr's docs give for many files), then
              ds.vz.to_kerchunk(PATH, format="json" | "parquet") (record_size 100 000).

Both write Zarr v2 kerchunk references with paths as given (kerchunk: absolute paths;
VirtualiZarr: absolute paths, its writer drops "file://"). A line of JSON with the counts and
the in-process phase times goes to stdout.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import read_list  # noqa: E402

T0 = time.perf_counter()


def _kerchunk_scan(path):
    from kerchunk.hdf import SingleHdf5ToZarr

    return SingleHdf5ToZarr(path, inline_threshold=500).translate()


def count_chunk_refs(refs):
    r = refs.get("refs", refs)
    return sum(1 for k, v in r.items() if isinstance(v, list))


def run_kerchunk(args):
    import multiprocessing

    from kerchunk.combine import MultiZarrToZarr

    files = read_list(args.list)
    t_import = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.workers) as pool:
        singles = pool.map(_kerchunk_scan, files, chunksize=max(1, len(files) // (args.workers * 8)))
    t_scan = time.perf_counter()
    mzz = MultiZarrToZarr(singles, concat_dims=["time"], identical_dims=["lat", "lon"])
    refs = mzz.translate()
    t_combine = time.perf_counter()
    write(refs, args.format, args.out)
    t_write = time.perf_counter()
    report(args, files, refs, {"import_s": t_import - T0, "scan_s": t_scan - t_import,
                               "combine_s": t_combine - t_scan, "write_s": t_write - t_combine})


def write(refs, fmt, out):
    if fmt == "json":
        import ujson

        with open(out, "w") as f:
            ujson.dump(refs, f)
    else:
        from kerchunk.df import refs_to_dataframe

        refs_to_dataframe(refs, out, record_size=100_000)


def run_virtualizarr(args):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    files = read_list(args.list)
    urls = ["file://" + p for p in files]
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    t_import = time.perf_counter()
    if args.workers > 1:
        parallel = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("forkserver"))
    else:
        parallel = False
    vds = open_virtual_mfdataset(urls, registry=registry, parser=HDFParser(), combine="nested",
                                 concat_dim="time", coords="minimal", compat="override", parallel=parallel)
    if parallel is not False:
        parallel.shutdown()
    t_scan = time.perf_counter()
    vds.vz.to_kerchunk(args.out, format=args.format)
    t_write = time.perf_counter()
    report(args, files, None, {"import_s": t_import - T0, "open_virtual_mfdataset_s": t_scan - t_import,
                               "to_kerchunk_s": t_write - t_scan},
           extra={"variables": {k: [list(v.shape), list(v.data.chunks) if hasattr(v.data, "chunks") else None]
                                for k, v in vds.variables.items()}})


def report(args, files, refs, phases, extra=None):
    doc = {"tool": args.mode, "format": args.format, "files": len(files), "phases": phases,
           "total_in_process_s": time.perf_counter() - T0}
    if refs is not None:
        doc["chunk_refs"] = count_chunk_refs(refs)
        doc["keys"] = len(refs.get("refs", refs))
    if extra:
        doc.update(extra)
    print(json.dumps(doc))


def run_kerchunk_one(args):
    from kerchunk.hdf import SingleHdf5ToZarr

    t_import = time.perf_counter()
    refs = SingleHdf5ToZarr(os.path.abspath(args.file), inline_threshold=500).translate()
    t_scan = time.perf_counter()
    with open(args.out, "w") as f:
        json.dump(refs, f)
    print(json.dumps({"tool": "kerchunk-one", "chunk_refs": count_chunk_refs(refs),
                      "phases": {"import_s": t_import - T0, "translate_s": t_scan - t_import,
                                 "write_s": time.perf_counter() - t_scan},
                      "total_in_process_s": time.perf_counter() - T0}))


def run_h5py_chunk_iter(args):
    import h5py

    t_import = time.perf_counter()
    with h5py.File(args.file, "r") as f:
        ds = f[args.var]
        t_open = time.perf_counter()
        ranges = []
        ds.id.chunk_iter(lambda c: ranges.append((c.chunk_offset, c.byte_offset, c.size)))
        t_iter = time.perf_counter()
    if args.out:
        with open(args.out, "w") as fo:
            json.dump([[list(o), b, s] for o, b, s in ranges], fo)
    print(json.dumps({"tool": "h5py-chunk-iter", "chunks": len(ranges),
                      "phases": {"import_s": t_import - T0, "open_s": t_open - t_import,
                                 "chunk_iter_s": t_iter - t_open},
                      "total_in_process_s": time.perf_counter() - T0}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["kerchunk", "virtualizarr", "kerchunk-one", "h5py-chunk-iter"])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--list")
    ap.add_argument("--format", choices=["json", "parquet"], default="json")
    ap.add_argument("--out")
    ap.add_argument("--var", default="v")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.mode == "kerchunk":
        run_kerchunk(args)
    elif args.mode == "virtualizarr":
        run_virtualizarr(args)
    elif args.mode == "kerchunk-one":
        run_kerchunk_one(args)
    else:
        run_h5py_chunk_iter(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
