"""``memlens size``: the model's weights in every format, quantisation metadata included."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from memlens.commands import options as o


def register(app: typer.Typer) -> None:
    @app.command()
    def size(
        model: Annotated[
            str,
            typer.Argument(help="Model name, config.json, file.py:fn, or a count such as 175B."),
        ],
        group_size: Annotated[
            int, typer.Option("--group-size", help="Weights per scale for int8 and int4.")
        ] = 128,
        keep: Annotated[
            str,
            typer.Option(
                "--keep",
                help="Roles kept in high precision under narrower formats: embeddings, norms, "
                "head, biases, or none.",
            ),
        ] = "embeddings,norms,head",
        keep_dtype: Annotated[
            str, typer.Option("--keep-dtype", help="Format of the kept roles.")
        ] = "bf16",
        plain: Annotated[
            bool, typer.Option("--plain", help="Payload only: no scales, zero points or absmax.")
        ] = False,
        as_json: o.Json = False,
    ) -> None:
        """Model size in fp32, bf16, fp16, fp8, int8, int4 and nf4, decimal and binary."""
        from memlens._size import parse_count
        from memlens._size import size as run_size
        from memlens.report.layers import size_table

        target = parse_count(model)
        with o.progress(Console(stderr=True), f"building {model} on fake tensors…"):
            report = run_size(
                target if target is not None else model,
                group_size=group_size,
                keep=keep,
                keep_dtype=keep_dtype,
                metadata=not plain,
            )
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return
        Console().print(size_table(report))
