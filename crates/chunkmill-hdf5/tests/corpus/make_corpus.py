#!/usr/bin/env python3
"""Writes the chunkmill-hdf5 test corpus and its ground truth.

    python make_corpus.py OUTDIR

Every file is written with h5py (libhdf5) or netCDF4-python (netCDF-C), and next to it a
``<file>.truth.json`` read back through those same libraries, never through our Rust code:

- HDF5 and NetCDF-4: for every dataset, shape, maxshape, numpy dtype, chunk shape, layout,
  fill value, filter pipeline, attributes, dimension scales, and every chunk as
  ``[chunk_offset, filter_mask, byte_offset, size]`` from ``DatasetID.chunk_iter`` (or
  ``get_offset``/``get_storage_size`` for contiguous data, the raw bytes for compact data),
  plus decoded values of a few chunks for the decode check;
- NetCDF-3: the header parsed by the small independent parser below (``begin``, ``vsize``,
  record stride), each offset checked here against netCDF4-python's values by reading the
  bytes at it with numpy.

``INDEX.json`` lists the files. The corpus is deterministic and a few MB. Requirements are
pinned in ``requirements.txt`` next to this script.
"""

import json
import math
import os
import struct
import sys

import h5py
import netCDF4
import numpy as np

RNG = np.random.default_rng(20261102)


# --------------------------------------------------------------------------------------------
# JSON conventions shared with the Rust side
# --------------------------------------------------------------------------------------------

def jfloat(x, single):
    # float32 widened exactly, as numpy, xarray and zarr-python write it (0.1f is
    # 0.10000000149011612, not 0.1).
    x = float(np.float32(x)) if single else float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def jsonable(v):
    """An attribute or fill value as chunkmill-hdf5 reports it: one element is a scalar."""
    if isinstance(v, h5py.Reference) or isinstance(v, h5py.RegionReference):
        return None
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).split(b"\0")[0].decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (np.float32, np.float16)):
        return jfloat(v, True)
    if isinstance(v, (float, np.floating)):
        return jfloat(v, False)
    if isinstance(v, np.void) and v.dtype.names:
        return {n: jsonable(v[n]) for n in v.dtype.names}
    if isinstance(v, np.ndarray):
        if v.size == 1:
            return jsonable(v.reshape(-1)[0])
        return [jsonable(x) for x in v]
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return repr(v)


# --------------------------------------------------------------------------------------------
# HDF5 truth
# --------------------------------------------------------------------------------------------

LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous",
           h5py.h5d.CHUNKED: "chunked", h5py.h5d.VIRTUAL: "virtual"}


def filters_of(dset):
    dcpl = dset.id.get_create_plist()
    out = []
    for i in range(dcpl.get_nfilters()):
        fid, flags, params, name = dcpl.get_filter(i)
        out.append({"id": int(fid), "parameters": [int(p) for p in params],
                    "name": name.decode("ascii", "replace")})
    return out


def chunk_values(dset, offset):
    region = tuple(slice(o, min(o + c, s)) for o, c, s in zip(offset, dset.chunks, dset.shape))
    return [jsonable(x) for x in np.asarray(dset[region]).ravel()]


def dataset_truth(dset, expect):
    dcpl = dset.id.get_create_plist()
    layout = LAYOUTS.get(dcpl.get_layout(), "other")
    t = {
        "path": dset.name,
        "shape": list(dset.shape),
        "maxshape": list(dset.maxshape) if dset.maxshape is not None else None,
        "dtype": dset.dtype.str,
        "chunks": list(dset.chunks) if dset.chunks else None,
        "layout": layout,
        "filters": filters_of(dset),
        "attrs": {},
        "attr_names": sorted(dset.attrs.keys()),
        "dims": None,
    }
    try:
        t["fillvalue"] = jsonable(dset.fillvalue)
    except Exception:  # noqa: BLE001 - exotic types
        t["fillvalue"] = None
    for name in dset.attrs:
        if name in ("DIMENSION_LIST", "REFERENCE_LIST"):
            continue
        t["attrs"][name] = jsonable(dset.attrs[name])
    if "DIMENSION_LIST" in dset.attrs:
        t["dims"] = [[dset.dims[i][j].name for j in range(len(dset.dims[i]))]
                     for i in range(dset.ndim)]
    if layout == "chunked":
        chunks = []
        dset.id.chunk_iter(lambda s: chunks.append(
            [list(s.chunk_offset), int(s.filter_mask), int(s.byte_offset), int(s.size)]))
        chunks.sort()
        t["chunk_list"] = chunks
        ids = {f["id"] for f in t["filters"]}
        if ids <= {1, 2, 3} and chunks and dset.dtype.kind in "iuf" and not expect.get("no_decode"):
            picks = [chunks[0], chunks[-1]] if len(chunks) > 1 else [chunks[0]]
            t["samples"] = [{"chunk_offset": c[0], "filter_mask": c[1],
                             "values": chunk_values(dset, c[0])} for c in picks]
    elif layout == "contiguous":
        off = dset.id.get_offset()
        t["contiguous"] = {"offset": off, "size": int(dset.id.get_storage_size())}
        if off is not None and dset.dtype.kind in "iuf" and dset.size:
            t["values"] = [jsonable(x) for x in np.asarray(dset[()]).ravel()[:64]]
    elif layout == "compact":
        t["compact_hex"] = np.ascontiguousarray(dset[()]).tobytes().hex()
    t.update({k: v for k, v in expect.items() if k in ("index", "note")})
    return t


def walk_hdf5(path, expects):
    """Every object once, under its first hard link in name order, as our lister does."""
    out = {"groups": [], "datasets": [], "aliases": {}, "soft_links": [], "external_links": []}
    seen = {}
    with h5py.File(path, "r") as f:
        def visit(group):
            gattrs = {}
            for name in group.attrs:
                if name not in ("DIMENSION_LIST", "REFERENCE_LIST"):
                    gattrs[name] = jsonable(group.attrs[name])
            out["groups"].append({"path": group.name, "attrs": gattrs})
            for name in sorted(group.keys()):
                child = group.name.rstrip("/") + "/" + name
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.SoftLink):
                    out["soft_links"].append([child, link.path])
                    continue
                if isinstance(link, h5py.ExternalLink):
                    out["external_links"].append(child)
                    continue
                obj = group.get(name)
                addr = h5py.h5o.get_info(obj.id).addr
                if addr in seen:
                    out["aliases"].setdefault(seen[addr], []).append(child)
                    continue
                seen[addr] = child
                if isinstance(obj, h5py.Group):
                    visit(obj)
                elif isinstance(obj, h5py.Dataset):
                    out["datasets"].append(dataset_truth(obj, expects.get(child, {})))
        seen[h5py.h5o.get_info(f["/"].id).addr] = "/"
        visit(f["/"])
    return out


def write_truth(outdir, name, truth, index, features):
    with open(os.path.join(outdir, name + ".truth.json"), "w") as fh:
        json.dump(truth, fh, separators=(",", ":"), sort_keys=True)
    index.append({"file": name, "features": features,
                  "size": os.path.getsize(os.path.join(outdir, name))})


# --------------------------------------------------------------------------------------------
# HDF5 files
# --------------------------------------------------------------------------------------------

def ints(shape, dtype="i4"):
    return RNG.integers(-1000, 1000, size=shape).astype(dtype)


def floats(shape, dtype="f8"):
    return RNG.standard_normal(shape).astype(dtype)


def make_contiguous_compact(outdir, index):
    name = "h5_layouts.h5"
    expects = {}
    with h5py.File(os.path.join(outdir, name), "w", libver="earliest") as f:
        f.create_dataset("contiguous_f4", data=floats((20, 7), "f4"))
        f.create_dataset("contiguous_be_i2", data=ints((33,), ">i2"))
        f.create_dataset("contiguous_never_written", shape=(10, 10), dtype="f8")
        f.create_dataset("scalar", data=np.float64(3.25))
        f.create_dataset("empty", shape=(0,), dtype="i4")
        # Compact: through the low-level API.
        data = ints((4, 5), "<i2")
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple(data.shape)
        dsid = h5py.h5d.create(f.id, b"compact_i2", h5py.h5t.STD_I16LE, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
        dsid.close()
        f.create_dataset("string_fixed", data=np.array([b"abc", b"de"], dtype="S4"))
    truth = walk_hdf5(os.path.join(outdir, name), expects)
    write_truth(outdir, name, truth, index, ["contiguous", "compact", "never-written", "scalar", "big-endian"])


def chunked_suite(f, prefix, expects, index_kind):
    """Chunked datasets common to both libvers: filters, partial edges, unwritten chunks,
    filter masks, big-endian."""
    d = f.create_dataset("gzip_2d", data=ints((37, 53)), chunks=(8, 10), compression="gzip",
                         compression_opts=4)
    expects[prefix + "gzip_2d"] = {"index": index_kind}
    f.create_dataset("shuffle_gzip_f8", data=floats((30, 40)), chunks=(7, 9), shuffle=True,
                     compression="gzip", compression_opts=1)
    expects[prefix + "shuffle_gzip_f8"] = {"index": index_kind}
    f.create_dataset("fletcher32", data=ints((50,)), chunks=(16,), fletcher32=True,
                     compression="gzip")
    expects[prefix + "fletcher32"] = {"index": index_kind}
    f.create_dataset("unfiltered", data=floats((25, 25), "f4"), chunks=(10, 10))
    expects[prefix + "unfiltered"] = {"index": index_kind}
    f.create_dataset("big_endian", data=floats((40,), ">f8"), chunks=(9,), compression="gzip")
    expects[prefix + "big_endian"] = {"index": index_kind}
    d = f.create_dataset("sparse", shape=(60, 60), dtype="i4", chunks=(10, 10),
                         compression="gzip", fillvalue=-7)
    d[0:10, 0:10] = 1
    d[25:35, 41:47] = 2
    d[55:60, 55:60] = 3
    expects[prefix + "sparse"] = {"index": index_kind}
    f.create_dataset("never_written", shape=(20, 20), dtype="i4", chunks=(5, 5),
                     compression="gzip")
    expects[prefix + "never_written"] = {"index": index_kind}
    f.create_dataset("lzf", data=ints((40, 40)), chunks=(10, 10), compression="lzf")
    expects[prefix + "lzf"] = {"index": index_kind}
    f.create_dataset("scaleoffset", data=ints((40, 40)), chunks=(10, 10), scaleoffset=0)
    expects[prefix + "scaleoffset"] = {"index": index_kind}
    try:
        f.create_dataset("szip", data=ints((40, 40)), chunks=(10, 10), compression="szip")
        expects[prefix + "szip"] = {"index": index_kind}
    except (ValueError, OSError):
        pass
    # A chunk written raw with filter 0 (deflate) skipped: filter_mask = 1.
    d = f.create_dataset("filter_mask", shape=(4, 6), dtype="i4", chunks=(2, 6),
                         compression="gzip")
    d[0:2, :] = ints((2, 6))
    raw = ints((2, 6)).tobytes()
    d.id.write_direct_chunk((2, 0), raw, filter_mask=1)
    expects[prefix + "filter_mask"] = {"index": index_kind}


def make_v1btree(outdir, index):
    name = "h5_v1btree_earliest.h5"
    expects = {}
    with h5py.File(os.path.join(outdir, name), "w", libver="earliest") as f:
        chunked_suite(f, "/", expects, "btree_v1")
        # Many chunks: a multi-level v1 B-tree.
        f.create_dataset("many", data=ints((80, 90), "i2"), chunks=(4, 5), compression="gzip",
                         compression_opts=1)
        expects["/many"] = {"index": "btree_v1"}
        g = f.create_group("sym/nested")
        g.create_dataset("inner", data=ints((6, 6)), chunks=(3, 3))
        expects["/sym/nested/inner"] = {"index": "btree_v1"}
        f["hard_alias"] = f["gzip_2d"]
        f["soft_alias"] = h5py.SoftLink("/sym/nested/inner")
        f["dangling"] = h5py.SoftLink("/nowhere")
    truth = walk_hdf5(os.path.join(outdir, name), expects)
    write_truth(outdir, name, truth, index, ["v1-btree", "filters", "filter-mask", "symbol-table", "links"])


def make_latest(outdir, index):
    name = "h5_latest_indexes.h5"
    expects = {}
    with h5py.File(os.path.join(outdir, name), "w", libver="latest") as f:
        fa = f.create_group("fixed_array")
        chunked_suite(fa, "/fixed_array/", expects, "fixed_array")
        fa.create_dataset("paged", data=ints((40, 40), "i2"), chunks=(1, 1))
        expects["/fixed_array/paged"] = {"index": "fixed_array", "note": "1600 entries: paged"}

        ea = f.create_group("extensible_array")
        d = ea.create_dataset("unfiltered", shape=(0, 10), maxshape=(None, 10), chunks=(3, 10),
                              dtype="i4")
        for step in range(7):
            d.resize((d.shape[0] + 5, 10))
            d[-5:, :] = ints((5, 10))
        expects["/extensible_array/unfiltered"] = {"index": "extensible_array"}
        d = ea.create_dataset("gzip", data=floats((100, 6)), maxshape=(None, 6), chunks=(4, 6),
                              compression="gzip")
        expects["/extensible_array/gzip"] = {"index": "extensible_array"}
        d = ea.create_dataset("sparse", shape=(50, 8), maxshape=(None, 8), chunks=(5, 4),
                              dtype="f4", fillvalue=np.float32("nan"))
        d[10:20, 0:4] = 1.5
        d[45:50, 4:8] = 2.5
        expects["/extensible_array/sparse"] = {"index": "extensible_array"}
        d = ea.create_dataset("filter_mask", shape=(6, 4), maxshape=(None, 4), chunks=(2, 4),
                              dtype="i4", compression="gzip")
        d[0:2] = ints((2, 4))
        d.id.write_direct_chunk((2, 0), ints((2, 4)).tobytes(), filter_mask=1)
        expects["/extensible_array/filter_mask"] = {"index": "extensible_array"}

        bt = f.create_group("btree_v2")
        d = bt.create_dataset("unfiltered", data=ints((20, 30)), maxshape=(None, None),
                              chunks=(6, 7))
        expects["/btree_v2/unfiltered"] = {"index": "btree_v2"}
        d = bt.create_dataset("gzip", data=floats((20, 30)), maxshape=(None, None), chunks=(6, 7),
                              compression="gzip", shuffle=True)
        expects["/btree_v2/gzip"] = {"index": "btree_v2"}
        d = bt.create_dataset("filter_mask", shape=(4, 4), maxshape=(None, None), chunks=(2, 2),
                              dtype="i4", compression="gzip")
        d[0:2, 0:2] = ints((2, 2))
        d.id.write_direct_chunk((2, 2), ints((2, 2)).tobytes(), filter_mask=1)
        expects["/btree_v2/filter_mask"] = {"index": "btree_v2"}
        d = bt.create_dataset("sparse", shape=(30, 30), maxshape=(None, None), chunks=(10, 10),
                              dtype="i4")
        d[10:20, 20:30] = 9
        expects["/btree_v2/sparse"] = {"index": "btree_v2"}

        sc = f.create_group("single_chunk")
        sc.create_dataset("plain", data=ints((12, 12)), chunks=(12, 12))
        expects["/single_chunk/plain"] = {"index": "single_chunk"}
        sc.create_dataset("gzip", data=floats((12, 12)), chunks=(12, 12), compression="gzip")
        expects["/single_chunk/gzip"] = {"index": "single_chunk"}
        sc.create_dataset("never_written", shape=(5, 5), dtype="i4", chunks=(5, 5))
        expects["/single_chunk/never_written"] = {"index": "single_chunk"}

        im = f.create_group("implicit")
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        d = im.create_dataset("early", shape=(20, 18), dtype="i4", chunks=(5, 6), dcpl=dcpl)
        d[:12, :] = ints((12, 18))
        expects["/implicit/early"] = {"index": "implicit"}

        # Dense attributes (more than 8) on a dataset and a group, dense links (more than 8).
        da = f.create_dataset("dense_attrs", data=ints((3,)))
        for i in range(20):
            da.attrs[f"attr_{i:02d}"] = i * 1.5
        da.attrs["text"] = "a string"
        da.attrs["fixed_text"] = np.bytes_(b"fixed")
        da.attrs["vector"] = np.arange(4, dtype="i2")
        da.attrs["be_float"] = np.array([2.5], dtype=">f4")
        da.attrs["u8"] = np.uint64(2**63 + 5)
        da.attrs["strings"] = ["x", "yz"]
        dl = f.create_group("dense_links")
        for i in range(20):
            dl.attrs[f"g_{i:02d}"] = f"value {i}"
            dl.create_dataset(f"d{i:02d}", data=np.full((2,), i, dtype="u1"))
        g = f.create_group("a/b/c/d")
        g.create_dataset("deep", data=floats((5,)))
        f.create_dataset("big_endian_contiguous", data=ints((10,), ">i8"))
        f["hard_alias"] = f["a/b/c/d/deep"]
        f["soft_alias"] = h5py.SoftLink("a/b/c/d/deep")
        f["external"] = h5py.ExternalLink("h5_layouts.h5", "/scalar")
        f.create_dataset("float16", data=floats((8,), "f2"), chunks=(4,))
        expects["/float16"] = {"index": "fixed_array"}
        f.create_dataset("bool", data=np.array([True, False, True]))
        # Dimension scales.
        x = f.create_dataset("x", data=np.arange(6, dtype="f8"))
        y = f.create_dataset("y", data=np.arange(4, dtype="f8"))
        x.make_scale("x")
        y.make_scale("y")
        field = f.create_dataset("field", data=floats((4, 6)), chunks=(2, 3), compression="gzip")
        expects["/field"] = {"index": "fixed_array"}
        field.dims[0].attach_scale(y)
        field.dims[1].attach_scale(x)
    truth = walk_hdf5(os.path.join(outdir, name), expects)
    write_truth(outdir, name, truth, index,
                ["fixed-array", "extensible-array", "btree-v2", "single-chunk", "implicit",
                 "dense-attributes", "dense-links", "nested-groups", "dimension-scales",
                 "filter-mask", "links"])


def make_userblock(outdir, index):
    name = "h5_userblock.h5"
    expects = {}
    with h5py.File(os.path.join(outdir, name), "w", libver="latest", userblock_size=512) as f:
        f.create_dataset("gzip", data=ints((30, 30)), chunks=(7, 7), compression="gzip",
                         shuffle=True)
        expects["/gzip"] = {"index": "fixed_array"}
        f.create_dataset("contiguous", data=floats((25,)))
        d = f.create_dataset("growing", shape=(10, 3), maxshape=(None, 3), chunks=(4, 3),
                             dtype="i4")
        d[:] = ints((10, 3))
        expects["/growing"] = {"index": "extensible_array"}
        f.attrs["title"] = "user block"
    with open(os.path.join(outdir, name), "r+b") as fh:
        fh.write(b"chunkmill user block".ljust(512, b"\0"))
    truth = walk_hdf5(os.path.join(outdir, name), expects)
    write_truth(outdir, name, truth, index, ["user-block"])


def make_big(outdir, index):
    for libver, kind, name in (("latest", "extensible_array", "h5_big_index_earray.h5"),
                               ("earliest", "btree_v1", "h5_big_index_v1btree.h5")):
        expects = {"/big": {"index": kind}}
        with h5py.File(os.path.join(outdir, name), "w", libver=libver) as f:
            data = (np.arange(500_000, dtype="i2") % 1000).reshape(50_000, 10)
            f.create_dataset("big", data=data, maxshape=(None, 10), chunks=(1, 10))
        truth = walk_hdf5(os.path.join(outdir, name), expects)
        write_truth(outdir, name, truth, index, ["50000-chunks", kind])


def make_virtual(outdir, index):
    name = "h5_virtual.h5"
    with h5py.File(os.path.join(outdir, name), "w", libver="latest") as f:
        a = f.create_dataset("a", data=np.arange(10, dtype="i4"))
        f.create_dataset("b", data=np.arange(10, 20, dtype="i4"), chunks=(5,))
        layout = h5py.VirtualLayout(shape=(20,), dtype="i4")
        layout[0:10] = h5py.VirtualSource(a)
        layout[10:20] = h5py.VirtualSource(f["b"])
        f.create_virtual_dataset("vds", layout)
    truth = walk_hdf5(os.path.join(outdir, name), {})
    truth["unlisted_expected"] = ["/vds"]
    write_truth(outdir, name, truth, index, ["virtual-dataset"])


# --------------------------------------------------------------------------------------------
# NetCDF-4
# --------------------------------------------------------------------------------------------

def netcdf_view(path):
    """netCDF4-python's view: variables with their dimensions, and dimensions."""
    view = {"variables": {}, "dimensions": []}
    with netCDF4.Dataset(path) as nc:
        def visit(group, gpath):
            for dname, dim in group.dimensions.items():
                view["dimensions"].append({"group": gpath, "name": dname, "size": len(dim),
                                           "unlimited": dim.isunlimited()})
            for vname, var in group.variables.items():
                key = (gpath.rstrip("/") + "/" + vname)
                var.set_auto_maskandscale(False)
                view["variables"][key] = {
                    "dimensions": list(var.dimensions),
                    "dtype": var.dtype.str if hasattr(var.dtype, "str") else str(var.dtype),
                    "attrs": {a: jsonable(var.getncattr(a)) for a in var.ncattrs()},
                }
            for sub in group.groups.values():
                visit(sub, gpath.rstrip("/") + "/" + sub.name)
        visit(nc, "/")
    return view


def make_nc4(outdir, index):
    name = "nc4_cf.nc"
    path = os.path.join(outdir, name)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.title = "chunkmill NetCDF-4 corpus"
        nc.Conventions = "CF-1.8"
        nc.createDimension("time", None)
        nc.createDimension("lat", 18)
        nc.createDimension("lon", 36)
        nc.createDimension("nv", 2)
        nc.createDimension("x", 3)
        nc.createDimension("y", 3)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t.calendar = "noleap"
        t[:] = np.arange(5.0)
        tb = nc.createVariable("time_bnds", "f8", ("time", "nv"))
        tb[:] = np.stack([np.arange(5.0), np.arange(1.0, 6.0)], axis=1)
        lat = nc.createVariable("lat", "f4", ("lat",))
        lat.units = "degrees_north"
        lat[:] = np.linspace(-85, 85, 18)
        lon = nc.createVariable("lon", "f4", ("lon",))
        lon[:] = np.linspace(0, 350, 36)
        air = nc.createVariable("air", "i2", ("time", "lat", "lon"), zlib=True, shuffle=True,
                                complevel=4, chunksizes=(1, 18, 36), fill_value=np.int16(-9999))
        air.scale_factor = np.float32(0.01)
        air.add_offset = np.float32(250.0)
        air.missing_value = np.int16(-9999)
        air.units = "K"
        air.set_auto_maskandscale(False)
        air[:] = RNG.integers(-3000, 3000, size=(5, 18, 36)).astype("i2")
        uwnd = nc.createVariable("uwnd", "f4", ("time", "lat", "lon"), zlib=True, fletcher32=True,
                                 chunksizes=(2, 9, 9))
        uwnd[:] = floats((5, 18, 36), "f4")
        c = nc.createVariable("contig", "f8", ("lat",), contiguous=True)
        c[:] = floats((18,))
        # A variable named like a dimension it does not coordinate: _nc4_non_coord_x.
        xv = nc.createVariable("x", "i4", ("y",))
        xv[:] = [7, 8, 9]
        if netCDF4.__has_zstandard_support__:
            z = nc.createVariable("zstd", "f4", ("lat", "lon"), compression="zstd",
                                  chunksizes=(9, 12))
            z[:] = floats((18, 36), "f4")
        sub = nc.createGroup("forecast")
        sub.createDimension("step", 4)
        s = sub.createVariable("step", "i4", ("step",))
        s[:] = np.arange(4)
        p = sub.createVariable("precip", "f4", ("step", "lat"), zlib=True, chunksizes=(2, 9))
        p[:] = floats((4, 18), "f4")
    truth = walk_hdf5(path, {})
    truth["netcdf"] = netcdf_view(path)
    write_truth(outdir, name, truth, index, ["netcdf4", "cf", "unlimited", "groups", "hidden-dimension"])


# --------------------------------------------------------------------------------------------
# NetCDF-3, with an independent header parser
# --------------------------------------------------------------------------------------------

NC_TYPES = {1: ("i1", 1), 2: ("S1", 1), 3: (">i2", 2), 4: (">i4", 4), 5: (">f4", 4),
            6: (">f8", 8), 7: ("u1", 1), 8: (">u2", 2), 9: (">u4", 4), 10: (">i8", 8),
            11: (">u8", 8)}


def parse_classic(path):
    """The header of a CDF-1/2/5 file, per the NetCDF classic format specification."""
    data = open(path, "rb").read()
    version = data[3]
    pos = 4
    count_fmt, count_len = (">Q", 8) if version == 5 else (">I", 4)

    def count():
        nonlocal pos
        (v,) = struct.unpack_from(count_fmt, data, pos)
        pos += count_len
        return v

    def u32():
        nonlocal pos
        (v,) = struct.unpack_from(">I", data, pos)
        pos += 4
        return v

    def name():
        nonlocal pos
        n = count()
        s = data[pos:pos + n].decode()
        pos += (n + 3) // 4 * 4
        return s

    def skip_attrs():
        nonlocal pos
        tag, n = u32(), count()
        for _ in range(n):
            name()
            t = u32()
            nelems = count()
            pos += (nelems * NC_TYPES[t][1] + 3) // 4 * 4

    numrecs = count()
    dims = []
    u32()
    for _ in range(count()):
        dims.append((name(), count()))
    skip_attrs()
    variables = []
    u32()
    for _ in range(count()):
        vname = name()
        dimids = [count() for _ in range(count())]
        skip_attrs()
        t = u32()
        vsize = count()
        (begin,) = struct.unpack_from(">I" if version == 1 else ">Q", data, pos)
        pos += 4 if version == 1 else 8
        variables.append({"name": vname, "dimids": dimids, "type": t, "vsize": vsize,
                          "begin": begin})
    rec_vars = [v for v in variables if v["dimids"] and dims[v["dimids"][0]][1] == 0]
    for v in variables:
        shape = [dims[d][1] for d in v["dimids"]]
        is_rec = v in rec_vars
        per = int(np.prod(shape[1:] if is_rec else shape)) * NC_TYPES[v["type"]][1]
        v["record"] = is_rec
        v["slab"] = per
    if len(rec_vars) == 1:
        stride = rec_vars[0]["slab"]
    else:
        stride = sum(v["vsize"] for v in rec_vars)
    return {"version": version, "numrecs": numrecs, "dims": dims, "variables": variables,
            "record_stride": stride, "header_end": pos}


def make_nc3(outdir, index):
    for fmt, name in (("NETCDF3_CLASSIC", "nc3_classic.nc"),
                      ("NETCDF3_64BIT_OFFSET", "nc3_64bit.nc"),
                      ("NETCDF3_64BIT_DATA", "nc3_cdf5.nc"),
                      ("NETCDF3_CLASSIC", "nc3_one_record_var.nc")):
        path = os.path.join(outdir, name)
        with netCDF4.Dataset(path, "w", format=fmt) as nc:
            nc.title = f"chunkmill {fmt}"
            nc.createDimension("time", None)
            nc.createDimension("x", 3)
            nc.createDimension("y", 5)
            nc.createDimension("strlen", 7)
            if name == "nc3_one_record_var.nc":
                v = nc.createVariable("t_short", "i2", ("time", "x"))
                v[:] = ints((6, 3), "i2")
            else:
                t = nc.createVariable("time", "f8", ("time",))
                t.units = "hours since 2020-01-01"
                t[:] = np.arange(4.0) * 6
                a = nc.createVariable("temp", "f4", ("time", "y", "x"), fill_value=np.float32(-1e30))
                a.scale_factor = 0.5
                a.long_name = "temperature"
                a[:] = floats((4, 5, 3), "f4")
                s = nc.createVariable("odd_short", "i2", ("time", "x"))
                s[:] = ints((4, 3), "i2")
                b = nc.createVariable("flag", "i1", ("time",))
                b[:] = [1, 0, -1, 2]
                fx = nc.createVariable("fixed", "f8", ("y", "x"))
                fx[:] = floats((5, 3))
                ch = nc.createVariable("label", "S1", ("x", "strlen"))
                ch[:] = netCDF4.stringtochar(np.array(["alpha", "beta", "gamma"], dtype="S7"))
                xx = nc.createVariable("x", "i4", ("x",))
                xx[:] = [10, 20, 30]
                if fmt == "NETCDF3_64BIT_DATA":
                    u = nc.createVariable("u64", "u8", ("time",))
                    u[:] = [1, 2, 3, 2**63]
        header = parse_classic(path)
        raw = open(path, "rb").read()
        truth = {"netcdf3": header, "netcdf": netcdf_view(path), "values": {}}
        with netCDF4.Dataset(path) as nc:
            nc.set_auto_maskandscale(False)
            for v in header["variables"]:
                var = nc.variables[v["name"]]
                dt, size = NC_TYPES[v["type"]]
                values = np.asarray(var[:])
                if v["record"]:
                    per = v["slab"] // size
                    for r in range(header["numrecs"]):
                        at = v["begin"] + r * header["record_stride"]
                        got = np.frombuffer(raw[at:at + v["slab"]], dtype=dt)
                        assert np.array_equal(got.ravel(), values[r].ravel()), (name, v["name"], r)
                    truth["values"][v["name"]] = {"record": 1, "values": [jsonable(x) for x in values[1].ravel()]} if header["numrecs"] > 1 else None
                else:
                    got = np.frombuffer(raw[v["begin"]:v["begin"] + v["slab"]], dtype=dt)
                    assert np.array_equal(got.ravel(), values.ravel()), (name, v["name"])
                    if dt != "S1":
                        truth["values"][v["name"]] = {"record": None, "values": [jsonable(x) for x in values.ravel()]}
        write_truth(outdir, name, truth, index, ["netcdf3", fmt])


def make_not_ours(outdir, index):
    with open(os.path.join(outdir, "not_hdf5.bin"), "wb") as fh:
        fh.write(b"this is a plain text file, neither HDF5 nor NetCDF\n" * 40)
    layouts = os.path.join(outdir, "h5_layouts.h5")
    data = open(layouts, "rb").read()
    # Cut inside the metadata: the root group cannot be listed.
    with open(os.path.join(outdir, "truncated.h5"), "wb") as fh:
        fh.write(data[:2048])
    # Cut inside the data of the last dataset: every header comes before the cut.
    path = os.path.join(outdir, "truncated_data.h5")
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("first", data=floats((100,)))
        f.create_dataset("second", data=floats((100,)))
    with h5py.File(path, "r") as f:
        cut = f["second"].id.get_offset() + 10
        assert cut > max(h5py.h5o.get_info(f[k].id).addr for k in ("/", "first", "second"))
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[:cut])


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    index = []
    make_contiguous_compact(outdir, index)
    make_v1btree(outdir, index)
    make_latest(outdir, index)
    make_userblock(outdir, index)
    make_big(outdir, index)
    make_virtual(outdir, index)
    make_nc4(outdir, index)
    make_nc3(outdir, index)
    make_not_ours(outdir, index)
    with open(os.path.join(outdir, "INDEX.json"), "w") as fh:
        json.dump({"h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version,
                   "netCDF4": netCDF4.__version__, "netcdf_c": netCDF4.__netcdf4libversion__,
                   "numpy": np.__version__, "files": index}, fh, indent=1)


if __name__ == "__main__":
    main()
