"""``python -m memlens``."""

from memlens.cli import main

main()
