#!/usr/bin/env python3
"""Writes the file collections that chunkmill-manifest's integration tests virtualize.

    python make_collections.py OUTDIR            # the test collections (a few hundred KB)
    python make_collections.py --daily N OUTDIR  # N daily NetCDF-4 files for the timing example

Every file is written by netCDF4-python (netCDF-C) or h5py (libhdf5), never by our code.
``INDEX.json`` lists the collections (paths relative to OUTDIR). Deterministic.
"""

import json
import os
import shutil
import sys

import h5py
import netCDF4
import numpy as np

NLAT, NLON = 10, 12


def rng(seed):
    return np.random.default_rng(seed)


def nc4_file(path, t0, nt, *, seed=0, air_dtype="f4", sst_scale=0.01, air_chunks=(2, 5, 6),
             time_units="days since 2000-01-01 00:00:00", history="file"):
    """A CF NetCDF-4 file along an unlimited time: packing, fill values, zlib+shuffle,
    fletcher32, big-endian, never-written chunks, a scalar grid-mapping variable."""
    r = rng(seed)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.title = "chunkmill-manifest test collection"
        d.Conventions = "CF-1.8"
        d.history = history
        d.createDimension("time", None)
        d.createDimension("lat", NLAT)
        d.createDimension("lon", NLON)
        d.createDimension("nv", 2)
        t = d.createVariable("time", "f8", ("time",))
        t.units = time_units
        t.calendar = "standard"
        t.standard_name = "time"
        tb = d.createVariable("time_bnds", "f8", ("time", "nv"), chunksizes=(2, 2))
        t.bounds = "time_bnds"
        lat = d.createVariable("lat", "f4", ("lat",))
        lat.units = "degrees_north"
        lon = d.createVariable("lon", "f4", ("lon",))
        lon.units = "degrees_east"
        lat[:] = np.linspace(85.5, -85.5, NLAT)  # descending
        lon[:] = np.arange(NLON) * 30.0
        times = t0 + np.arange(nt, dtype="f8")
        t[:] = times
        tb[:] = np.stack([times, times + 1], axis=1)

        air = d.createVariable("air", air_dtype, ("time", "lat", "lon"), zlib=True, shuffle=True,
                               complevel=4, chunksizes=air_chunks, fill_value=np.nan)
        air.units = "K"
        air.long_name = "air temperature"
        air.grid_mapping = "crs"
        a = (250 + 30 * r.random((nt, NLAT, NLON))).astype(air_dtype)
        a[0, 0, :3] = np.nan
        air[:] = a

        sst = d.createVariable("sst", "i2", ("time", "lat", "lon"), zlib=True, shuffle=True,
                               chunksizes=(1, NLAT, NLON), fill_value=np.int16(-32767))
        sst.scale_factor = np.float32(sst_scale)
        sst.add_offset = np.float32(273.15)
        sst.units = "K"
        sst.missing_value = np.int16(-32767)
        s = np.ma.masked_array(271 + 30 * r.random((nt, NLAT, NLON)))
        s[:, :2, :2] = np.ma.masked
        sst[:] = s

        uwnd = d.createVariable("uwnd", ">f8", ("time", "lat", "lon"), zlib=True, shuffle=False,
                                complevel=1, chunksizes=(2, NLAT, NLON), endian="big")
        uwnd.units = "m s-1"
        uwnd[:] = r.normal(size=(nt, NLAT, NLON))

        rh = d.createVariable("rh", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True,
                              fletcher32=True, chunksizes=(2, NLAT, NLON))
        rh.units = "%"
        rh[:] = (100 * r.random((nt, NLAT, NLON))).astype("f4")

        sparse = d.createVariable("sparse", "f4", ("time", "lat", "lon"), chunksizes=(1, 5, 6),
                                  fill_value=np.float32(-1.0))
        sparse.comment = "only the first chunk of the first time step is written"
        sparse[0, :5, :6] = np.float32(7.5)

        crs = d.createVariable("crs", "i4", ())
        crs.grid_mapping_name = "latitude_longitude"
        crs[...] = 0


def nc3_file(path, t0, nt, fmt, seed=0):
    """A NetCDF-3 file: time is the record dimension, record and fixed-size variables."""
    r = rng(seed)
    with netCDF4.Dataset(path, "w", format=fmt) as d:
        d.title = "chunkmill-manifest NetCDF-3"
        d.createDimension("time", None)
        d.createDimension("lat", NLAT)
        d.createDimension("lon", NLON)
        t = d.createVariable("time", "f8", ("time",))
        t.units = "hours since 1990-01-01"
        t.calendar = "gregorian"
        lat = d.createVariable("lat", "f4", ("lat",))
        lat[:] = np.linspace(80, -80, NLAT)
        lon = d.createVariable("lon", "f4", ("lon",))
        lon[:] = np.arange(NLON) * 30.0
        elev = d.createVariable("elev", "i2", ("lat", "lon"))
        elev.scale_factor = 0.5
        elev[:] = np.arange(NLAT * NLON).reshape(NLAT, NLON)
        air = d.createVariable("air", "f4", ("time", "lat", "lon"), fill_value=np.float32(-999.0))
        air.units = "K"
        pr = d.createVariable("pr", "i2", ("time", "lat", "lon"))
        pr.scale_factor = 0.1
        pr.add_offset = 1.0
        t[:] = (t0 + np.arange(nt)) * 6.0
        a = (250 + 30 * r.random((nt, NLAT, NLON))).astype("f4")
        a[0, 0, 0] = -999.0  # masked by _FillValue
        air[:] = a
        pr[:] = r.random((nt, NLAT, NLON)) * 100


def stack_file(path, member, seed):
    r = rng(seed)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as d:
        d.title = "ensemble"
        d.createDimension("lat", NLAT)
        d.createDimension("lon", NLON)
        lat = d.createVariable("lat", "f4", ("lat",))
        lat[:] = np.linspace(85.5, -85.5, NLAT)
        lon = d.createVariable("lon", "f4", ("lon",))
        lon[:] = np.arange(NLON) * 30.0
        tas = d.createVariable("tas", "f4", ("lat", "lon"), zlib=True, chunksizes=(5, 6))
        tas.units = "K"
        tas[:] = (280 + r.random((NLAT, NLON))).astype("f4")


def h5_layouts(path):
    """h5py: compact, contiguous big-endian, fletcher32, never-written chunks, a scalar, and a
    chunk written with a filter mask (deflate skipped) that must be re-encoded."""
    with h5py.File(path, "w", libver="earliest") as f:
        x = f.create_dataset("x", data=np.arange(6, dtype="f8"))
        x.make_scale("x")
        y = f.create_dataset("y", data=np.arange(4, dtype="i4"))
        y.make_scale("y")

        def attach(ds):
            ds.dims[0].attach_scale(y)
            ds.dims[1].attach_scale(x)
            return ds

        space = h5py.h5s.create_simple((4, 6))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        cid = h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I16LE, space, dcpl=dcpl)
        compact = h5py.Dataset(cid)
        compact[...] = np.arange(24, dtype="i2").reshape(4, 6)
        attach(compact)

        attach(f.create_dataset("big_endian", data=np.arange(24, dtype=">i4").reshape(4, 6)))
        attach(f.create_dataset("fletcher", data=np.linspace(0, 1, 24, dtype="f4").reshape(4, 6),
                                chunks=(2, 3), fletcher32=True, compression="gzip", shuffle=True))
        sparse = attach(f.create_dataset("unwritten", shape=(4, 6), dtype="f4", chunks=(2, 3),
                                         fillvalue=np.float32(-5)))
        sparse[0:2, 0:3] = 1.0
        f.create_dataset("scalar", data=np.float64(3.25))
        g = f.create_group("group/sub")
        g.attrs["note"] = "nested"
        g.create_dataset("inner", data=np.arange(30, dtype="<u2").reshape(5, 6), chunks=(2, 4),
                         compression="gzip", compression_opts=9)

        masked = attach(f.create_dataset("masked", shape=(4, 6), dtype="<i4", chunks=(2, 6),
                                         compression="gzip", shuffle=True))
        masked[2:4, :] = np.arange(12, dtype="<i4").reshape(2, 6) + 100
        raw = np.arange(12, dtype="<i4").reshape(2, 6)
        shuffled = raw.view("u1").reshape(12, 4).T.copy().tobytes()  # shuffle, no deflate
        # filter index 0 = shuffle, 1 = deflate: mask bit 1 says deflate was skipped.
        masked.id.write_direct_chunk((0, 0), shuffled, filter_mask=0b10)


def filters(outdir):
    with h5py.File(os.path.join(outdir, "scaleoffset.h5"), "w") as f:
        f.create_dataset("packed", data=np.arange(100, dtype="i4"), chunks=(50,), scaleoffset=0)
    with h5py.File(os.path.join(outdir, "lzf.h5"), "w") as f:
        f.create_dataset("squeezed", data=np.arange(100, dtype="f4"), chunks=(50,), compression="lzf")


def collection(outdir, name):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    return d


def make_all(outdir):
    index = {}

    # 4 files of 6, 4, 6 and 3 days; time chunks of 2: the last ends in a partial chunk.
    d = collection(outdir, "nc4_time")
    lengths, t0, files = [6, 4, 6, 3], 0, []
    for i, n in enumerate(lengths):
        p = os.path.join(d, f"air_{i:03d}.nc")
        nc4_file(p, t0, n, seed=i, history=f"file {i}")
        t0 += n
        files.append(p)
    index["nc4_time"] = files

    d = collection(outdir, "nc3_time")
    files = []
    for i, fmt in enumerate(["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]):
        p = os.path.join(d, f"nc3_{i}.nc")
        nc3_file(p, 5 * i, 5, fmt, seed=10 + i)
        files.append(p)
    index["nc3_time"] = files

    d = collection(outdir, "stack")
    index["stack"] = []
    for m in range(3):
        p = os.path.join(d, f"member_{m}.nc")
        stack_file(p, m, 20 + m)
        index["stack"].append(p)

    # File names sort against time order: b.nc holds the first days.
    d = collection(outdir, "reorder")
    nc4_file(os.path.join(d, "a.nc"), 4, 4, seed=31)
    nc4_file(os.path.join(d, "b.nc"), 0, 4, seed=30)
    index["reorder"] = [os.path.join(d, "b.nc"), os.path.join(d, "a.nc")]

    d = collection(outdir, "h5_layouts")
    h5_layouts(os.path.join(d, "layouts.h5"))
    index["h5_layouts"] = [os.path.join(d, "layouts.h5")]

    d = collection(outdir, "filters")
    filters(d)
    index["filters"] = [os.path.join(d, "scaleoffset.h5"), os.path.join(d, "lzf.h5")]

    # Collections with one file that differs from the others (always the second).
    bad = {
        "bad_dtype": dict(air_dtype="f8"),
        "bad_scale": dict(sst_scale=0.02),
        "bad_chunks": dict(air_chunks=(2, 10, 12)),
        # Not CF time units (a per-file reference date is re-based, not refused).
        "bad_units": dict(time_units="days after 2000-01-01 00:00:00"),
    }
    for name, kwargs in bad.items():
        d = collection(outdir, name)
        files = []
        for i in range(3):
            p = os.path.join(d, f"f{i}.nc")
            nc4_file(p, 4 * i, 4, seed=40 + i, **(kwargs if i == 1 else {}))
            files.append(p)
        index[name] = files

    # A first file of 5 days with time chunks of 2: a partial chunk before the end.
    d = collection(outdir, "bad_partial")
    nc4_file(os.path.join(d, "f0.nc"), 0, 5, seed=50)
    nc4_file(os.path.join(d, "f1.nc"), 5, 4, seed=51)
    index["bad_partial"] = [os.path.join(d, "f0.nc"), os.path.join(d, "f1.nc")]

    # Two good files and one that is not NetCDF at all.
    d = collection(outdir, "not_netcdf")
    nc4_file(os.path.join(d, "f0.nc"), 0, 4, seed=60)
    with open(os.path.join(d, "f1.nc"), "wb") as f:
        f.write(b"this is not a NetCDF file\n" * 40)
    nc4_file(os.path.join(d, "f2.nc"), 4, 4, seed=61)
    index["not_netcdf"] = [os.path.join(d, f"f{i}.nc") for i in range(3)]

    # Paths relative to OUTDIR, so that the directory can be moved into place.
    index = {k: [os.path.relpath(p, outdir) for p in v] for k, v in index.items()}
    with open(os.path.join(outdir, "INDEX.json"), "w") as f:
        json.dump(index, f, indent=1)


def make_daily(outdir, n, nlat=18, nlon=36, nt=24):
    """n daily files shaped like the issue's benchmark, smaller: air (1, lat, lon) chunks
    zlib+shuffle, uwnd (24, lat/2, lon/2) chunks zlib, CF hourly time."""
    os.makedirs(outdir, exist_ok=True)
    r = rng(7)
    lat = np.linspace(89.5, -89.5, nlat)
    lon = np.linspace(0, 360, nlon, endpoint=False)
    for day in range(n):
        with netCDF4.Dataset(os.path.join(outdir, f"day_{day:03d}.nc"), "w") as d:
            d.createDimension("time", None)
            d.createDimension("lat", nlat)
            d.createDimension("lon", nlon)
            t = d.createVariable("time", "f8", ("time",))
            t.units = "hours since 2001-01-01"
            t.calendar = "standard"
            d.createVariable("lat", "f4", ("lat",))[:] = lat
            d.createVariable("lon", "f4", ("lon",))[:] = lon
            t[:] = day * 24 + np.arange(nt)
            air = d.createVariable("air", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True,
                                   chunksizes=(1, nlat, nlon))
            air.units = "K"
            air[:] = (250 + 30 * r.random((nt, nlat, nlon))).astype("f4")
            uwnd = d.createVariable("uwnd", "f4", ("time", "lat", "lon"), zlib=True,
                                    chunksizes=(nt, nlat // 2, nlon // 2))
            uwnd[:] = r.normal(size=(nt, nlat, nlon)).astype("f4")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--daily"]:
        make_daily(args[2], int(args[1]))
    else:
        out = args[0]
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        make_all(out)
