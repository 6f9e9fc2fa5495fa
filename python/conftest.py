"""Small NetCDF files written by netCDF4 (through xarray), the oracle of every test; and the
names the doctests of the package and of python/README.md use: `files`, three NetCDF-4 files
that follow each other in time, and `refs`, `store`, `target` and `cache`, paths to write to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr


@pytest.fixture(autouse=True, scope="session")
def _doctest_names(doctest_namespace: dict, tmp_path_factory: pytest.TempPathFactory) -> None:
    namespace = doctest_namespace
    root = tmp_path_factory.mktemp("doctest")
    files = []
    for i in range(3):
        times = pd.date_range("2002-01-01", periods=2) + pd.Timedelta(days=2 * i)
        air = np.random.default_rng(i).normal(280, 5, (2, 4, 5)).astype("f4")
        ds = xr.Dataset(
            {"air": (("time", "lat", "lon"), air, {"units": "K"})},
            coords={"time": times, "lat": np.arange(4.0), "lon": np.arange(5.0)},
        )
        path = root / f"air_{i}.nc"
        ds.to_netcdf(path, engine="netcdf4", unlimited_dims=["time"],
                     encoding={"time": {"units": "days since 2002-01-01"}})
        files.append(str(path))
    namespace.update({"files": files, "xr": xr, "np": np})


@pytest.fixture(autouse=True)
def _doctest_refs(request: pytest.FixtureRequest, doctest_namespace: dict) -> None:
    """Fresh paths for each doctest: `refs` (references), `store` and `target` (Zarr stores)."""
    if isinstance(request.node, pytest.DoctestItem):
        tmp = request.getfixturevalue("tmp_path")
        doctest_namespace["refs"] = str(tmp / "refs.json")
        doctest_namespace["store"] = str(tmp / "source.zarr")
        doctest_namespace["target"] = str(tmp / "target.zarr")
        doctest_namespace["cache"] = str(tmp / "cache.zarr")


def _air(seed: int, times: pd.DatetimeIndex) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    air = rng.normal(280, 5, (len(times), 4, 5)).astype("f4")
    air[0, 0, 0] = np.nan
    return xr.Dataset(
        {
            "air": (("time", "lat", "lon"), air, {"units": "K", "long_name": "air"}),
            "packed": (("time", "lat"), rng.integers(0, 100, (len(times), 4)) / 10.0),
            "station": (("lat",), np.array(["a", "bb", "ccc", "dddd"], dtype=object)),
        },
        coords={"time": times, "lat": np.arange(4.0), "lon": np.arange(5.0) * 2.5},
        attrs={"title": "air", "version": 3, "scale": np.float32(1.5)},
    )


ENCODING = {
    "air": {"zlib": True, "complevel": 4, "chunksizes": (2, 2, 5), "shuffle": True},
    "packed": {"dtype": "int16", "scale_factor": 0.1, "add_offset": 1.0, "_FillValue": -999},
    "time": {"units": "hours since 2000-01-01", "calendar": "noleap"},
}


@pytest.fixture(scope="session")
def netcdf4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NetCDF-4: chunked and deflated, packed, CF time, variable-length strings, a group."""
    path = tmp_path_factory.mktemp("nc4") / "air.nc"
    ds = _air(0, pd.date_range("2000-01-01", periods=6, freq="6h"))
    ds.to_netcdf(path, engine="netcdf4", encoding=ENCODING, unlimited_dims=["time"])
    sub = xr.Dataset(
        {"depth": (("z",), np.arange(3, dtype="i4"), {"units": "m"}),
         "code": (("z", "n"), np.array([[b"a", b"b"], [b"c", b"d"], [b"e", b""]], dtype="S1"))},
        attrs={"kind": "sub"},
    )
    sub.to_netcdf(path, mode="a", group="/obs/profiles", engine="netcdf4")
    return path


@pytest.fixture(scope="session")
def netcdf3_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NetCDF-3 classic: big-endian, a record dimension, character arrays."""
    path = tmp_path_factory.mktemp("nc3") / "air3.nc"
    ds = _air(1, pd.date_range("2001-01-01", periods=5)).drop_vars("station")
    ds["label"] = (("lat", "nchar"), np.array([list("ab"), list("cd"), list("ef"), list("g ")], dtype="S1"))
    ds.to_netcdf(path, format="NETCDF3_CLASSIC", unlimited_dims=["time"],
                 encoding={"packed": ENCODING["packed"]})
    return path


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three NetCDF-4 files that follow each other in time (two days each)."""
    root = tmp_path_factory.mktemp("many")
    out = []
    for i in range(3):
        times = pd.date_range("2002-01-01", periods=2) + pd.Timedelta(days=2 * i)
        path = root / f"air_{i}.nc"
        _air(10 + i, times).drop_vars("station").to_netcdf(
            path, engine="netcdf4", encoding={"air": ENCODING["air"], "time": {"units": "days since 2002-01-01"}},
            unlimited_dims=["time"],
        )
        out.append(str(path))
    return out
