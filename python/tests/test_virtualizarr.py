"""chunkmill.virtualizarr.Parser against VirtualiZarr's own parsers (HDFParser,
NetCDF3Parser): the same metadata and manifests, and values read back equal netCDF4's."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

virtualizarr = pytest.importorskip("virtualizarr")

import chunkmill  # noqa: E402
from chunkmill.virtualizarr import Parser  # noqa: E402


@pytest.fixture()
def registry():
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore

    return ObjectStoreRegistry({"file://": LocalStore()})


def _compare(ours: xr.Dataset, theirs: xr.Dataset) -> None:
    assert set(ours.variables) == set(theirs.variables)
    assert ours.attrs == theirs.attrs
    for name in theirs.variables:
        a, b = ours[name].data, theirs[name].data
        assert type(a) is type(b), name
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b)
            continue
        assert a.metadata == b.metadata, (name, a.metadata, b.metadata)
        assert a.manifest == b.manifest, name


def test_parser_equals_hdf_parser(netcdf4_file, registry):
    from virtualizarr.parsers import HDFParser

    url = netcdf4_file.as_uri()
    ours = virtualizarr.open_virtual_dataset(url, registry=registry, parser=Parser())
    theirs = virtualizarr.open_virtual_dataset(url, registry=registry, parser=HDFParser())
    _compare(ours, theirs)


def test_parser_group_and_drop_equal_hdf_parser(netcdf4_file, registry):
    from virtualizarr.parsers import HDFParser

    url = netcdf4_file.as_uri()
    ours = virtualizarr.open_virtual_dataset(
        url, registry=registry, parser=Parser(group="obs/profiles", drop_variables=["code"])
    )
    theirs = virtualizarr.open_virtual_dataset(
        url, registry=registry, parser=HDFParser(group="obs/profiles", drop_variables=["code"])
    )
    _compare(ours, theirs)
    assert "code" not in ours and "depth" in ours


def test_parser_equals_netcdf3_parser(netcdf3_file, registry):
    from virtualizarr.parsers import NetCDF3Parser

    url = netcdf3_file.as_uri()
    ours = virtualizarr.open_virtual_dataset(url, registry=registry, parser=Parser())
    theirs = virtualizarr.open_virtual_dataset(url, registry=registry, parser=NetCDF3Parser())
    assert set(ours.variables) == set(theirs.variables)
    for name in theirs.variables:
        assert ours[name].shape == theirs[name].shape and ours[name].dtype == theirs[name].dtype


def test_parser_reads_back_equal_to_netcdf4(netcdf4_file, registry):
    url = netcdf4_file.as_uri()
    names = ["air", "packed", "station", "time", "lat", "lon"]
    loaded = virtualizarr.open_virtual_dataset(
        url, registry=registry, parser=Parser(), loadable_variables=names
    )
    expected = xr.open_dataset(netcdf4_file, engine="netcdf4")
    xr.testing.assert_identical(loaded.load(), expected.load())


def test_parser_refuses_missing_files_and_remote_urls(tmp_path, registry):
    with pytest.raises(chunkmill.RefusedError, match="missing.nc"):
        Parser()((tmp_path / "missing.nc").as_uri(), registry)
    with pytest.raises(chunkmill.UsageError, match="local files"):
        Parser()("s3://bucket/file.nc", registry)


def test_parser_files_alike_but_for_attributes_keep_their_own(collection, tmp_path, registry):
    """The metadata built for one file is reused for the next that describes a variable alike
    (a collection's files do): a file whose variable differs only in an attribute, or in its
    fill value, gets its own, equal to HDFParser's."""
    from virtualizarr.parsers import HDFParser

    changed = tmp_path / "changed.nc"
    ds = xr.open_dataset(collection[1], engine="netcdf4").load()
    ds["air"].attrs["units"] = "degC"
    ds.to_netcdf(changed, engine="netcdf4", encoding={"air": {"_FillValue": -1.0, "chunksizes": (2, 2, 5)}})
    parsed = {}
    for path in (collection[0], changed, collection[2]):
        url = f"file://{path}"
        ours = virtualizarr.open_virtual_dataset(url, registry=registry, parser=Parser())
        _compare(ours, virtualizarr.open_virtual_dataset(url, registry=registry, parser=HDFParser()))
        parsed[str(path)] = ours
    assert parsed[str(changed)]["air"].attrs["units"] == "degC"
    assert parsed[collection[0]]["air"].attrs["units"] == "K" == parsed[collection[2]]["air"].attrs["units"]
    # Each file's chunks are its own, though its metadata may be shared.
    first, last = parsed[collection[0]]["air"].data, parsed[collection[2]]["air"].data
    assert first.metadata == last.metadata and first.manifest != last.manifest
