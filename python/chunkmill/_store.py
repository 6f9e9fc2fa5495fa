"""xarray's view of a dataset opened by the Rust reader: a data store of lazily indexed
variables whose boxes are read chunk by chunk, the GIL released, from any number of threads."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from xarray import Variable
from xarray.backends.common import AbstractDataStore, BackendArray
from xarray.coding.strings import create_vlen_dtype
from xarray.core import indexing
from xarray.core.utils import FrozenDict

from chunkmill import _native

__all__ = ["ChunkmillArray", "ChunkmillDataStore", "Handle"]

_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _native_dtype(numpy_str: str) -> np.dtype:
    """The numpy dtype the reader returns for `numpy_str`: little-endian, as the reader decodes."""
    dtype = np.dtype(numpy_str)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def _numbers(value: Any) -> Any:
    """JSON words for non-finite floats (`"NaN"`) as floats, also inside lists."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value in _FLOAT_WORDS:
        return _FLOAT_WORDS[value]
    return value


def _attribute(value: Any, stored_type: str | None) -> Any:
    """An attribute as netCDF4-python returns it: text as `str`, numbers as numpy scalars
    (one value) or arrays of the stored type."""
    if stored_type is None or (isinstance(value, str) and value not in _FLOAT_WORDS):
        return value
    array = np.array(_numbers(value), dtype=stored_type)
    if array.ndim == 0:
        return array[()]
    if array.size == 1:
        return array.reshape(())[()]
    return array


# Attributes netCDF-C stores with the variable's own type.
_OF_VARIABLE_TYPE = ("_FillValue", "missing_value", "valid_min", "valid_max", "valid_range")


def _attributes(
    attrs: Mapping[str, Any], types: Mapping[str, str], dtype: np.dtype
) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        stored = types.get(k)
        if stored is None and k in _OF_VARIABLE_TYPE and dtype.kind in "fiu":
            stored = dtype.str
        out[k] = _attribute(v, stored)
    return out


class Handle:
    """An opened dataset and how to open it again: pickled (to a dask worker process), it
    carries only the call that opens it, which runs on first use there."""

    def __init__(self, opener: Any, args: tuple[Any, ...], native: Any = None) -> None:
        self._opener = opener
        self._args = args
        self._native = native

    @property
    def native(self) -> Any:
        """The opened dataset (opened now if this handle was unpickled)."""
        if self._native is None:
            self._native = self._opener(*self._args)
        return self._native

    @classmethod
    def open(cls, opener: Any, *args: Any) -> Handle:
        """Opens with `opener(*args)` now."""
        return cls(opener, args, opener(*args))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Handle, (self._opener, self._args))


class ChunkmillArray(BackendArray):
    """One array of a dataset opened by chunkmill: a selection reads only the chunks it
    touches, in Rust with the GIL released (dask threads read in parallel, no lock)."""

    __slots__ = ("_handle", "_key", "_strings", "shape", "dtype")

    def __init__(self, handle: Handle, key: str, shape: tuple[int, ...], dtype_str: str) -> None:
        self._handle = handle
        self._key = key
        self.shape = shape
        self._strings = dtype_str == "|O"
        self.dtype = create_vlen_dtype(str) if self._strings else _native_dtype(dtype_str)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        """The selection `key`: one box read (slices and integers); xarray applies the rest."""
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._read
        )

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        if self._strings:
            values = np.array(self._handle.native.read_strings(self._key), dtype=object)
            return values.reshape(self.shape)[key]
        start: list[int] = []
        stop: list[int] = []
        post: list[Any] = []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                count = len(range(a, b, step))
                if count == 0:
                    start.append(0)
                    stop.append(0)
                    post.append(slice(None))
                    continue
                # A negative step reads the same box and reverses it afterwards.
                first, last = sorted((a, a + (count - 1) * step))
                start.append(first)
                stop.append(last + 1)
                post.append(slice(None, None, step))
            else:
                i = int(k) % n if n else int(k)
                start.append(i)
                stop.append(i + 1)
                post.append(0)
        data = self._handle.native.read(self._key, start, stop)
        box = tuple(b - a for a, b in zip(start, stop, strict=True))
        array = np.frombuffer(data, dtype=self.dtype).reshape(box)
        return array[tuple(post)]


class ChunkmillDataStore(AbstractDataStore):
    """The variables of one group of a dataset opened by chunkmill, undecoded: raw attributes
    (`_FillValue`, `scale_factor`, `units`, …) for xarray's CF decoding."""

    def __init__(self, handle: Handle, group: str | None = None, source: str | None = None) -> None:
        self._handle = handle
        self._meta = json.loads(handle.native.metadata())
        self._group = (group or "").strip("/")
        self._source = source
        if self._group and self._group not in self._meta["groups"]:
            groups = ", ".join("/" + g for g in sorted(self._meta["groups"]) if g)
            raise _native.UsageError(
                f"{self._meta['name']}: no group /{self._group} (groups: {groups or 'none'})"
            )

    def _name(self, key: str) -> str | None:
        parent, _, name = key.rpartition("/")
        return name if parent == self._group else None

    def get_variables(self) -> Mapping[str, Variable]:
        """The group's variables, lazy, with raw attributes and netCDF4-style encodings."""
        out: dict[str, Variable] = {}
        # The file's order where it is known (files), else the references' (sorted) order.
        position = {key: i for i, key in enumerate(self._meta.get("order", []))}
        keys = sorted(self._meta["arrays"], key=lambda k: position.get(k, len(position)))
        for key in keys:
            a = self._meta["arrays"][key]
            name = self._name(key)
            if name is None:
                continue
            shape = tuple(a["shape"])
            array = ChunkmillArray(self._handle, key, shape, a["dtype"])
            attrs = _attributes(a["attributes"], a["attribute_types"], array.dtype)
            if array.dtype.kind == "S" and "_FillValue" in attrs:
                attrs["_FillValue"] = np.bytes_(attrs["_FillValue"])
            # netCDF4-python reports a NetCDF-4/HDF5 variable's stored byte order, and NetCDF-3
            # variables (always big-endian) in native order.
            if array._strings:
                stored_dtype: Any = str
            elif self._meta["format"] == "NETCDF3":
                stored_dtype = array.dtype
            else:
                stored_dtype = np.dtype(a["dtype"])
            encoding: dict[str, Any] = {"dtype": stored_dtype}
            stored = a["encoding"]
            if stored is not None:
                encoding.update({k: v for k, v in stored.items() if k != "chunksizes"})
                chunks = stored["chunksizes"]
                encoding["chunksizes"] = None if chunks is None else tuple(chunks)
                if chunks is not None:
                    encoding["preferred_chunks"] = dict(
                        zip(a["dimension_names"], chunks, strict=True)
                    )
            elif self._meta["format"] != "NETCDF3":
                encoding["chunks"] = tuple(a["chunk_shape"])
                encoding["preferred_chunks"] = dict(
                    zip(a["dimension_names"], a["chunk_shape"], strict=True)
                )
            if "least_significant_digit" in attrs:
                encoding["least_significant_digit"] = attrs.pop("least_significant_digit")
            if self._source is not None:
                encoding["source"] = self._source
            encoding["original_shape"] = shape
            data = indexing.LazilyIndexedArray(array)
            out[name] = Variable(tuple(a["dimension_names"]), data, attrs, encoding)
        return FrozenDict(out)

    def get_attrs(self) -> Mapping[str, Any]:
        """The group's attributes."""
        return FrozenDict(self._meta["groups"].get(self._group, {}))

    def get_dimensions(self) -> Mapping[str, int]:
        """The lengths of the dimensions the group's variables use."""
        dims: dict[str, int] = {}
        for v in self.get_variables().values():
            dims.update(zip(v.dims, v.shape, strict=True))
        return FrozenDict(dims)

    def get_encoding(self) -> dict[str, Any]:
        """``unlimited_dims``: the group's unlimited dimensions, as the netcdf4 engine gives."""
        group = "/" + self._group
        unlimited = {
            d["name"]
            for d in self._meta.get("dimensions", [])
            if d["unlimited"] and d["group"] == group
        }
        return {"unlimited_dims": unlimited}

    def close(self) -> None:
        """Nothing to release: files are closed when the last array reading them is gone."""


def drop_keys(group: str | None, drop_variables: str | Iterable[str] | None) -> list[str]:
    """The array keys of `drop_variables` in `group`, which the Rust scan leaves out unread."""
    if drop_variables is None:
        return []
    if isinstance(drop_variables, str):
        names = [drop_variables]
    elif isinstance(drop_variables, Iterable):
        names = list(drop_variables)
    else:
        names = [drop_variables]
    if not all(isinstance(n, str) for n in names):
        raise _native.UsageError(f"drop_variables: a name or names (str), not {drop_variables!r}")
    prefix = (group or "").strip("/")
    return [f"{prefix}/{n}" if prefix else n for n in names]
