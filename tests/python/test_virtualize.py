"""`chunkmill virtualize` from the command line: the references it writes, read by xarray
through fsspec's reference filesystem, must equal xarray.open_mfdataset of the files; bad
inputs give one error line, a non-zero exit and no output."""

from __future__ import annotations

import json

import netCDF4
import numpy as np
import pytest
import xarray as xr

import oracle


def write_day(path, day: int, scale: float = 0.01, dtype="i2") -> None:
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("time", None)
    ds.createDimension("lat", 12)
    ds.createDimension("lon", 20)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2020-01-01"
    t.calendar = "standard"
    lat = ds.createVariable("lat", "f4", ("lat",))
    lat[:] = np.linspace(55, -55, 12)  # descending, as archives often are
    lon = ds.createVariable("lon", "f4", ("lon",))
    lon[:] = np.arange(20) * 18.0
    air = ds.createVariable("air", dtype, ("time", "lat", "lon"), zlib=True, shuffle=True,
                            chunksizes=(6, 12, 10), fill_value=-32767)
    air.scale_factor = scale
    air.add_offset = 250.0
    air.units = "K"
    rng = np.random.default_rng(day)
    t[:] = np.arange(24) + 24 * day
    values = 250 + 30 * rng.random((24, 12, 20))
    mask = np.zeros(values.shape, bool)
    mask[0, 0, :3] = True  # stored as the fill value, read back as NaN
    air[:] = np.ma.array(values, mask=mask)
    ds.title = "chunkmill virtualize test"
    ds.close()


def open_refs(path) -> xr.Dataset:
    return xr.open_dataset(
        "reference://", engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": {"fo": str(path)}},
    )


def test_references_equal_open_mfdataset(tmp_path):
    files = [tmp_path / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write_day(f, d)
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", refs, "--concat-dim", "time", "--no-progress")
    got = open_refs(refs).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    xr.testing.assert_identical(got, want)
    assert got.air.encoding["scale_factor"] == 0.01


def test_bad_file_is_named_and_skip_bad_continues(tmp_path):
    write_day(tmp_path / "day0.nc", 0)
    (tmp_path / "junk.nc").write_text("this is not netcdf")
    refs = tmp_path / "refs.json"
    r = oracle.run("virtualize", tmp_path / "day0.nc", tmp_path / "junk.nc", "--output", refs, "--concat-dim", "time")
    assert r.returncode == 3, oracle.describe(r)
    assert r.stderr.strip().count("\n") == 0 and "junk.nc" in r.stderr and "not an HDF5 or NetCDF" in r.stderr
    assert not refs.exists()
    r = oracle.ok("virtualize", tmp_path / "day0.nc", tmp_path / "junk.nc", "--output", refs,
                  "--concat-dim", "time", "--skip-bad", "--json")
    assert "junk.nc" in r.stderr
    got = open_refs(refs).load()
    xr.testing.assert_identical(got, xr.open_dataset(tmp_path / "day0.nc").load())


@pytest.mark.parametrize("change", ["scale_factor", "dtype"])
def test_inconsistent_files_are_refused(tmp_path, change):
    write_day(tmp_path / "day0.nc", 0)
    if change == "scale_factor":
        write_day(tmp_path / "day1.nc", 1, scale=0.02)
    else:
        write_day(tmp_path / "day1.nc", 1, dtype="i4")
    refs = tmp_path / "refs.json"
    r = oracle.run("virtualize", tmp_path / "day0.nc", tmp_path / "day1.nc", "--output", refs, "--concat-dim", "time")
    assert r.returncode == 3, oracle.describe(r)
    assert "day1.nc" in r.stderr and ("scale_factor" in r.stderr or "dtype" in r.stderr or "int" in r.stderr), r.stderr
    assert not refs.exists()


def test_existing_output_needs_overwrite(tmp_path):
    write_day(tmp_path / "day0.nc", 0)
    refs = tmp_path / "refs.json"
    refs.write_text("keep me")
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", refs)
    assert r.returncode != 0 and "--overwrite" in r.stderr
    assert refs.read_text() == "keep me"
    # --overwrite replaces only references: this file is not chunkmill's (issue 9).
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", refs, "--overwrite")
    oracle.assert_one_error_line(r, codes=[3], mentions=["refs.json"], pattern="not a kerchunk JSON")
    assert refs.read_text() == "keep me"
    refs.unlink()
    oracle.ok("virtualize", tmp_path / "day0.nc", "--output", refs)
    oracle.ok("virtualize", tmp_path / "day0.nc", "--output", refs, "--overwrite")
    xr.testing.assert_identical(open_refs(refs).load(), xr.open_dataset(tmp_path / "day0.nc").load())


def test_inspect_netcdf_and_references(tmp_path):
    import json

    import h5py

    write_day(tmp_path / "day0.nc", 0)
    write_day(tmp_path / "day1.nc", 1)
    doc = json.loads(oracle.ok("inspect", tmp_path / "day0.nc", "--json").stdout)
    air = next(v for v in doc["variables"] if v["path"] == "/air")
    with h5py.File(tmp_path / "day0.nc") as f:
        assert air["shape"] == list(f["air"].shape)
        assert air["chunk_shape"] == list(f["air"].chunks)
        assert air["byte_ranges"] == f["air"].id.get_num_chunks()
    assert air["dimensions"] == ["time", "lat", "lon"]
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", tmp_path / "day0.nc", tmp_path / "day1.nc", "--output", refs, "--concat-dim", "time")
    doc = json.loads(oracle.ok("inspect", refs, "--json").stdout)
    arrays = {a["path"]: a for a in doc["arrays"]}
    assert arrays["air"]["shape"] == [48, 12, 20] and arrays["air"]["chunks"] == [6, 12, 10]
    assert len(doc["files"]) == 2


# ---------------------------------------------------------------------------------------------
# kerchunk Parquet


def open_reference_fs(fo, remote_options: dict | None = None, **kw) -> xr.Dataset:
    """References (JSON file or Parquet directory) opened as fsspec's reference filesystem.
    With remote options (S3), the reference and remote filesystems are made asynchronous, as
    zarr-python 3 needs them (it would otherwise remake the reference filesystem around the
    synchronous s3fs instance, which fsspec refuses)."""
    import fsspec

    if remote_options is not None:
        kw.update(remote_options={**remote_options, "asynchronous": True}, asynchronous=True)
    fs = fsspec.filesystem("reference", fo=str(fo), **kw)
    return xr.open_dataset(fs.get_mapper(), engine="zarr", consolidated=False)


def test_parquet_references_equal_open_mfdataset(tmp_path):
    import pandas as pd

    files = [tmp_path / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write_day(f, d)
    out = tmp_path / "refs.parq"
    r = oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", out, "--concat-dim", "time",
                  "--format", "kerchunk-parquet", "--record-size", "7", "--json")
    doc = json.loads(r.stdout)
    # air: 3 files x 4 time chunks x 2 lon chunks = 24 chunks -> 4 files of 7 rows, padded
    assert sorted(p.name for p in (out / "air").iterdir()) == [f"refs.{i}.parq" for i in range(4)]
    for i in range(4):
        df = pd.read_parquet(out / "air" / f"refs.{i}.parq", engine="fastparquet")
        assert list(df.columns) == ["path", "offset", "size", "raw"] and len(df) == 7
    last = pd.read_parquet(out / "air" / "refs.3.parq", engine="fastparquet")
    assert last.path.notna().sum() == 3 and last.path.isna().sum() == 4  # chunks 21..23, then padding
    meta = json.loads((out / ".zmetadata").read_text())
    assert meta["record_size"] == 7 and meta["metadata"]["air/.zarray"]["chunks"] == [6, 12, 10]
    got = open_reference_fs(out).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    xr.testing.assert_identical(got, want)
    assert doc["references"] + doc["inlined"] > 24
    # the same references as the JSON output
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", refs, "--concat-dim", "time")
    xr.testing.assert_identical(open_refs(refs).load(), got)


def test_parquet_output_is_refused_when_it_exists(tmp_path):
    write_day(tmp_path / "day0.nc", 0)
    out = tmp_path / "refs.parq"
    out.mkdir()
    (out / "keep").write_text("me")
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", out, "--format", "kerchunk-parquet")
    oracle.assert_one_error_line(r, codes=[3], mentions=["refs.parq", "--overwrite"])
    assert (out / "keep").read_text() == "me"
    # --overwrite replaces only references: this directory is not chunkmill's (issue 9).
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", out, "--format", "kerchunk-parquet",
                   "--overwrite")
    oracle.assert_one_error_line(r, codes=[3], mentions=["refs.parq"], pattern="not a kerchunk Parquet")
    assert (out / "keep").read_text() == "me"
    (out / "keep").unlink()
    for _ in range(2):  # into the empty directory, then over the references written
        oracle.ok("virtualize", tmp_path / "day0.nc", "--output", out, "--format", "kerchunk-parquet",
                  "--overwrite")
    xr.testing.assert_identical(open_reference_fs(out).load(), xr.open_dataset(tmp_path / "day0.nc").load())
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".chunkmill-" in p.name]
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", tmp_path / "x", "--format", "kerchunk-parquet",
                   "--record-size", "0")
    assert r.returncode == 2, oracle.describe(r)


def test_fifty_thousand_chunks_to_parquet_match_h5py(tmp_path):
    """50 000 chunks, references only (no inlining), 5 record files: every offset and size is
    h5py's, and values read through fsspec equal h5py's."""
    import time

    import h5py
    import pandas as pd

    path = tmp_path / "big.h5"
    data = (np.arange(500_000, dtype="i2") % 1000).reshape(50_000, 10)
    with h5py.File(path, "w") as f:
        f.create_dataset("big", data=data, maxshape=(None, 10), chunks=(1, 10))
    out = tmp_path / "big.parq"
    t0 = time.perf_counter()
    oracle.ok("virtualize", path, "--output", out, "--format", "kerchunk-parquet", "--record-size", "10000",
              "--inline-threshold", "0", "--no-progress")
    print(f"virtualize to Parquet, 50 000 chunks: {time.perf_counter() - t0:.2f} s (debug build)")
    want = {}
    with h5py.File(path) as f:
        f["big"].id.chunk_iter(lambda info: want.__setitem__(info.chunk_offset[0], (info.byte_offset, info.size)))
    parts = [pd.read_parquet(out / "big" / f"refs.{i}.parq", engine="fastparquet") for i in range(5)]
    df = pd.concat(parts, ignore_index=True)
    assert len(df) == 50_000 and df.raw.isna().all()
    assert (df.path == str(path.resolve())).all()
    got = dict(zip(range(50_000), zip(df.offset.tolist(), df["size"].tolist())))
    assert got == want
    ds = open_reference_fs(out)
    for sl in (slice(0, 7), slice(9_995, 10_007), slice(49_990, 50_000)):
        np.testing.assert_array_equal(ds.big[sl].values, data[sl])
    # kerchunk's own Parquet of the same file (fastparquet, `path` categorical: one URL for
    # 10 000 rows) is read by chunkmill inspect with every chunk referenced.
    import kerchunk.df
    import kerchunk.hdf

    refs = kerchunk.hdf.SingleHdf5ToZarr(str(path), inline_threshold=0).translate()
    theirs = tmp_path / "kerchunk.parq"
    kerchunk.df.refs_to_dataframe(refs, str(theirs), record_size=10_000)
    assert str(pd.read_parquet(theirs / "big" / "refs.0.parq", engine="fastparquet").path.dtype) == "category"
    doc = json.loads(oracle.ok("inspect", theirs, "--json").stdout)
    big = next(a for a in doc["arrays"] if a["path"] == "big")
    assert (big["references"], big["inlined"], big["missing"]) == (50_000, 0, 0)


def test_inspect_reads_kerchunk_own_parquet(tmp_path):
    """kerchunk's references (SingleHdf5ToZarr) written as Parquet by kerchunk.df (fsspec's
    LazyReferenceMapper) are read by chunkmill inspect with the same chunks."""
    import kerchunk.df
    import kerchunk.hdf

    write_day(tmp_path / "day0.nc", 0)
    refs = kerchunk.hdf.SingleHdf5ToZarr(str(tmp_path / "day0.nc"), inline_threshold=300).translate()
    out = tmp_path / "kerchunk.parq"
    kerchunk.df.refs_to_dataframe(refs, str(out), record_size=3)
    doc = json.loads(oracle.ok("inspect", out, "--json").stdout)
    assert doc["kind"] == "kerchunk-parquet"
    arrays = {a["path"]: a for a in doc["arrays"]}
    keys = refs["refs"]
    for var in ("air", "time", "lat", "lon"):
        zarray = json.loads(keys[f"{var}/.zarray"])
        a = arrays[var]
        assert a["shape"] == zarray["shape"] and a["chunks"] == zarray["chunks"], var
        chunks = {k: v for k, v in keys.items() if k.startswith(f"{var}/") and not k.split("/")[-1].startswith(".z")}
        assert a["references"] == sum(isinstance(v, list) for v in chunks.values()), var
        assert a["inlined"] == sum(not isinstance(v, list) for v in chunks.values()), var
        assert a["references"] + a["inlined"] + a["missing"] == a["chunk_slots"], var
    assert arrays["air"]["references"] == 8 and doc["files"] == [str(tmp_path / "day0.nc")]


# ---------------------------------------------------------------------------------------------
# s3:// inputs (the S3-compatible server that scripts/test starts)


@pytest.fixture
def s3_prefix():
    """A fresh prefix in the test bucket, as (s3fs filesystem, "s3://bucket/prefix")."""
    prefix = oracle.s3_prefix("virtualize")
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **oracle.s3_options())
    yield fs, prefix
    try:
        fs.rm(prefix, recursive=True)
    except FileNotFoundError:
        pass  # nothing was uploaded


def test_s3_inputs_reference_the_same_chunks_as_local_files(tmp_path, s3_prefix):
    fs, prefix = s3_prefix
    files = [tmp_path / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write_day(f, d)
        fs.put(str(f), f"{prefix}/data/{f.name}")
    fs.put(str(files[0]), f"{prefix}/data/other/day9.nc")  # not matched: * does not cross /
    local = tmp_path / "local.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", local, "--concat-dim", "time")
    remote = tmp_path / "remote.json"
    r = oracle.ok("virtualize", f"{prefix}/data/day*.nc", "--output", remote, "--concat-dim", "time", "--json")
    assert json.loads(r.stdout)["files"] == 3
    lrefs = json.loads(local.read_text())["refs"]
    rrefs = json.loads(remote.read_text())["refs"]
    assert sorted(lrefs) == sorted(rrefs)
    n = 0
    for key, lv in lrefs.items():
        rv = rrefs[key]
        if isinstance(lv, list):
            assert rv[0] == f"{prefix}/data/{lv[0].rsplit('/', 1)[1]}", key
            assert rv[1:] == lv[1:], key
            n += 1
        else:
            assert rv == lv, key
    assert n >= 24
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    got = open_reference_fs(remote, remote_protocol="s3", remote_options=oracle.s3_options()).load()
    xr.testing.assert_identical(got, want)
    # the same from Parquet, and from a plain URL list
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{prefix}/data/{f.name}\n" for f in files))
    out = tmp_path / "remote.parq"
    oracle.ok("virtualize", f"@{listing}", "--output", out, "--concat-dim", "time", "--format", "kerchunk-parquet",
              "--record-size", "5")
    got = open_reference_fs(out, remote_protocol="s3", remote_options=oracle.s3_options()).load()
    xr.testing.assert_identical(got, want)


def test_s3_inputs_that_do_not_exist_are_named(tmp_path, s3_prefix):
    _fs, prefix = s3_prefix
    r = oracle.run("virtualize", f"{prefix}/none/*.nc", "--output", tmp_path / "r.json")
    oracle.assert_one_error_line(r, codes=[3], mentions=[f"{prefix}/none/*.nc", "matches no object"])
    r = oracle.run("virtualize", f"{prefix}/none/missing.nc", "--output", tmp_path / "r.json")
    oracle.assert_one_error_line(r, codes=[3], mentions=[f"{prefix}/none/missing.nc", "no such object"])
    assert not (tmp_path / "r.json").exists()
    r = oracle.run("virtualize", f"{prefix}/none/missing.nc", "--output", f"{prefix}/refs.json")
    oracle.assert_one_error_line(r, codes=[2], mentions=["--output", "local path"])


# ---------------------------------------------------------------------------------------------
# Icechunk repositories, read back through icechunk-python


def open_icechunk(path, containers: dict) -> xr.Dataset:
    """The `main` branch of the Icechunk repository at `path`, with the virtual chunk
    containers `containers` ({url_prefix: credentials, or None for local files}) authorized."""
    import icechunk

    # icechunk 2.3 deprecates None for local file containers: it wants this explicit sentinel
    containers = {k: icechunk.credentials.LocalFileSystemAccess if v is None else v for k, v in containers.items()}

    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(path)), authorize_virtual_chunk_access=containers
    )
    session = repo.readonly_session("main")
    return xr.open_zarr(session.store, consolidated=False)


def test_icechunk_repository_equals_open_mfdataset(tmp_path):
    import icechunk

    data = tmp_path / "data"
    data.mkdir()
    files = [data / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write_day(f, d)
    out = tmp_path / "air.icechunk"
    r = oracle.ok("virtualize", str(data / "day*.nc"), "--output", out, "--concat-dim", "time",
                  "--format", "icechunk", "--json")
    doc = json.loads(r.stdout)
    prefix = f"file://{data.resolve()}/"
    # the repository declares the container of the inputs, and nothing else
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(out)))
    assert list(repo.config.virtual_chunk_containers or {}) == [prefix]
    assert repo.list_branches() == {"main"}
    # without the authorization, reads of virtual chunks are refused
    with pytest.raises(Exception):
        xr.open_zarr(repo.readonly_session("main").store, consolidated=False).air.load()
    got = open_icechunk(out, {prefix: None}).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    xr.testing.assert_identical(got, want)
    assert got.air.encoding["scale_factor"] == 0.01
    assert got.air.encoding["_FillValue"] == -32767
    np.testing.assert_array_equal(np.isnan(got.air.values), np.isnan(want.air.values))
    # Zarr v3 metadata: dimension names, codecs of the HDF5 filters, chunk grid
    session = repo.readonly_session("main")
    import zarr

    air = zarr.open_array(session.store, path="air", mode="r")
    assert air.metadata.dimension_names == ("time", "lat", "lon")
    assert air.chunks == (6, 12, 10)
    names = [c.to_dict()["name"] for c in air.metadata.codecs]
    assert names[0] == "bytes" and "numcodecs.zlib" in names and "numcodecs.shuffle" in names
    # every chunk of air is a virtual reference into the files
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", str(data / "day*.nc"), "--output", refs, "--concat-dim", "time")
    kerchunk_refs = json.loads(refs.read_text())["refs"]
    n = sum(1 for k, v in kerchunk_refs.items() if k.startswith("air/") and isinstance(v, list))
    assert n == 24 and doc["references"] >= 24
    # chunkmill inspect reads the repository with the counts of the JSON references
    mine = json.loads(oracle.ok("inspect", out, "--json").stdout)
    theirs = json.loads(oracle.ok("inspect", refs, "--json").stdout)
    assert mine["kind"] == "icechunk"
    count = lambda d: {a["path"]: (a["references"], a["inlined"], a["missing"], a["chunk_slots"], a["shape"],
                                   a["chunks"], a["dtype"]) for a in d["arrays"]}
    assert count(mine) == count(theirs)
    assert sorted(mine["files"]) == sorted(theirs["files"])


def test_icechunk_missing_and_inlined_chunks(tmp_path):
    """A variable with never-written chunks (fill value) and small chunks inlined: the
    repository reads back as the file, and inspect counts as for the JSON references."""
    path = tmp_path / "sparse.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("x", 40)
        v = ds.createVariable("v", "f4", ("x",), chunksizes=(10,), fill_value=-9.5)
        v[0:10] = np.arange(10)  # chunk 0 written; chunks 1..3 never written
        v[30:40] = np.arange(10) + 30  # chunk 3 written
        v.units = "m"
        w = ds.createVariable("w", "i4", ("x",), chunksizes=(40,))
        w[:] = np.arange(40)
    out = tmp_path / "sparse.icechunk"
    oracle.ok("virtualize", path, "--output", out, "--format", "icechunk", "--inline-threshold", "100")
    got = open_icechunk(out, {f"file://{tmp_path.resolve()}/": None}).load()
    want = xr.open_dataset(path).load()
    xr.testing.assert_identical(got, want)
    refs = tmp_path / "sparse.json"
    oracle.ok("virtualize", path, "--output", refs, "--inline-threshold", "100")
    mine = {a["path"]: a for a in json.loads(oracle.ok("inspect", out, "--json").stdout)["arrays"]}
    theirs = {a["path"]: a for a in json.loads(oracle.ok("inspect", refs, "--json").stdout)["arrays"]}
    for k in ("references", "inlined", "missing"):
        assert mine["v"][k] == theirs["v"][k] and mine["w"][k] == theirs["w"][k], k
    assert mine["v"]["missing"] == 2 and mine["v"]["inlined"] == 2  # 40-byte chunks: inlined


def test_icechunk_output_is_refused_when_it_exists(tmp_path):
    write_day(tmp_path / "day0.nc", 0)
    out = tmp_path / "out.icechunk"
    out.mkdir()
    (out / "keep").write_text("me")
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", out, "--format", "icechunk")
    assert r.returncode != 0 and "--overwrite" in r.stderr, oracle.describe(r)
    assert (out / "keep").read_text() == "me"
    # --overwrite replaces only references: this directory is not chunkmill's (issue 9).
    r = oracle.run("virtualize", tmp_path / "day0.nc", "--output", out, "--format", "icechunk", "--overwrite")
    oracle.assert_one_error_line(r, codes=[3], mentions=["out.icechunk"], pattern="not an Icechunk repository")
    assert (out / "keep").read_text() == "me"
    (out / "keep").unlink()
    for _ in range(2):  # into the empty directory, then over the repository written
        oracle.ok("virtualize", tmp_path / "day0.nc", "--output", out, "--format", "icechunk", "--overwrite")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    got = open_icechunk(out, {f"file://{tmp_path.resolve()}/": None}).load()
    xr.testing.assert_identical(got, xr.open_dataset(tmp_path / "day0.nc").load())


def test_icechunk_s3_inputs_declare_an_s3_container(tmp_path, s3_prefix):
    """s3:// inputs: the references keep the s3:// URLs, the repository declares an S3
    container for their prefix (the test server's endpoint, from AWS_ENDPOINT_URL), and
    icechunk-python reads the chunks from S3 once that container is authorized."""
    import os

    import icechunk

    fs, prefix = s3_prefix
    files = [tmp_path / f"day{d}.nc" for d in range(2)]
    for d, f in enumerate(files):
        write_day(f, d)
        fs.put(str(f), f"{prefix}/data/{f.name}")
    out = tmp_path / "remote.icechunk"
    oracle.ok("virtualize", f"{prefix}/data/day*.nc", "--output", out, "--concat-dim", "time",
              "--format", "icechunk")
    container = f"{prefix}/data/"
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(out)))
    assert list(repo.config.virtual_chunk_containers or {}) == [container]
    credentials = icechunk.containers_credentials({container: icechunk.s3_credentials(
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"], secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"])})
    got = open_icechunk(out, credentials).load()
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()
    xr.testing.assert_identical(got, want)
    doc = json.loads(oracle.ok("inspect", out, "--json").stdout)
    assert sorted(doc["files"]) == [f"{prefix}/data/{f.name}" for f in files]


# ---------------------------------------------------------------------------------------------
# the scan as map tasks of an executor (`--executor processes`; SLURM in test_slurm.py)


def normalized_refs(path) -> dict:
    """A kerchunk JSON file with its metadata documents parsed (attribute order aside)."""
    refs = json.loads(path.read_text())["refs"]
    return {k: json.loads(v) if k.rsplit("/", 1)[-1].startswith(".z") else v for k, v in refs.items()}


def test_scan_on_worker_processes_writes_the_same_references(tmp_path):
    files = [tmp_path / f"day{d}.nc" for d in range(5)]
    for d, f in enumerate(files):
        write_day(f, d)
    (tmp_path / "bad.nc").write_bytes(b"not a netcdf file at all" * 10)
    threads, procs = tmp_path / "threads.json", tmp_path / "procs.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", threads, "--concat-dim", "time",
              "--no-progress")
    work = tmp_path / "work"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", procs, "--concat-dim", "time",
              "--no-progress", "--executor", "processes", "--workers", "2", "--files-per-task", "2",
              "--work-dir", work)
    assert normalized_refs(procs) == normalized_refs(threads)
    xr.testing.assert_identical(open_refs(procs).load(),
                                xr.open_mfdataset([str(f) for f in files], combine="by_coords").load())
    # A bad file is refused as on threads (exit 3, named), or skipped with --skip-bad.
    both = ["virtualize", str(tmp_path / "*.nc"), "--concat-dim", "time", "--no-progress",
            "--executor", "processes", "--workers", "2", "--work-dir", work]
    r = oracle.run(*both, "--output", tmp_path / "x.json")
    oracle.assert_one_error_line(r, codes=[3], mentions=["bad.nc"])
    assert not (tmp_path / "x.json").exists()
    r = oracle.run(*both, "--output", tmp_path / "y.json", "--skip-bad")
    assert r.returncode == 0, oracle.describe(r)
    assert "bad.nc" in r.stderr
    assert normalized_refs(tmp_path / "y.json") == normalized_refs(threads)
