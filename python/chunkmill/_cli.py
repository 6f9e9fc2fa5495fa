"""The `chunkmill` command installed by the wheel: the Rust command, run in this process."""

from __future__ import annotations

import os
import shutil
import signal
import sys

from chunkmill import _native

__all__ = ["main"]


def main() -> None:
    """Runs ``chunkmill`` with this process's arguments, as the binary does (same exit codes)."""
    script = sys.argv[0]
    program = script if os.sep in script else (shutil.which(script) or script)
    # Workers (--executor processes, slurm) start this script again, not the interpreter.
    os.environ.setdefault("CHUNKMILL_PROGRAM", os.path.abspath(program))
    # Ctrl-C acts as on the binary: the command's own handlers, else the process ends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _native.run_cli(["chunkmill", *sys.argv[1:]])
    sys.exit(0)


if __name__ == "__main__":
    main()
