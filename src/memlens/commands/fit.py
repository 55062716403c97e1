"""``memlens fit``: the largest batch size that fits, and the cheapest ways to fit a batch."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from memlens.commands._export import Html, Markdown, export
from memlens.commands._options import Model, print_json, progress, show, workload_options

TargetBatch = Annotated[
    int | None,
    typer.Option(
        "--batch",
        "-b",
        help="Batch to rank options for (default: the power of two above the largest that fits).",
    ),
]
MaxBatch = Annotated[int, typer.Option("--max-batch", help="Largest batch size searched.")]
Gpus = Annotated[
    int | None,
    typer.Option(
        "--gpus",
        min=1,
        help="Plan a training step on this many GPUs: the DP/FSDP/TP/PP/CP layouts and "
        "checkpointing that fit, each with its largest micro-batch, least communication first "
        "(closed form, memlens.analytic).",
    ),
]


def register(app: typer.Typer) -> None:
    @app.command()
    @workload_options("fit")
    def fit(
        model: Model,
        batch: TargetBatch = None,
        max_batch: MaxBatch = 2**16,
        gpus: Gpus = None,
        html: Html = None,
        markdown: Markdown = None,
        *,
        api: Any,
        as_json: bool,
    ) -> None:
        """The largest batch size that fits the device, and ranked options for a target batch;
        with --gpus, the parallel layouts that fit."""
        if gpus is not None:
            from memlens.plan.layouts import fit_layouts
            from memlens.report.layouts import render_layout_plan

            with progress(f"planning {model} on {gpus} GPUs…"):
                plan = fit_layouts(model, gpus, **api)
            if as_json:
                print_json(plan)
            else:
                show(render_layout_plan(plan))
            return
        from memlens._api import fit as run_fit
        from memlens.report.plan import render_fit

        with progress(f"searching the largest batch of {model}…", traces=True, quiet=as_json):
            result = run_fit(model, batch=batch, max_batch=max_batch, **api)
        if export(result, html, markdown, as_json):
            return
        if as_json:
            print_json(result)
        else:
            show(render_fit(result))
