"""Helpers of the Python oracle tests: run chunkmill, write sources with zarr-python 3, and compare
targets with sources through zarr-python, xarray and numpy (never through chunkmill alone).

The rules the comparisons enforce, in one place:

* values: every element equal, NaN equal to NaN (``np.testing.assert_array_equal``);
* dtype: the same numpy dtype, byte order aside (a big-endian v2 source may become little-endian);
* attributes: equal, except the dimension-name carrier ``_ARRAY_DIMENSIONS`` (v2) which is compared
  as dimension names with v3's ``dimension_names``;
* fill value: exact (same bits; NaN is NaN) when source and target have the same Zarr format.
  Across formats see ``assert_fill_value``;
* compression: when no ``--codec`` is given the target keeps the source's compressor, compared by
  name and parameters (zstd level, gzip level, blosc cname/clevel/shuffle) across v2 and v3 spellings.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "chunkmill"
TIMEOUT = 300  # seconds for one chunkmill run; a hang is a failure, not a stuck suite


def chunkmill_bin() -> Path:
    return Path(os.environ.get("CHUNKMILL_BIN", str(DEFAULT_BIN)))


# ---------------------------------------------------------------------------------------------
# running chunkmill


def run(*args: Any, timeout: float = TIMEOUT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run chunkmill with ``args`` (converted to str) and capture text output; never raises on exit."""
    cmd = [str(chunkmill_bin()), *[str(a) for a in args]]
    full_env = dict(os.environ)
    full_env.setdefault("NO_COLOR", "1")
    if env:
        full_env.update(env)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL
    )


def describe(r: subprocess.CompletedProcess) -> str:
    return (
        f"command: {' '.join(map(str, r.args))}\nexit: {r.returncode}\n"
        f"--- stdout ---\n{r.stdout[-4000:]}\n--- stderr ---\n{r.stderr[-4000:]}"
    )


def ok(*args: Any, **kw: Any) -> subprocess.CompletedProcess:
    """Run chunkmill and assert exit 0."""
    r = run(*args, **kw)
    assert r.returncode == 0, "chunkmill failed\n" + describe(r)
    return r


def rechunk_args(src, tgt, chunks: str, max_mem: str = "64MB", *extra: Any) -> list:
    return ["rechunk", src, tgt, "--chunks", chunks, "--max-mem", max_mem, "--no-progress", *extra]


def rechunk(src, tgt, chunks: str, max_mem: str = "64MB", *extra: Any) -> subprocess.CompletedProcess:
    return ok(*rechunk_args(src, tgt, chunks, max_mem, *extra))


def assert_one_error_line(
    r: subprocess.CompletedProcess,
    *,
    codes: Iterable[int],
    mentions: Sequence[str] = (),
    pattern: str | None = None,
) -> str:
    """A refused or failed run: exit code in ``codes``, stderr is exactly one non-empty line that
    starts with ``chunkmill: ``, names every string in ``mentions`` (case-insensitive) and matches
    ``pattern`` (a case-insensitive regex) when given. Returns the line."""
    codes = set(codes)
    assert r.returncode in codes, f"expected exit code in {sorted(codes)}\n" + describe(r)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, "expected exactly one line on stderr\n" + describe(r)
    line = lines[0]
    assert line.startswith("chunkmill: "), "error line must start with 'chunkmill: '\n" + describe(r)
    assert "panicked" not in line and "RUST_BACKTRACE" not in r.stderr, describe(r)
    for m in mentions:
        assert m.lower() in line.lower(), f"error line should mention {m!r}\n" + describe(r)
    if pattern is not None:
        assert re.search(pattern, line, re.IGNORECASE), f"error line should match /{pattern}/\n" + describe(r)
    return line


# ---------------------------------------------------------------------------------------------
# stores


def consolidate(path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(path))


def arrays_of(path) -> dict[str, zarr.Array]:
    """Every array of a store by path ("" for a store whose root is an array), recursively."""
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return {"": node}
    out = {}
    for p, member in node.members(max_depth=None):
        if isinstance(member, zarr.Array):
            out[p] = member
    return dict(sorted(out.items()))


def open_array(path, name: str = "") -> zarr.Array:
    node = zarr.open(str(path), mode="r")
    if name:
        return node[name]
    assert isinstance(node, zarr.Array), f"{path} is not an array"
    return node


def tree_files(root) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (POSIX separators) -> bytes."""
    root = Path(root)
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def smooth(shape: Sequence[int], dtype="float32", seed: int = 0) -> np.ndarray:
    """Smooth, realistic-looking values (compress well, all distinct enough to catch misplacement)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if len(shape) else 1
    base = np.sin(np.arange(n, dtype="float64") / 37.0) * 50.0 + np.arange(n) * 1e-3
    base += rng.normal(0, 0.01, n)
    return base.reshape(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# comparisons


def dims_of(arr: zarr.Array):
    """Dimension names: v3 ``dimension_names`` or v2 ``_ARRAY_DIMENSIONS``; None when absent."""
    if arr.metadata.zarr_format == 3:
        d = arr.metadata.dimension_names
        if d is not None and "_ARRAY_DIMENSIONS" in arr.attrs:
            # tolerated in a v3 target, but then it must agree
            assert list(arr.attrs["_ARRAY_DIMENSIONS"]) == list(d), (arr.path, arr.attrs["_ARRAY_DIMENSIONS"], d)
        return None if d is None else tuple(d)
    d = arr.attrs.get("_ARRAY_DIMENSIONS")
    return None if d is None else tuple(d)


def user_attrs(arr: zarr.Array, drop: Iterable[str] = ()) -> dict:
    a = json.loads(json.dumps(dict(arr.attrs), allow_nan=True))
    a.pop("_ARRAY_DIMENSIONS", None)
    for k in drop:
        a.pop(k, None)
    return a


def same_dtype(a: np.dtype, b: np.dtype) -> bool:
    a, b = np.dtype(a), np.dtype(b)
    return a.newbyteorder("=") == b.newbyteorder("=")


def _is_nan(x) -> bool:
    try:
        return isinstance(x, (float, np.floating)) and math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def fill_equal(a, b, dtype) -> bool:
    """Same fill value: NaN equals NaN, otherwise the same bits in ``dtype``."""
    if a is None or b is None:
        return a is None and b is None
    if _is_nan(a) or _is_nan(b):
        return _is_nan(a) and _is_nan(b)
    dt = np.dtype(dtype).newbyteorder("<")
    return np.asarray(a, dtype=dt).tobytes() == np.asarray(b, dtype=dt).tobytes()


def decoded_fill_attr(arr: zarr.Array):
    """The ``_FillValue`` attribute as a value (xarray writes floats base64-encoded in v3)."""
    v = arr.attrs.get("_FillValue")
    if isinstance(v, str) and np.dtype(arr.dtype).kind in "fc":
        if v in ("NaN", "Infinity", "-Infinity"):
            return float(v.replace("Infinity", "inf"))
        try:
            raw = base64.standard_b64decode(v)
            return np.frombuffer(raw, dtype=np.dtype(arr.dtype).newbyteorder("<"))[0]
        except Exception:
            return v
    return v


def assert_fill_value(src: zarr.Array, tgt: zarr.Array) -> None:
    """Same format: exact. v2 -> v3: exact, or the dtype's zero when the v2 fill value is null
    (v3 has no null fill). v3 -> v2: the source's fill value; or, so that xarray decodes the target
    as it decodes the source (xarray takes a v2 ``fill_value`` as ``_FillValue``), the source's
    ``_FillValue`` attribute when it has one, else null. Unwritten chunks are checked by values."""
    sf, tf = src.fill_value, tgt.fill_value
    sfmt, tfmt = src.metadata.zarr_format, tgt.metadata.zarr_format
    if sfmt == tfmt:
        assert fill_equal(sf, tf, src.dtype), f"{tgt.path or '<root>'}: fill value {tf!r}, source has {sf!r}"
        return
    if sfmt == 2:
        want = [sf] if sf is not None else [np.zeros((), dtype=src.dtype)[()]]
    else:
        want = [sf, None]
        if "_FillValue" in src.attrs:
            want.append(decoded_fill_attr(src))
    assert any(fill_equal(w, tf, src.dtype) for w in want), (
        f"{tgt.path or '<root>'}: fill value {tf!r} (zarr v{tfmt}); source (v{sfmt}) has {sf!r}, accepted {want!r}"
    )


def _codec_key(c) -> tuple:
    """A format-independent description of a compressor."""
    if hasattr(c, "get_config"):  # numcodecs (v2), or a numcodecs.zarr3 wrapper
        cfg = dict(c.get_config())
        name = cfg.pop("id", None) or type(c).__name__.lower()
    else:  # zarr v3 codec
        d = c.to_dict()
        name = d["name"]
        cfg = dict(d.get("configuration") or {})
    name = str(name).lower()
    if name == "zstd":
        return ("zstd", int(cfg.get("level", 0)))
    if name == "gzip":
        return ("gzip", int(cfg.get("level", 0)))
    if name == "blosc":
        shuffle = cfg.get("shuffle")
        shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}.get(shuffle, str(shuffle).lower())
        shuffle = shuffle.split(".")[-1]
        return ("blosc", str(cfg.get("cname")).split(".")[-1].lower(), int(cfg.get("clevel")), shuffle)
    return (name, tuple(sorted((k, str(v)) for k, v in cfg.items())))


def compression_of(arr: zarr.Array) -> list[tuple]:
    """Compressors of an array (after the serializer; filters are not expected in these tests)."""
    assert not arr.filters, f"{arr.path}: unexpected filters {arr.filters!r}"
    comps = list(arr.compressors)
    if arr.metadata.zarr_format == 3:
        names = [c.get("name") if isinstance(c, dict) else None for c in arr.metadata.to_dict()["codecs"]]
        assert "numcodecs.zstd" not in names and "numcodecs.gzip" not in names, (
            f"{arr.path}: use the standard v3 codec names, got {names}"
        )
    return [_codec_key(c) for c in comps]


def assert_same_compression(src: zarr.Array, tgt: zarr.Array) -> None:
    assert compression_of(tgt) == compression_of(src), (
        f"{tgt.path}: compressors {tgt.compressors!r}, source has {src.compressors!r}"
    )


def assert_array_matches(
    src: zarr.Array,
    tgt: zarr.Array,
    *,
    chunks: Sequence[int] | None = None,
    zarr_format: int | None = None,
    same_compression: bool = True,
) -> None:
    """Target equals source, value for value and attribute for attribute."""
    where = tgt.path or "<root>"
    assert tgt.shape == src.shape, f"{where}: shape {tgt.shape}, source {src.shape}"
    assert same_dtype(tgt.dtype, src.dtype), f"{where}: dtype {tgt.dtype}, source {src.dtype}"
    if zarr_format is not None:
        assert tgt.metadata.zarr_format == zarr_format, f"{where}: zarr format {tgt.metadata.zarr_format}"
    if chunks is not None:
        assert tuple(tgt.chunks) == tuple(chunks), f"{where}: chunks {tgt.chunks}, wanted {tuple(chunks)}"
    assert dims_of(tgt) == dims_of(src), f"{where}: dimension names {dims_of(tgt)}, source {dims_of(src)}"
    drop = ["_FillValue"] if src.metadata.zarr_format != tgt.metadata.zarr_format else []
    assert user_attrs(tgt, drop) == user_attrs(src, drop), (
        f"{where}: attributes {user_attrs(tgt, drop)}, source {user_attrs(src, drop)}"
    )
    if "_FillValue" in src.attrs and not drop:
        assert tgt.attrs.get("_FillValue") == src.attrs["_FillValue"]
    assert_fill_value(src, tgt)
    if same_compression:
        assert_same_compression(src, tgt)
    np.testing.assert_array_equal(tgt[...], src[...], err_msg=f"values of {where}", strict=False)


def assert_stores_match(src_path, tgt_path, **kw) -> None:
    """Every array of the source is in the target (same paths) and matches it."""
    s, t = arrays_of(src_path), arrays_of(tgt_path)
    assert sorted(t) == sorted(s), f"arrays {sorted(t)}, source has {sorted(s)}"
    for name in s:
        assert_array_matches(s[name], t[name], **kw)
    sg, tg = zarr.open(str(src_path), mode="r"), zarr.open(str(tgt_path), mode="r")
    if isinstance(sg, zarr.Group):
        assert isinstance(tg, zarr.Group)
        assert dict(tg.attrs) == dict(sg.attrs), f"group attributes {dict(tg.attrs)}, source {dict(sg.attrs)}"


def open_xr_no_flags(path):
    """``xr.open_zarr(path)`` with no flags, asserting it found consolidated metadata (xarray warns
    with a RuntimeWarning when it falls back to reading every array's metadata)."""
    import xarray as xr

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(str(path))
    fallback = [w for w in caught if "consolidated" in str(w.message).lower() and issubclass(w.category, RuntimeWarning)]
    assert not fallback, f"xarray did not find consolidated metadata in {path}: {fallback[0].message}"
    return ds


def assert_xr_identical(a, b) -> None:
    """xarray identity (values, dims, coords, attrs) plus the dtypes, which identity ignores."""
    import xarray as xr

    xr.testing.assert_identical(a, b)
    for name, v in a.variables.items():
        assert b[name].dtype == v.dtype, f"{name}: xarray dtype {b[name].dtype}, source {v.dtype}"


# ---------------------------------------------------------------------------------------------
# sources written by zarr-python 3


NULL_FILL = object()  # an explicit null fill value (v2 only); None means "zarr-python's default"


def compressor(kind: str, zarr_format: int):
    """The source compressors the tests use, in each format's own spelling."""
    import numcodecs
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if kind == "none":
        return None
    if zarr_format == 2:
        return {
            "zstd": numcodecs.Zstd(level=3),
            "gzip": numcodecs.GZip(level=6),
            "blosc": numcodecs.Blosc(cname="lz4", clevel=4, shuffle=numcodecs.Blosc.SHUFFLE),
        }[kind]
    return {
        "zstd": ZstdCodec(level=3),
        "gzip": GzipCodec(level=6),
        "blosc": BloscCodec(cname="lz4", clevel=4, shuffle="shuffle"),
    }[kind]


def create_array(
    parent,
    name: str,
    *,
    zarr_format: int,
    shape: Sequence[int],
    dtype,
    chunks: Sequence[int] | None = None,
    fill_value=None,
    dims: Sequence[str] | None = None,
    attrs: dict | None = None,
    codec: str = "zstd",
    data: np.ndarray | None = None,
    region=...,
    shards: Sequence[int] | None = None,
    separator: str | None = None,
) -> zarr.Array:
    """Create one array with zarr-python under ``parent`` (a group, or a path for a root array) and
    write ``data[region]`` into it (``region=None`` writes nothing: every chunk stays unwritten)."""
    attrs = dict(attrs or {})
    kw: dict[str, Any] = {}
    if dims is not None:
        if zarr_format == 3:
            kw["dimension_names"] = list(dims)
        else:
            attrs["_ARRAY_DIMENSIONS"] = list(dims)
    if shards is not None:
        kw["shards"] = tuple(shards)
    if separator is not None:
        kw["chunk_key_encoding"] = {"name": "v2" if zarr_format == 2 else "default", "separator": separator}
    if fill_value is NULL_FILL:
        assert zarr_format == 2, "only Zarr v2 has a null fill value"
        kw["fill_value"] = None
    elif fill_value is not None or zarr_format == 3:
        kw["fill_value"] = fill_value
    comp = compressor(codec, zarr_format)
    common = dict(
        shape=tuple(shape),
        dtype=dtype,
        chunks=tuple(chunks) if chunks is not None else "auto",
        compressors=comp,
        attributes=attrs,
        **kw,
    )
    if isinstance(parent, (str, Path)):
        arr = zarr.create_array(str(parent), zarr_format=zarr_format, **common)
    else:
        arr = parent.create_array(name, **common)
    if data is not None and region is not None:
        if region is ...:
            arr[...] = data
        else:
            arr[region] = data[region]
    return arr


def new_group(path, zarr_format: int, attrs: dict | None = None) -> zarr.Group:
    return zarr.open_group(str(path), mode="w", zarr_format=zarr_format, attributes=attrs or {})


def write_series(path, shape=(400, 60, 60), chunks=(4, 60, 60)):
    """A Zarr v3 store with one float32 array `v` (dims time, lat, lon) of smooth, distinct
    values, consolidated; returns the numpy data it holds."""
    import numpy as np
    import zarr

    t, y, x = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    data = (np.sin(t / 30.0) * 10 + np.cos(y / 5.0) + x * 0.5).astype("float32")
    g = zarr.open_group(path, mode="w", zarr_format=3)
    a = g.create_array("v", shape=shape, chunks=chunks, dtype="float32", fill_value=np.nan,
                       dimension_names=("time", "lat", "lon"))
    a[...] = data
    zarr.consolidate_metadata(path)
    return data


def s3_prefix(name: str) -> str:
    """A fresh `s3://bucket/NAME-xxxxxxxx` prefix on the S3 server scripts/test starts (moto on
    127.0.0.1, named by CHUNKMILL_TEST_S3). Without one the test skips, or fails under
    CHUNKMILL_REQUIRE_BIN=1 (set by scripts/test), so CI never passes an S3 test by skipping it."""
    import uuid

    import pytest

    bucket = os.environ.get("CHUNKMILL_TEST_S3")
    if not bucket:
        reason = "CHUNKMILL_TEST_S3 is not set (scripts/test starts an S3 server and sets it)"
        if os.environ.get("CHUNKMILL_REQUIRE_BIN") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return f"{bucket.rstrip('/')}/{name}-{uuid.uuid4().hex[:8]}"


def s3_options() -> dict:
    """s3fs options for that server, from the AWS_* variables scripts/test sets."""
    return {
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "anon": False,
        "client_kwargs": {
            "endpoint_url": os.environ["AWS_ENDPOINT_URL"],
            "region_name": os.environ.get("AWS_REGION", "us-east-1"),
        },
    }


def write_day_nc(path: Path, day: int) -> None:
    """One day of a tiny NetCDF-4 collection: `time` (6 hours from day × 6, CF units, unlimited)
    and `v` (time, x=8) float32, zlib in chunks of (3, 8), random values seeded by the day."""
    import netCDF4
    import numpy as np

    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("time", None)
    ds.createDimension("x", 8)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "hours since 2020-01-01"
    t[:] = np.arange(6) + 6 * day
    v = ds.createVariable("v", "f4", ("time", "x"), zlib=True, chunksizes=(3, 8))
    v[:] = np.random.default_rng(day).random((6, 8)).astype("f4")
    ds.close()
