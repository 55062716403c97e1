"""``memlens fit``: the largest batch size that fits, and the cheapest ways to fit a batch."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from memlens.commands import options as o

TargetBatch = Annotated[
    int | None,
    typer.Option(
        "--batch",
        "-b",
        help="Batch to rank options for (default: the power of two above the largest that fits).",
    ),
]
MaxBatch = Annotated[int, typer.Option("--max-batch", help="Largest batch size searched.")]


def register(app: typer.Typer) -> None:
    @app.command()
    def fit(
        model: o.Model,
        gpu: o.Gpu = None,
        budget: o.Budget = None,
        device: o.Device = "cuda",
        train: o.Train = True,
        optimizer: o.Optimizer = "adam",
        precision: o.Precision = "fp32",
        seq_len: o.SeqLen = None,
        input_shape: o.InputShape = None,
        batch: TargetBatch = None,
        max_batch: MaxBatch = 2**16,
        as_json: o.Json = False,
    ) -> None:
        """The largest batch size that fits the device, and ranked options for a target batch."""
        from memlens.plan import fit as run_fit
        from memlens.report.plan import render_fit

        kwargs = o.workload_kwargs(
            batch=1,
            input_shape=input_shape,
            seq_len=seq_len,
            train=train,
            optimizer=optimizer,
            precision=precision,
            gpu=gpu,
            budget=budget,
            device=device,
        )
        kwargs["batch"] = batch
        with o.progress(Console(stderr=True), f"searching the largest batch of {model}…"):
            result = run_fit(model, max_batch=max_batch, **kwargs)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        Console().print(render_fit(result))
