"""Bad input from Python — wrong types, None or a directory where a path goes, missing files,
bad chunk dicts, unknown dimensions — raises a ChunkmillError subclass (with the command's
message where the command can be given the same input), never another exception, a panic or
a hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import zarr

import chunkmill


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    nc = root / "a.nc"
    with netCDF4.Dataset(nc, "w") as f:
        f.createDimension("t", 4)
        f.createDimension("x", 3)
        f.createVariable("v", "f4", ("t", "x"))[:] = np.arange(12, dtype="f4").reshape(4, 3)
    array = zarr.create_array(root / "z.zarr", shape=(4, 3), chunks=(1, 3), dtype="f4", dimension_names=("t", "x"))
    array[:] = 1
    (root / "dir").mkdir()
    return {"nc": nc, "zarr": root / "z.zarr", "dir": root / "dir", "root": root}


def cases(p: dict[str, Path]) -> dict[str, tuple[type, str, object]]:
    """name: (exception, message fragment, call)."""
    nc, z, d, root = p["nc"], zarr.open_array(p["zarr"]), p["dir"], p["root"]
    conv = dict(chunks={"t": 2}, max_mem="256MB")
    return {
        "open None": (chunkmill.UsageError, "opens paths", lambda: xr.open_dataset(None, engine="chunkmill")),
        "open a directory": (chunkmill.RefusedError, "neither kerchunk Parquet nor Icechunk",
                             lambda: xr.open_dataset(d, engine="chunkmill")),
        "open a missing file": (chunkmill.RefusedError, "no such file", lambda: xr.open_dataset(root / "no.nc", engine="chunkmill")),
        "group not a str": (chunkmill.UsageError, "group", lambda: xr.open_dataset(nc, engine="chunkmill", group=3)),
        "drop_variables not names": (chunkmill.UsageError, "drop_variables",
                                     lambda: xr.open_dataset(nc, engine="chunkmill", drop_variables=5)),
        "virtualize None": (chunkmill.UsageError, "paths", lambda: chunkmill.virtualize(None, output=root / "r.json")),
        "virtualize a mapping": (chunkmill.UsageError, "paths: a path, a glob or a list of them, not dict",
                                 lambda: chunkmill.virtualize({str(nc): 1}, output=root / "r.json")),
        "virtualize a directory": (chunkmill.RefusedError, "dir", lambda: chunkmill.virtualize([d], output=root / "r.json")),
        "virtualize output None": (chunkmill.UsageError, "output", lambda: chunkmill.virtualize([nc])),
        "open_virtual_mfdataset missing": (chunkmill.RefusedError, "no such file",
                                           lambda: chunkmill.open_virtual_mfdataset([root / "no.nc"])),
        "rechunk None source": (chunkmill.UsageError, "source", lambda: chunkmill.rechunk(None, (2, 3), "256MB", root / "t.zarr")),
        "rechunk None target": (chunkmill.UsageError, "target_store", lambda: chunkmill.rechunk(z, (2, 3), "256MB", None)),
        "rechunk unknown dim": (chunkmill.UsageError, "no dimension 'q'", lambda: chunkmill.rechunk(z, {"q": 1}, "256MB", root / "t.zarr")),
        "rechunk float chunk": (chunkmill.UsageError, "chunk size", lambda: chunkmill.rechunk(z, {"t": 1.5}, "256MB", root / "t.zarr")),
        "rechunk None dim": (chunkmill.UsageError, "dimension names", lambda: chunkmill.rechunk(z, {None: 1}, "256MB", root / "t.zarr")),
        "rechunk empty tuple": (chunkmill.UsageError, "one chunk size per axis", lambda: chunkmill.rechunk(z, (), "256MB", root / "t.zarr")),
        "rechunk a file as source": (chunkmill.ChunkmillError, "a.nc", lambda: chunkmill.rechunk(nc, (2, 3), "256MB", root / "t.zarr")),
        "rechunk an empty dir as source": (chunkmill.RefusedError, "no Zarr array or group found", lambda: chunkmill.rechunk(d, (2, 3), "256MB", root / "t.zarr")),
        "convert None": (chunkmill.UsageError, "inputs", lambda: chunkmill.convert(None, root / "c.zarr", **conv)),
        "convert [None]": (chunkmill.UsageError, "None is not a path", lambda: chunkmill.convert([None], root / "c.zarr", **conv)),
        "convert an int": (chunkmill.UsageError, "inputs", lambda: chunkmill.convert(5, root / "c.zarr", **conv)),
        "convert target int": (chunkmill.UsageError, "target", lambda: chunkmill.convert([nc], 7, **conv)),
        "convert recipe not a dict": (chunkmill.UsageError, "recipe", lambda: chunkmill.convert([nc], root / "c.zarr", recipe="x")),
        "convert a directory": (chunkmill.ChunkmillError, "dir", lambda: chunkmill.convert([d], root / "c.zarr", **conv)),
        "convert onto its input": (chunkmill.RefusedError, "a.nc", lambda: chunkmill.convert([nc], nc, **conv)),
    }



@pytest.mark.parametrize("name", [
    "open None", "open a directory", "open a missing file", "group not a str", "drop_variables not names",
    "virtualize None", "virtualize a mapping", "virtualize a directory", "virtualize output None", "open_virtual_mfdataset missing",
    "rechunk None source", "rechunk None target", "rechunk unknown dim", "rechunk float chunk", "rechunk None dim",
    "rechunk empty tuple", "rechunk a file as source", "rechunk an empty dir as source", "convert None",
    "convert [None]", "convert an int", "convert target int", "convert recipe not a dict", "convert a directory",
    "convert onto its input",
])
def test_bad_input_raises_a_chunkmill_error(inputs, name):
    exception, fragment, call = cases(inputs)[name]
    with pytest.raises(exception) as raised:
        call()
    assert fragment.lower() in str(raised.value).lower()
    # Nothing was written beside the inputs.
    assert sorted(p.name for p in inputs["root"].iterdir()) == ["a.nc", "dir", "z.zarr"]


def command_message(*args: str) -> str:
    script = Path(sys.executable).parent / "chunkmill"
    r = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode in (2, 3), r.stderr
    return r.stderr.strip().removeprefix("chunkmill: ")


def test_messages_are_the_commands(inputs):
    nc, root = inputs["nc"], inputs["root"]
    with pytest.raises(chunkmill.RefusedError) as missing:
        chunkmill.virtualize([root / "no.nc"], output=root / "r.json")
    assert str(missing.value) == command_message("virtualize", str(root / "no.nc"), "--output", str(root / "r.json"))
    with pytest.raises(chunkmill.ChunkmillError) as unknown:
        chunkmill.convert([nc], root / "c.zarr", chunks={"q": 2}, max_mem="256MB")
    assert str(unknown.value) == command_message("convert", str(nc), str(root / "c.zarr"), "--chunks", "q=2",
                                                 "--max-mem", "256MB")
