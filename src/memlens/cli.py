"""The ``memlens`` command line: parses, calls the library, renders. Nothing else.

Each command lives in ``memlens.commands.<name>`` and registers itself on :data:`app`; the
options that describe a workload and its target are generated from the
:class:`~memlens.workload.Workload` schema (:mod:`memlens.commands._options`). Errors are
caught once, here, and printed as one line.
"""

from __future__ import annotations

import importlib
import os
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
    "ui",
    "serve_plan",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"memlens.commands.{_name}").register(app)


def _version(value: bool) -> None:
    if value:
        from memlens import __version__

        typer.echo(f"memlens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """How much memory a PyTorch model needs, where every byte goes, and what to change so it
    fits. Sizes are binary (1 GiB = 2^30 bytes) unless marked decimal (GB)."""


def main() -> None:
    """Console-script entry point: usage errors are typer's; every other error is one line on
    stderr and exit status 2 (``MEMLENS_TRACEBACK=1`` shows the traceback of an unexpected
    one)."""
    try:
        app()
    except MemlensError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted")
    except RecursionError:
        _fail("input nested too deeply (maximum recursion depth exceeded)")
    except Exception as e:  # a bug: still one line, with the way to see more
        if os.environ.get("MEMLENS_TRACEBACK"):
            raise
        what = str(e).splitlines()[0][:300] if str(e) else ""
        _fail(
            f"unexpected {type(e).__name__}: {what} "
            "(set MEMLENS_TRACEBACK=1 for the traceback, and please report it)"
        )


def _fail(message: str) -> None:
    from rich.markup import escape

    Console(stderr=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    sys.exit(2)
