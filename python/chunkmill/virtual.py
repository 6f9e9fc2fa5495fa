"""Virtual datasets: references to the chunks of many NetCDF/HDF5 files, written
(:func:`virtualize`) or combined in memory and opened (:func:`open_virtual_mfdataset`)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import xarray as xr

from chunkmill import _native
from chunkmill._store import ChunkmillDataStore, Handle
from chunkmill.jobs import _count, _paths

__all__ = ["open_virtual_mfdataset", "virtualize"]

Format = Literal["kerchunk-json", "kerchunk-parquet", "icechunk"]


def _names(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not all(isinstance(v, str) for v in value):
        raise _native.UsageError(f"{what}: names (str), got {value!r}")
    return list(value)


def _text(value: Any, what: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _native.UsageError(f"{what}: a name (str), got {value!r}")
    return value


def virtualize(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    concat_dim: str | None = None,
    output: str | os.PathLike[str] | None = None,
    format: Format = "kerchunk-json",
    *,
    stack: bool = False,
    identical_dims: str | Sequence[str] | None = None,
    compat: Literal["equals", "override"] = "equals",
    inline_threshold: int = 500,
    record_size: int = 100_000,
    drop: str | Sequence[str] | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    threads: int = 0,
) -> dict[str, Any]:
    """Writes references to the chunks of NetCDF/HDF5 files, as ``chunkmill virtualize`` does.

    The files (paths, globs, ``s3://`` URLs, ``@list`` files) are scanned in parallel with
    the GIL released, joined strictly along `concat_dim` (inferred from the files when
    None; with `stack`, a new dimension) and written atomically to `output` as kerchunk
    JSON, kerchunk Parquet or an Icechunk repository. Ctrl-C stops the scan; nothing is
    written then.

    Returns the report: ``files``, ``concat_dim``, ``references``, ``inlined``,
    ``missing``, ``bytes_written``, ``skipped``, ``warnings``, ``notes``, timings.

    Raises :class:`RefusedError` (missing inputs, an existing output, files that differ),
    :class:`UsageError` (bad arguments) or :class:`JobError` (a failed write).

    >>> import chunkmill, xarray as xr
    >>> report = chunkmill.virtualize(files, concat_dim="time", output=refs)
    >>> report["files"] == files
    True
    >>> xr.open_dataset(refs, engine="chunkmill").sizes["time"]
    6
    """
    if not isinstance(output, (str, os.PathLike)):
        raise _native.UsageError(f"virtualize needs output=PATH (the references to write), got {output!r}")
    text = _native.virtualize(
        _paths(paths, "paths"),
        os.fspath(output),
        _text(format, "format"),
        _text(concat_dim, "concat_dim", optional=True),
        bool(stack),
        _names(identical_dims, "identical_dims"),
        _text(compat, "compat"),
        _count(inline_threshold, "inline_threshold"),
        _count(record_size, "record_size"),
        _names(drop, "drop"),
        bool(skip_bad),
        bool(overwrite),
        _count(threads, "threads"),
    )
    report: dict[str, Any] = json.loads(text)
    for note in report["notes"] + report["warnings"]:
        warnings.warn(f"chunkmill: {note}", stacklevel=2)
    return report


def open_virtual_mfdataset(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    concat_dim: str | None = None,
    *,
    stack: bool = False,
    identical_dims: str | Sequence[str] | None = None,
    compat: Literal["equals", "override"] = "equals",
    drop_variables: str | Sequence[str] | None = None,
    skip_bad: bool = False,
    threads: int = 0,
    **decode: Any,
) -> xr.Dataset:
    """Opens many NetCDF/HDF5 files as one lazy Dataset, combined in Rust.

    The files are scanned and joined as :func:`virtualize` joins them (strictly, along
    `concat_dim` or the dimension inferred from the files), but nothing is written: the
    Dataset reads each selection's chunks straight from the files, from any number of dask
    threads. `decode` takes :func:`xarray.open_dataset`'s options (``chunks``,
    ``decode_times``, ``mask_and_scale``, ``use_cftime``, …).

    >>> import chunkmill
    >>> ds = chunkmill.open_virtual_mfdataset(files, concat_dim="time")
    >>> ds.sizes["time"]
    6
    >>> float(ds["air"].mean()) == float(xr.open_mfdataset(files, engine="netcdf4")["air"].mean())
    True
    """
    handle = Handle.open(
        _native.combine,
        _paths(paths, "paths"),
        _text(concat_dim, "concat_dim", optional=True),
        bool(stack),
        _names(identical_dims, "identical_dims"),
        _text(compat, "compat"),
        _names(drop_variables, "drop_variables"),
        bool(skip_bad),
        _count(threads, "threads"),
    )
    store = ChunkmillDataStore(handle)
    for note in store._meta.get("warnings", []):
        warnings.warn(f"chunkmill: {note}", stacklevel=2)
    return xr.open_dataset(store, engine="store", **decode)
