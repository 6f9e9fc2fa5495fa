#!/usr/bin/env python3
"""The oracle of chunkmill-manifest's integration tests: opens a kerchunk JSON through fsspec's
ReferenceFileSystem with xarray (zarr engine) and compares it with the original files opened by
xarray (netCDF4 engine) or h5py.

    check_refs.py REFS FILE...                      # one file: xarray.open_dataset
    check_refs.py --concat-dim time REFS FILE...    # xarray.open_mfdataset along an existing dim
    check_refs.py --stack member REFS FILE...       # open_mfdataset along a new dimension
    check_refs.py --h5py REFS FILE                  # every dataset against h5py's values
    check_refs.py --kerchunk REFS FILE              # every referenced chunk against kerchunk

Values are compared after CF decoding (NaN-aware; float32 and float64 decodings of packed
data within 1e-6), as are variable and dataset attributes and the CF encoding (units,
calendar, scale_factor, add_offset, _FillValue, missing_value). Prints one summary line and
exits 0, or prints what differs and exits 1.
"""

import argparse
import json
import math
import sys

import numpy as np
import xarray as xr

ENCODING = ["units", "calendar", "scale_factor", "add_offset", "_FillValue", "missing_value", "dtype"]


def open_refs(path, **kwargs):
    return xr.open_dataset(
        "reference://",
        engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": {"fo": path}},
        **kwargs,
    )


def same(a, b):
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        a, b = np.atleast_1d(a), np.atleast_1d(b)
        return a.shape == b.shape and all(same(x, y) for x, y in zip(a.tolist(), b.tolist()))
    if isinstance(a, (float, np.floating)) and isinstance(b, (float, np.floating, int, np.integer)):
        return (math.isnan(a) and math.isnan(float(b))) or float(a) == float(b) or \
            abs(float(a) - float(b)) <= 1e-6 * abs(float(a))
    if isinstance(a, (np.generic,)):
        a = a.item()
    if isinstance(b, (np.generic,)):
        b = b.item()
    if isinstance(a, bytes):
        a = a.decode()
    if isinstance(b, bytes):
        b = b.decode()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    return a == b


def compare_values(name, got, want, problems):
    if got.shape != want.shape:
        problems.append(f"{name}: shape {got.shape} != {want.shape}")
        return
    if np.issubdtype(want.dtype, np.datetime64) or np.issubdtype(want.dtype, np.timedelta64):
        if not np.array_equal(got, want):
            problems.append(f"{name}: times differ: {got[:5]} != {want[:5]}")
        return
    if want.dtype.kind in "fc" or got.dtype.kind in "fc":
        g, w = got.astype("f8"), want.astype("f8")
        if not np.allclose(g, w, rtol=1e-6, atol=0, equal_nan=True):
            bad = np.argwhere(~np.isclose(g, w, rtol=1e-6, atol=0, equal_nan=True))
            i = tuple(bad[0])
            problems.append(f"{name}: {len(bad)} values differ, first at {i}: {g[i]} != {w[i]}")
        return
    if not np.array_equal(got, want):
        problems.append(f"{name}: values differ")


def compare_datasets(ref, orig, problems):
    for name in list(orig.variables):
        if name not in ref.variables:
            problems.append(f"{name}: missing from the references")
            continue
        g, w = ref[name], orig[name]
        if g.dims != w.dims:
            problems.append(f"{name}: dims {g.dims} != {w.dims}")
            continue
        compare_values(name, np.asarray(g.values), np.asarray(w.values), problems)
        if set(g.attrs) != set(w.attrs):
            problems.append(f"{name}: attribute names {sorted(g.attrs)} != {sorted(w.attrs)}")
        for k in w.attrs:
            if k in g.attrs and not same(g.attrs[k], w.attrs[k]):
                problems.append(f"{name}: attribute {k}: {g.attrs[k]!r} != {w.attrs[k]!r}")
        for k in ENCODING:
            if k == "dtype":
                # The stored dtype, byte order aside (xarray's netCDF4 backend reports native).
                if k in w.encoding and np.dtype(g.encoding.get(k)).newbyteorder("=") != \
                        np.dtype(w.encoding[k]).newbyteorder("="):
                    problems.append(f"{name}: stored dtype {g.encoding.get(k)} != {w.encoding[k]}")
                continue
            if k in w.encoding and not same(g.encoding.get(k), w.encoding[k]):
                problems.append(f"{name}: encoding {k}: {g.encoding.get(k)!r} != {w.encoding[k]!r}")
    for name in ref.variables:
        if name not in orig.variables:
            problems.append(f"{name}: in the references only")
    if set(ref.attrs) != set(orig.attrs):
        problems.append(f"dataset attribute names {sorted(ref.attrs)} != {sorted(orig.attrs)}")
    for k, v in orig.attrs.items():
        if k in ref.attrs and not same(ref.attrs[k], v):
            problems.append(f"dataset attribute {k}: {ref.attrs[k]!r} != {v!r}")
    if dict(ref.sizes) != dict(orig.sizes):
        problems.append(f"sizes {dict(ref.sizes)} != {dict(orig.sizes)}")


def check_h5py(refs_path, path, problems):
    import h5py
    import zarr
    import fsspec

    fs = fsspec.filesystem("reference", fo=refs_path)
    group = zarr.open_group(fs.get_mapper(""), mode="r", zarr_format=2)
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names:
            want = f[n][()]
            try:
                got = group[n][()]
            except Exception as e:  # noqa: BLE001 - report any read failure
                problems.append(f"{n}: cannot read from references: {e!r}")
                continue
            want, got = np.asarray(want), np.asarray(got)
            if want.dtype != got.dtype:
                problems.append(f"{n}: dtype {got.dtype} != {want.dtype}")
            if want.shape != got.shape or not np.array_equal(want, got, equal_nan=want.dtype.kind == "f"):
                problems.append(f"{n}: values differ: {got.ravel()[:6]} != {want.ravel()[:6]}")
    return len(names)


def check_kerchunk(refs_path, path, problems):
    """Every chunk we reference is where kerchunk's SingleHdf5ToZarr says it is."""
    from kerchunk.hdf import SingleHdf5ToZarr

    theirs = SingleHdf5ToZarr(path, inline_threshold=0).translate()["refs"]
    ours = json.load(open(refs_path))["refs"]
    compared = 0
    refused = set()
    for key, value in ours.items():
        if not isinstance(value, list):
            continue
        array = key.rsplit("/", 1)[0]
        if array + "/.zarray" not in theirs:
            refused.add(array)  # kerchunk could not reference it (fletcher32, …)
            continue
        other = theirs.get(key)
        if not isinstance(other, list):
            problems.append(f"{key}: kerchunk has {other!r}, we have {value!r}")
            continue
        # kerchunk drops fletcher32's 4-byte trailer from the length; numcodecs' codec strips it.
        zarray = json.loads(ours[key.rsplit("/", 1)[0] + "/.zarray"])
        trailer = 4 if any(f.get("id") == "fletcher32" for f in zarray.get("filters") or []) else 0
        if value[1] != other[1] or value[2] != other[2] + trailer:
            problems.append(f"{key}: offset/length {value[1:]} != kerchunk's {other[1:]}")
        compared += 1
    return compared, sorted(refused)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--concat-dim")
    p.add_argument("--stack")
    p.add_argument("--h5py", action="store_true")
    p.add_argument("--kerchunk", action="store_true")
    p.add_argument("refs")
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    problems = []
    if a.h5py:
        n = check_h5py(a.refs, a.files[0], problems)
        summary = f"{n} datasets equal to h5py"
    elif a.kerchunk:
        n, refused = check_kerchunk(a.refs, a.files[0], problems)
        summary = f"{n} chunk references equal to kerchunk's; kerchunk refused {refused}"
    else:
        ref = open_refs(a.refs)
        if a.concat_dim or a.stack:
            orig = xr.open_mfdataset(
                a.files, engine="netcdf4", combine="nested", concat_dim=a.concat_dim or a.stack,
                data_vars="minimal" if a.concat_dim else "all", coords="minimal",
                compat="override", join="override", combine_attrs="override",
            )
        else:
            orig = xr.open_dataset(a.files[0], engine="netcdf4")
        compare_datasets(ref, orig, problems)
        summary = f"{len(orig.variables)} variables equal to xarray's, sizes {dict(orig.sizes)}"
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("OK:", summary)


if __name__ == "__main__":
    main()
