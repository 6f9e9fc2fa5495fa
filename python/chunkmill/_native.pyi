"""Type stubs of chunkmill._native, the Rust half of the package (crates/chunkmill-py)."""

from collections.abc import Callable
from typing import Final

__version__: Final[str]
MISSING: Final[int]
INLINED: Final[int]

class ChunkmillError(Exception):
    """Every error chunkmill raises; subclasses are the `chunkmill` command's exit-code categories."""

    exit_code: int

class RefusedError(ChunkmillError):
    """Refused before anything was written (the command's exit code 3)."""

class UsageError(ChunkmillError):
    """A malformed request (the command's exit code 2)."""

class JobError(ChunkmillError):
    """Failed while running (the command's exit code 1)."""

class NativeDataset:
    """An opened file or references: metadata as JSON, boxes read with the GIL released."""

    def metadata(self) -> str:
        """The dataset's metadata as JSON (groups, arrays, format, dimensions, warnings)."""
    def read(self, key: str, start: list[int], stop: list[int]) -> bytes:
        """The elements of the box [start, stop) of array `key`, little-endian, C order."""
    def read_strings(self, key: str) -> list[str]:
        """Every element of variable-length string array `key`, C order."""
    def manifest(
        self, key: str
    ) -> tuple[list[str], bytes, bytes, bytes, dict[int, bytes]]:
        """URLs, then per chunk path ids (u32), offsets and lengths (u64), and inlined chunks."""

def open_file(path: str, drop: list[str] = ..., references: bool = False) -> NativeDataset:
    """Opens an HDF5, NetCDF-4 or NetCDF-3 file (metadata and chunk index only)."""

def open_references(path: str) -> NativeDataset:
    """Opens kerchunk JSON or Parquet references, or an Icechunk repository."""

def virtualize(
    paths: list[str],
    output: str,
    format: str,
    concat_dim: str | None,
    stack: bool,
    identical_dims: list[str],
    compat: str,
    inline_threshold: int,
    record_size: int,
    drop: list[str],
    skip_bad: bool,
    overwrite: bool,
    threads: int,
) -> str:
    """Writes references to `paths` at `output`; returns the report as JSON."""

def combine(
    paths: list[str],
    concat_dim: str | None,
    stack: bool,
    identical_dims: list[str],
    compat: str,
    drop: list[str],
    skip_bad: bool,
    threads: int,
) -> NativeDataset:
    """Scans and combines `paths` in memory and opens the result."""

def run_cli(argv: list[str]) -> None:
    """Runs the `chunkmill` command in this process; exits it with the command's code on failure."""

def plan_job(argv: list[str], recipe: str | None = None) -> str:
    """The plan of the `chunkmill rechunk|convert` command line `argv` as `plan --json` prints it."""

def run_job(
    argv: list[str],
    recipe: str | None = None,
    progress: Callable[[int, int, int, int], object] | None = None,
) -> str:
    """Runs the job of `argv` (Ctrl-C stops it between tasks); returns its report as JSON."""

def run_worker(
    plan: str, stage: str, start: int, end: int, workers: int = 1, retries: int = 2
) -> str:
    """Runs tasks start..end of one stage of a stored plan (`chunkmill worker`)."""

def plan_html(plan_json: str) -> str:
    """The HTML fragment of a plan given as its JSON (the one the --report page shows)."""
