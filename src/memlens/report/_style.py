"""The one table style and header line of every report."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from memlens.workload import Workload


def titled_table(title: str, *columns: str) -> Table:
    """A table without outer edges, its title on the left; a column whose name ends with
    ``>`` is right-justified (the ``>`` is not shown)."""
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in columns:
        right = col.endswith(">")
        table.add_column(col.removesuffix(">"), justify="right" if right else "left")
    return table


def header_line(
    head: list[str], w: Workload, tail: list[str], precision: str | None = None
) -> Text:
    """``head · input 3x224x224 · seq 128 · precision · tail`` in bold (shapes where set);
    ``precision`` says where it came from (``bf16 from config torch_dtype``)."""
    parts = list(head)
    if w.input_shape:
        parts.append("input " + "x".join(map(str, w.input_shape)))
    if w.seq_len:
        parts.append(f"seq {w.seq_len}")
    return Text(" · ".join([*parts, precision or w.precision, *tail]), style="bold")


def step(w: Workload) -> str:
    """``inference``, or ``train, adam``."""
    return f"train, {w.optimizer}" if w.training else w.mode
