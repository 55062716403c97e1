"""``memlens layers``: one row per layer with its parameters, formula, activations and MACs."""

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

Dtype = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="Weight format for the weights column: fp32, bf16, fp16, fp8, int8, int4 or nf4 "
        "(default: the precision's).",
    ),
]
Depth = Annotated[int | None, typer.Option("--depth", help="Aggregate rows to this module depth.")]
Sort = Annotated[
    str | None, typer.Option("--sort", help="Sort by params, activations, saved or macs.")
]
Top = Annotated[int | None, typer.Option("--top", help="Show the first N rows.")]
Peak = Annotated[bool, typer.Option("--peak", help="Also trace the inference activation peak.")]
Plot = Annotated[
    Path | None,
    typer.Option("--plot", help="Save per-layer and live-activation plots (.png or .svg)."),
]


def register(app: typer.Typer) -> None:
    @app.command()
    @workload_options("layers", target=())
    def layers(
        model: Model,
        dtype: Dtype = None,
        depth: Depth = None,
        sort: Sort = None,
        top: Top = None,
        peak: Peak = False,
        plot: Plot = None,
        html: Html = None,
        markdown: Markdown = None,
        *,
        api: Any,
        as_json: bool,
    ) -> None:
        """Parameters (with their formula), weight bytes, activations and MACs per layer."""
        from memlens._activations import activations
        from memlens._layers._report import layers as run_layers
        from memlens.report.layers import render_layers

        check_output(plot, (".png", ".svg"), "--plot")
        view = {"depth": depth, "sort": sort, "top": top}
        with progress(f"running {model} on fake tensors…"):
            report = run_layers(model, dtype=dtype, **view, **api)
            acts = None
            if peak or plot is not None:
                acts = activations(model, report.workload)
            if plot is not None and any(v is not None for v in view.values()):
                every_row = run_layers(model, dtype=dtype, **api)  # the plot shows them all
            else:
                every_row = report
        if plot is not None:
            from memlens.report.plots import save_layers_plot

            save_layers_plot(every_row, plot, acts)
        if export(report, html, markdown, as_json):
            return
        if as_json:
            print_json(report, activations=acts)
        else:
            show(render_layers(report, acts if peak else None, plot))
