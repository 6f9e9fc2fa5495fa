#!/usr/bin/env python3
"""Write the 10 000-file collection of the virtualize benchmark (netCDF4-python, deterministic).

    make_data_10k.py DIR [--files 10000] [--workers 1] [--force]

DIR/d_00000.nc .. d_09999.nc: one file per day from 1990-01-01, 6-hourly, on the 2.5° grid of
the NCEP/NCAR reanalysis (the shape of many real daily archives):
  dimensions time=4, lat=73, lon=144 (all fixed size)
  time(time)          float64, "hours since 1990-01-01 00:00:00", calendar "standard"
  lat(lat), lon(lon)  float32, contiguous
  air(time,lat,lon)   float32, chunks (1,73,144), zlib level 4 + shuffle, _FillValue -9999
  uwnd(time,lat,lon)  float32, chunks (4,37,72), zlib level 4, _FillValue -9999
  (per file 4 + 4 = 8 chunks; 10 000 files: 80 000 chunk references; about 190 KB a file)

Values: smooth fields plus noise seeded by the day, rounded to 1/100, so the files are the
same on every run. DIR/.complete records the parameters once every file is written: a second
run with the same parameters checks nothing else and returns at once (--force rewrites).
Files are written under a temporary name and renamed, so a killed run leaves no partial file
that a later run would take for a finished one.
"""

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context

import netCDF4
import numpy as np

STAMP = "chunkmill bench/virtualize 10k v1"
NT, NLAT, NLON = 4, 73, 144
UWND_CHUNKS = (NT, 37, 72)


def fields(day: int):
    rng = np.random.default_rng(19900101 + day)
    lat = np.linspace(90.0, -90.0, NLAT, dtype=np.float64)
    lon = np.linspace(0.0, 357.5, NLON, dtype=np.float64)
    hours = 24.0 * day + 6.0 * np.arange(NT, dtype=np.float64)
    t = hours[:, None, None]
    la = np.deg2rad(lat)[None, :, None]
    lo = np.deg2rad(lon)[None, None, :]
    air = (280.0 + 15.0 * np.cos(la) + 8.0 * np.sin(2 * np.pi * t / 8766.0)
           + 3.0 * np.sin(2 * np.pi * t / 24.0) * np.cos(lo)
           + rng.normal(0.0, 1.0, (NT, NLAT, NLON)))
    uwnd = (10.0 * np.sin(2 * la) * np.cos(lo - 2 * np.pi * t / 240.0)
            + rng.normal(0.0, 2.0, (NT, NLAT, NLON)))
    return (lat.astype(np.float32), lon.astype(np.float32), hours,
            np.round(air, 2).astype(np.float32), np.round(uwnd, 2).astype(np.float32))


def path_of(directory: str, day: int) -> str:
    return os.path.join(directory, f"d_{day:05d}.nc")


def write_day(args) -> None:
    directory, day = args
    path = path_of(directory, day)
    lat, lon, hours, air, uwnd = fields(day)
    tmp = path + ".tmp"
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.8"
        ds.title = f"chunkmill virtualize benchmark, 10 000-file collection, day {day}"
        ds.bench_stamp = STAMP
        ds.createDimension("time", NT)
        ds.createDimension("lat", NLAT)
        ds.createDimension("lon", NLON)
        vt = ds.createVariable("time", "f8", ("time",))
        vt.units = "hours since 1990-01-01 00:00:00"
        vt.calendar = "standard"
        vt.standard_name = "time"
        vt.axis = "T"
        vt[:] = hours
        vla = ds.createVariable("lat", "f4", ("lat",))
        vla.units = "degrees_north"
        vla.standard_name = "latitude"
        vla[:] = lat
        vlo = ds.createVariable("lon", "f4", ("lon",))
        vlo.units = "degrees_east"
        vlo.standard_name = "longitude"
        vlo[:] = lon
        va = ds.createVariable("air", "f4", ("time", "lat", "lon"), chunksizes=(1, NLAT, NLON),
                               zlib=True, complevel=4, shuffle=True, fill_value=np.float32(-9999.0))
        va.units = "K"
        va.standard_name = "air_temperature"
        va[:] = air
        vu = ds.createVariable("uwnd", "f4", ("time", "lat", "lon"), chunksizes=UWND_CHUNKS,
                               zlib=True, complevel=4, shuffle=False, fill_value=np.float32(-9999.0))
        vu.units = "m s-1"
        vu.standard_name = "eastward_wind"
        vu[:] = uwnd
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    want = {"stamp": STAMP, "files": args.files}
    marker = os.path.join(args.dir, ".complete")
    if not args.force and os.path.exists(marker):
        try:
            with open(marker) as f:
                if json.load(f) == want:
                    return 0
        except (OSError, ValueError):
            pass
    # Written one by one and renamed into place: a file present under its final name is whole.
    todo = [(args.dir, d) for d in range(args.files)
            if args.force or not os.path.exists(path_of(args.dir, d))]
    t0 = time.perf_counter()
    print(f"make_data_10k: writing {len(todo)} files into {args.dir} ...", file=sys.stderr)
    if args.workers > 1:
        with get_context("fork").Pool(args.workers) as pool:
            for i, _ in enumerate(pool.imap_unordered(write_day, todo, chunksize=64), 1):
                if i % 1000 == 0:
                    print(f"make_data_10k: {i} files ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    else:
        for i, job in enumerate(todo, 1):
            write_day(job)
            if i % 1000 == 0:
                print(f"make_data_10k: {i} files ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    with open(marker + ".tmp", "w") as f:
        json.dump(want, f)
    os.replace(marker + ".tmp", marker)
    print(f"make_data_10k: {len(todo)} files in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
