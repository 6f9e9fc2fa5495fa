#!/usr/bin/env python3
"""Run one peer rechunker on the benchmark workload (one tool per process).

    peers.py TOOL SRC OUT WORK --chunks 8760,18,36 --max-mem 512MB --workers 2

TOOL is one of
  rechunker-dask    rechunker.rechunk(..., max_mem, executor="dask"), dask threaded
                    scheduler with WORKERS threads          (needs the zarr-2 venv)
  rechunker-python  rechunker.rechunk(..., max_mem, executor="python")
                                                            (needs the zarr-2 venv)
  dask              dask.array.from_zarr(src).rechunk(chunks) -> to_zarr, threaded
                    scheduler with WORKERS threads, dask's default config
                    (array.chunk-size 128 MiB, rechunk method "tasks": there is no
                    distributed client); dask has no memory budget knob
  cubed             cubed.from_zarr(src).rechunk(chunks) -> to_zarr with
                    Spec(allowed_mem=MAX_MEM, executor "threads", max_workers=WORKERS)
  tensorstore       TensorStore (C++): the source opened with its "zarr" driver, a new
                    "zarr3" array with the target chunks written from it in one
                    dst.write(src), WORKERS threads for codecs and file I/O, a chunk
                    cache of MAX_MEM; TensorStore has no memory budget of its own

Every tool but tensorstore writes a Zarr format-2 target at OUT with chunks CHUNKS and a
numcodecs Zstd(level=1) compressor (the source's own format and codec); its
intermediates (rechunker's temp store, cubed's work_dir) also use zstd level 1
and live under WORK. The caller measures the process (wall, peak RSS); this
script only runs the tool and prints what it planned.
"""

import argparse
import os
import sys
import time

TOOLS = ("rechunker-dask", "rechunker-python", "dask", "cubed", "tensorstore")


def log(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def run_rechunker(args, chunks, executor: str) -> None:
    import dask
    import numcodecs
    import rechunker
    import zarr

    src = zarr.open_array(args.src, mode="r")
    log(f"rechunker {rechunker.__version__}, zarr {zarr.__version__}, dask {dask.__version__}, source {src.shape} {src.chunks} {src.compressor}")
    zstd = numcodecs.Zstd(level=1)
    plan = rechunker.rechunk(
        src,
        target_chunks=chunks,
        max_mem=args.max_mem,
        target_store=args.out,
        target_options={"compressor": zstd},
        temp_store=os.path.join(args.work, "rechunker-temp.zarr"),
        temp_options={"compressor": zstd},
        executor=executor,
    )
    from rechunker.algorithm import rechunking_plan
    from dask.utils import parse_bytes

    read, inter, write = rechunking_plan(src.shape, src.chunks, chunks, src.dtype.itemsize, parse_bytes(args.max_mem))
    log(f"plan: read {read}, intermediate {inter}, write {write} (max_mem {parse_bytes(args.max_mem)} bytes)")
    if executor == "dask":
        plan.execute(scheduler="threads", num_workers=args.workers)
    else:
        plan.execute()


def run_dask(args, chunks) -> None:
    import dask
    import dask.array as da
    import numcodecs
    import zarr

    src = zarr.open_array(args.src, mode="r")
    x = da.from_zarr(src)
    y = x.rechunk(chunks)
    log(
        f"dask {dask.__version__}, zarr {zarr.__version__}: source {x.numblocks} blocks, "
        f"target {y.numblocks} blocks, graph {len(y.__dask_graph__())} tasks, "
        f"array.chunk-size {dask.config.get('array.chunk-size')}, scheduler threads x{args.workers}"
    )
    out = zarr.create_array(
        store=args.out,
        shape=src.shape,
        chunks=chunks,
        dtype=src.dtype,
        zarr_format=2,
        compressors=numcodecs.Zstd(level=1),
        filters=None,
        fill_value=src.fill_value,
        attributes=dict(src.attrs),
    )
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        da.to_zarr(y, out)


def run_cubed(args, chunks) -> None:
    import cubed
    import numcodecs
    import zarr

    spec = cubed.Spec(
        work_dir=args.work,
        allowed_mem=args.max_mem,
        executor_name="threads",
        executor_options={"max_workers": args.workers},
        zarr_compressor={"name": "zstd", "configuration": {"level": 1, "checksum": False}},
    )
    src = zarr.open_array(args.src, mode="r")
    x = cubed.from_zarr(args.src, spec=spec)
    y = x.rechunk(chunks)
    out = zarr.create_array(
        store=args.out,
        shape=src.shape,
        chunks=chunks,
        dtype=src.dtype,
        zarr_format=2,
        compressors=numcodecs.Zstd(level=1),
        filters=None,
        fill_value=src.fill_value,
        attributes=dict(src.attrs),
    )
    log(f"cubed {cubed.__version__}, zarr {zarr.__version__}: {spec!r}")
    try:  # informational only; these are private fields and may change
        fp = y.plan()
        stats = {k: getattr(fp, "_" + k, None) for k in (
            "num_stages", "num_primitive_ops", "num_tasks", "max_projected_mem",
            "total_intermediate_nbytes", "total_nbytes_written")}
        log(f"rechunk plan: {stats}")
    except Exception as e:  # noqa: BLE001
        log(f"(no plan stats: {e})")
    cubed.to_zarr(y, out)


def run_tensorstore(args, chunks) -> None:
    import importlib.metadata

    import tensorstore as ts

    def parse_bytes(text: str) -> int:
        units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
        for unit, scale in units.items():
            if text.upper().endswith(unit):
                return int(float(text[: -len(unit)]) * scale)
        return int(text)

    ctx = ts.Context({
        "cache_pool": {"total_bytes_limit": parse_bytes(args.max_mem)},
        "data_copy_concurrency": {"limit": args.workers},
        "file_io_concurrency": {"limit": args.workers},
    })
    src = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": args.src}},
                  read=True, context=ctx).result()
    dst = ts.open({
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": args.out},
        "metadata": {
            "shape": list(src.shape),
            "data_type": "float32" if src.dtype.numpy_dtype.str == "<f4" else src.dtype.name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                       {"name": "zstd", "configuration": {"level": 1, "checksum": False}}],
        },
        "create": True, "delete_existing": True,
    }, context=ctx).result()
    log(f"tensorstore {importlib.metadata.version('tensorstore')}: source {src.shape} chunks {src.chunk_layout.read_chunk.shape}, "
        f"target chunks {chunks}, cache {args.max_mem}, {args.workers} threads")
    dst.write(src).result()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tool", choices=TOOLS)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("work", help="directory for intermediates (created; caller deletes it)")
    ap.add_argument("--chunks", default="8760,18,36")
    ap.add_argument("--max-mem", default="512MB")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    chunks = tuple(int(v) for v in args.chunks.split(","))
    os.makedirs(args.work, exist_ok=True)

    t0 = time.perf_counter()
    if args.tool == "rechunker-dask":
        run_rechunker(args, chunks, "dask")
    elif args.tool == "rechunker-python":
        run_rechunker(args, chunks, "python")
    elif args.tool == "dask":
        run_dask(args, chunks)
    elif args.tool == "cubed":
        run_cubed(args, chunks)
    elif args.tool == "tensorstore":
        run_tensorstore(args, chunks)
    log(f"{args.tool}: done in {time.perf_counter() - t0:.1f} s (in-process, imports excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
