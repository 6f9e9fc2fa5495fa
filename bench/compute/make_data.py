#!/usr/bin/env python3
"""Write the compute benchmark's input: a Zarr group of two daily wind-like fields.

    make_data.py OUT.zarr [--shape 1460,360,720] [--chunks 20,360,720] [--force]

Group (Zarr format 2, so every tool reads the same store): `u` and `v`, float32
(time, lat, lon), chunks --chunks, numcodecs Zstd level 1, no fill value; 1-d coordinates
`time` (float64 "days since 2000-01-01", calendar "standard": daily, so the monthly
climatology has 12 groups), `lat`, `lon` (float32). With the default shape each variable is
1.51 GB decoded (3.0 GB in all), 73 chunks of 20.7 MB.

Values: a seasonal cycle, a zonal pattern and noise that is smooth in time (AR(1) per
point, so the chunks are not independent white noise), rounded to 1/100; deterministic
(fixed seed). No NaN: every tool's mean is the same mean (cubed's does not skip NaN).
A marker file beside the store (OUT.zarr.complete.json) records the parameters; a second
run with the same ones returns at once. Memory: a few chunks.
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

PARAMS_VERSION = 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--shape", default="1460,360,720")
    ap.add_argument("--chunks", default="20,360,720")
    ap.add_argument("--seed", type=int, default=20000101)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    chunks = tuple(int(v) for v in args.chunks.split(","))
    if len(shape) != 3 or len(chunks) != 3:
        sys.exit("make_data: --shape and --chunks need three values (time, lat, lon)")
    params = json.loads(json.dumps({"version": PARAMS_VERSION, "shape": shape, "chunks": chunks,
                                    "seed": args.seed}))
    marker = args.out.rstrip("/") + ".complete.json"
    if not args.force and os.path.isdir(args.out) and os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == params:
                return 0
    if os.path.exists(marker):
        os.remove(marker)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    nt, nlat, nlon = shape
    root = zarr.open_group(args.out, mode="w", zarr_format=2)
    root.attrs["title"] = "chunkmill compute benchmark input"
    lat = np.linspace(89.75, -89.75, nlat).astype(np.float32)
    lon = np.linspace(0.25, 359.75, nlon).astype(np.float32)
    days = np.arange(nt, dtype=np.float64)

    def coord(name, values, attrs):
        a = root.create_array(name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
                              compressors=numcodecs.Zstd(level=1), fill_value=None,
                              attributes={"_ARRAY_DIMENSIONS": [name], **attrs})
        a[:] = values

    coord("time", days, {"units": "days since 2000-01-01", "calendar": "standard",
                         "standard_name": "time"})
    coord("lat", lat, {"units": "degrees_north", "standard_name": "latitude"})
    coord("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})
    arrays = {}
    for name, units in (("u", "m s-1"), ("v", "m s-1")):
        arrays[name] = root.create_array(
            name, shape=shape, chunks=chunks, dtype="float32", compressors=numcodecs.Zstd(level=1),
            fill_value=None, attributes={"_ARRAY_DIMENSIONS": ["time", "lat", "lon"], "units": units})
    rng = np.random.default_rng(args.seed)
    la = np.deg2rad(lat)[:, None]
    lo = np.deg2rad(lon)[None, :]
    state = {n: rng.normal(0.0, 1.0, (nlat, nlon)) for n in arrays}
    alpha = np.exp(-1.0 / 5.0)  # 5-day memory
    for t0_ in range(0, nt, chunks[0]):
        n = min(chunks[0], nt - t0_)
        for name, a in arrays.items():
            block = np.empty((n, nlat, nlon), dtype=np.float32)
            phase = 0.0 if name == "u" else np.pi / 3
            for k in range(n):
                t = t0_ + k
                state[name] = alpha * state[name] + np.sqrt(1 - alpha**2) * rng.normal(0.0, 1.0, (nlat, nlon))
                season = np.sin(2 * np.pi * t / 365.25 + phase)
                field = (10.0 * np.cos(2 * la) * (1.0 + 0.3 * season) + 4.0 * np.sin(lo + phase)
                         + 3.0 * state[name])
                block[k] = np.round(field, 2)
            a[t0_:t0_ + n] = block
    zarr.consolidate_metadata(args.out, zarr_format=2)
    with open(marker, "w") as f:
        json.dump(params, f)
    print(f"make_data: wrote {args.out} {shape} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
