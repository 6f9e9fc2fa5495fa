"""pytest set-up of the oracle tests: find the chunkmill binary, or skip everything without it.

CHUNKMILL_BIN overrides the binary (default: <repo>/target/debug/chunkmill).
CHUNKMILL_REQUIRE_BIN=1 turns a missing or broken binary into an error instead of a skip, so CI
cannot go green by skipping the whole suite.
"""

from __future__ import annotations

import os
import subprocess

import pytest

import oracle


def _binary_problem() -> str | None:
    exe = oracle.chunkmill_bin()
    if not exe.is_file():
        return f"chunkmill binary not found at {exe} (build it, or set CHUNKMILL_BIN)"
    try:
        r = subprocess.run(
            [str(exe), "rechunk", "--help"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{exe} rechunk --help did not run: {e}"
    if r.returncode != 0:
        return f"{exe} rechunk --help exited {r.returncode}: {r.stderr.strip()[:300]}"
    return None


@pytest.fixture(scope="session", autouse=True)
def chunkmill_available():
    problem = _binary_problem()
    if problem is not None:
        if os.environ.get("CHUNKMILL_REQUIRE_BIN") == "1":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return oracle.chunkmill_bin()
