#!/usr/bin/env python3
"""The Python peers of the convert benchmark; run.sh runs each as its own process.

    peers.py xarray-dask  --list FILES.txt --out OUT.zarr --chunks time=-1,lat=18,lon=36
                          --max-mem 1GB [--scheduler distributed|threads] [--workers 2]
                          [--worker-memory budget|auto] [--engine netcdf4|h5netcdf] [--file-cache N]
    peers.py rechunker    --list FILES.txt --out OUT.zarr --temp TEMP.zarr --chunks ... --max-mem 1GB
                          (the same options)

FILES.txt holds one NetCDF path per line, in time order. Each mode does the whole job, from
import to the last chunk written, so the caller's /usr/bin/time sees all of it. Both open the
files the way the issue says, `xr.open_mfdataset(files, parallel=True, combine="by_coords")`,
and write every data variable with Zstd level 1 (chunkmill convert's default codec; the
netCDF encoding - zlib, shuffle, chunksizes - is dropped, so each tool writes the same codec):

Scheduler (both peers), --scheduler:
  distributed (default): a dask.distributed LocalCluster(n_workers=WORKERS, threads_per_worker=1,
             processes=True, memory_limit=M) and a Client on it, which becomes dask's default
             scheduler, for open_mfdataset's parallel open and for the writes. This is what the
             Pangeo docs start with, and what xarray's maintainers advise for netCDF4 files: with
             parallel=True, netCDF4-python under dask's threaded scheduler segfaults at random
             (pydata/xarray#7079, #11088; it happened here in the trials, SIGSEGV and SIGBUS).
             --worker-memory budget (default): M = MAX_MEM / WORKERS, so the workers together
             hold chunkmill's --max-mem, with dask's default spill/pause/terminate thresholds
             (0.6/0.7/0.8/0.95 of M).
             --worker-memory auto: M = dask's "auto" (the machine's memory / WORKERS, about
             12 GB here): what `Client()` gives on this 2-core machine (2 workers x 1 thread).
  threads:   dask's default threaded scheduler with WORKERS threads (there is no memory limit
             there); run.sh runs it for xarray-dask as an extra row, "xarray-dask-threads".

File cache, --file-cache N: xarray keeps at most file_cache_maxsize (128) netCDF files open and
             closes the least recently used one from CachingFileManager.__del__, i.e. from
             whichever thread the garbage collector runs in. With 365 files that close races with
             reads in the worker thread: in the first full run (2026-12-02 05:26 UTC) every dask
             worker died again and again ("RuntimeError: NetCDF: HDF error" in
             CachingFileManager.__del__, workers removed and restarted) until a task failed with
             "RuntimeError: NetCDF: Can't open HDF5 attribute", after 110 s; at 40 files it never
             happened. run.sh therefore sets N = 512 (> 365 files: nothing is ever evicted), in
             the client and, through a WorkerPlugin, in every worker (restarted ones too).
             That was not enough: in the second full run (05:36 UTC) the workers crashed the same
             way ("NetCDF: HDF error" in CachingFileManager.__del__ still: most likely each task's
             unpickled file manager is dropped, and its file closed, in the worker's event-loop
             thread while the task thread reads). netCDF-C is not thread-safe. In the third
             (05:39 UTC, the recorded one) it completed, after 3 worker crashes.
Engine, --engine h5netcdf: the usual workaround (h5py serialises every HDF5 call behind one
             global lock). run.sh runs xarray + dask both ways: with
             xarray's default engine (netcdf4) as the issue's line has it, and with h5netcdf,
             which is the row that completes; the 1GB cluster and the threaded scheduler use
             h5netcdf too, so that their only difference from it is memory or scheduler.

xarray-dask  ds.chunk(time=-1, lat=18, lon=36).to_zarr(OUT, mode="w", consolidated=True)
             (zarr-python 3: Zarr format 3, as chunkmill writes by default). With a distributed
             client dask rechunks with its default method there, p2p (shuffle through the
             workers' local disk); with threads, the "tasks" method.
rechunker    rechunker.rechunk(ds, {"time": -1, "lat": 18, "lon": 36}, max_mem=MAX_MEM, OUT,
             temp_store=TEMP, target_options=Zstd(1) per data variable).execute() on the
             scheduler above, then zarr.consolidate_metadata(OUT) so xarray opens it without
             flags. rechunker's max_mem is per task, so 2 workers may hold 2 x MAX_MEM in its
             model; run.sh runs it on the "auto" LocalCluster (workers of MAX_MEM / 2 cannot hold
             a task of MAX_MEM; in the 40-file trial it failed there). rechunker 0.5.4 runs on
             zarr-python 2 only: Zarr format 2.

A line of JSON with the in-process phase times goes to stdout.
"""

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import parse_chunks, read_list  # noqa: E402

T0 = time.perf_counter()
warnings.filterwarnings("ignore", category=FutureWarning)

# netCDF encoding keys that do not apply to Zarr (xarray drops them or refuses them)
NC_KEYS = ("zlib", "shuffle", "complevel", "fletcher32", "contiguous", "chunksizes", "source",
           "original_shape", "compression", "szip_coding", "szip_pixels_per_block", "blosc_shuffle",
           "preferred_chunks", "chunks", "endian", "least_significant_digit", "significant_digits",
           "quantize_mode")


def parse_bytes(s):
    import dask.utils

    return int(dask.utils.parse_bytes(s))


def clean_encoding(ds):
    for v in ds.variables.values():
        for k in NC_KEYS:
            v.encoding.pop(k, None)
    return ds


from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402


class FileCachePlugin(WorkerPlugin):
    """A dask WorkerPlugin: xarray's file_cache_maxsize on every worker, restarted ones too."""

    def __init__(self, size):
        self.size = size

    def setup(self, worker):
        import xarray as xr

        xr.set_options(file_cache_maxsize=self.size)


def start_scheduler(args):
    """(client, cluster, info): a LocalCluster within MAX_MEM, or dask's threads."""
    import dask

    info = {"scheduler": args.scheduler, "workers": args.workers, "file_cache_maxsize": args.file_cache or 128,
            "engine": args.engine or "netcdf4 (xarray's default)"}
    if args.file_cache:
        import xarray as xr

        xr.set_options(file_cache_maxsize=args.file_cache)
    if args.scheduler == "distributed":
        from dask.distributed import Client, LocalCluster

        per_worker = parse_bytes(args.max_mem) // args.workers if args.worker_memory == "budget" else "auto"
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               memory_limit=per_worker, dashboard_address=None)
        client = Client(cluster)
        if args.file_cache:
            client.register_plugin(FileCachePlugin(args.file_cache))
        info["worker_memory"] = args.worker_memory
        info["memory_limit_per_worker"] = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
        return client, cluster, info
    dask.config.set(scheduler="threads", num_workers=args.workers)
    return None, None, info


def stop_scheduler(client, cluster):
    if client is not None:
        client.close()
        cluster.close()


def open_inputs(args):
    """What both peers start with: the scheduler, then xr.open_mfdataset of the files with their
    encodings cleaned. Returns files, chunks, client, cluster, info, dataset and the two times
    (setup done, dataset open)."""
    import xarray as xr

    files = read_list(args.list)
    chunks = parse_chunks(args.chunks)
    client, cluster, info = start_scheduler(args)
    t_setup = time.perf_counter()
    ds = xr.open_mfdataset(files, parallel=True, combine="by_coords", engine=args.engine)
    t_open = time.perf_counter()
    return files, chunks, client, cluster, info, clean_encoding(ds), t_setup, t_open


def run_xarray_dask(args):
    import dask
    import zarr

    files, chunks, client, cluster, info, ds, t_setup, t_open = open_inputs(args)
    ds = ds.chunk(chunks)
    encoding = {name: {"compressors": [zarr.codecs.ZstdCodec(level=1)]} for name in ds.data_vars}
    ds.to_zarr(args.out, mode="w", consolidated=True, encoding=encoding)
    t_write = time.perf_counter()
    info["dask_rechunk_method_config"] = dask.config.get("array.rechunk.method", None)
    stop_scheduler(client, cluster)
    report(args, files, {"import_and_setup_s": t_setup - T0, "open_mfdataset_s": t_open - t_setup,
                         "chunk_and_to_zarr_s": t_write - t_open, "teardown_s": time.perf_counter() - t_write},
           info)


def run_rechunker(args):
    import dask
    import numcodecs
    import zarr
    from rechunker import rechunk

    files, chunks, client, cluster, info, ds, t_setup, t_open = open_inputs(args)
    options = {name: {"compressor": numcodecs.Zstd(level=1)} for name in ds.data_vars}
    plan = rechunk(ds, chunks, max_mem=args.max_mem, target_store=args.out, temp_store=args.temp,
                   target_options=options)
    t_plan = time.perf_counter()
    if client is None:
        plan.execute(num_workers=args.workers)
    else:
        plan.execute()
    t_exec = time.perf_counter()
    zarr.consolidate_metadata(args.out)
    stop_scheduler(client, cluster)
    info.update({"plan": repr(plan)[:2000], "dask": dask.__version__})
    report(args, files, {"import_and_setup_s": t_setup - T0, "open_mfdataset_s": t_open - t_setup,
                         "plan_s": t_plan - t_open, "execute_s": t_exec - t_plan,
                         "teardown_s": time.perf_counter() - t_exec}, info)


def report(args, files, phases, extra):
    doc = {"tool": args.mode, "files": len(files), "phases": phases,
           "total_in_process_s": time.perf_counter() - T0, **extra}
    print(json.dumps(doc), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["xarray-dask", "rechunker"])
    ap.add_argument("--list", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--temp")
    ap.add_argument("--chunks", required=True)
    ap.add_argument("--max-mem", required=True)
    ap.add_argument("--scheduler", choices=["distributed", "threads"], default="distributed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engine", choices=["netcdf4", "h5netcdf"], default=None,
                    help="open_mfdataset's engine (default: xarray's, netcdf4 for these files)")
    ap.add_argument("--file-cache", type=int, default=0,
                    help="xarray's file_cache_maxsize in the client and every worker (0: xarray's default, 128)")
    ap.add_argument("--worker-memory", choices=["budget", "auto"], default="budget",
                    help="distributed: each worker's memory_limit, MAX_MEM / WORKERS or dask's 'auto'")
    args = ap.parse_args()
    if args.mode == "xarray-dask":
        run_xarray_dask(args)
    else:
        if not args.temp:
            ap.error("rechunker needs --temp")
        run_rechunker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
