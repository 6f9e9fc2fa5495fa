#!/usr/bin/env python3
"""Write the rechunk benchmark's source array, one source chunk at a time.

A float32 array of shape (8760, 180, 360) (one year of hourly 1-degree fields,
2.27 GB uncompressed), chunks (24, 180, 360) (one day per chunk), zstd level 1.

Values look like a 2 m temperature field (kelvin):

    280 + 15 cos(lat) + 8 sin(2 pi t / 8760) + 3 sin(2 pi t / 24) cos(lon) + noise

where the noise is smooth in space (bilinear interpolation of a 10 x 19 grid of
nodes, about 20 degrees apart) and in time (an AR(1) process per node with a
48-hour e-folding time, amplitude 2 K). Full float32 precision, so the low
mantissa bits are as noisy as in real analysis output: zstd level 1 gets about
1.3x, like real float32 fields, instead of the 100x of a constant or the 1.0x of
white noise.

The store is written as Zarr format 2 with a numcodecs Zstd(level=1) compressor
because rechunker 0.5.4 only runs on zarr-python 2 (it pins zarr<3), and every
tool in the benchmark must read the very same store. zarr-python 3, dask, cubed
and chunkmill all read format 2. The array sits at the root of the store and has
`_ARRAY_DIMENSIONS` = [time, lat, lon].

Deterministic (fixed seed). Skips the work when a complete store with the same
parameters already exists (a marker file beside the store records them).
Memory: a few chunks (tens of MB), whatever the array size.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numcodecs
import numpy as np
import zarr

PARAMS_VERSION = 1  # bump when the values change


def interp_matrix(n_out: int, n_nodes: int) -> np.ndarray:
    """(n_out, n_nodes) linear interpolation weights from evenly spaced nodes."""
    x = np.linspace(0.0, n_nodes - 1, n_out)
    i = np.minimum(np.floor(x).astype(np.int64), n_nodes - 2)
    f = x - i
    w = np.zeros((n_out, n_nodes))
    w[np.arange(n_out), i] = 1.0 - f
    w[np.arange(n_out), i + 1] = f
    return w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="path of the Zarr store to write (e.g. bench/data/src.zarr)")
    ap.add_argument("--shape", default="8760,180,360")
    ap.add_argument("--chunks", default="24,180,360")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--force", action="store_true", help="rewrite even if the store is complete")
    args = ap.parse_args()

    shape = tuple(int(v) for v in args.shape.split(","))
    chunks = tuple(int(v) for v in args.chunks.split(","))
    if len(shape) != 3 or len(chunks) != 3:
        sys.exit("make_data: --shape and --chunks need three values (time, lat, lon)")
    nt, nlat, nlon = shape
    params = {
        "version": PARAMS_VERSION,
        "shape": shape,
        "chunks": chunks,
        "seed": args.seed,
        "zarr_format": 2,
        "compressor": "zstd:1",
        "dtype": "float32",
    }
    params = json.loads(json.dumps(params))  # tuples -> lists, as read back
    marker = args.out.rstrip("/") + ".complete.json"

    if not args.force and os.path.exists(marker) and os.path.isdir(args.out):
        with open(marker) as f:
            done = json.load(f)
        if done.get("params") == params:
            print(f"make_data: {args.out} already complete ({done['stored_bytes'] / 1e9:.2f} GB stored), skipping")
            return 0

    if os.path.exists(marker):
        os.remove(marker)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    arr = zarr.create_array(
        store=args.out,
        shape=shape,
        chunks=chunks,
        dtype="float32",
        zarr_format=2,
        compressors=numcodecs.Zstd(level=1),
        filters=None,
        fill_value=np.nan,
        attributes={
            "_ARRAY_DIMENSIONS": ["time", "lat", "lon"],
            "units": "K",
            "long_name": "synthetic 2 m temperature (chunkmill rechunk benchmark)",
        },
    )

    lat = np.deg2rad(np.linspace(-89.5, 89.5, nlat))
    lon = np.deg2rad(np.linspace(-179.5, 179.5, nlon))
    coslat = 15.0 * np.cos(lat)[None, :, None]
    coslon = np.cos(lon)[None, None, :]

    # Smooth noise: AR(1) in time on a coarse grid of nodes, bilinear in space.
    n_lat_nodes, n_lon_nodes = 10, 19
    w_lat = interp_matrix(nlat, n_lat_nodes)
    w_lon = interp_matrix(nlon, n_lon_nodes)
    rng = np.random.default_rng(args.seed)
    phi = np.exp(-1.0 / 48.0)
    innov = np.sqrt(1.0 - phi * phi)
    state = rng.standard_normal((n_lat_nodes, n_lon_nodes))

    t0 = time.perf_counter()
    ct = chunks[0]
    n_chunks = -(-nt // ct)
    for c in range(n_chunks):
        a, b = c * ct, min(nt, (c + 1) * ct)
        steps = b - a
        nodes = np.empty((steps, n_lat_nodes, n_lon_nodes))
        for k in range(steps):
            state = phi * state + innov * rng.standard_normal(state.shape)
            nodes[k] = state
        noise = np.einsum("ij,tjk,lk->til", w_lat, nodes, w_lon, optimize=True)
        t = np.arange(a, b, dtype=np.float64)[:, None, None]
        block = (
            280.0
            + coslat
            + 8.0 * np.sin(2 * np.pi * t / 8760.0)
            + 3.0 * np.sin(2 * np.pi * t / 24.0) * coslon
            + 2.0 * noise
        ).astype(np.float32)
        arr[a:b] = block
        if (c + 1) % 50 == 0 or c + 1 == n_chunks:
            el = time.perf_counter() - t0
            print(f"make_data: {c + 1}/{n_chunks} chunks written ({el:.1f} s)", flush=True)

    stored = 0
    for root, _dirs, files in os.walk(args.out):
        for name in files:
            stored += os.path.getsize(os.path.join(root, name))
    raw = int(np.prod(shape)) * 4
    with open(marker, "w") as f:
        json.dump({"params": params, "stored_bytes": stored, "raw_bytes": raw}, f, indent=1)
    print(
        f"make_data: wrote {args.out}: shape {shape}, chunks {chunks}, float32, zstd:1, "
        f"{raw / 1e9:.2f} GB raw, {stored / 1e9:.2f} GB stored (ratio {raw / stored:.2f}), "
        f"{time.perf_counter() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
