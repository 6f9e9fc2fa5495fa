"""Combining files (`virtualize` and `convert`, which join their inputs the same way) against
xarray as the oracle: what `xr.combine_by_coords` / `xr.open_mfdataset` refuses is refused
(exit 3, one line naming the files, variable and values, nothing written), what they accept
gives the same values. Each regression test is named after the case of issue 9 it covers.

xarray's explicit mode is the reference for variables without the concat dimension:
`data_vars="minimal", coords="minimal", compat="equals"` (refuses a difference) and
`compat="override"` (takes the first file's), as chunkmill's default and `--compat override`.
"""

from __future__ import annotations

import os

import netCDF4
import numpy as np
import pytest
import xarray as xr

import oracle

NLAT, NLON = 3, 4


def write(path, times, *, elev_shift=0.0, lat=None, unlimited=True, seed=0) -> None:
    """A small NetCDF-4 file: `air(time, lat, lon)`, a static `elev(lat, lon)` and CF times."""
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("time", None if unlimited else len(times))
    lat = np.linspace(10, -10, NLAT) if lat is None else np.asarray(lat)
    ds.createDimension("lat", len(lat))
    ds.createDimension("lon", NLON)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2020-01-01"
    t.calendar = "standard"
    t[:] = np.asarray(times, dtype="f8")
    la = ds.createVariable("lat", "f4", ("lat",))
    la[:] = lat
    lo = ds.createVariable("lon", "f4", ("lon",))
    lo[:] = np.arange(NLON) * 90.0
    air = ds.createVariable("air", "f4", ("time", "lat", "lon"), zlib=True,
                            chunksizes=(len(times), len(lat), NLON))
    rng = np.random.default_rng(seed)
    air[:] = (250 + 30 * rng.random((len(times), len(lat), NLON))).astype("f4")
    elev = ds.createVariable("elev", "f4", ("lat", "lon"), zlib=True)
    elev[:] = (np.arange(len(lat) * NLON, dtype="f4").reshape(len(lat), NLON) + elev_shift)
    ds.close()


def open_refs(path) -> xr.Dataset:
    return xr.open_dataset(
        "reference://", engine="zarr",
        backend_kwargs={"consolidated": False, "storage_options": {"fo": str(path)}},
    ).load()


def by_coords(files, **kw) -> xr.Dataset:
    """xarray's combine in its explicit mode (the module docstring), `kw` overriding it."""
    kw = {"data_vars": "minimal", "coords": "minimal", "compat": "equals", **kw}
    return xr.combine_by_coords([xr.open_dataset(f).load() for f in files], **kw)


def virtualize(tmp_path, files, *extra):
    out = tmp_path / "refs.json"
    return oracle.run("virtualize", *files, "--output", out, "--no-progress", *extra), out


def convert(tmp_path, files, *extra, chunks="time=-1"):
    target = tmp_path / "cache.zarr"
    return oracle.run("convert", *files, target, "--chunks", chunks, "--max-mem", "64MB",
                      "--no-progress", *extra), target


def refused(r, out, *mentions, code=3):
    oracle.assert_one_error_line(r, codes=[code], mentions=list(mentions))
    assert not os.path.exists(out), f"{out} was written\n" + oracle.describe(r)


@pytest.fixture
def days(tmp_path):
    files = [tmp_path / f"day{d}.nc" for d in range(3)]
    for d, f in enumerate(files):
        write(f, np.arange(4) + 4 * d, seed=d)
    return files


# ---------------------------------------------------------------------------------------------
# issue 9 item 5: --concat-dim a dimension no file has


def test_concat_dim_typo_is_refused_not_stacked(tmp_path, days):
    for run in (virtualize, convert):
        r, out = run(tmp_path, days, "--concat-dim", "tiem")
        line = oracle.assert_one_error_line(r, codes=[3], mentions=["--concat-dim tiem", "--stack"])
        assert "(they have lat, lon, time)" in line
        assert not os.path.exists(out)


def test_stack_does_not_label_every_file_with_the_first_files_times(tmp_path, days):
    # Files of other times stacked along a new dimension: xarray (join="exact") refuses to
    # align them, and so does chunkmill, instead of keeping day0's times for all.
    with pytest.raises(ValueError):
        xr.concat([xr.open_dataset(f) for f in days], dim="member", join="exact")
    for run in (virtualize, convert):
        r, out = run(tmp_path, days, "--concat-dim", "member", "--stack")
        refused(r, out, "day1.nc", "time", "--compat override")


def test_stack_of_members_equals_xarray(tmp_path):
    members = [tmp_path / f"member{m}.nc" for m in range(3)]
    for m, f in enumerate(members):
        write(f, np.arange(4), seed=10 + m)
    want = xr.open_mfdataset([str(f) for f in members], combine="nested", concat_dim="member").load()
    r, out = virtualize(tmp_path, members, "--concat-dim", "member", "--stack")
    assert r.returncode == 0, oracle.describe(r)
    got = open_refs(out)
    xr.testing.assert_identical(got, want)
    assert "member" not in got.coords  # no coordinate made up for the new dimension
    r, target = convert(tmp_path, members, "--concat-dim", "member", "--stack")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)


# ---------------------------------------------------------------------------------------------
# issue 9 item 6: duplicate inputs, overlapping and unordered time ranges


def test_duplicate_inputs_are_refused(tmp_path, days):
    with pytest.raises(ValueError):
        by_coords([days[0], days[0]])
    link = tmp_path / "link.nc"
    link.symlink_to(days[0])
    spelled = f"{tmp_path}/./day0.nc"  # pathlib would drop the "."
    for twice in ([days[0], days[1], days[0]], [days[0], spelled], [days[0], link]):
        for run in (virtualize, convert):
            r, out = run(tmp_path, twice, "--concat-dim", "time")
            line = oracle.assert_one_error_line(r, codes=[3], mentions=["same file"])
            assert str(twice[0]) in line and str(twice[-1]) in line
            assert not os.path.exists(out)


def test_overlapping_time_ranges_are_refused(tmp_path):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    write(a, np.arange(6))
    write(b, np.arange(4, 10), seed=1)
    with pytest.raises(ValueError):
        by_coords([a, b])
    for run in (virtualize, convert):
        r, out = run(tmp_path, [a, b], "--concat-dim", "time")
        line = oracle.assert_one_error_line(r, codes=[3], mentions=["a.nc", "b.nc", "overlap"])
        assert "starts at time = 4, not after" in line and "last time = 5" in line
        assert not os.path.exists(out)


def test_time_going_backwards_in_a_file_is_refused(tmp_path):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    write(a, [0, 2, 1])
    write(b, [3, 4, 5], seed=1)
    with pytest.raises(ValueError):
        by_coords([a, b])
    for run in (virtualize, convert):
        r, out = run(tmp_path, [a, b], "--concat-dim", "time")
        refused(r, out, "a.nc", "not strictly increasing", "2 then 1")


def test_files_out_of_order_are_ordered_like_combine_by_coords(tmp_path, days):
    given = [days[2], days[0], days[1]]
    want = by_coords(given)
    r, out = virtualize(tmp_path, given, "--concat-dim", "time", "--json")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(open_refs(out), want)
    r, target = convert(tmp_path, given, "--concat-dim", "time")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)


def test_descending_coordinates_are_joined_in_decreasing_order_like_xarray(tmp_path):
    north, south = tmp_path / "north.nc", tmp_path / "south.nc"
    write(north, np.arange(2), lat=[30, 20, 10])
    write(south, np.arange(2), lat=[0, -10, -20])
    # elev differs between the halves: it is along lat here, so concatenated, not compared.
    want = by_coords([south, north])
    assert list(want.lat.values) == [30, 20, 10, 0, -10, -20]
    r, out = virtualize(tmp_path, [south, north], "--concat-dim", "lat")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(open_refs(out), want)


# ---------------------------------------------------------------------------------------------
# issue 9 item 7: a variable without the concat dimension that differs between files


def test_differing_variable_without_concat_dim_is_refused(tmp_path):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    write(a, np.arange(4))
    write(b, np.arange(4, 8), elev_shift=0.5, seed=1)
    with pytest.raises(ValueError):
        by_coords([a, b])
    r, out = virtualize(tmp_path, [a, b], "--concat-dim", "time")
    refused(r, out, "b.nc", "elev", "a.nc", "--compat override")
    r, target = convert(tmp_path, [a, b], "--concat-dim", "time")
    refused(r, target, "b.nc", "elev", "--compat override", "--drop elev")
    # The ways out the message names.
    want = by_coords([a, b], compat="override")
    r, out = virtualize(tmp_path, [a, b], "--concat-dim", "time", "--compat", "override")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(open_refs(out), want)
    r, target = convert(tmp_path, [a, b], "--concat-dim", "time", "--drop", "elev")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want.drop_vars("elev"))


def test_equal_variables_without_concat_dim_are_accepted_whatever_their_compression(tmp_path):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    write(a, np.arange(4))
    write(b, np.arange(4, 8), seed=1)
    # b's elev: the same values stored uncompressed and chunked otherwise.
    with netCDF4.Dataset(b, "a") as ds:
        ds.renameVariable("elev", "elev_old")
    with netCDF4.Dataset(b, "a") as ds:
        e = ds.createVariable("elev", "f4", ("lat", "lon"), chunksizes=(2, 3))
        e[:] = ds["elev_old"][:]
    with netCDF4.Dataset(a, "a") as ds:
        ds.createVariable("elev_old", "f4", ("lat", "lon"))[:] = ds["elev"][:]
    want = by_coords([a, b])
    r, out = virtualize(tmp_path, [a, b], "--concat-dim", "time")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(open_refs(out), want)


# ---------------------------------------------------------------------------------------------
# the concat dimension inferred when not given


def test_concat_dim_is_inferred_from_the_unlimited_dimension(tmp_path, days):
    want = by_coords(days)
    r, out = virtualize(tmp_path, days)
    assert r.returncode == 0, oracle.describe(r)
    assert "concatenating along time (inferred: the unlimited dimension of every input" in r.stderr
    xr.testing.assert_identical(open_refs(out), want)
    r, target = convert(tmp_path, days)
    assert r.returncode == 0, oracle.describe(r)
    assert "concatenating along time (inferred" in r.stderr
    xr.testing.assert_identical(oracle.open_xr_no_flags(target).load(), want)


def test_concat_dim_is_inferred_from_the_only_coordinate_that_differs(tmp_path):
    files = [tmp_path / f"f{d}.nc" for d in range(2)]
    for d, f in enumerate(files):
        write(f, np.arange(3) + 3 * d, unlimited=False, seed=d)
    r, out = virtualize(tmp_path, files)
    assert r.returncode == 0, oracle.describe(r)
    assert "(inferred: the only dimension whose coordinate differs between the inputs" in r.stderr
    xr.testing.assert_identical(open_refs(out), by_coords(files))


def test_ambiguous_concat_dim_is_refused_naming_the_candidates(tmp_path):
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    write(a, np.arange(3), unlimited=False)
    write(b, np.arange(3, 6), unlimited=False, lat=[40, 30, 20], seed=1)
    for run in (virtualize, convert):
        r, out = run(tmp_path, [a, b])
        refused(r, out, "lat, time", "--concat-dim", code=2)


# ---------------------------------------------------------------------------------------------
# issue 9 item 14 (append): a gap, other chunks, nothing to append


def test_append_with_a_gap_in_time_is_refused_unless_allowed(tmp_path, days):
    r, cache = convert(tmp_path, [days[0]], chunks="time=4")
    assert r.returncode == 0, oracle.describe(r)
    before = oracle.tree_files(cache)
    r, _ = convert(tmp_path, [days[2]], "--append", "time", chunks="time=4")
    line = oracle.assert_one_error_line(r, codes=[3], mentions=["gap", "--allow-gap"])
    assert "ends at 3" in line and "starts at 8, not 4" in line
    assert oracle.tree_files(cache) == before
    r, _ = convert(tmp_path, [days[2]], "--append", "time", "--allow-gap", chunks="time=4")
    assert r.returncode == 0, oracle.describe(r)
    xr.testing.assert_identical(oracle.open_xr_no_flags(cache).load(), by_coords([days[0], days[2]]))


def test_append_with_other_chunks_is_refused_naming_the_caches(tmp_path, days):
    r, cache = convert(tmp_path, [days[0]], chunks="time=2")
    assert r.returncode == 0, oracle.describe(r)
    before = oracle.tree_files(cache)
    r, _ = convert(tmp_path, [days[1]], "--append", "time", chunks="time=3")
    oracle.assert_one_error_line(r, codes=[3], mentions=["'air' is chunked [2, 3, 4] in the cache",
                                                         "[3, 3, 4]"])
    assert oracle.tree_files(cache) == before


def test_append_reports_what_it_appended_not_converted_0_arrays(tmp_path, days):
    r, cache = convert(tmp_path, [days[0]], chunks="time=4")
    assert r.returncode == 0, oracle.describe(r)
    r, _ = convert(tmp_path, [days[1]], "--append", "time", chunks="time=4")
    assert r.returncode == 0, oracle.describe(r)
    # air and time grow along time; elev, lat and lon are checked and left as they are.
    assert r.stdout.startswith("appended 2 array(s)"), oracle.describe(r)
    r, _ = convert(tmp_path, [days[1]], "--append", "time", chunks="time=4")
    assert r.returncode == 0, oracle.describe(r)
    assert "all 4 time values of the inputs are already in the cache; nothing appended" in r.stdout
    xr.testing.assert_identical(oracle.open_xr_no_flags(cache).load(), by_coords(days[:2]))
