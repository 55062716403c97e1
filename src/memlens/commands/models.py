"""``memlens models``: every model name memlens knows."""

from __future__ import annotations

from typing import Annotated

import typer

from memlens.commands._options import Json, print_json, show

Family = Annotated[str | None, typer.Option("--family", help="Only this family.")]
Source = Annotated[
    str | None, typer.Option("--source", help="Only this source (bundled, torchvision, timm).")
]


def register(app: typer.Typer) -> None:
    @app.command()
    def models(family: Family = None, source: Source = None, as_json: Json = False) -> None:
        """List known model names with family, source and parameter count."""
        from memlens.report.models import models_table
        from memlens.sources.catalog import list_models

        rows = [r for r in list_models(source=source) if family in (None, r["family"])]
        if as_json:
            print_json(rows)
        else:
            show(models_table(rows))
