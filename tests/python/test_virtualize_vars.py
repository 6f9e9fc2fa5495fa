"""`chunkmill virtualize` handles variables one by one (issue 9, items 14 and 15): a variable
no Zarr reader can read by reference (strings, a compound, LZF, szip, nbit, scaleoffset, a
fletcher32-first pipeline numcodecs cannot undo) is decoded and inlined when it is smaller
than --inline-threshold, else left out with one warning naming it and --drop; never the whole
file. Read back with zarr-python/xarray (fsspec's reference filesystem, icechunk-python) and
compared with netCDF4/h5py. Also: a FIFO input is refused, not waited on; inspect of a
truncated file exits 3 like virtualize."""

from __future__ import annotations

import json
import os

import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

import oracle

NAMES = ["Valentia", "Mace Head", "Zürich-Fluntern", "", "Ny-Ålesund"]


def icechunk_store(out, tmp_path):
    """The main branch of an Icechunk repository, its local-file container authorized."""
    import icechunk

    container = f"file://{tmp_path.resolve()}/"
    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(out)),
        authorize_virtual_chunk_access={container: icechunk.credentials.LocalFileSystemAccess},
    )
    return repo.readonly_session("main").store


def open_refs(out, fmt: str, tmp_path) -> xr.Dataset:
    """References read back by zarr-python through xarray, with no chunkmill code."""
    if fmt == "icechunk":
        return xr.open_zarr(icechunk_store(out, tmp_path), consolidated=False)
    import fsspec

    fs = fsspec.filesystem("reference", fo=str(out))
    return xr.open_dataset(fs.get_mapper(), engine="zarr", consolidated=False)


def virtualize(path, out, fmt: str = "kerchunk-json", *extra):
    return oracle.run("virtualize", path, "--output", out, "--format", fmt, "--no-progress", *extra)


def skipped_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith("--drop ")]


def write_stations(path, first_day: int = 0) -> None:
    """A NetCDF-4 station file: vlen-string names, fixed char codes, numeric data."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("station", len(NAMES))
        ds.createDimension("nchar", 4)
        ds.createDimension("time", 300)
        name = ds.createVariable("station_name", str, ("station",))
        name[:] = np.array(NAMES, dtype=object)
        name.long_name = "station name"
        code = ds.createVariable("station_code", "S1", ("station", "nchar"))
        code[:] = netCDF4.stringtochar(np.array(["VAL", "MHD", "ZRH", "", "NYA"], dtype="S4"))
        t = ds.createVariable("time", "f8", ("time",))
        t[:] = np.arange(300) + first_day
        t.units = "days since 2020-01-01"
        # Random values: chunks that compress to more than the inline threshold.
        v = ds.createVariable("temp", "f4", ("time", "station"), zlib=True, chunksizes=(100, 5))
        v[:] = np.random.default_rng(0).random((300, 5)).astype("f4")


@pytest.mark.parametrize("fmt", ["kerchunk-json", "kerchunk-parquet", "icechunk"])
def test_string_variable_station_name_is_inlined_and_reads_back_as_strings(tmp_path, fmt):
    """On d1abf59 the vlen-string variable made the whole file fail (exit 3)."""
    path = tmp_path / "stations.nc"
    write_stations(path)
    out = tmp_path / ("refs.json" if fmt == "kerchunk-json" else "refs.d")
    r = virtualize(path, out, fmt)
    assert r.returncode == 0, oracle.describe(r)
    assert "station_name" not in r.stderr, r.stderr
    got = open_refs(out, fmt, tmp_path).load()
    want = xr.open_dataset(path).load()
    assert [str(s) for s in got.station_name.values] == NAMES
    assert [str(s) for s in want.station_name.values] == NAMES
    assert got.station_name.attrs["long_name"] == "station name"
    assert got.station_name.dims == ("station",)
    np.testing.assert_array_equal(got.station_code.values, want.station_code.values)
    np.testing.assert_array_equal(got.temp.values, want.temp.values)
    # The temperature chunks stay references: only the strings were inlined.
    arrays = {a["path"]: a for a in json.loads(oracle.ok("inspect", out, "--json").stdout)["arrays"]}
    assert arrays["temp"]["references"] == 3 and arrays["station_name"]["inlined"] == 1


def test_string_variable_over_the_threshold_is_skipped_not_the_file(tmp_path):
    path = tmp_path / "stations.nc"
    write_stations(path)
    out = tmp_path / "refs.json"
    r = virtualize(path, out, "kerchunk-json", "--inline-threshold", "20")
    assert r.returncode == 0, oracle.describe(r)
    lines = skipped_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("--drop station_name:"), r.stderr
    assert "--inline-threshold 20" in lines[0] and "stations.nc" in lines[0]
    assert r.stderr.count("warning") == 1, r.stderr
    got = open_refs(out, "kerchunk-json", tmp_path).load()
    assert "station_name" not in got
    np.testing.assert_array_equal(got.temp.values, xr.open_dataset(path).temp.values)
    # --drop leaves it out on purpose: no warning; a name no input has is a usage error.
    r = virtualize(path, out, "kerchunk-json", "--inline-threshold", "20", "--drop", "station_name", "--overwrite")
    assert r.returncode == 0 and r.stderr.strip() == "", oracle.describe(r)
    assert "station_name" not in open_refs(out, "kerchunk-json", tmp_path)
    r = virtualize(path, tmp_path / "other.json", "kerchunk-json", "--drop", "no_such_var")
    assert r.returncode == 2 and "no_such_var" in r.stderr, oracle.describe(r)
    assert not (tmp_path / "other.json").exists()


def test_scan_on_worker_processes_inlines_and_skips_the_same_variables(tmp_path):
    """A scan on worker processes passes each file's references through JSON: the inlined
    strings and the list of variables left out must survive it, as on threads."""
    for d in range(2):
        write_stations(tmp_path / f"stations{d}.nc", first_day=300 * d)
    runs = {}
    for name, extra in [("threads", []), ("procs", ["--executor", "processes", "--workers", "2",
                                                    "--files-per-task", "1", "--work-dir", tmp_path / "work"])]:
        out = tmp_path / f"{name}.json"
        r = oracle.run("virtualize", str(tmp_path / "stations*.nc"), "--output", out, "--concat-dim", "time",
                       "--identical-dims", "station_code", "--no-progress", "--drop", "temp", "--json", *extra)
        assert r.returncode == 0, oracle.describe(r)
        runs[name] = (json.loads(out.read_text())["refs"], skipped_lines(r.stderr), json.loads(r.stdout))
    assert runs["procs"][0] == runs["threads"][0]
    assert runs["procs"][1] == runs["threads"][1] == []
    got = open_refs(tmp_path / "procs.json", "kerchunk-json", tmp_path).load()
    assert [str(s) for s in got.station_name.values] == NAMES and "temp" not in got
    assert got.sizes["time"] == 600
    for name in ("threads", "procs"):
        out = tmp_path / f"{name}_small.json"
        extra = ["--executor", "processes", "--workers", "2", "--work-dir", tmp_path / "work2"] if name == "procs" else []
        r = oracle.run("virtualize", str(tmp_path / "stations*.nc"), "--output", out, "--concat-dim", "time",
                       "--no-progress", "--inline-threshold", "20", "--json", *extra)
        assert r.returncode == 0, oracle.describe(r)
        lines = skipped_lines(r.stderr)
        assert len(lines) == 1 and lines[0].startswith("--drop station_name:") and "1 more file" in lines[0], r.stderr
        report = json.loads(r.stdout)
        assert [s["variable"] for s in report["skipped_variables"]] == ["station_name", "station_name"]


@pytest.mark.parametrize("fmt", ["kerchunk-json", "icechunk"])
def test_compound_variable_is_inlined_as_a_struct_or_skipped_with_its_reason(tmp_path, fmt):
    """A small compound variable becomes a Zarr structured (v2) / struct (v3) array that
    zarr-python reads; a large one is skipped with the reason; the rest is virtualized."""
    import fsspec
    import zarr

    path = tmp_path / "compound.h5"
    rec = np.dtype([("id", "<i4"), ("value", "<f8"), ("flag", "S2")])
    small = np.array([(1, 0.5, b"ok"), (2, -1.5, b"no")], dtype=rec)
    large = np.zeros(1000, dtype=rec)
    large["id"] = np.arange(1000)
    with h5py.File(path, "w") as f:
        f["records"] = small
        f["log"] = large
        f["values"] = np.arange(12, dtype="<f8").reshape(3, 4)
    out = tmp_path / ("refs.json" if fmt == "kerchunk-json" else "refs.icechunk")
    r = virtualize(path, out, fmt)
    assert r.returncode == 0, oracle.describe(r)
    lines = skipped_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("--drop log:") and "--inline-threshold 500" in lines[0], r.stderr
    if fmt == "icechunk":
        group = zarr.open_group(icechunk_store(out, tmp_path), mode="r")
    else:
        group = zarr.open_group(fsspec.filesystem("reference", fo=str(out)).get_mapper(), mode="r")
    assert "log" not in group
    records = group["records"][...]
    assert records.dtype.names == ("id", "value", "flag")
    for name in rec.names:
        np.testing.assert_array_equal(records[name], small[name])
    with h5py.File(path) as f:
        np.testing.assert_array_equal(group["values"][...], f["values"][...])


def h5_filtered(path, name, data, **kw) -> None:
    with h5py.File(path, "a") as f:
        f.create_dataset(name, data=data, chunks=(min(len(data), 50),), **kw)


def h5_nbit(path, name, data) -> None:
    """h5py has no nbit keyword: the low-level API adds the filter (HDF5 fills in its
    parameters) to the dataset creation list."""
    with h5py.File(path, "a") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((min(len(data), 50),))
        dcpl.set_filter(h5py.h5z.FILTER_NBIT, 0)
        space = h5py.h5s.create_simple(data.shape)
        tid = h5py.h5t.py_create(data.dtype).copy()
        dsid = h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


FILTERS = {
    "lzf": lambda p, n, d: h5_filtered(p, n, d, compression="lzf"),
    "scaleoffset": lambda p, n, d: h5_filtered(p, n, d, scaleoffset=0),
    "nbit": h5_nbit,
    "szip": lambda p, n, d: h5_filtered(p, n, d, compression="szip", compression_opts=("nn", 8)),
}


@pytest.mark.parametrize("filt", sorted(FILTERS))
def test_filtered_variables_lzf_szip_nbit_scaleoffset_are_inlined_or_skipped(tmp_path, filt):
    """A small variable behind a filter no Zarr codec has is decoded and inlined, a large one
    is skipped with the reason; a plain variable of the same file is referenced. On d1abf59
    the whole file failed."""
    if filt == "szip" and not h5py.h5z.filter_avail(h5py.h5z.FILTER_SZIP):
        pytest.skip("this h5py's HDF5 has no szip encoder")
    path = tmp_path / f"{filt}.h5"
    small = (np.arange(40, dtype="<i4") * 37) % 1000
    large = (np.arange(4000, dtype="<i4") * 7919) % 100000
    FILTERS[filt](path, "small", small)
    FILTERS[filt](path, "large", large)
    with h5py.File(path, "a") as f:
        f["plain"] = np.arange(200, dtype="<f4")
        assert f["small"].id.get_create_plist().get_nfilters() == 1
    out = tmp_path / "refs.json"
    r = virtualize(path, out, "kerchunk-json", "--inline-threshold", "1000")
    assert r.returncode == 0, oracle.describe(r)
    lines = skipped_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("--drop large:") and filt in lines[0], r.stderr
    got = open_refs(out, "kerchunk-json", tmp_path).load()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(got["small"].values, f["small"][...])
        np.testing.assert_array_equal(got["plain"].values, f["plain"][...])
    assert "large" not in got


@pytest.mark.parametrize("fmt", ["kerchunk-json", "icechunk"])
def test_fletcher32_shuffle_deflate_pipeline_decodes_in_zarr_python(tmp_path, fmt):
    """netCDF-C's fletcher32 → shuffle → deflate. For 4-byte elements the chunk plus its
    checksum is a whole number of elements: referenced, and zarr-python decodes it. For
    doubles it is not (numcodecs' Shuffle refused it: "Shuffle buffer is not an integer
    multiple of elementsize"): inlined when small, else skipped with the reason."""
    path = tmp_path / "checked.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 600)
        ds.createDimension("y", 8)
        opts = dict(zlib=True, shuffle=True, fletcher32=True)
        a = ds.createVariable("f4", "f4", ("x",), chunksizes=(100,), **opts)
        a[:] = np.sin(np.arange(600)).astype("f4")
        b = ds.createVariable("f8_small", "f8", ("y",), chunksizes=(8,), **opts)
        b[:] = np.cos(np.arange(8))
        c = ds.createVariable("f8_large", "f8", ("x",), chunksizes=(100,), **opts)
        c[:] = np.arange(600) / 3
    with h5py.File(path) as f:
        # The order this test is about: fletcher32 first in the pipeline.
        plist = f["f8_large"].id.get_create_plist()
        assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == [3, 2, 1]
    out = tmp_path / ("refs.json" if fmt == "kerchunk-json" else "refs.icechunk")
    r = virtualize(path, out, fmt, "--inline-threshold", "100")
    assert r.returncode == 0, oracle.describe(r)
    lines = skipped_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("--drop f8_large:"), r.stderr
    assert "fletcher32" in lines[0] and "shuffle" in lines[0]
    got = open_refs(out, fmt, tmp_path).load()
    want = xr.open_dataset(path).load()
    np.testing.assert_array_equal(got["f4"].values, want["f4"].values)
    np.testing.assert_array_equal(got["f8_small"].values, want["f8_small"].values)
    assert "f8_large" not in got
    arrays = {a["path"]: a for a in json.loads(oracle.ok("inspect", out, "--json").stdout)["arrays"]}
    assert arrays["f4"]["references"] == 6 and "numcodecs.fletcher32" in arrays["f4"]["codecs"]


def test_fifo_input_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe.nc"
    os.mkfifo(fifo)
    r = oracle.run("virtualize", fifo, "--output", tmp_path / "refs.json", timeout=30)
    assert r.returncode == 3, oracle.describe(r)
    assert "pipe.nc" in r.stderr and "not a regular file" in r.stderr, r.stderr
    assert not (tmp_path / "refs.json").exists()
    for command in (["inspect", fifo], ["convert", fifo, tmp_path / "out.zarr", "--chunks", "x=1",
                                        "--max-mem", "64MB"]):
        r = oracle.run(*command, timeout=30)
        assert r.returncode == 3 and "pipe.nc" in r.stderr and "not a regular file" in r.stderr, oracle.describe(r)
    assert not (tmp_path / "out.zarr").exists()


def test_inspect_of_truncated_hdf5_reports_damage_and_exits_3(tmp_path):
    path = tmp_path / "cut.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 50_000)
        v = ds.createVariable("v", "f8", ("x",))
        v[:] = np.arange(50_000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    r = oracle.run("inspect", path)
    assert r.returncode == 3, oracle.describe(r)
    assert "cut.nc" in r.stderr and "truncated" in r.stderr, r.stderr
    # The same code virtualize gives for the same file.
    r = oracle.run("virtualize", path, "--output", tmp_path / "refs.json")
    assert r.returncode == 3, oracle.describe(r)
