"""chunkmill.convert against xarray over netCDF4 (the oracle): recipe keys given inline go
through the command's recipe reader, keyword arguments win over them as flags do, and bad
recipes raise the command's usage error."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import chunkmill


def test_convert_with_an_inline_recipe_equals_xarray(collection, tmp_path):
    target = tmp_path / "c.zarr"
    recipe = {"inputs": collection, "target": str(target), "chunks": "time=1", "max_mem": "256MB",
              "rename": ["air=temperature"], "decode_cf": True, "variables": ["air", "packed"]}
    # Arguments win over the recipe's values, as flags do over a recipe file's.
    report = chunkmill.convert(recipe=recipe, chunks={"time": 6, "lat": 2}, progress=False)
    assert report["tasks_run"] >= 1
    ours = xr.open_zarr(target)
    assert ours["temperature"].encoding["chunks"] == (6, 2, 5)
    expected = xr.open_mfdataset(collection, engine="netcdf4").rename({"air": "temperature"})
    for name in ("temperature", "packed"):
        np.testing.assert_allclose(ours[name].values, expected[name].values, equal_nan=True)
    np.testing.assert_array_equal(ours["time"].values, expected["time"].values)


def test_convert_arguments_without_a_recipe(collection, tmp_path):
    target = tmp_path / "d.zarr"
    chunkmill.convert(collection, target, chunks={"time": 3, "lat": 4}, max_mem="256MB", progress=False)
    assert zarr.open_group(target)["air"].chunks == (3, 4, 5)
    np.testing.assert_allclose(xr.open_zarr(target)["air"].values,
                               xr.open_mfdataset(collection, engine="netcdf4")["air"].values, equal_nan=True)


def test_convert_errors(collection, tmp_path):
    with pytest.raises(chunkmill.UsageError, match="recipe: unknown key `max_memory`"):
        chunkmill.convert(collection, tmp_path / "e.zarr", recipe={"max_memory": "1GB", "chunks": "time=1"})
    with pytest.raises(chunkmill.RefusedError, match="matches no file"):
        chunkmill.convert(str(tmp_path / "none_*.nc"), tmp_path / "e.zarr", chunks={"time": 1}, max_mem="256MB")
    with pytest.raises(chunkmill.UsageError, match="no dimension"):
        chunkmill.convert(collection, tmp_path / "e.zarr", chunks={"tim": 1}, max_mem="256MB")
    with pytest.raises(chunkmill.UsageError, match="executor"):
        chunkmill.convert(collection, tmp_path / "e.zarr", chunks={"time": 1}, max_mem="256MB", executor="spark")
    assert not (tmp_path / "e.zarr").exists()
