"""Jobs from Python: :func:`rechunk` (rechunker's API) and :func:`convert` (``chunkmill
convert`` with its recipe keys). Both build the command line of the ``chunkmill`` command and
hand it to the same Rust code the command runs (parsing, recipe, checks, planner, executors),
so they plan, refuse and fail exactly as the command does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from chunkmill import _engines, _native

__all__ = ["Rechunked", "convert", "rechunk"]


def _path(value: Any, what: str) -> str:
    """A store given as a path, a URL or a zarr-python store / group / array."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    store = getattr(value, "store", value)
    root = getattr(store, "root", None)
    if root is not None:
        inner = getattr(value, "path", "") or ""
        return os.path.join(os.fspath(root), inner) if inner else os.fspath(root)
    raise _native.UsageError(
        f"{what}: a path, a URL or a zarr object on a local store, not {type(value).__name__}"
    )


def _paths(value: Any, what: str) -> list[str]:
    """Paths, globs, URLs or ``@list`` files, as the command takes its inputs: one or a list
    of them (what `convert` and the virtual datasets share)."""
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        raise _native.UsageError(f"{what}: a path, a glob or a list of them, not {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, (str, os.PathLike)):
            raise _native.UsageError(f"{what}: {item!r} is not a path")
        out.append(os.fspath(item))
    return out


def _size(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _native.UsageError(f"{what}: bytes (int) or a size such as '1GB', not {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise _native.UsageError(f"{what}: a positive number of bytes, not {value}")
        return f"{value}B"
    return value


def _spec(chunks: Any, what: str) -> str | None:
    """A chunk spec of the command (`time=10,lat=5` or `10,5`) from a tuple or a dict; None
    keeps the chunks."""
    if chunks is None:
        return None
    if isinstance(chunks, Mapping):
        items = []
        for dim, size in chunks.items():
            if not isinstance(dim, str):
                raise _native.UsageError(f"{what}: dimension names (str), got {dim!r}")
            items.append(f"{dim}={_chunk(size, what)}")
        return ",".join(items)
    if isinstance(chunks, (tuple, list)):
        if not chunks:
            raise _native.UsageError(f"{what}: one chunk size per axis, not an empty {type(chunks).__name__}")
        return ",".join(str(_chunk(size, what)) for size in chunks)
    raise _native.UsageError(f"{what}: a tuple, a dict by dimension name or None, not {chunks!r}")


def _chunk(size: Any, what: str) -> int:
    if size is None:
        return -1
    if isinstance(size, bool) or not isinstance(size, int) or (size <= 0 and size != -1):
        raise _native.UsageError(f"{what}: a chunk size is a positive int or -1, not {size!r}")
    return size


def _codec(options: Mapping[str, Any], what: str) -> list[str]:
    """The command's flags for rechunker's target options: a compressor, or our own keys."""
    flags: list[str] = []
    for key, value in options.items():
        if key == "codec":
            flags += ["--codec", str(value)]
        elif key in ("compressor", "compressors"):
            if isinstance(value, (list, tuple)):
                if len(value) != 1:
                    raise _native.UsageError(f"{what}: one compressor, not {value!r}")
                value = value[0]
            flags += ["--codec", _compressor(value, what)]
        elif key == "shards":
            flags += ["--shards", _spec(value, what) or ""]
        elif key == "zarr_format":
            flags += ["--zarr-format", str(value)]
        else:
            raise _native.UsageError(
                f"{what}: option '{key}' is not one chunkmill writes; it takes codec, compressor, shards, zarr_format"
            )
    return flags


def _compressor(value: Any, what: str) -> str:
    """A numcodecs or zarr-python compressor as the command's --codec."""
    if value is None:
        return "none"
    config = value.get_config() if hasattr(value, "get_config") else getattr(value, "to_dict", lambda: {})()
    name = str(config.get("id") or config.get("name") or type(value).__name__).lower()
    conf = config.get("configuration", config)
    if name in ("zstd",):
        return f"zstd:{conf.get('level', 1)}"
    if name in ("gzip", "zlib"):
        return f"gzip:{conf.get('level', 5)}"
    if name == "blosc":
        return f"blosc:{conf.get('cname', 'lz4')}:{conf.get('clevel', 5)}"
    raise _native.UsageError(f"{what}: compressor {value!r}: chunkmill writes zstd, gzip, blosc or none")


def _uniform(options: Mapping[str, Any] | None, names: Iterable[str], what: str) -> dict[str, Any]:
    """Per-array options (rechunker's for groups and Datasets) that are one set for all."""
    if not options:
        return {}
    names = list(names)
    if not any(n in options for n in names) or not all(isinstance(v, Mapping) for v in options.values()):
        return dict(options)
    sets = [dict(v) for v in options.values()]
    if any(s != sets[0] for s in sets):
        raise _native.UsageError(f"{what}: chunkmill writes every array with the same options; they differ here")
    return sets[0]


def _zarr_format(url: str) -> int | None:
    for name, version in (("zarr.json", 3), (".zgroup", 2), (".zarray", 2)):
        if os.path.exists(os.path.join(url, name)):
            return version
    return None


def _source(source: Any, target_chunks: Any, array_name: str | None) -> tuple[str, list[str], str]:
    """The source's URL, the flags choosing its arrays and their chunks, and its kind
    (``array``, ``group`` or ``dataset``)."""
    kind = type(source).__name__
    module = type(source).__module__
    if module.startswith("xarray") and kind == "Dataset":
        return _dataset(source, target_chunks, array_name)
    if module.startswith("dask"):
        raise _native.UsageError("chunkmill reads Zarr stores: write the dask array with to_zarr, then rechunk the store")
    local = isinstance(source, (str, os.PathLike)) and os.path.isdir(os.fspath(source))
    # A path that is no local Zarr store (remote, missing, a file, a directory without Zarr
    # metadata) goes to the command as it is, which refuses it with its own message.
    remote_or_missing = isinstance(source, (str, os.PathLike)) and (
        not local or _zarr_format(os.fspath(source)) is None
    )
    if (module.startswith("zarr") and kind == "Array") or (local and _is_array(source)) or (
        remote_or_missing and not isinstance(target_chunks, Mapping)
    ):
        spec = _spec(target_chunks, "target_chunks")
        return _path(source, "source"), ["--chunks", spec] if spec else [], "array"
    if array_name is not None:
        raise _native.UsageError("array_name is for an array source; a group's arrays keep their names")
    if not isinstance(target_chunks, Mapping):
        raise _native.UsageError("target_chunks: a dict by array name when the source is a group")
    url = _path(source, "source")
    if not _names_arrays(url, target_chunks):
        # Chunks by dimension for every array, as the command's --chunks.
        spec = _spec(target_chunks, "target_chunks")
        return url, ["--chunks", spec] if spec else [], "group"
    flags: list[str] = []
    for name, chunks in target_chunks.items():
        flags += ["--array", name]
        spec = _spec(chunks, f"target_chunks['{name}']")
        if spec is not None:
            flags += ["--array-chunks", f"{name}:{spec}"]
    return url, flags, "group"


def _names_arrays(url: str, target_chunks: Mapping[str, Any]) -> bool:
    """Whether `target_chunks` is by array name (rechunker's form for a group): some key
    names an array of the group at `url`, or some value is not one chunk size."""
    if any(not isinstance(v, int) or isinstance(v, bool) for v in target_chunks.values()):
        return True
    try:
        import zarr

        group = zarr.open_group(url, mode="r")
        names = {path for path, _ in group.arrays()} | {p for p, _ in group.members(max_depth=None)}
    except Exception:
        return False
    return any(k in names for k in target_chunks)


def _is_array(path: str | os.PathLike[str]) -> bool:
    p = os.fspath(path)
    if os.path.exists(os.path.join(p, ".zarray")):
        return True
    try:
        with open(os.path.join(p, "zarr.json")) as f:
            return bool(json.load(f).get("node_type") == "array")
    except (OSError, ValueError):
        return False


def _dataset(ds: Any, target_chunks: Any, array_name: str | None) -> tuple[str, list[str], str]:
    """A Dataset opened from Zarr: its store, and rechunker's chunks for each variable."""
    if array_name is not None:
        raise _native.UsageError("array_name is for an array source, not a Dataset")
    if not isinstance(target_chunks, Mapping):
        raise _native.UsageError("target_chunks: a dict (by dimension or by variable) when the source is a Dataset")
    url = ds.encoding.get("source")
    if not url or _zarr_format(url) is None:
        raise _native.UsageError(
            "source: chunkmill rechunks a Dataset opened from Zarr (xr.open_zarr(path)); write it with to_zarr first"
        )
    import zarr

    group = zarr.open_group(url, mode="r")
    for name, var in ds.variables.items():
        stored = group.get(str(name))
        if stored is None or tuple(stored.shape) != tuple(var.shape):
            raise _native.UsageError(
                f"source: variable '{name}' of the Dataset is not the one of its store {url} "
                "(selected or computed after opening); rechunk the store, then select"
            )
    if all(k in ds.dims for k in target_chunks):
        target_chunks = {name: _dim_chunks(ds[name], target_chunks) for name in ds.variables}
    flags: list[str] = []
    for name in ds.variables:
        flags += ["--array", str(name)]
        spec = _spec(target_chunks.get(name), f"target_chunks['{name}']")
        if spec is not None:
            flags += ["--array-chunks", f"{name}:{spec}"]
    unknown = [k for k in target_chunks if k not in ds.variables]
    if unknown:
        raise _native.UsageError(
            f"target_chunks: no dimension or variable {unknown[0]!r}; dimensions: {', '.join(map(str, ds.dims))}; "
            f"variables: {', '.join(map(str, ds.variables))}"
        )
    return url, flags, "dataset"


def _dim_chunks(var: Any, by_dim: Mapping[str, Any]) -> tuple[int, ...]:
    """rechunker's chunks of one variable from chunks by dimension: a dimension not given
    keeps its chunks, -1 or more than its length is the whole length."""
    chunks = []
    for axis, dim in enumerate(var.dims):
        length = var.shape[axis]
        if dim in by_dim:
            size = _chunk(by_dim[dim], f"target_chunks['{dim}']")
            chunks.append(length if size == -1 or size > length else size)
        elif var.chunks is not None:
            chunks.append(max(var.chunks[axis]) if var.chunks[axis] else length)
        else:
            chunks.append(length)
    return tuple(max(c, 1) for c in chunks)


class Rechunked:
    """A planned rechunk, as rechunker's ``Rechunked``: :attr:`plan` tells what will run
    (stages, tasks, projected memory per task: the planner's, as ``chunkmill plan rechunk
    --json``), :meth:`execute` runs it and returns the opened target."""

    def __init__(self, argv: list[str], plan: dict[str, Any], executor: Any, retries: int, kind: str, target: str) -> None:
        self._argv = argv
        self._plan = plan
        self._executor = executor
        self._retries = retries
        self._kind = kind
        self._target = target
        self.report: dict[str, Any] | None = None

    @property
    def plan(self) -> dict[str, Any]:
        """The plan: ``stages`` (name, label, tasks, projected_mem, bytes read and written),
        ``tasks``, ``max_projected_mem``, ``max_mem``, ``arrays`` (each array's source and
        target chunks and strategy), ``work_dir``, ``temp``."""
        return self._plan

    def execute(self, *, resume: bool | None = None, progress: bool | None = None) -> Any:
        """Runs the rechunk and returns the target opened with zarr-python (an array for an
        array source, else a group: ``xr.open_zarr`` opens a Dataset's).

        `resume` continues a run that stopped (Ctrl-C, a crash): tasks already done are kept.
        `progress` shows a tqdm bar (default: when tqdm is installed). The report of the run is
        then :attr:`report`. Raises :class:`JobError` when tasks fail after their retries."""
        argv = list(self._argv)
        if resume and "--resume" not in argv:
            argv.append("--resume")
        self.report = _engines.run(argv, None, self._plan, self._executor, self._retries, progress)
        import zarr

        return zarr.open(self._target, mode="r")

    def __repr__(self) -> str:
        p = self._plan
        return (
            f"<Rechunked {self._argv[2]} → {self._argv[3]}: {len(p['stages'])} stage(s), "
            f"{p['tasks']} task(s), at most {p['max_projected_mem']} bytes per task of --max-mem {p['max_mem']}>"
        )

    def _repr_html_(self) -> str:
        from chunkmill._html import plan_html

        page: str = plan_html(self._plan)
        return page


def _run_flags(resume: bool, overwrite: bool, workers: int | None, retries: int, work_dir: str | None) -> list[str]:
    flags = ["--retries", str(_count(retries, "retries"))]
    if resume:
        flags.append("--resume")
    if overwrite:
        flags.append("--overwrite")
    if workers is not None:
        flags += ["--workers", str(_count(workers, "workers"))]
    if work_dir is not None:
        flags += ["--work-dir", _path(work_dir, "work_dir")]
    return flags


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _native.UsageError(f"{what}: a whole number >= 0, not {value!r}")
    return value


def rechunk(
    source: Any,
    target_chunks: Any,
    max_mem: int | str,
    target_store: Any,
    target_options: Mapping[str, Any] | None = None,
    temp_store: Any = None,
    temp_options: Mapping[str, Any] | None = None,
    executor: Any = "threads",
    array_name: str | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    retries: int = 2,
    work_dir: str | os.PathLike[str] | None = None,
) -> Rechunked:
    """Plans a rechunk of a Zarr array, group or Zarr-backed Dataset, with rechunker's
    signature; :meth:`Rechunked.execute` runs it.

    `source`: a zarr array or group, an ``xr.open_zarr`` Dataset, or a store's path or URL.
    `target_chunks`: for an array, a tuple or a dict by dimension name (``None`` copies);
    for a group, a dict by array name of those (only the named arrays, with the coordinates
    of their dimensions, are written); for a Dataset, a dict by dimension (every variable) or
    by variable. -1 is the whole axis. `max_mem`: the process's memory budget (bytes or
    ``"1GB"``), the command's ``--max-mem`` (rechunker's is per worker). `target_options`:
    ``codec`` (``"zstd:3"``), a ``compressor`` (numcodecs or zarr: zstd, gzip, blosc, None),
    ``shards``, ``zarr_format`` (default: the source's); the same for every array.
    `temp_store`: where intermediates go (default: inside the work dir). `executor`:
    ``"threads"``, ``"processes"``, ``"slurm"``, ``"dask"`` or a ``dask.distributed.Client``,
    ``"lithops"`` or a ``lithops.FunctionExecutor``. `resume` continues a stopped run.

    Raises :class:`UsageError` (bad arguments, unknown dimensions), :class:`RefusedError` (a
    missing source, an existing target, a budget no plan fits).

    >>> import chunkmill, zarr, numpy as np
    >>> source = zarr.create_array(store, shape=(120, 40), chunks=(1, 40), dtype="f4")
    >>> source[:] = np.arange(4800, dtype="f4").reshape(120, 40)
    >>> plan = chunkmill.rechunk(source, (120, 10), "256MB", target)
    >>> plan.plan["tasks"] > 0
    True
    >>> result = plan.execute(progress=False)
    >>> result.chunks, bool((result[:] == source[:]).all())
    ((120, 10), True)
    """
    url, flags, kind = _source(source, target_chunks, array_name)
    target = _path(target_store, "target_store")
    if temp_options and dict(temp_options) != dict(target_options or {}):
        raise _native.UsageError(
            "temp_options: chunkmill's intermediates have their own format; give target_options only"
        )
    options = _uniform(target_options, _names(flags), "target_options")
    if "zarr_format" not in options and _zarr_format(url) is not None:
        options["zarr_format"] = _zarr_format(url)
    argv = ["chunkmill", "rechunk", url, target, "--max-mem", _size(max_mem, "max_mem"), *flags]
    argv += _codec(options, "target_options")
    if temp_store is not None:
        argv += ["--temp", _path(temp_store, "temp_store")]
    argv += _run_flags(resume, overwrite, workers, retries, work_dir)
    plan: dict[str, Any] = json.loads(_native.plan_job(argv))
    _engines.check(executor)
    return Rechunked(argv, plan, executor, retries, kind, target)


def _names(flags: list[str]) -> list[str]:
    return [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == "--array"]


def convert(
    inputs: Any = None,
    target: str | os.PathLike[str] | None = None,
    chunks: Any = None,
    max_mem: int | str | None = None,
    recipe: Mapping[str, Any] | None = None,
    *,
    executor: Any = "threads",
    resume: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
    retries: int = 2,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Converts NetCDF/HDF5 files, references or a Zarr store into an analysis-ready Zarr
    store, as ``chunkmill convert`` does; returns the run's report.

    `inputs` (paths, globs, URLs) and `target` may come from the `recipe`, a dict with the
    keys of a ``--recipe`` file (``chunks``, ``max_mem``, ``select``, ``rename``, ``decode_cf``,
    ``concat_dim``, …); those keys may also be given as keyword arguments, and arguments win
    over the recipe as flags do over a recipe file. `chunks`: a dict by dimension, a tuple
    or the command's text (``"time=-1,lat=18"``). `executor` as for :func:`rechunk`.

    >>> import chunkmill, xarray as xr
    >>> report = chunkmill.convert(files, target, chunks={"time": 6, "lat": 2}, max_mem="256MB",
    ...                            recipe={"rename": ["air=temperature"]}, progress=False)
    >>> ds = xr.open_zarr(target)
    >>> ds["temperature"].encoding["chunks"], ds.sizes["time"]
    ((6, 2, 5), 6)
    """
    if recipe is not None and not isinstance(recipe, Mapping):
        raise _native.UsageError(f"recipe: a dict of the --recipe keys, not {type(recipe).__name__}")
    merged: dict[str, Any] = dict(recipe or {})
    for key, value in options.items():
        if value is not None:
            merged[key] = value
    if chunks is not None:
        merged["chunks"] = chunks if isinstance(chunks, str) else _spec(chunks, "chunks")
    if max_mem is not None:
        merged["max_mem"] = _size(max_mem, "max_mem")
    paths: list[str] = []
    if inputs is not None:
        merged.pop("inputs", None)
        paths += _paths(inputs, "inputs")
        if target is None and "target" in merged:
            paths.append(_path(merged.pop("target"), "target"))
    if target is not None:
        merged.pop("target", None)
        paths.append(_path(target, "target"))
    argv = ["chunkmill", "convert", *paths, *_run_flags(resume, overwrite, workers, retries, None)]
    text = json.dumps(merged) if merged else None
    plan: dict[str, Any] = json.loads(_native.plan_job(argv, text))
    for note in plan.get("notes", []):
        import warnings

        warnings.warn(f"chunkmill: {note}", stacklevel=2)
    _engines.check(executor)
    return _engines.run(argv, text, plan, executor, retries, progress)
