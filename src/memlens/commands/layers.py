"""``memlens layers``: one row per layer with its parameters, formula, activations and MACs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memlens.commands import options as o


def register(app: typer.Typer) -> None:
    @app.command()
    def layers(
        model: o.Model,
        batch: o.Batch = 1,
        input_shape: o.InputShape = None,
        seq_len: o.SeqLen = None,
        train: o.Train = True,
        precision: o.Precision = "fp32",
        dtype: Annotated[
            str | None,
            typer.Option(
                "--dtype",
                help="Weight format for the weights column: fp32, bf16, fp16, fp8, "
                "int8, int4 or nf4 (default: the precision's).",
            ),
        ] = None,
        depth: Annotated[
            int | None, typer.Option("--depth", help="Aggregate rows to this module depth.")
        ] = None,
        sort: Annotated[
            str | None, typer.Option("--sort", help="Sort by params, activations, saved or macs.")
        ] = None,
        top: Annotated[int | None, typer.Option("--top", help="Show the first N rows.")] = None,
        peak: Annotated[
            bool, typer.Option("--peak", help="Also trace the inference activation peak.")
        ] = False,
        plot: Annotated[
            Path | None,
            typer.Option("--plot", help="Save per-layer and live-activation plots (.png or .svg)."),
        ] = None,
        as_json: o.Json = False,
    ) -> None:
        """Parameters (with their formula), weight bytes, activations and MACs per layer."""
        from memlens._activations import activations
        from memlens._layers._report import layers as run_layers
        from memlens.report.layers import activation_summary, render_layers

        kwargs = o.workload_kwargs(
            batch=batch,
            input_shape=input_shape,
            seq_len=seq_len,
            train=train,
            optimizer="adam",
            precision=precision,
            gpu=None,
            budget=None,
            device="cpu",
        )
        for unused in ("optimizer", "device", "budget"):
            kwargs.pop(unused)
        with o.progress(Console(stderr=True), f"running {model} on fake tensors…"):
            report = run_layers(model, dtype=dtype, depth=depth, sort=sort, top=top, **kwargs)
            acts = None
            if peak or plot is not None:
                kwargs.pop("mode")
                acts = activations(model, **kwargs)
        if plot is not None:
            from memlens.report.plots import save_layers_plot

            if sort is not None or top is not None or depth is not None:
                full = run_layers(model, dtype=dtype, mode=report.workload.mode, **kwargs)
            else:
                full = report
            save_layers_plot(full, plot, acts)
        if as_json:
            data = report.to_dict()
            if acts is not None:
                data["activations"] = acts.to_dict()
            typer.echo(json.dumps(data, indent=2))
            return
        console = Console()
        console.print(render_layers(report))
        if acts is not None and peak:
            console.print()
            console.print(activation_summary(acts))
        if plot is not None:
            console.print(f"plot saved to {plot}")
