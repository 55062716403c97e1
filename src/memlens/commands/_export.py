"""``--html FILE`` and ``--markdown FILE|-``: a command's result written as a self-contained
HTML report (:mod:`memlens.report.html`) or a Markdown table (:mod:`memlens.report.markdown`),
besides the usual output."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from memlens._errors import MemlensError

Html = Annotated[
    Path | None,
    typer.Option(
        "--html",
        metavar="FILE",
        help="Also write a self-contained HTML report (memory timeline, budget, per-module "
        "bars; opens offline) to FILE.",
    ),
]
Markdown = Annotated[
    str | None,
    typer.Option(
        "--markdown",
        metavar="FILE",
        help="Write the budget and verdict as a Markdown table to FILE, or to stdout with - "
        "(instead of the tables).",
    ),
]


def export(result: Any, html: Path | None, markdown: str | None, as_json: bool) -> bool:
    """Write the reports asked for; True when the Markdown went to stdout (the command then
    prints nothing else)."""
    if markdown == "-" and as_json:
        raise MemlensError("--markdown - and --json both print to stdout: give one")
    if html is not None:
        from memlens.report.html import render_html

        _write(html, render_html(result))
    if markdown is None:
        return False
    from memlens.report.markdown import to_markdown

    text = to_markdown(result)
    if markdown == "-":
        typer.echo(text, nl=False)
        return True
    _write(Path(markdown), text)
    return False


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise MemlensError(f"cannot write {path}: {e.strerror or e}") from e
