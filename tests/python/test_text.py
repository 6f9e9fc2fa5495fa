"""Text in NetCDF/HDF5 files (issue 15): character arrays (NetCDF `char`, with `_Encoding` or
without), NetCDF-4 `string` variables and HDF5 strings are converted to the Zarr arrays
`xr.open_dataset(f).to_zarr()` writes, so that `xr.open_zarr(cache)` equals
`xr.open_dataset(f)` / `xr.open_mfdataset(files)`.

The oracles: xarray reads the files (netCDF4 engine, its default; h5netcdf for pure HDF5 byte
strings) and writes its own Zarr store of them, whose data types the cache must have."""

from __future__ import annotations

import json
import warnings

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import oracle

NAMES = ["Zürich", "Bern", "Genève", "", "Ny-Ålesund"]  # "Genève", "Ny-Ålesund" longer than 6 bytes in UTF-8
MODELS = ["ECHAM6.3 long model name", "x", "", "日本語", "ICON"]


def chars(words, width: int) -> np.ndarray:
    """`words` as a NetCDF character array: UTF-8 bytes cut or NUL-padded to `width`."""
    raw = np.array([w.encode()[:width].ljust(width, b"\0") for w in words], dtype=f"S{width}")
    return raw.view("S1").reshape(len(words), width)


def write_stations(path, *, fmt="NETCDF4", day=0, nt=4, with_vlen=True) -> None:
    """A station file: names as characters with `_Encoding`, codes as plain bytes, a per-time
    flag along the unlimited dimension (characters too), model names as NetCDF-4 strings."""
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.createDimension("time", None)
        ds.createDimension("station", len(NAMES))
        ds.createDimension("name_strlen", 8)
        ds.createDimension("code_strlen", 3)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "hours since 2000-01-01"
        t[:] = np.arange(nt) + day * nt
        name = ds.createVariable("station_name", "S1", ("station", "name_strlen"))
        name._Encoding = "utf-8"
        name.long_name = "station name"
        name.set_auto_chartostring(False)
        name[:] = chars(NAMES, 8)
        code = ds.createVariable("station_code", "S1", ("station", "code_strlen"))
        code[:] = chars(["ZRH", "BRN", "GVA", "", "NYA"], 3)
        flag = ds.createVariable("qc", "S1", ("time", "code_strlen"))
        flag[:] = chars([f"{'ok' if k % 3 else 'bad'}"[:3] for k in range(day * nt, day * nt + nt)], 3)
        if with_vlen:
            model = ds.createVariable("model", str, ("station",))
            for k, m in enumerate(MODELS):
                model[k] = m
            label = ds.createVariable("label", str, ())
            label[0] = "Swiss stations"
        v = ds.createVariable("temp", "f4", ("time", "station"))
        v[:] = np.arange(nt * len(NAMES)).reshape(nt, len(NAMES)) + day * 100


def convert(inputs, target, *extra, chunks="time=-1"):
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return oracle.ok("convert", *inputs, target, "--chunks", chunks, "--max-mem", "64MB",
                     "--no-progress", *extra)


def xarray_data_types(ds: xr.Dataset, tmp_path, zarr_format: int) -> dict:
    """The Zarr data type, fill value and attributes of each text variable when xarray itself
    writes `ds`."""
    store = tmp_path / f"xarray-v{zarr_format}.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(store, zarr_format=zarr_format, consolidated=True, mode="w")
    return zarr_data_types(store, ds)


def zarr_data_types(store, ds: xr.Dataset) -> dict:
    group = zarr.open_group(str(store), mode="r")
    out = {}
    for name, var in ds.variables.items():
        if var.dtype.kind in "OSU":
            md = group[name].metadata.to_dict()
            out[name] = (md.get("data_type") or md.get("dtype"), md.get("fill_value"), md.get("attributes"))
    return out


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_netcdf4_text_converts_to_what_xarray_reads_and_writes(tmp_path, zarr_format):
    """Before: refused (exit 3, 'cannot be converted (numbers and booleans only)')."""
    src = tmp_path / "stations.nc"
    write_stations(src)
    target = tmp_path / "cache.zarr"
    convert(src, target, "--zarr-format", zarr_format)
    want = xr.open_dataset(src).load()
    got = oracle.open_xr_no_flags(target).load()
    xr.testing.assert_identical(got, want)
    # The decoded strings really are what was written (not only equal to each other).
    assert list(got.station_name.values) == [w.encode()[:8].decode("utf-8", "ignore") for w in NAMES]
    assert list(got.model.values) == MODELS
    assert got.label.values.item() == "Swiss stations"
    assert got.station_code.dtype == np.dtype("S3")
    assert zarr_data_types(target, want) == xarray_data_types(want, tmp_path, zarr_format)


def test_netcdf3_character_arrays_convert(tmp_path):
    src = tmp_path / "classic.nc"
    write_stations(src, fmt="NETCDF3_64BIT_OFFSET", with_vlen=False)
    target = tmp_path / "cache.zarr"
    convert(src, target)
    want = xr.open_dataset(src).load()
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)
    assert zarr_data_types(target, want) == xarray_data_types(want, tmp_path, 3)


@pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF3_CLASSIC"])
def test_text_along_and_across_the_concat_dim_equals_open_mfdataset(tmp_path, fmt):
    """Static names (compared between files, written once) and a per-time flag (joined along
    time) as open_mfdataset joins them; a selection by time keeps the flags of those times."""
    files = [tmp_path / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write_stations(f, fmt=fmt, day=d, with_vlen=fmt == "NETCDF4")
    target = tmp_path / "cache.zarr"
    convert([str(tmp_path / "day*.nc")], target, "--concat-dim", "time")
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords", data_vars="minimal",
                             coords="minimal", compat="equals").load()
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)
    part = tmp_path / "part.zarr"
    convert([str(tmp_path / "day*.nc")], part, "--concat-dim", "time", "--isel", "time=3:9",
            "--reverse", "station")
    xr.testing.assert_identical(oracle.open_xr_no_flags(part).load(),
                                want.isel(time=slice(3, 9), station=slice(None, None, -1)))


def test_variable_length_strings_are_planned_at_their_real_width(tmp_path):
    """`<U{n}` with n the longest element in code points (here 24), as xarray's astype(str)."""
    src = tmp_path / "stations.nc"
    write_stations(src)
    target = tmp_path / "cache.zarr"
    convert(src, target)
    model = zarr.open_array(str(target / "model"), mode="r")
    assert model.dtype == np.dtype(f"<U{max(len(m) for m in MODELS)}")
    assert list(model[:]) == MODELS


def test_hdf5_strings_convert_as_xarray_reads_them(tmp_path):
    """h5py's variable-length strings (utf-8) become `<U`; fixed-length byte strings stay bytes,
    as h5netcdf reads them."""
    src = tmp_path / "plain.h5"
    with h5py.File(src, "w") as f:
        f["names"] = np.array(["Zürich", "x", ""], dtype=h5py.string_dtype())
        f["codes"] = np.array([b"abc", b"de", b"Z\xc3\xbcr"], dtype="S4")
    target = tmp_path / "cache.zarr"
    convert(src, target, chunks="phony_dim_0=2")
    got = oracle.open_xr_no_flags(target).load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = xr.open_dataset(src, engine="h5netcdf", phony_dims="sort").load()
    xr.testing.assert_identical(got, want)
    assert got.names.dtype == np.dtype("<U6")
    assert got.codes.dtype == np.dtype("S4")


def test_characters_chunked_along_their_length_are_refused_unless_dropped(tmp_path):
    """A character array whose chunks cut its strings cannot be read as whole strings by
    reference: refused before anything is written, naming it and --drop; dropped, the rest
    converts."""
    src = tmp_path / "cut.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("cut", data=chars(NAMES, 8), chunks=(5, 4))
        f["v"] = np.arange(5, dtype="f4")
    target = tmp_path / "cache.zarr"
    r = oracle.run("convert", src, target, "--chunks", "phony_dim_0=-1", "--max-mem", "64MB")
    oracle.assert_one_error_line(r, codes=[3], mentions=["cut", "--drop cut", "string dimension"])
    assert not target.exists()
    convert(src, target, "--drop", "cut", chunks="phony_dim_0=-1")
    got = oracle.open_xr_no_flags(target).load()
    np.testing.assert_array_equal(got.v.values, np.arange(5, dtype="f4"))


@pytest.mark.parametrize("fmt", ["kerchunk-json", "icechunk"])
def test_virtualize_keeps_text_as_references_xarray_reads_the_same(tmp_path, fmt):
    """virtualize does not convert: character arrays stay `|S1` along their string dimension
    (references, or inlined when small as here; xarray stacks them on reading, as from the
    file), variable-length strings are inlined as `vlen-utf8`. Read back by xarray, the text
    equals open_dataset's."""
    from test_virtualize_vars import open_refs, virtualize

    src = tmp_path / "stations.nc"
    write_stations(src)
    out = tmp_path / ("refs.json" if fmt == "kerchunk-json" else "refs.icechunk")
    r = virtualize(src, out, fmt)
    assert r.returncode == 0, oracle.describe(r)
    got = open_refs(out, fmt, tmp_path).load()
    want = xr.open_dataset(src).load()
    for name in ["station_name", "station_code", "qc", "model", "label"]:
        xr.testing.assert_identical(got[name].reset_coords(drop=True), want[name].reset_coords(drop=True))
    arrays = {a["path"]: a for a in json.loads(oracle.ok("inspect", out, "--json").stdout)["arrays"]}
    assert arrays["station_name"]["dtype"] == "|S1" and arrays["station_name"]["shape"] == [5, 8]
    assert arrays["model"]["dtype"] == "|O" and arrays["model"]["inlined"] == 1
