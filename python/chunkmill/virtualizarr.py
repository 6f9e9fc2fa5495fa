"""A VirtualiZarr 2.x parser backed by chunkmill's scanner.

``virtualizarr.open_virtual_dataset(url, registry=registry, parser=chunkmill.virtualizarr.Parser())``
gives the same virtual dataset as VirtualiZarr's own ``HDFParser`` (and ``NetCDF3Parser``),
scanned in Rust without libhdf5.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from chunkmill import _native
from chunkmill._store import _attributes, _numbers

__all__ = ["Parser"]

_INLINED_PATH = "__inlined__"


def _local_path(url: str) -> str:
    """The local path of a ``file://`` URL (or of a plain absolute path)."""
    if url.startswith("file:///") and "?" not in url and "#" not in url:
        # What urlparse gives for such a URL, without its cost per file.
        return unquote(url[7:])
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return unquote(parsed.path) if parsed.scheme else url
    raise _native.UsageError(
        f"{url}: chunkmill.virtualizarr.Parser reads local files (file://) for now"
    )


def _uri(url: str) -> str:
    return "file://" + url if url.startswith("/") else url


def _fill_value(value: Any, dtype: Any) -> Any:
    if isinstance(dtype, np.dtypes.StringDType):
        return ""
    if value is None:
        return None
    return np.array(_numbers(value), dtype=dtype)[()]


def _path_table(urls: list[str]) -> Any:
    """Each chunk's path by its index in the scan's path table: the URLs, then "missing" (the
    empty path), then "inlined". Validated once per URL, as VirtualiZarr would validate every
    chunk's path (which costs more than the whole scan)."""
    from virtualizarr.manifests.manifest import validate_and_normalize_path_to_uri

    return np.array([validate_and_normalize_path_to_uri(_uri(u)) for u in urls] + ["", _INLINED_PATH],
                    dtype=np.dtypes.StringDType())


def _manifest(paths: Any, offsets: Any, lengths: Any, grid: tuple[int, ...],
              inlined: dict[int, bytes] | None) -> Any:
    return _vz().ChunkManifest.from_arrays(
        paths=paths.reshape(grid),
        offsets=offsets.reshape(grid),
        lengths=lengths.reshape(grid),
        inlined={np.unravel_index(flat, grid): data for flat, data in inlined.items()} if inlined else None,
        validate_paths=False,
    )


class _VirtualiZarr:
    """VirtualiZarr's classes, imported on first use (chunkmill imports without it)."""

    def __init__(self) -> None:
        from virtualizarr.manifests import ChunkManifest, ManifestArray, ManifestGroup, ManifestStore

        self.ChunkManifest = ChunkManifest
        self.ManifestArray = ManifestArray
        self.ManifestGroup = ManifestGroup
        self.ManifestStore = ManifestStore


_VZ: list[_VirtualiZarr] = []


def _vz() -> _VirtualiZarr:
    if not _VZ:
        _VZ.append(_VirtualiZarr())
    return _VZ[0]


# The Zarr metadata of an array, by its description: the files of a collection describe each
# variable alike, and building the metadata (zarr's data type matching above all) costs more
# than scanning the file. The objects are frozen; xarray copies their attributes.
_METADATA: dict[str, Any] = {}
_METADATA_LIMIT = 512
_METADATA_KEYS = ("shape", "dtype", "chunk_shape", "fill_value", "codecs", "dimension_names",
                  "attributes", "attribute_types")


def _array(description: str, manifest: Any) -> Any:
    """A ManifestArray of the metadata `description` (the scan's JSON list of
    `_METADATA_KEYS`) over `manifest`."""
    metadata = _METADATA.get(description)
    if metadata is None:
        metadata = _metadata(dict(zip(_METADATA_KEYS, json.loads(description), strict=True)))
        if len(_METADATA) >= _METADATA_LIMIT:
            _METADATA.clear()
        _METADATA[description] = metadata
    return _vz().ManifestArray(metadata=metadata, chunkmanifest=manifest)


def _inlined_array(native: Any, key: str, a: dict[str, Any]) -> Any:
    """A variable the scan could not reference (strings), read whole and inlined."""
    urls, ids, offsets, lengths, inlined = native.manifest(key)
    grid = tuple(math.ceil(s / c) for s, c in zip(a["shape"], a["chunk_shape"], strict=True))
    ids = np.frombuffer(ids, dtype="<u4")
    index = np.where(ids == _native.MISSING, len(urls), np.where(ids == _native.INLINED, len(urls) + 1, ids))
    lengths = np.frombuffer(lengths, dtype="<u8").copy()
    for flat, data in inlined.items():
        lengths[flat] = len(data)
    manifest = _manifest(_path_table(urls)[index], np.frombuffer(offsets, dtype="<u8").copy(), lengths, grid,
                         inlined)
    description = json.dumps([a.get(k) for k in _METADATA_KEYS])
    return _array(description, manifest)


def _metadata(a: dict[str, Any]) -> Any:
    from virtualizarr.manifests.utils import create_v3_array_metadata
    from virtualizarr.parsers.utils import encode_cf_fill_value

    strings = a["dtype"] == "|O"
    dtype = np.dtypes.StringDType() if strings else np.dtype(a["dtype"])
    attrs = _attributes(a["attributes"], a["attribute_types"], np.dtype(object) if strings else dtype)
    if "_FillValue" in attrs and dtype.kind not in "SUOT":
        attrs["_FillValue"] = encode_cf_fill_value(attrs["_FillValue"], dtype)
    return create_v3_array_metadata(
        shape=tuple(a["shape"]),
        data_type=dtype,
        chunk_shape=tuple(a["chunk_shape"]),
        fill_value=_fill_value(a["fill_value"], dtype),
        # Strings get vlen-utf8 from VirtualiZarr, as its own parser's do.
        codecs=[] if strings else a["codecs"],
        dimension_names=tuple(a["dimension_names"]),
        attributes=attrs,
    )


class Parser:
    """Parses HDF5, NetCDF-4 and NetCDF-3 files for VirtualiZarr 2.x with chunkmill's scanner.

    A callable as VirtualiZarr's parsers are: ``parser(url, registry)`` returns a
    ``ManifestStore`` whose arrays reference the file's chunks. Chunks are never inlined;
    variable-length strings (which cannot be referenced) are read and inlined, as
    VirtualiZarr's ``HDFParser`` does.

    >>> from obspec_utils.registry import ObjectStoreRegistry
    >>> from obstore.store import LocalStore
    >>> import virtualizarr, chunkmill.virtualizarr
    >>> registry = ObjectStoreRegistry({"file://": LocalStore()})
    >>> vds = virtualizarr.open_virtual_dataset("file://" + files[0], registry=registry,
    ...                                         parser=chunkmill.virtualizarr.Parser())
    >>> vds["air"].shape
    (2, 4, 5)
    """

    def __init__(self, group: str | None = None, drop_variables: Iterable[str] | None = None) -> None:
        """`group` (``"/a/b"``) is the group to parse; `drop_variables` are left out unread."""
        self.group = (group or "").strip("/")
        self.drop_variables = list(drop_variables or [])

    def __call__(self, url: str, registry: Any) -> Any:
        """Scans the file at `url` and returns its ``ManifestStore`` (reading through `registry`)."""
        vz = _vz()
        path = _local_path(url)
        prefix = f"{self.group}/" if self.group else ""
        drop = [prefix + d for d in self.drop_variables]
        (urls, groups_json, keys, descriptions, grids, inlined, paths, offsets, lengths,
         skipped) = _native.scan_references(os.fspath(path), drop)
        groups = json.loads(groups_json)
        if self.group and self.group not in groups:
            raise _native.UsageError(f"{path}: no group /{self.group}")
        # One array per file for each of paths, offsets and lengths; each array's are views.
        paths = _path_table(urls)[np.frombuffer(paths, dtype="<u4")]
        offsets = np.frombuffer(offsets, dtype="<u8")
        lengths = np.frombuffer(lengths, dtype="<u8")
        arrays = {}
        start = 0
        for key, description, grid, chunks in zip(keys, descriptions, grids, inlined, strict=True):
            end = start + math.prod(grid)
            arrays[key] = _array(description, _manifest(paths[start:end], offsets[start:end],
                                                        lengths[start:end], grid, chunks))
            start = end
        if skipped:
            # What cannot be referenced (strings) is read and inlined, from a second scan that
            # leaves out everything referenced already.
            loaded = _native.open_file(os.fspath(path), list(arrays) + drop)
            loaded_meta = json.loads(loaded.metadata())
            for key in skipped:
                arrays[key] = _inlined_array(loaded, key, loaded_meta["arrays"][key])

        if all("/" not in k for k in arrays) and list(groups) == [""]:
            # One group (the root), as most files have: nothing to arrange.
            root = vz.ManifestGroup(arrays=arrays, groups={}, attributes=groups[""])
            return vz.ManifestStore(registry=registry, group=root)

        def group(name: str) -> Any:
            children = {
                g.rpartition("/")[2]: group(g)
                for g in groups
                if g and g.rpartition("/")[0] == name
            }
            own = {k.rpartition("/")[2]: v for k, v in arrays.items() if k.rpartition("/")[0] == name}
            return vz.ManifestGroup(arrays=own, groups=children, attributes=groups.get(name, {}))

        return vz.ManifestStore(registry=registry, group=group(self.group))
