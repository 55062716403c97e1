"""``memlens models``: every model name memlens knows."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memlens.commands import options as o
from memlens.units import fmt_count


def register(app: typer.Typer) -> None:
    @app.command()
    def models(
        family: Annotated[str | None, typer.Option("--family", help="Only this family.")] = None,
        source: Annotated[
            str | None,
            typer.Option("--source", help="Only this source (bundled, torchvision, timm)."),
        ] = None,
        as_json: o.Json = False,
    ) -> None:
        """List known model names with family, source and parameter count."""
        from memlens.sources.catalog import list_models

        rows = [
            r
            for r in list_models()
            if (family is None or r["family"] == family)
            and (source is None or r["source"] == source)
        ]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(
            title=f"{len(rows)} models", title_justify="left", show_edge=False, pad_edge=False
        )
        for col in ("name", "family", "source", "parameters"):
            table.add_column(col, justify="right" if col == "parameters" else "left")
        for r in rows:
            params = r.get("params")
            table.add_row(r["name"], r["family"], r["source"], fmt_count(params) if params else "")
        Console().print(table)
