#!/usr/bin/env python3
"""Write the NetCDF-4 inputs of the virtualize benchmark (netCDF4-python, deterministic).

    make_data.py DIR [--files 365] [--no-big]

DIR/day_000.nc .. day_364.nc, one per day of 2020 (files = 365 by default):
  dimensions time=24, lat=180, lon=360 (all fixed size)
  time(time)     float64, "hours since 2020-01-01 00:00:00", calendar "standard", contiguous
  lat(lat), lon(lon)  float32, contiguous
  air(time,lat,lon)   float32, chunks (1,180,360), zlib level 4 + shuffle, _FillValue -9999
  uwnd(time,lat,lon)  float32, chunks (24,90,90), zlib level 4 (no shuffle), _FillValue -9999
  (per file 24 + 8 = 32 chunks; 365 files: 11 680 chunk references)
DIR/chunks50k.nc: one variable v(y=3200, x=4000) float32, chunks (16,16) -> a 200 x 250 grid of
  50 000 chunks, zlib level 4 + shuffle (each chunk stays over kerchunk's 500-byte inline
  threshold, so every peer has to list it rather than inline it).

Values: a smooth temperature-like (air) and wind-like (uwnd) field plus noise from a
generator seeded by the day, rounded to 1/100 (as packed archive data is), so the files are
identical on every run. A file that already exists with the expected stamp attribute is
kept, so re-running costs nothing; --force rewrites everything.
"""

import argparse
import os
import sys
import time

import netCDF4
import numpy as np

STAMP = "chunkmill bench/virtualize v1"
NT, NLAT, NLON = 24, 180, 360


def fields(day: int):
    rng = np.random.default_rng(20200101 + day)
    lat = np.linspace(89.5, -89.5, NLAT, dtype=np.float64)
    lon = np.linspace(0.5, 359.5, NLON, dtype=np.float64)
    hours = 24 * day + np.arange(NT, dtype=np.float64)
    t = hours[:, None, None]
    la = np.deg2rad(lat)[None, :, None]
    lo = np.deg2rad(lon)[None, None, :]
    air = (280.0 + 15.0 * np.cos(la) + 8.0 * np.sin(2 * np.pi * t / 8784.0)
           + 3.0 * np.sin(2 * np.pi * t / 24.0) * np.cos(lo)
           + rng.normal(0.0, 1.0, (NT, NLAT, NLON)))
    uwnd = (10.0 * np.sin(2 * la) * np.cos(lo - 2 * np.pi * t / 240.0)
            + rng.normal(0.0, 2.0, (NT, NLAT, NLON)))
    air = np.round(air, 2).astype(np.float32)
    uwnd = np.round(uwnd, 2).astype(np.float32)
    return lat.astype(np.float32), lon.astype(np.float32), hours, air, uwnd


def is_done(path: str) -> bool:
    if not os.path.exists(path):
        return False
    try:
        with netCDF4.Dataset(path) as ds:
            return getattr(ds, "bench_stamp", None) == STAMP
    except OSError:
        return False


def write_day(path: str, day: int) -> None:
    lat, lon, hours, air, uwnd = fields(day)
    tmp = path + ".tmp"
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.Conventions = "CF-1.8"
        ds.title = f"chunkmill virtualize benchmark, day {day:03d} of 2020"
        ds.bench_stamp = STAMP
        ds.createDimension("time", NT)
        ds.createDimension("lat", NLAT)
        ds.createDimension("lon", NLON)
        vt = ds.createVariable("time", "f8", ("time",))
        vt.units = "hours since 2020-01-01 00:00:00"
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
        va.long_name = "air temperature at 2 m"
        va[:] = air
        vu = ds.createVariable("uwnd", "f4", ("time", "lat", "lon"), chunksizes=(NT, 90, 90),
                               zlib=True, complevel=4, shuffle=False, fill_value=np.float32(-9999.0))
        vu.units = "m s-1"
        vu.standard_name = "eastward_wind"
        vu[:] = uwnd
    os.replace(tmp, path)


def write_big(path: str) -> None:
    ny, nx, c = 3200, 4000, 16
    rng = np.random.default_rng(50000)
    y = np.linspace(0, 4 * np.pi, ny)[:, None]
    x = np.linspace(0, 6 * np.pi, nx)[None, :]
    v = np.round(np.sin(y) * np.cos(x) * 10 + rng.normal(0, 1, (ny, nx)), 2).astype(np.float32)
    tmp = path + ".tmp"
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as ds:
        ds.bench_stamp = STAMP
        ds.title = "chunkmill virtualize benchmark: a variable of 50 000 chunks"
        ds.createDimension("y", ny)
        ds.createDimension("x", nx)
        var = ds.createVariable("v", "f4", ("y", "x"), chunksizes=(c, c), zlib=True, complevel=4, shuffle=True)
        var.units = "1"
        var[:] = v
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=365)
    ap.add_argument("--no-big", action="store_true", help="skip chunks50k.nc")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    wrote = 0
    for day in range(args.files):
        path = os.path.join(args.dir, f"day_{day:03d}.nc")
        if not args.force and is_done(path):
            continue
        write_day(path, day)
        wrote += 1
        if wrote % 50 == 0:
            print(f"make_data: {wrote} files written ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    big = os.path.join(args.dir, "chunks50k.nc")
    if not args.no_big and (args.force or not is_done(big)):
        write_big(big)
        wrote += 1
    if wrote:
        print(f"make_data: wrote {wrote} file(s) into {args.dir} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
