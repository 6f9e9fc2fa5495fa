"""chunkmill.virtualize and chunkmill.open_virtual_mfdataset against netCDF4 (through xarray)
and the references read back by fsspec/kerchunk; errors as the command's categories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import chunkmill


def test_open_virtual_mfdataset_equals_open_mfdataset(collection):
    ours = chunkmill.open_virtual_mfdataset(collection, concat_dim="time")
    theirs = xr.open_mfdataset(collection, engine="netcdf4", combine="by_coords")
    xr.testing.assert_identical(ours.load(), theirs.load())
    # Chunks are read per selection: one day of the middle file.
    day = ours["air"].sel(time="2002-01-04").values
    assert np.array_equal(day, theirs["air"].sel(time="2002-01-04").values)


def test_open_virtual_mfdataset_infers_the_dimension_and_orders_files(collection):
    with pytest.warns(UserWarning, match="inferred"):
        ours = chunkmill.open_virtual_mfdataset(list(reversed(collection)))
    assert ours["time"].values.tolist() == sorted(ours["time"].values.tolist())
    assert ours.sizes["time"] == 6


@pytest.mark.parametrize("fmt", ["kerchunk-json", "kerchunk-parquet"])
def test_virtualize_references_read_by_fsspec(collection, tmp_path, fmt):
    pytest.importorskip("zarr")
    pytest.importorskip("fsspec")
    out = tmp_path / ("refs.json" if fmt == "kerchunk-json" else "refs.parq")
    report = chunkmill.virtualize(
        collection, concat_dim="time", output=out, format=fmt, inline_threshold=0
    )
    assert report["files"] == collection and report["concat_dim"] == "time"
    assert report["references"] > 0 and report["bytes_written"] > 0
    storage = {"fo": str(out)} if fmt == "kerchunk-json" else {"fo": str(out), "remote_protocol": "file"}
    theirs = xr.open_dataset(
        "reference://", engine="zarr", backend_kwargs={"consolidated": False, "storage_options": storage}
    )
    expected = xr.open_mfdataset(collection, engine="netcdf4")
    xr.testing.assert_allclose(theirs.load(), expected.load())
    ours = xr.open_dataset(out, engine="chunkmill")
    xr.testing.assert_allclose(ours.load(), expected.load())


def test_virtualize_icechunk(collection, tmp_path):
    icechunk = pytest.importorskip("icechunk")
    out = tmp_path / "repo"
    chunkmill.virtualize(collection, concat_dim="time", output=out, format="icechunk")
    ours = xr.open_dataset(out, engine="chunkmill")
    expected = xr.open_mfdataset(collection, engine="netcdf4")
    xr.testing.assert_allclose(ours.load(), expected.load())
    assert icechunk.Repository.exists(icechunk.local_filesystem_storage(str(out)))


def test_existing_output_is_refused(collection, tmp_path):
    out = tmp_path / "refs.json"
    out.write_text("{}")
    with pytest.raises(chunkmill.RefusedError, match="exists") as e:
        chunkmill.virtualize(collection, concat_dim="time", output=out)
    assert e.value.exit_code == 3
    assert out.read_text() == "{}"


def test_missing_input_is_refused(tmp_path):
    with pytest.raises(chunkmill.RefusedError, match="nothing_here"):
        chunkmill.virtualize([str(tmp_path / "nothing_here_*.nc")], output=tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_unknown_concat_dim_is_an_error_naming_it(collection, tmp_path):
    with pytest.raises(chunkmill.ChunkmillError, match="depth"):
        chunkmill.virtualize(collection, concat_dim="depth", output=tmp_path / "r.json")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"format": "netcdf"}, "format 'netcdf'"),
        ({"threads": -1}, "threads"),
        ({"inline_threshold": "big"}, "inline_threshold"),
        ({"compat": "maybe"}, "maybe"),
        ({"identical_dims": [1, 2]}, "identical_dims"),
        ({"output": None}, "output"),
        ({"concat_dim": 5}, "concat_dim"),
        ({"format": None}, "format"),
    ],
)
def test_bad_arguments_are_usage_errors(collection, tmp_path, kwargs, match):
    args = {"concat_dim": "time", "output": tmp_path / "r.json", **kwargs}
    with pytest.raises(chunkmill.UsageError, match=match) as e:
        chunkmill.virtualize(collection, **args)
    assert e.value.exit_code == 2


def test_paths_of_the_wrong_type_are_usage_errors():
    with pytest.raises(chunkmill.UsageError, match="42 is not a path"):
        chunkmill.open_virtual_mfdataset([42])
    with pytest.raises(chunkmill.UsageError):
        chunkmill.open_virtual_mfdataset(3.5)


def test_report_is_json_of_the_run(collection, tmp_path):
    report = chunkmill.virtualize(collection[:1], output=tmp_path / "one.json")
    json.dumps(report)
    assert report["files"] == collection[:1] and report["concat_dim"] is None
