"""``memlens size``: the model's weights in every format, quantisation metadata included."""

from __future__ import annotations

from typing import Annotated

import typer

from memlens.commands._options import Json, Timeout, print_json, progress, show, time_limit

Model = Annotated[
    str, typer.Argument(help="Model name, config.json, file.py:fn, or a count such as 175B.")
]
GroupSize = Annotated[
    int, typer.Option("--group-size", help="Weights per scale for int8-grouped and int4-grouped.")
]
Keep = Annotated[
    str,
    typer.Option(
        "--keep",
        help="Roles kept in high precision under narrower formats: embeddings, norms, head, "
        "biases, or none.",
    ),
]
KeepDtype = Annotated[str, typer.Option("--keep-dtype", help="Format of the kept roles.")]
Plain = Annotated[
    bool, typer.Option("--plain", help="Payload only: no scales, zero points or absmax.")
]


def register(app: typer.Typer) -> None:
    @app.command()
    def size(
        model: Model,
        group_size: GroupSize = 128,
        keep: Keep = "embeddings,norms,head",
        keep_dtype: KeepDtype = "bf16",
        plain: Plain = False,
        as_json: Json = False,
        timeout: Timeout = None,
    ) -> None:
        """Model size in every weight format (fp32 to nf4), decimal and binary."""
        from memlens._size import parse_count
        from memlens._size import size as run_size
        from memlens.report.size import size_table

        count = parse_count(model)
        with time_limit(timeout), progress(f"building {model} on fake tensors…"):
            report = run_size(
                count if count is not None else model,
                group_size=group_size,
                keep=keep,
                keep_dtype=keep_dtype,
                metadata=not plain,
            )
        if as_json:
            print_json(report)
        else:
            show(size_table(report))
