"""The `chunkmill` command the wheel installs: the Rust command run by the extension, with the
binary's exit codes and messages, and the same messages in the Python exceptions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

import chunkmill

SCRIPT = Path(sys.executable).parent / "chunkmill"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CHUNKMILL_PROGRAM"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the package is not installed in this venv")


def test_script_virtualizes_like_the_binary(collection, tmp_path):
    out = tmp_path / "refs.json"
    done = run("virtualize", *collection, "--concat-dim", "time", "--output", str(out))
    assert done.returncode == 0, done.stderr
    ours = xr.open_dataset(out, engine="chunkmill")
    xr.testing.assert_allclose(ours.load(), xr.open_mfdataset(collection, engine="netcdf4").load())


def test_script_exit_codes_and_the_exceptions_messages(tmp_path):
    missing = str(tmp_path / "none_*.nc")
    refused = run("virtualize", missing, "--output", str(tmp_path / "r.json"))
    assert refused.returncode == 3
    with pytest.raises(chunkmill.RefusedError) as e:
        chunkmill.virtualize(missing, output=tmp_path / "r.json")
    assert f"chunkmill: {e.value}" in refused.stderr
    assert run("virtualize", "--no-such-flag").returncode == 2
    assert run("--version").stdout.strip() == f"chunkmill {chunkmill.__version__}"


def test_python_m_chunkmill_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "chunkmill", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "virtualize" in done.stdout


def test_the_script_loads_no_xarray_so_its_baseline_stays_small():
    """`chunkmill._cli` imports the package first; xarray, pandas and numpy there held 58 MB
    (90 MB resident) before the command ran, counted against its --max-mem, and the command was
    refused budgets the binary accepted. The package's API still loads them on first use."""
    probe = ("import sys, chunkmill._cli; heavy = [m for m in ('xarray', 'pandas', 'numpy') if m in sys.modules]; "
             "print(heavy); import chunkmill; print(callable(chunkmill.rechunk) and callable(chunkmill.virtualize))")
    # The package this test imported, not whichever the venv would find first.
    env = {**os.environ, "PYTHONPATH": str(Path(chunkmill.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout
