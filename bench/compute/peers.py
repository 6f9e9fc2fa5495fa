#!/usr/bin/env python3
"""The Python peers of the compute benchmark; run.sh runs each as its own process.

    peers.py TOOL WORKLOAD --src IN.zarr --out OUT.zarr [--work DIR] [--max-mem 1GB] [--workers 2]

TOOL: dask (xarray + dask, threaded scheduler), cubed-threads, cubed-processes.
WORKLOAD (the two of pangeo-data/distributed-array-examples that issue 11 names):
  quadratic   uu = mean over time of u², vv = of v², uv = of u·v          (three 2-d outputs)
  anomalies   clim = monthly climatology of u (mean per calendar month), anom = u minus the
              climatology of its month                                    (12-step and full-size)

dask   xr.open_zarr(src, chunks={}) (the store's chunks), xarray arithmetic, `.mean("time")`,
       `u.groupby("time.month").mean()` and `u.groupby("time.month") - clim` (flox when it is
       installed, xarray's own groupby otherwise), one `to_zarr` of both/all outputs on dask's
       threaded scheduler with WORKERS threads, zstd level 1 like the others. No memory bound:
       dask has none.
cubed  cubed.Spec(work_dir, allowed_mem=MAX_MEM, executor threads | processes with
       max_workers=WORKERS); cubed.from_zarr of each array; quadratic with the array API
       (xp.mean); the climatology with cubed's groupby_reduction (the primitive flox runs on
       cubed: per-chunk sums and counts per month, combined in a tree, divided), the anomalies
       as a blockwise map of u and the climatology (each time chunk takes the months it needs
       from the 12-step array); all outputs stored in one cubed.store call (one plan).

Every output is a Zarr format 2 array at OUT.zarr/NAME with _ARRAY_DIMENSIONS, float32. One
line of JSON with the in-process phase times goes to stdout.
"""

import argparse
import json
import sys
import time

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def months_of(src):
    """Calendar month (1..12) of every time step, decoded the way xarray decodes them."""
    import xarray as xr

    with xr.open_zarr(src, consolidated=True) as ds:
        return ds["time"].dt.month.values


def run_dask(args) -> dict:
    import dask
    import xarray as xr

    ds = xr.open_zarr(args.src, chunks={}, consolidated=True)
    t_open = time.perf_counter()
    if args.workload == "quadratic":
        out = xr.Dataset({"uu": (ds.u * ds.u).mean("time"), "vv": (ds.v * ds.v).mean("time"),
                          "uv": (ds.u * ds.v).mean("time")})
    else:
        clim = ds.u.groupby("time.month").mean("time")
        anom = (ds.u.groupby("time.month") - clim).drop_vars("month")
        out = xr.Dataset({"clim": clim, "anom": anom})
    # The output codec of the other tools (zstd level 1): left alone, zarr-python's v2 default
    # (Blosc lz4 with shuffle) encodes about 4x faster than zstd-1, which is not what is compared.
    import numcodecs

    encoding = {name: {"compressors": [numcodecs.Zstd(level=1)]} for name in out.data_vars}
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        out.to_zarr(args.out, mode="w-", zarr_format=2, consolidated=True, encoding=encoding)
    return {"open_s": t_open - T0, "compute_and_write_s": time.perf_counter() - t_open}


def _month_sums(a, by, axis=None, intermediate_dtype=None, num_groups=None, **kwargs):
    """One chunk's per-month count and sum along `axis` (months are 0..num_groups-1)."""
    import numpy as np

    shape = list(a.shape)
    shape[axis] = num_groups
    n = np.zeros(shape, dtype=np.int64)
    total = np.zeros(shape, dtype=np.float64)
    for g in np.unique(by):
        sel = np.compress(by == g, a, axis=axis)
        index = [slice(None)] * a.ndim
        index[axis] = int(g)
        n[tuple(index)] = sel.shape[axis]
        total[tuple(index)] = sel.sum(axis=axis, dtype=np.float64)
    return {"n": n, "total": total}


def _combine_sums(a, dummy_axis=-1, **kwargs):
    """Partial states concatenated along the dummy axis (cubed's groupby_reduction adds it)
    are summed along it only: the group axis keeps its 12 months."""
    import numpy as np

    return {"n": np.sum(a["n"], axis=dummy_axis, keepdims=True),
            "total": np.sum(a["total"], axis=dummy_axis, keepdims=True)}


def _finish_mean(a, **kwargs):
    import numpy as np

    return (a["total"] / a["n"]).astype(np.float32)


def run_cubed(args, executor: str) -> dict:
    import cubed
    import cubed.array_api as xp
    import numcodecs
    import numpy as np
    import zarr
    from cubed.core.groupby import groupby_reduction
    from cubed.core.ops import map_blocks

    spec = cubed.Spec(work_dir=args.work, allowed_mem=args.max_mem, executor_name=executor,
                      executor_options={"max_workers": args.workers},
                      zarr_compressor={"name": "zstd", "configuration": {"level": 1, "checksum": False}})
    log(f"cubed {cubed.__version__}: {spec!r}")
    src = zarr.open_group(args.src, mode="r")
    root = zarr.open_group(args.out, mode="w-", zarr_format=2)
    lat, lon = src["lat"][:], src["lon"][:]

    def target(name, shape, chunks, dims):
        return root.create_array(name, shape=shape, chunks=chunks, dtype="float32",
                                 compressors=numcodecs.Zstd(level=1), fill_value=None,
                                 attributes={"_ARRAY_DIMENSIONS": dims})

    u = cubed.from_zarr(f"{args.src}/u", spec=spec)
    nt, nlat, nlon = u.shape
    if args.workload == "quadratic":
        v = cubed.from_zarr(f"{args.src}/v", spec=spec)
        outs = {"uu": xp.mean(u * u, axis=0), "vv": xp.mean(v * v, axis=0), "uv": xp.mean(u * v, axis=0)}
        targets = {k: target(k, (nlat, nlon), a.chunksize, ["lat", "lon"]) for k, a in outs.items()}
    else:
        months = months_of(args.src)
        by = cubed.from_array(months - 1, chunks=(u.chunks[0],), spec=spec)
        clim = groupby_reduction(u, by, func=_month_sums, combine_func=_combine_sums,
                                 aggregate_func=_finish_mean, axis=0,
                                 intermediate_dtype=[("n", np.int64), ("total", np.float64)],
                                 dtype=np.float32, num_groups=12)
        # The climatology is one 12-step block along time, beside each time chunk of u (blocks
        # broadcast): the chunk subtracts the climatology of each step's month.
        if clim.numblocks[0] != 1:
            sys.exit(f"peers: unexpected climatology chunks {clim.chunks}")
        month_index = cubed.from_array((months - 1).reshape(nt, 1, 1), chunks=(u.chunks[0], 1, 1), spec=spec)

        def subtract(block, c, m):
            return (block - c[m[:, 0, 0]]).astype(np.float32)

        anom = map_blocks(subtract, u, clim, month_index, dtype=np.float32)
        outs = {"clim": clim, "anom": anom}
        targets = {"clim": target("clim", clim.shape, clim.chunksize, ["month", "lat", "lon"]),
                   "anom": target("anom", u.shape, u.chunksize, ["time", "lat", "lon"])}
    # the coordinates, so that xarray opens the outputs like the other tools'
    for name, values in (("lat", lat), ("lon", lon)):
        a = root.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
                              fill_value=None, attributes={"_ARRAY_DIMENSIONS": [name]})
        a[:] = values
    t_plan = time.perf_counter()
    cubed.store(list(outs.values()), list(targets.values()))
    zarr.consolidate_metadata(args.out, zarr_format=2)
    return {"plan_s": t_plan - T0, "compute_and_write_s": time.perf_counter() - t_plan}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tool", choices=["dask", "cubed-threads", "cubed-processes"])
    ap.add_argument("workload", choices=["quadratic", "anomalies"])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--max-mem", default="1GB")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.tool == "dask":
        phases = run_dask(args)
    else:
        if not args.work:
            sys.exit("peers: cubed needs --work DIR")
        phases = run_cubed(args, "threads" if args.tool == "cubed-threads" else "processes")
    print(json.dumps({"tool": args.tool, "workload": args.workload, "phases": phases,
                      "total_in_process_s": time.perf_counter() - T0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
