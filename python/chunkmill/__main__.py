"""``python -m chunkmill`` runs the ``chunkmill`` command."""

from chunkmill._cli import main

main()
