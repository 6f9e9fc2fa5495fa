"""chunkmill for Python: archival NetCDF/HDF5 data to analysis-ready Zarr, with xarray.

- ``xr.open_dataset(path, engine="chunkmill")`` and ``xr.open_mfdataset(..., engine="chunkmill",
  parallel=True)`` read NetCDF-4, HDF5 and NetCDF-3 files (and kerchunk/Icechunk references)
  lazily through chunkmill's Rust reader: no libhdf5, no global lock, the GIL released.
- :func:`virtualize` writes kerchunk JSON/Parquet or Icechunk references to many files;
  :func:`open_virtual_mfdataset` combines them in memory and opens one lazy Dataset.
- :class:`chunkmill.virtualizarr.Parser` gives VirtualiZarr 2.x our scanner.
- :func:`rechunk` (rechunker's API) and :func:`convert` (``chunkmill convert`` and its recipe
  keys) run the command's jobs in this process, on threads, processes, SLURM, a
  ``dask.distributed.Client`` or Lithops.
- Errors are :class:`ChunkmillError` subclasses carrying the ``chunkmill`` command's messages.

A compute namespace comes as a submodule of this package.
"""

from __future__ import annotations

from chunkmill._native import ChunkmillError, JobError, RefusedError, UsageError
from chunkmill._native import __version__

# The jobs and virtual modules import xarray, pandas and numpy: 58 MB of the process and a
# second of start-up that the wheel's `chunkmill` command (chunkmill._cli, which imports this
# package first) does not use, and that counted against its --max-mem. They load on first use.
_LAZY = {
    "Rechunked": "chunkmill.jobs",
    "convert": "chunkmill.jobs",
    "rechunk": "chunkmill.jobs",
    "open_virtual_mfdataset": "chunkmill.virtual",
    "virtualize": "chunkmill.virtual",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chunkmill' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ChunkmillError",
    "JobError",
    "RefusedError",
    "UsageError",
    "Rechunked",
    "__version__",
    "convert",
    "open_virtual_mfdataset",
    "rechunk",
    "virtualize",
]

# The exit code of the `chunkmill` command that each exception stands for.
ChunkmillError.exit_code = 1
JobError.exit_code = 1
UsageError.exit_code = 2
RefusedError.exit_code = 3
