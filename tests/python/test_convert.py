"""`chunkmill convert` from the command line: collections written by netCDF4-python are converted
to Zarr, and xarray must read the result equal to `xarray.open_mfdataset` of the same files with
the equivalent xarray operations applied (sel, isel, reversed axes, rename, drop, CF decoding,
astype). Bad input gives one error line, exit 3, and the target is left as it was."""

from __future__ import annotations

import json

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import oracle

NLAT, NLON, NT = 36, 48, 24


def write_day(path, day: int, *, air_dtype="i2", fmt="NETCDF4", uwnd_chunks=(24, 9, 12)) -> None:
    """One day of a collection: CF time, descending latitudes, `air` packed as int16 with
    scale_factor/add_offset/_FillValue and some masked values, `uwnd` float32 with a fill value,
    chunked differently."""
    ds = netCDF4.Dataset(path, "w", format=fmt)
    ds.createDimension("time", None)
    ds.createDimension("lat", NLAT)
    ds.createDimension("lon", NLON)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2020-01-01"
    t.calendar = "standard"
    lat = ds.createVariable("lat", "f4", ("lat",))
    lat[:] = np.linspace(87.5, -87.5, NLAT)
    lat.units = "degrees_north"
    lon = ds.createVariable("lon", "f4", ("lon",))
    lon[:] = np.arange(NLON) * 7.5
    lon.units = "degrees_east"
    nc4 = fmt == "NETCDF4"
    air_kw = dict(zlib=True, shuffle=True, chunksizes=(6, 12, 24)) if nc4 else {}
    air = ds.createVariable("air", air_dtype, ("time", "lat", "lon"), fill_value=-32767, **air_kw)
    air.scale_factor = 0.01
    air.add_offset = 250.0
    air.units = "K"
    uwnd_kw = dict(zlib=True, chunksizes=uwnd_chunks) if nc4 else {}
    uwnd = ds.createVariable("uwnd", "f4", ("time", "lat", "lon"), fill_value=np.float32(-9999.0), **uwnd_kw)
    uwnd.units = "m/s"
    rng = np.random.default_rng(day)
    t[:] = np.arange(NT) + NT * day
    values = 250 + 30 * rng.random((NT, NLAT, NLON))
    mask = np.zeros(values.shape, bool)
    mask[0, 0, :3] = True  # stored as the fill value, read back as NaN
    air[:] = np.ma.array(values, mask=mask)
    wind = (rng.standard_normal((NT, NLAT, NLON)) * 10).astype("f4")
    wmask = np.zeros(wind.shape, bool)
    wmask[1, 2, 3] = True
    uwnd[:] = np.ma.array(wind, mask=wmask)
    ds.title = "chunkmill convert test"
    ds.close()


def collection(tmp_path, days=3, **kw) -> list:
    files = [tmp_path / f"day{d}.nc" for d in range(days)]
    for d, f in enumerate(files):
        write_day(f, d, **kw)
    return files


def mfdataset(files) -> xr.Dataset:
    return xr.open_mfdataset([str(f) for f in files], combine="by_coords").load()


def convert(inputs, target, *extra, chunks="time=-1,lat=12,lon=16", max_mem="64MB"):
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return oracle.ok("convert", *inputs, target, "--chunks", chunks, "--max-mem", max_mem,
                     "--concat-dim", "time", "--no-progress", *extra)


def opened(target) -> xr.Dataset:
    return oracle.open_xr_no_flags(target).load()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_files_convert_to_what_open_mfdataset_reads(tmp_path, zarr_format):
    files = collection(tmp_path)
    target = tmp_path / "cache.zarr"
    convert(str(tmp_path / "day*.nc"), target, "--zarr-format", zarr_format)
    got = opened(target)
    want = mfdataset(files)
    xr.testing.assert_identical(got, want)
    group = zarr.open_group(str(target), mode="r")
    assert group["air"].chunks == (3 * NT, 12, 16)
    assert group["uwnd"].chunks == (3 * NT, 12, 16)
    assert group["time"].chunks == (3 * NT,)
    assert group.metadata.zarr_format == zarr_format
    # The packed values are stored as they were: int16, unpacked by xarray on reading.
    assert group["air"].dtype == np.dtype("int16")


def test_select_by_value_with_cf_times_and_descending_latitudes(tmp_path):
    files = collection(tmp_path)
    target = tmp_path / "sel.zarr"
    r = convert(str(tmp_path / "day*.nc"), target,
                "--select", "lat=30:-30", "--select", "time=2020-01-02:2020-01-02T23:00",
                "--select", "lon=15:100")
    got = opened(target)
    want = mfdataset(files).sel(lat=slice(30, -30), time=slice("2020-01-02", "2020-01-02T23:00"),
                                lon=slice(15, 100))
    assert got.sizes["time"] == 24 and got.sizes["lat"] > 0
    xr.testing.assert_identical(got, want)
    # lat 30:-30 starts inside a source chunk of 12 latitudes: the run says so.
    assert "nearest aligned" in r.stderr


def test_isel_reverse_rename_drop(tmp_path):
    files = collection(tmp_path)
    target = tmp_path / "t.zarr"
    # --chunks names the target's dimensions, so the renamed one by its new name
    convert(str(tmp_path / "day*.nc"), target,
            "--isel", "lon=5:-3", "--reverse", "lat", "--rename", "air=temperature",
            "--rename", "lon=longitude", "--drop", "uwnd", chunks="time=-1,lat=12,longitude=16")
    got = opened(target)
    want = (mfdataset(files).isel(lon=slice(5, -3)).isel(lat=slice(None, None, -1))
            .rename(air="temperature", lon="longitude").drop_vars("uwnd"))
    xr.testing.assert_identical(got, want)
    assert list(got.lat.values) == sorted(got.lat.values)


def test_variables_subset_keeps_its_coordinates(tmp_path):
    files = collection(tmp_path, days=2)
    target = tmp_path / "v.zarr"
    convert(str(tmp_path / "day*.nc"), target, "--variables", "uwnd")
    got = opened(target)
    assert set(got.data_vars) == {"uwnd"}
    xr.testing.assert_identical(got, mfdataset(files)[["uwnd"]])


def test_decode_cf_and_cast(tmp_path):
    files = collection(tmp_path, days=2)
    target = tmp_path / "d.zarr"
    convert(str(tmp_path / "day*.nc"), target, "--decode-cf", "--cast", "uwnd=float64")
    group = zarr.open_group(str(target), mode="r")
    # Unpacked on disk: floats with NaN where the fill value was, no packing attributes left.
    assert group["air"].dtype == np.dtype("float64")
    assert "scale_factor" not in group["air"].attrs and "_FillValue" not in group["air"].attrs
    assert group["uwnd"].dtype == np.dtype("float64")
    want = mfdataset(files)
    want["uwnd"] = want["uwnd"].astype("float64")
    raw = xr.open_zarr(str(target), mask_and_scale=False).load()
    np.testing.assert_array_equal(raw["air"].values, want["air"].values)
    np.testing.assert_array_equal(raw["uwnd"].values, want["uwnd"].values)
    assert np.isnan(raw["air"].values[0, 0, :3]).all()
    assert np.isnan(raw["uwnd"].values[1, 2, 3])
    xr.testing.assert_identical(opened(target), want)

    # Unpacked, then cast to integers: no packing attribute comes back for readers to apply
    # a second time; the values are numpy's astype of the unpacked ones, masked ones 0.
    ints = tmp_path / "i.zarr"
    convert(str(tmp_path / "day*.nc"), ints, "--decode-cf", "--cast", "air=int32")
    got = opened(ints)["air"]
    assert got.dtype == np.dtype("int32") and "scale_factor" not in got.attrs
    unpacked = mfdataset(files)["air"].values
    kept = ~np.isnan(unpacked)
    np.testing.assert_array_equal(got.values[kept], unpacked[kept].astype("int32"))
    assert (got.values[~kept] == 0).all()


def test_netcdf3_collection(tmp_path):
    files = collection(tmp_path, days=2, fmt="NETCDF3_64BIT_OFFSET")
    target = tmp_path / "nc3.zarr"
    convert(str(tmp_path / "day*.nc"), target, "--select", "lat=60:-60")
    xr.testing.assert_identical(opened(target), mfdataset(files).sel(lat=slice(60, -60)))


def test_references_and_zarr_stores_are_sources_too(tmp_path):
    files = collection(tmp_path, days=2)
    refs = tmp_path / "refs.json"
    oracle.ok("virtualize", str(tmp_path / "day*.nc"), "--output", refs, "--concat-dim", "time", "--no-progress")
    from_refs = tmp_path / "from-refs.zarr"
    convert(str(refs), from_refs, "--isel", "time=10:30")
    want = mfdataset(files).isel(time=slice(10, 30))
    xr.testing.assert_identical(opened(from_refs), want)
    # The converted store is a source in turn.
    again = tmp_path / "again.zarr"
    convert(str(from_refs), again, "--select", "lat=45:-45", chunks="time=5,lat=-1,lon=-1")
    xr.testing.assert_identical(opened(again), want.sel(lat=slice(45, -45)))
    assert zarr.open_group(str(again), mode="r")["air"].chunks[0] == 5


def test_processes_executor_and_resume_give_the_same_store(tmp_path):
    files = collection(tmp_path, days=2)
    target = tmp_path / "p.zarr"
    convert(str(tmp_path / "day*.nc"), target, "--executor", "processes", "--workers", "2",
            "--reverse", "lat", "--decode-cf", "--keep-work")
    want = mfdataset(files).isel(lat=slice(None, None, -1))
    xr.testing.assert_identical(opened(target), want)
    r = convert(str(tmp_path / "day*.nc"), target, "--executor", "processes", "--workers", "2",
                "--reverse", "lat", "--decode-cf", "--resume")
    assert "already complete" in r.stdout


def test_plan_shows_read_amplification_and_strict_alignment_refuses(tmp_path):
    collection(tmp_path, days=1)
    target = tmp_path / "s.zarr"
    args = ["convert", str(tmp_path / "day0.nc"), target, "--chunks", "lat=12", "--max-mem", "64MB",
            "--select", "lat=80:-80", "--no-progress"]
    plan = oracle.ok("plan", *args, "--json")
    misaligned = json.loads(plan.stdout)["misaligned"]
    amplified = {m["array"]: m["amplification"] for m in misaligned}
    # Latitudes 87.5, 82.5, …, -87.5: 32 of the 36 kept (77.5 … -77.5), all 36 decoded.
    assert amplified["air"] == pytest.approx(36 / 32)
    r = oracle.run(*args, "--strict-alignment")
    oracle.assert_one_error_line(r, codes=[3], mentions=["strict-alignment", "--isel lat=0:36"])
    assert not target.exists()


def test_bad_inputs_are_refused_and_the_cache_untouched(tmp_path):
    collection(tmp_path, days=2)
    write_day(tmp_path / "day2.nc", 2, air_dtype="i4")
    target = tmp_path / "bad.zarr"
    r = oracle.run("convert", str(tmp_path / "day*.nc"), target, "--chunks", "lat=12", "--max-mem", "64MB",
                   "--concat-dim", "time")
    oracle.assert_one_error_line(r, codes=[3], mentions=["day2.nc", "air"])
    assert not target.exists()

    (tmp_path / "day2.nc").unlink()
    good = tmp_path / "good.zarr"
    convert(str(tmp_path / "day*.nc"), good)
    before = oracle.tree_files(good)
    for extra, mentions in [
        (["--variables", "vwnd"], ["vwnd"]),
        (["--select", "lat=95:90"], ["lat", "selects nothing"]),
        (["--select", "time=2031-01-01:2031-02-01"], ["time"]),
        ([], ["exists", "--overwrite"]),
    ]:
        r = oracle.run("convert", str(tmp_path / "day*.nc"), good, "--chunks", "lat=12", "--max-mem", "64MB",
                       "--concat-dim", "time", *extra)
        oracle.assert_one_error_line(r, codes=[3], mentions=mentions)
        assert oracle.tree_files(good) == before


def test_s3_inputs(tmp_path):
    prefix = oracle.s3_prefix("convert")
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **oracle.s3_options())
    files = collection(tmp_path, days=2)
    for f in files:
        fs.put(str(f), f"{prefix}/{f.name}")
    try:
        target = tmp_path / "s3.zarr"
        convert(f"{prefix}/day*.nc", target, "--select", "lat=40:-40")
        want = mfdataset(files).sel(lat=slice(40, -40))
        xr.testing.assert_identical(opened(target), want)
        # The target, its work dir and the references in it in S3 too, run by worker processes.
        convert(f"{prefix}/day*.nc", f"{prefix}/out.zarr", "--select", "lat=40:-40",
                "--executor", "processes", "--workers", "2")
        got = xr.open_zarr(fs.get_mapper(f"{prefix}/out.zarr")).load()
        xr.testing.assert_identical(got, want)
    finally:
        fs.rm(prefix, recursive=True)


def test_append_adds_new_days_and_the_same_append_changes_nothing(tmp_path):
    files = collection(tmp_path, days=4)
    cache = tmp_path / "cache.zarr"
    # time chunks of 10: the cache's 48 steps end inside a chunk, which the append completes.
    convert([str(f) for f in files[:2]], cache, "--decode-cf", chunks="time=10,lat=12,lon=16")
    r = convert([str(f) for f in files[2:]], cache, "--decode-cf", "--append", "time",
                chunks="time=10,lat=12,lon=16")
    xr.testing.assert_identical(opened(cache), mfdataset(files))
    assert zarr.open_group(str(cache), mode="r")["air"].chunks == (10, 12, 16)
    before = oracle.tree_files(cache)
    r = convert([str(f) for f in files[2:]], cache, "--decode-cf", "--append", "time",
                chunks="time=10,lat=12,lon=16")
    assert "nothing appended" in r.stdout
    assert oracle.tree_files(cache) == before


def test_append_refuses_overlapping_or_mismatched_data(tmp_path):
    files = collection(tmp_path, days=3)
    cache = tmp_path / "cache.zarr"
    convert([str(f) for f in files[:2]], cache, chunks="time=10,lat=12,lon=16")
    before = oracle.tree_files(cache)
    base = ["convert", "--chunks", "time=10", "--max-mem", "64MB", "--concat-dim", "time", "--append", "time"]
    # Day 1 is in the cache already, day 2 is not: overlapping.
    r = oracle.run(*base, str(files[1]), str(files[2]), cache)
    oracle.assert_one_error_line(r, codes=[3], mentions=["time", "overlapping"])
    # The same day with another selection: lat differs from the cache's.
    r = oracle.run(*base, str(files[2]), cache, "--select", "lat=40:-40")
    oracle.assert_one_error_line(r, codes=[3], mentions=["lat"])
    assert oracle.tree_files(cache) == before


def test_interrupted_append_resumes(tmp_path):
    files = collection(tmp_path, days=4)
    cache, work = tmp_path / "cache.zarr", tmp_path / "work"
    convert([str(f) for f in files[:2]], cache, chunks="time=10,lat=12,lon=16")
    args = ["convert", *[str(f) for f in files[2:]], cache, "--chunks", "time=10", "--max-mem", "64MB",
            "--concat-dim", "time", "--append", "time", "--work-dir", work, "--no-progress"]
    r = oracle.run(*args, "--retries", "0", env={"CHUNKMILL_TEST_FAULT_RATE": "0.5"})
    assert r.returncode == 1, oracle.describe(r)
    # Until the append completes, readers see the cache as it was.
    xr.testing.assert_identical(opened(cache), mfdataset(files[:2]))
    oracle.ok(*args, "--resume")
    xr.testing.assert_identical(opened(cache), mfdataset(files))


@pytest.mark.parametrize("kind", ["toml", "yaml"])
def test_recipe_file_rebuilds_the_cache(tmp_path, kind):
    files = collection(tmp_path, days=2)
    target = tmp_path / "r.zarr"
    if kind == "toml":
        text = f"""
inputs = ["{tmp_path / 'day*.nc'}"]
target = "{target}"
chunks = "time=-1,lat=12,lon=16"
max_mem = "64MB"
concat_dim = "time"
select = ["lat=60:-60"]
rename = ["air=temperature"]
reverse = ["lat"]
decode_cf = true
zarr_format = 2
"""
    else:
        text = f"""
inputs: ["{tmp_path / 'day*.nc'}"]
target: "{target}"
chunks: "time=-1,lat=12,lon=16"
max_mem: 64MB
concat_dim: time
select: ["lat=60:-60"]
rename: ["air=temperature"]
reverse: [lat]
decode_cf: true
zarr_format: 2
"""
    recipe = tmp_path / f"cache.{kind}"
    recipe.write_text(text)
    oracle.ok("convert", "--recipe", recipe, "--no-progress")
    want = (mfdataset(files).sel(lat=slice(60, -60)).isel(lat=slice(None, None, -1))
            .rename(air="temperature"))
    xr.testing.assert_identical(opened(target), want)
    assert zarr.open_group(str(target), mode="r").metadata.zarr_format == 2
    # Flags on the command line add to the recipe: another variable dropped, a new target.
    other = tmp_path / "r2.zarr"
    oracle.ok("convert", "--recipe", recipe, str(other), "--drop", "uwnd", "--no-progress")
    xr.testing.assert_identical(opened(other), want.drop_vars("uwnd"))
    bad = tmp_path / "bad.toml"
    bad.write_text('inputs = ["x.nc"]\ntarget = "t.zarr"\nmax_memory = "1GB"\n')
    r = oracle.run("convert", "--recipe", bad)
    oracle.assert_one_error_line(r, codes=[2], mentions=["bad.toml", "max_memory"])


def test_tiles_for_machine_learning(tmp_path):
    files = collection(tmp_path, days=2)
    target = tmp_path / "tiles.zarr"
    r = convert(str(tmp_path / "day*.nc"), target, "--tile", "lat=12,lon=20", "--select", "lon=0:330")
    ds = mfdataset(files).sel(lon=slice(0, 330))
    got = opened(target)
    nlat, nlon = NLAT // 12, ds.sizes["lon"] // 20  # 3 × 2 tiles, the last 5 longitudes left out
    assert got.sizes["tile"] == nlat * nlon
    assert got["air"].dims == ("tile", "time", "lat", "lon")
    assert set(got.coords) >= {"tile_lat", "tile_lon", "time"}
    for t in range(nlat * nlon):
        i, j = divmod(t, nlon)
        la, lo = slice(i * 12, (i + 1) * 12), slice(j * 20, (j + 1) * 20)
        for name in ("air", "uwnd"):
            np.testing.assert_array_equal(got[name].values[t], ds[name].values[:, la, lo])
        np.testing.assert_array_equal(got["tile_lat"].values[t], ds["lat"].values[la])
        np.testing.assert_array_equal(got["tile_lon"].values[t], ds["lon"].values[lo])
    np.testing.assert_array_equal(got["time"].values, ds["time"].values)
    group = zarr.open_group(str(target), mode="r")
    assert group["air"].chunks == (1, 2 * NT, 12, 20)  # one tile per chunk
    # Tiles of 20 longitudes cut through the 24-longitude chunks of air: said, with a better size.
    assert "--tile lon=24" in r.stderr
    # A dimension tiled twice is a malformed request.
    bad = oracle.run("convert", *files, tmp_path / "bad.zarr", "--chunks", "time=-1", "--max-mem", "64MB",
                     "--concat-dim", "time", "--tile", "lat=12,lat=6")
    oracle.assert_one_error_line(bad, codes=[2], mentions=["lat is given twice"])
    assert not (tmp_path / "bad.zarr").exists()


def test_filters_without_zarr_codec_are_decoded_by_hdf5_reader(tmp_path):
    """scaleoffset, szip and nbit have no Zarr codec: `virtualize` leaves these (too large to
    inline) out with a warning naming each, `convert`
    decodes them with hdf5-reader's own filters and writes ordinary Zarr; values compared with
    h5py's. (nbit at full precision only: HDF5 2.0 refuses to create a reduced-precision type
    unless H5Pset_relax_file_integrity_checks is called, which h5py does not expose.)"""
    import h5py
    from h5py import h5d, h5p, h5s, h5t, h5z

    path = tmp_path / "packed.h5"
    rng = np.random.default_rng(7)
    temps = np.round(250 + 30 * rng.random((40, 30)), 2)
    counts = rng.integers(0, 5000, (40, 30)).astype("i4")
    levels = (rng.integers(-3000, 3000, (40, 30))).astype("i4")
    with h5py.File(path, "w") as f:
        y = f.create_dataset("y", data=np.arange(40.0))
        x = f.create_dataset("x", data=np.arange(30.0))
        y.make_scale("y")
        x.make_scale("x")
        t = f.create_dataset("t", data=temps, chunks=(8, 30), scaleoffset=2)
        c = f.create_dataset("c", data=counts, chunks=(10, 10), scaleoffset=0, compression="gzip")
        sz = f.create_dataset("sz", data=temps.astype("f4"), chunks=(8, 15), compression="szip",
                              compression_opts=("nn", 16))
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk((10, 10))
        dcpl.set_filter(h5z.FILTER_NBIT)
        nb = h5py.Dataset(h5d.create(f.id, b"nb", h5t.STD_I32LE, h5s.create_simple((40, 30)), dcpl=dcpl))
        nb[...] = levels
        assert sz.compression == "szip" and nb.id.get_create_plist().get_filter(0)[0] == h5z.FILTER_NBIT
        for d in (t, c, sz, nb):
            d.dims[0].attach_scale(y)
            d.dims[1].attach_scale(x)
    r = oracle.ok("virtualize", path, "--output", tmp_path / "refs.json")
    assert all(f"--drop {v}:" in r.stderr for v in ("t", "c", "sz", "nb")), r.stderr
    assert "scaleoffset" in r.stderr and "szip" in r.stderr and "nbit" in r.stderr
    target = tmp_path / "out.zarr"
    oracle.ok("convert", path, target, "--chunks", "y=20,x=-1", "--max-mem", "64MB", "--no-progress")
    group = zarr.open_group(str(target), mode="r")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(group["t"][...], f["t"][...])
        np.testing.assert_array_equal(group["c"][...], f["c"][...])
        np.testing.assert_array_equal(group["sz"][...], f["sz"][...])
        np.testing.assert_array_equal(group["nb"][...], levels)
    assert group["t"].chunks == (20, 30)
    for name, filter_name in [("sz", "szip"), ("nb", "nbit")]:
        alone = tmp_path / f"{name}.h5"
        with h5py.File(path, "r") as src, h5py.File(alone, "w") as dst:
            src.copy(name, dst)
        r = oracle.ok("virtualize", alone, "--output", tmp_path / f"{name}.json")
        assert f"--drop {name}:" in r.stderr and filter_name in r.stderr, r.stderr


def test_parquet_and_icechunk_references_lists_and_shards(tmp_path):
    """The other reference formats as sources, an @list of inputs, and a sharded target."""
    files = collection(tmp_path, days=2)
    want = mfdataset(files)
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    for fmt, out in [("kerchunk-parquet", tmp_path / "refs.parq"), ("icechunk", tmp_path / "refs.icechunk")]:
        oracle.ok("virtualize", f"@{listing}", "--output", out, "--concat-dim", "time", "--format", fmt,
                  "--no-progress")
        target = tmp_path / f"{out.name}.zarr"
        convert(str(out), target, "--select", "lat=60:-60")
        xr.testing.assert_identical(opened(target), want.sel(lat=slice(60, -60)))
    sharded = tmp_path / "sharded.zarr"
    convert(f"@{listing}", sharded, "--shards", "time=-1,lat=24,lon=48")
    xr.testing.assert_identical(opened(sharded), want)
    air = zarr.open_group(str(sharded), mode="r")["air"]
    assert air.shards == (2 * NT, 24, 48) and air.chunks == (2 * NT, 12, 16)


def test_each_source_chunk_is_decoded_once(tmp_path):
    """Tasks own aligned regions, so however many output chunks need a source chunk (smaller
    output chunks, output chunks straddling two source chunks, a selection cutting through
    them) it is decoded once: the decoded bytes the run reports equal the sizes of the source
    chunks the selection meets, counted by h5py, and the plan projected the same figure."""
    import h5py

    path = tmp_path / "grid.h5"
    with h5py.File(path, "w") as f:
        y = f.create_dataset("y", data=np.arange(400.0))
        x = f.create_dataset("x", data=np.arange(300.0))
        y.make_scale("y")
        x.make_scale("x")
        v = f.create_dataset("v", data=np.arange(120_000, dtype="f8").reshape(400, 300), chunks=(50, 100),
                             compression="gzip")
        v.dims[0].attach_scale(y)
        v.dims[1].attach_scale(x)

    def chunks_met(dataset, selection) -> int:
        """Bytes of the stored chunks of `dataset` that `selection` (a slice per axis) meets."""
        chunks = dataset.chunks or dataset.shape  # contiguous: one chunk, read whole
        count = 1
        for s, size in zip(selection, chunks):
            count *= (s.stop - 1) // size - s.start // size + 1
        return count * int(np.prod(chunks)) * dataset.dtype.itemsize

    for isel, (ys, xs) in [(None, (slice(0, 400), slice(0, 300))), ("x=30:270", (slice(0, 400), slice(30, 270)))]:
        target = tmp_path / f"out-{isel}.zarr"
        extra = ["--isel", isel] if isel else []
        with h5py.File(path, "r") as f:
            want = chunks_met(f["v"], (ys, xs)) + chunks_met(f["y"], (ys,)) + chunks_met(f["x"], (xs,))
        planned = json.loads(oracle.ok("plan", "convert", path, target, "--chunks", "y=25,x=150", "--max-mem",
                                       "64MB", "--json", *extra).stdout)
        report = json.loads(oracle.ok("convert", path, target, "--chunks", "y=25,x=150", "--max-mem", "64MB",
                                      "--workers", "2", "--no-progress", "--json", *extra).stdout)
        assert report["tasks_run"] > 3  # v is cut into several tasks
        assert report["bytes_read"] == want
        assert planned["bytes_read"] == want
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(zarr.open_group(str(target), mode="r")["v"][...], f["v"][ys, xs])


def test_references_are_followed_only_where_allowed(tmp_path):
    """A reference file can name any location as a chunk's: only those under the directory
    holding it, or under an --allow-refs prefix, are read. Elsewhere (another directory, a path
    that climbs out with '..', a symbolic link out of the allowed directory, an S3 URL) the
    conversion is refused before anything is written, naming the reference file, the array,
    the location and the flag."""
    data = tmp_path / "archive"
    data.mkdir()
    files = collection(data, days=2)
    want = mfdataset(files)
    refs_dir = tmp_path / "refs"
    refs_dir.mkdir()
    refs = refs_dir / "refs.json"
    oracle.ok("virtualize", str(data / "day*.nc"), "--output", refs, "--concat-dim", "time", "--no-progress")
    target = tmp_path / "out.zarr"
    r = oracle.run("convert", refs, target, "--chunks", "time=-1", "--max-mem", "64MB", "--concat-dim", "time")
    oracle.assert_one_error_line(r, codes=[3], mentions=[str(refs), str(data), "--allow-refs"])
    assert not target.exists()
    convert(str(refs), target, "--allow-refs", str(data))
    xr.testing.assert_identical(opened(target), want)

    # The data moved next to the references: followed by default.
    doc = json.loads(refs.read_text())
    text = json.dumps(doc).replace(str(data), str(refs_dir))
    for f in files:
        (refs_dir / f.name).write_bytes(f.read_bytes())
    refs.write_text(text)
    convert(str(refs), tmp_path / "local.zarr")
    xr.testing.assert_identical(opened(tmp_path / "local.zarr"), want)

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"credentials" * 1000)
    (refs_dir / "escape").symlink_to(tmp_path)
    for location in [f"{refs_dir}/../secret.bin", f"{refs_dir}/escape/secret.bin", "s3://bucket/day0.nc"]:
        bad = json.loads(text)
        key = next(k for k, v in bad["refs"].items() if k.startswith("air/") and isinstance(v, list))
        bad["refs"][key] = [location, 0, 100]
        (refs_dir / "bad.json").write_text(json.dumps(bad))
        out = tmp_path / "bad.zarr"
        r = oracle.run("convert", refs_dir / "bad.json", out, "--chunks", "time=-1", "--max-mem", "64MB",
                       "--concat-dim", "time")
        oracle.assert_one_error_line(r, codes=[3], mentions=["bad.json", "'air'", location])
        assert not out.exists()


def test_a_text_variable_converts_as_open_mfdataset_reads_it(tmp_path):
    """A character variable (station names, as NetCDF files often carry) compared between the
    files with --identical-dims is written as the byte strings xarray reads (it was refused
    before issue 15); more text cases in test_text.py."""
    files = collection(tmp_path, days=2)
    for f in files:
        with netCDF4.Dataset(f, "a") as ds:
            ds.createDimension("nchar", 4)
            label = ds.createVariable("label", "S1", ("lat", "nchar"))
            label[:] = netCDF4.stringtochar(np.array(["abcd"] * NLAT, dtype="S4"))
    target = tmp_path / "t.zarr"
    convert(files, target, "--identical-dims", "label")
    want = xr.open_mfdataset([str(f) for f in files], combine="by_coords", data_vars="minimal",
                             coords="minimal", compat="equals").load()
    got = opened(target)
    xr.testing.assert_identical(got, want)
    assert got.label.dtype == np.dtype("S4") and got.label.dims == ("lat",)
