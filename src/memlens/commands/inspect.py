"""``memlens inspect FILE``: exact weight figures from checkpoint headers, or an ONNX graph's
inference memory, without reading any tensor data."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memlens._errors import ConfigError
from memlens.commands import options as o
from memlens.units import fmt_bytes, fmt_count, fmt_decimal


def _dims(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"bad --dim {item!r}: use NAME=POSITIVE_INT, e.g. sequence=128")
        out[name] = int(value)
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        path: Annotated[
            str,
            typer.Argument(
                help="A .safetensors file, sharded folder or index.json, .gguf or .onnx file."
            ),
        ],
        batch: o.Batch = 1,
        dim: Annotated[
            list[str] | None,
            typer.Option("--dim", help="ONNX symbolic dimension, NAME=VALUE (repeatable)."),
        ] = None,
        tensors: Annotated[
            bool, typer.Option("--tensors", help="List every tensor (JSON).")
        ] = False,
        as_json: o.Json = False,
    ) -> None:
        """Parameters per dtype, exact weight bytes and the largest tensor (headers only);
        for ONNX also the inference peak from the graph's liveness."""
        from memlens.sources.checkpoint import WeightsSummary, summarize

        summary = summarize(path, batch=batch, dims=_dims(dim or []))
        if as_json:
            data = (
                summary.to_dict(tensors=tensors)
                if isinstance(summary, WeightsSummary)
                else summary.to_dict()
            )
            typer.echo(json.dumps(data, indent=2))
            return
        console = Console()
        table = Table(
            title=f"{summary.format} weights of {path} (binary MiB/GiB; decimal in brackets)",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        for col in ("dtype", "tensors", "parameters", "bytes", "size"):
            table.add_column(col, justify="left" if col == "dtype" else "right")
        for dtype, row in summary.by_dtype.items():
            table.add_row(
                dtype,
                f"{row.tensors:,}",
                fmt_count(row.params),
                f"{row.bytes:,}",
                f"{fmt_bytes(row.bytes)} ({fmt_decimal(row.bytes)})",
            )
        table.add_section()
        table.add_row(
            "total",
            "",
            fmt_count(summary.n_params),
            f"{summary.weight_bytes:,}",
            f"{fmt_bytes(summary.weight_bytes)} ({fmt_decimal(summary.weight_bytes)})",
        )
        console.print(table)
        if isinstance(summary, WeightsSummary):
            big = summary.largest
            if big is not None:
                console.print(
                    f"largest tensor: {big.name} {list(big.shape)} {big.dtype}, "
                    f"{fmt_bytes(big.nbytes)}"
                )
        else:
            console.print(
                f"inference peak at batch {summary.batch}: {fmt_bytes(summary.peak_bytes)} "
                f"(weights {fmt_bytes(summary.weight_bytes)} + inputs "
                f"{fmt_bytes(summary.input_bytes)} + live intermediates) at node "
                f"{summary.peak_node} ({summary.peak_op}); all intermediates "
                f"{fmt_bytes(summary.activation_bytes)}"
            )
            if summary.unknown:
                console.print(
                    f"[yellow]{len(summary.unknown)} tensors could not be sized: "
                    "figures are lower bounds[/]"
                )
        for note in summary.notes:
            console.print(f"note: {note}", style="yellow")
