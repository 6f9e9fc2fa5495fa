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
from typing import Any

from chunkmill.jobs import Rechunked, convert, rechunk

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


def __getattr__(name: str) -> Any:
    """`virtualize` and `open_virtual_mfdataset` on first use: they import xarray, which the
    `chunkmill` command's worker processes (this package's script) do not need — 60 MB of
    imports each would eat a small --max-mem before any task."""
    if name in ("open_virtual_mfdataset", "virtualize"):
        from chunkmill import virtual

        return getattr(virtual, name)
    raise AttributeError(f"module 'chunkmill' has no attribute {name!r}")
