"""Tables for layer metrics and inference activations.

:class:`LayerTable` fits itself to the console: every cell stays on one line, and when the
table is wider than the console the least useful columns are dropped (input shape first,
the layer path last), so that no row ever wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from memlens._activations import ActivationReport
from memlens._layers._report import LayerReport, LayerRow
from memlens.report._style import header_line, titled_table
from memlens.units import fmt_bytes, fmt_count

_SHAPE_WIDTH = 16
_TYPE_WIDTH = 14
_PATH_WIDTH = 32  # long layer paths are cut to this first...
_MIN_PATH_WIDTH = 16  # ...and to this when nothing else can go
_MIN_COLUMNS = 3  # layer, params, MACs


def _bytes(n: int) -> str:
    """Binary units with three significant digits: ``784 KiB``, ``3.06 MiB``, ``98.0 KiB``."""
    if not n:
        return "-"
    text = fmt_bytes(n)
    number, unit = text.split()
    if unit == "B":
        return text
    value = float(number)
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f} {unit}"


def _count(n: int) -> str:
    return fmt_count(n) if n else "-"


def _shape(shapes: list[tuple[int, ...]]) -> str:
    """``32x64x112x112``; ``+k`` when there are k more tensors; cut to a fixed width."""
    if not shapes:
        return "-"
    text = "x".join(map(str, shapes[0])) or "scalar"
    if len(shapes) > 1:
        text += f" +{len(shapes) - 1}"
    return text if len(text) <= _SHAPE_WIDTH else text[: _SHAPE_WIDTH - 1] + "…"


def _layer(row: LayerRow) -> str:
    return row.path or "<root>"


def _type(row: LayerRow) -> str:
    return row.type + (" (own)" if row.kind == "own" else "")


def _params(row: LayerRow) -> Text:
    text = Text(f"{row.params:,}")
    if row.tied_params:
        text.append("*", style="yellow")
    if row.mismatch:
        text.append("!", style="bold red")
    return text


def _formula(row: LayerRow) -> Text:
    if row.formula is None:
        return Text("-")
    style = "red" if row.mismatch else ("dim" if row.formula.kind == "shapes" else "")
    return Text(row.formula.expression, style=style)


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[LayerRow], str | Text]
    total: Callable[[LayerReport], str]
    priority: int  # lower is kept longer
    justify: str = "right"
    max_width: int | None = None


_COLUMNS = [
    _Column("layer", _layer, lambda r: "total", 0, "left"),
    _Column("params", _params, lambda r: f"{r.totals.params:,}", 1),
    _Column("MACs", lambda row: _count(row.macs), lambda r: _count(r.totals.macs), 2),
    _Column(
        "out", lambda row: _bytes(row.output_bytes), lambda r: _bytes(r.totals.output_bytes), 3
    ),
    _Column(
        "saved", lambda row: _bytes(row.saved_bytes), lambda r: _bytes(r.totals.saved_bytes), 4
    ),
    _Column("formula", _formula, lambda r: "", 5),
    _Column("type", _type, lambda r: "", 6, "left", _TYPE_WIDTH),
    _Column("out shape", lambda row: _shape(row.output_shapes), lambda r: "", 7),
    _Column(
        "weights", lambda row: _bytes(row.weight_bytes), lambda r: _bytes(r.totals.weight_bytes), 8
    ),
    _Column("frozen", lambda row: _count(row.frozen), lambda r: _count(r.totals.frozen), 9),
    _Column("in shape", lambda row: _shape(row.input_shapes), lambda r: "", 10),
]


def _columns(report: LayerReport) -> list[_Column]:
    """The columns worth showing for this report (saved needs training, frozen needs some)."""
    skip = set()
    if not report.workload.training:
        skip.add("saved")
    if not report.totals.frozen:
        skip.add("frozen")
    return [c for c in _COLUMNS if c.header not in skip]


class LayerTable:
    """The layer rows and totals of a :class:`LayerReport`, fitted to the console width.

    When the natural table is too wide, long layer paths are cut from the left (the tail
    names the layer) to :data:`_PATH_WIDTH`, then columns are dropped by priority, then
    paths are cut to :data:`_MIN_PATH_WIDTH`.
    """

    def __init__(self, report: LayerReport) -> None:
        self.report = report

    def table(self, columns: list[_Column], path_width: int | None = None) -> Table:
        r = self.report
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for c in columns:
            table.add_column(
                c.header,
                justify=c.justify,  # type: ignore[arg-type]
                no_wrap=True,
                overflow="ellipsis",
                max_width=c.max_width,
            )
        for row in r.rows:
            cells = [c.cell(row) for c in columns]
            if path_width is not None:
                cells[0] = _cut_left(str(cells[0]), path_width)
            table.add_row(*cells, style="bold" if row.kind == "group" else None)
        table.add_section()
        table.add_row(*(c.total(r) for c in columns), style="bold")
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        columns = _columns(self.report)
        unbounded = options.update_width(1 << 16)  # measure the natural width, unclamped
        path_width = None
        while True:
            table = self.table(columns, path_width)
            width = Measurement.get(console, unbounded, table).maximum
            if width <= options.max_width or path_width == _MIN_PATH_WIDTH:
                yield table
                return
            if path_width is None:
                path_width = _PATH_WIDTH
            elif len(columns) > _MIN_COLUMNS:
                columns = [c for c in columns if c.priority != max(c.priority for c in columns)]
            else:
                path_width = _MIN_PATH_WIDTH


def _cut_left(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def header(report: LayerReport) -> Text:
    w = report.workload
    head = [f"{report.model} ({report.source})", f"{report.num_params:,} parameters"]
    return header_line([*head, f"{w.mode} batch {w.batch}"], w, [f"weights in {report.dtype}"])


def footer(report: LayerReport) -> Text:
    t = report.totals
    lines = Text(style="dim")
    lines.append(
        f"MACs: forward multiply-accumulates ({fmt_count(t.macs)}); FLOPs = 2 x MACs = "
        f"{fmt_count(t.flops)}. out: output activations summed over calls; "
    )
    if report.workload.training:
        lines.append("saved: activations first saved for backward by that layer; ")
    lines.append("formula: the layer's parameter formula with its numbers; bytes are binary.")
    shown = len(report.rows)
    if report.depth is not None or shown != report.layer_count:
        lines.append(f"\n{shown} rows shown of {report.layer_count} layers; totals cover all.")
    if t.tied_params:
        lines.append(f"\n* {t.tied_params:,} tied parameters, counted once where first owned.")
    for note in report.notes:
        lines.append("\nnote: " + note, style="yellow")
    return lines


def render_layers(
    report: LayerReport, acts: ActivationReport | None = None, plot: Path | None = None
) -> RenderableType:
    """Header, the fitted layer table and its footnotes; then the inference activation peak
    (``acts``) and where the plot was saved, if any."""
    parts: list[RenderableType] = [
        header(report),
        Text(""),
        LayerTable(report),
        Text(""),
        footer(report),
    ]
    if acts is not None:
        parts += [Text(""), activation_summary(acts)]
    if plot is not None:
        parts.append(Text(f"plot saved to {plot}"))
    return Group(*parts)


def activation_summary(report: ActivationReport) -> RenderableType:
    """The inference activation peak, where it happens, and what is alive there."""
    w = report.workload
    figures = titled_table(
        f"Inference activations, batch {w.batch}, {w.precision}, {report.device}",
        *("figure", "size>", "where"),
    )
    peak_at = f"{report.peak_module or '<root>'} ({report.peak_op})"
    rows = [
        ("sum of every layer's outputs", report.total_output_bytes, "all layers"),
        ("largest layer: input + output", report.max_layer_io_bytes, report.max_layer),
        ("peak of live activations", report.peak_tensor_bytes, report.peak_tensor_module),
        ("peak with kernel workspaces", report.peak_activation_bytes, peak_at),
        ("with parameters and inputs", report.peak_bytes, ""),
    ]
    for name, n, where in rows:
        figures.add_row(name, fmt_bytes(n), where)
    figures.caption = (
        f"live activations peak at {report.skip_factor:.2f}x the largest layer's input + output"
    )
    live = titled_table("alive at the peak", "allocated in", "op", "size>")
    for t in report.live:
        live.add_row(t.module or "<root>", t.op, fmt_bytes(t.nbytes))
    return Group(figures, Text(""), live)
