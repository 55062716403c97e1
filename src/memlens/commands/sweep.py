"""``memlens sweep``: memory against batch size, as a table and optionally a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from memlens.commands._export import Html, Markdown, export
from memlens.commands._options import (
    Model,
    check_output,
    print_json,
    progress,
    show,
    workload_options,
)

Batches = Annotated[
    str, typer.Option("--batch", "-b", help="Batch sizes, comma-separated: 1,2,4,8.")
]
Plot = Annotated[
    Path | None,
    typer.Option(
        "--plot", help="Also plot to this image file, .png, .svg or .pdf (needs matplotlib)."
    ),
]


def register(app: typer.Typer) -> None:
    @app.command()
    @workload_options("sweep")
    def sweep(
        model: Model,
        batches: Batches = "1,2,4,8,16,32,64",
        plot: Plot = None,
        html: Html = None,
        markdown: Markdown = None,
        *,
        api: Any,
        as_json: bool,
    ) -> None:
        """Peak memory (allocated, reserved, by category) against batch size."""
        from memlens._api import sweep as run_sweep
        from memlens.report.plan import plot_sweep, render_sweep

        check_output(plot, (".png", ".svg", ".pdf"), "--plot")
        with progress(f"tracing {model}…", traces=True, quiet=as_json):
            result = run_sweep(model, batches=batches, **api)
        if plot is not None:
            plot_sweep(result, plot)
        if export(result, html, markdown, as_json):
            return
        if as_json:
            print_json(result)
        else:
            show(render_sweep(result, plot))
