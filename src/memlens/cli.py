"""The ``memlens`` command line: parses, calls the library, renders. Nothing else.

Each command lives in ``memlens.commands.<name>`` and registers itself on :data:`app`; the
options that describe a workload and its target are generated from the
:class:`~memlens.workload.Workload` schema (:mod:`memlens.commands._options`). Errors are
caught once, here, and printed as one line.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from memlens._errors import MemlensError

app = typer.Typer(
    name="memlens",
    help="How much memory a PyTorch model needs, where every byte goes, and what to change "
    "so it fits. Sizes are binary (1 GiB = 2^30 bytes) unless marked decimal (GB).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Command modules, each with ``register(app)``.
COMMAND_MODULES = [
    "estimate",
    "measure",
    "devices",
    "models",
    "inspect",
    "fit",
    "sweep",
    "layers",
    "size",
    "demo",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"memlens.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point: usage errors are typer's; memlens errors are one line."""
    try:
        app()
    except MemlensError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
