"""``memlens inspect FILE``: exact weight figures from checkpoint headers, or an ONNX graph's
inference memory, without reading any tensor data."""

from __future__ import annotations

from typing import Annotated

import typer

from memlens._errors import ConfigError
from memlens.commands._options import Json, print_json, show

Path = Annotated[
    str,
    typer.Argument(help="A .safetensors file, sharded folder or index.json, .gguf or .onnx file."),
]
Batch = Annotated[int, typer.Option("--batch", "-b", help="Batch size of an ONNX graph.")]
Dims = Annotated[
    list[str] | None,
    typer.Option("--dim", help="ONNX symbolic dimension, NAME=VALUE (repeatable)."),
]
Tensors = Annotated[bool, typer.Option("--tensors", help="List every tensor (JSON).")]


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
        path: Path,
        batch: Batch = 1,
        dim: Dims = None,
        tensors: Tensors = False,
        as_json: Json = False,
    ) -> None:
        """Parameters per dtype, exact weight bytes and the largest tensor (headers only);
        for ONNX also the inference peak from the graph's liveness."""
        from memlens.report.inspect import render_inspect
        from memlens.sources.checkpoint import summarize

        summary = summarize(path, batch=batch, dims=_dims(dim or []))
        if as_json:
            print_json(summary, detail=tensors)
        else:
            show(render_inspect(summary, path))
