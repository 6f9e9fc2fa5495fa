"""The `chunkmill` engine of xarray: ``xr.open_dataset(path, engine="chunkmill")`` opens
NetCDF-4, HDF5 and NetCDF-3 files, and kerchunk JSON/Parquet and Icechunk references, lazily
through chunkmill's Rust reader (no libhdf5, no global lock)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from xarray import Dataset
from xarray.backends import BackendEntrypoint
from xarray.backends.store import StoreBackendEntrypoint

from chunkmill import _native
from chunkmill._store import ChunkmillDataStore, Handle, drop_keys

__all__ = ["ChunkmillBackendEntrypoint"]

_FILE_SUFFIXES = (".nc", ".nc4", ".nc3", ".cdf", ".h5", ".hdf5", ".he5", ".hdf")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _is_references(path: str) -> bool:
    """Whether `path` holds references (kerchunk JSON or Parquet, Icechunk) rather than data."""
    if os.path.isdir(path):
        return True
    return path.endswith(".json")


def open_store(path: str, group: str | None = None, drop: list[str] | None = None) -> ChunkmillDataStore:
    """A data store over `path`: a file, or references (see :func:`_is_references`)."""
    path = os.path.abspath(path)
    if _is_references(path):
        handle = Handle.open(_native.open_references, path)
    else:
        handle = Handle.open(_native.open_file, path, drop or [])
    return ChunkmillDataStore(handle, group=group, source=path)


class ChunkmillBackendEntrypoint(BackendEntrypoint):
    """Opens NetCDF-4/HDF5/NetCDF-3 files and kerchunk/Icechunk references with chunkmill.

    Every selection reads only the chunks it needs, in Rust with the GIL released, so
    ``xr.open_mfdataset(files, engine="chunkmill", parallel=True)`` and dask's threads read
    in parallel. CF decoding (``_FillValue``, ``scale_factor``, times) is xarray's: the
    engine passes attributes as the file stores them.
    """

    description = "NetCDF-4, HDF5, NetCDF-3 and kerchunk/Icechunk references through chunkmill's Rust reader"
    url = "https://example.invalid/chunkmill#python"
    open_dataset_parameters = (
        "filename_or_obj",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "drop_variables",
        "use_cftime",
        "decode_timedelta",
        "group",
    )

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        group: str | None = None,
    ) -> Dataset:
        """Opens `filename_or_obj` (a path) lazily; `group` selects a group (``"/a/b"``)."""
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            raise _native.UsageError(
                f"engine 'chunkmill' opens paths, not {type(filename_or_obj).__name__}"
            )
        if group is not None and not isinstance(group, str):
            raise _native.UsageError(f"group: a group's path such as '/a/b', not {group!r}")
        path = os.fspath(filename_or_obj)
        store = open_store(path, group, drop_keys(group, drop_variables))
        return StoreBackendEntrypoint().open_dataset(
            store,
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            drop_variables=drop_variables,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
        )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for paths of NetCDF/HDF5 files (by suffix or signature) and references."""
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        path = os.fspath(filename_or_obj)
        if path.endswith(_FILE_SUFFIXES):
            return True
        # Only a regular file is read: opening a named pipe would block until a writer came.
        if not os.path.isfile(path):
            return False
        try:
            with open(path, "rb") as f:
                head = f.read(8)
        except OSError:
            return False
        return head == _HDF5_MAGIC or head[:3] == b"CDF"
