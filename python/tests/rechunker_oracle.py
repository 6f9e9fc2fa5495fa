"""Runs rechunker (0.5.4, zarr 2) on a Zarr v2 store, in its own venv (rechunker cannot live
beside zarr 3): the oracle of test_rechunk.py. Usage: python rechunker_oracle.py JSON, the JSON
giving kind (array, group or dataset), source, target_chunks, max_mem, target and temp."""

from __future__ import annotations

import json
import sys


def tuples(value):
    """JSON lists back to the tuples rechunker takes for chunks."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {k: tuples(v) for k, v in value.items()}
    return value


def open_zarr2(path: str):
    """The Dataset of a Zarr v2 store, as xr.open_zarr gives it (which this xarray cannot do
    with zarr 2): lazy variables in the stored chunks, dimensions from _ARRAY_DIMENSIONS."""
    import dask.array
    import xarray as xr
    import zarr

    group = zarr.open_group(path, mode="r")
    variables = {}
    for name, array in group.arrays():
        attrs = dict(array.attrs)
        dims = attrs.pop("_ARRAY_DIMENSIONS")
        encoding = {"chunks": array.chunks, "dtype": array.dtype}
        variables[name] = xr.Variable(dims, dask.array.from_zarr(array), attrs, encoding)
    coords = {k: v for k, v in variables.items() if v.dims == (k,)}
    data = {k: v for k, v in variables.items() if k not in coords}
    return xr.Dataset(data, coords=coords, attrs=dict(group.attrs))


def main() -> None:
    import rechunker
    import zarr

    job = json.loads(sys.argv[1])
    if job["kind"] == "dataset":
        source = open_zarr2(job["source"])
    elif job["kind"] == "group":
        source = zarr.open_group(job["source"], mode="r")
    else:
        source = zarr.open_array(job["source"], mode="r")
    plan = rechunker.rechunk(source, tuples(job["target_chunks"]), job["max_mem"], job["target"],
                             temp_store=job["temp"], executor="python")
    plan.execute()
    zarr.consolidate_metadata(job["target"])


if __name__ == "__main__":
    main()
