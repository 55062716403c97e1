"""What ``memlens inspect`` found in a file: weights per dtype, the largest tensor, and for an
ONNX graph its inference peak."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from memlens.report._style import titled_table
from memlens.sources.onnx_graph import OnnxSummary
from memlens.sources.weights import WeightsSummary
from memlens.units import fmt_bytes, fmt_count, fmt_decimal


def dtype_table(summary: WeightsSummary | OnnxSummary, path: str) -> Table:
    """Tensors, parameters and bytes per dtype, then the total."""
    table = titled_table(
        f"{summary.format} weights of {path} (binary MiB/GiB; decimal in brackets)",
        *("dtype", "tensors>", "parameters>", "bytes>", "size>"),
    )
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
    return table


def render_inspect(summary: WeightsSummary | OnnxSummary, path: str) -> RenderableType:
    """The dtype table; the largest tensor (weights files) or the inference peak (ONNX);
    the notes."""
    lines = Text()
    if isinstance(summary, WeightsSummary):
        big = summary.largest
        if big is not None:
            lines.append(
                f"largest tensor: {big.name} {list(big.shape)} {big.dtype}, "
                f"{fmt_bytes(big.nbytes)}\n"
            )
    else:
        lines.append(
            f"inference peak at batch {summary.batch}: {fmt_bytes(summary.peak_bytes)} "
            f"(weights {fmt_bytes(summary.weight_bytes)} + inputs "
            f"{fmt_bytes(summary.input_bytes)} + live intermediates) at node "
            f"{summary.peak_node} ({summary.peak_op}); all intermediates "
            f"{fmt_bytes(summary.activation_bytes)}\n"
        )
        if summary.unknown:
            lines.append(
                f"{len(summary.unknown)} tensors could not be sized: figures are lower bounds\n",
                style="yellow",
            )
    for note in summary.notes:
        lines.append(f"note: {note}\n", style="yellow")
    lines.rstrip()
    return Group(dtype_table(summary, path), *([lines] if lines else []))
