"""``memlens sweep``: memory against batch size, as a table and optionally a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memlens._errors import WorkloadError
from memlens.commands import options as o

Batches = Annotated[
    str, typer.Option("--batch", "-b", help="Batch sizes, comma-separated: 1,2,4,8.")
]
Plot = Annotated[
    Path | None, typer.Option("--plot", help="Also plot to this image file (needs matplotlib).")
]


def parse_batches(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]``."""
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise WorkloadError("batch", text, "use positive integers separated by commas") from None
    if not batches or min(batches) < 1:
        raise WorkloadError("batch", text, "use positive integers separated by commas")
    return batches


def register(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        model: o.Model,
        batch: Batches = "1,2,4,8,16,32,64",
        input_shape: o.InputShape = None,
        seq_len: o.SeqLen = None,
        train: o.Train = True,
        optimizer: o.Optimizer = "adam",
        precision: o.Precision = "fp32",
        gpu: o.Gpu = None,
        budget: o.Budget = None,
        device: o.Device = "cuda",
        plot: Plot = None,
        as_json: o.Json = False,
    ) -> None:
        """Peak memory (allocated, reserved, by category) against batch size."""
        from memlens.plan import sweep as run_sweep
        from memlens.report.plan import plot_sweep, sweep_table

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
        del kwargs["batch"]
        with o.progress(Console(stderr=True), f"tracing {model}…"):
            result = run_sweep(model, batches=parse_batches(batch), **kwargs)
        if plot is not None:
            plot_sweep(result, plot)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        console = Console()
        console.print(sweep_table(result))
        if plot is not None:
            console.print(f"plot written to {plot}")
