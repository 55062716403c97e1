"""Layer-level metrics from the real model: parameters (with the formula that gives them),
weight bytes, output activations, bytes saved for backward and MACs, one row per layer.

A *layer* is a module without children, or one of :data:`~memlens._layers._formulas.ATOMIC`
(shown with its submodules). A container that holds parameters of its own (ViT's class token)
or runs ops outside its children (attention matmuls written inline) gets an extra ``own``
row, so the rows add up to the whole model. Tied parameters are counted once, at their first
owner in registration order, and flagged at the others.

The model runs forward once on fake tensors (see :mod:`memlens._layers._observe`): no memory,
no weights. MACs come from the engine's FLOP table (:mod:`memlens.engine.flops`): every op it
counts is a matrix product, a convolution or attention (its products), counted as ``2*m*n*k``
FLOPs, so MACs = FLOPs / 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from memlens._errors import WorkloadError
from memlens._layers._formulas import (
    ATOMIC,
    Formula,
    Formulas,
    formula_for,
    formulas,
    register_formula,
    shapes_formula,
)
from memlens._layers._observe import ModuleCalls, Observation, observe
from memlens._repr import brief, rows
from memlens._size import FORMATS, tensor_bytes
from memlens.workload import Workload

__all__ = [
    "Formula",
    "LayerReport",
    "LayerRow",
    "LayerTotals",
    "SORT_KEYS",
    "layers",
    "register_formula",
]

#: ``sort`` keys and the row attribute each sorts by (largest first).
SORT_KEYS: dict[str, str] = {
    "params": "params",
    "activations": "output_bytes",
    "saved": "saved_bytes",
    "macs": "macs",
}

#: Weight format shown by default for each workload precision (AMP keeps fp32 weights).
_WEIGHT_FORMAT = {
    "fp32": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "bf16-amp": "fp32",
    "fp16-amp": "fp32",
}


@dataclass
class LayerRow:
    """One layer (``kind="layer"``), a container's own part (``"own"``) or a group of rows
    aggregated at a depth (``"group"``)."""

    path: str  # dotted module path; "" is the model itself
    type: str  # module class name
    kind: str
    calls: int  # forward calls (a module used twice runs twice)
    input_shapes: list[tuple[int, ...]]  # of the first call
    output_shapes: list[tuple[int, ...]]
    params: int  # counted here: tied parameters count once, at their first owner
    trainable: int
    frozen: int
    tied_params: int  # parameters of this row already counted at another row
    tied_to: list[str]  # the rows they were counted at
    formula: Formula | None  # covers params + tied_params
    mismatch: bool  # the formula's value differs from the real count
    weight_bytes: int  # counted parameters in the report's weight format
    output_bytes: int  # output activations, summed over calls
    io_bytes: int  # the largest input + output bytes of one call
    saved_bytes: int  # activations first saved for backward here (train mode)
    macs: int  # multiply-accumulates of the forward pass

    @property
    def flops(self) -> int:
        """FLOPs of the forward pass: 2 per MAC."""
        return 2 * self.macs

    @property
    def depth(self) -> int:
        return self.path.count(".") + 1 if self.path else 0


@dataclass
class LayerTotals:
    """Whole-model totals (every row, whatever the depth, sort or top-N shown)."""

    params: int
    trainable: int
    frozen: int
    tied_params: int  # counted once: not in ``params`` again
    weight_bytes: int
    output_bytes: int  # sum of every layer's outputs
    saved_bytes: int  # activations saved for backward by the forward pass
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass
class LayerReport:
    """Layer rows of one model under one workload, with whole-model totals."""

    model: str
    source: str
    workload: Workload
    dtype: str  # weight format of ``weight_bytes``
    rows: list[LayerRow]
    totals: LayerTotals
    num_params: int  # the model's unique parameter count, from torch
    layer_count: int  # rows before depth aggregation and top-N
    depth: int | None = None
    sort: str | None = None
    saved_outside_bytes: int = 0  # saved for backward while no module ran
    notes: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> list[LayerRow]:
        return [r for r in self.rows if r.mismatch]

    def __repr__(self) -> str:
        return brief(
            self,
            model=self.model,
            num_params=self.num_params,
            rows=len(self.rows),
            weight_bytes=self.totals.weight_bytes,
            macs=self.totals.macs,
        )

    def summary(self) -> str:
        """The long form, as plain text: one line per row."""
        from memlens.units import fmt_bytes, fmt_count

        pairs = [
            (
                r.path or "<root>",
                f"{r.type}: {fmt_count(r.params)} params, "
                f"{fmt_bytes(r.weight_bytes)}, out {fmt_bytes(r.output_bytes)}",
            )
            for r in self.rows
        ]
        head = f"{self.model}: {fmt_count(self.num_params)} parameters in {self.dtype}"
        return "\n".join([head, *rows(pairs)])


def layers(
    model: Any,
    workload: Workload | None = None,
    *,
    inputs: Any = None,
    dtype: str | None = None,
    depth: int | None = None,
    sort: str | None = None,
    top: int | None = None,
    extra_formulas: Formulas | None = None,
    **fields: Any,
) -> LayerReport:
    """One row per layer of ``model`` for one forward pass of the workload.

    ``model``, ``workload`` and ``fields`` are those of :func:`memlens.estimate` (the fields
    that apply to a forward pass); ``mode="train"`` also measures the bytes each layer saves
    for backward. ``dtype`` is the weight format of ``weight_bytes`` (default: the
    precision's), ``depth`` aggregates rows to that module depth, ``sort`` is one of
    :data:`SORT_KEYS`, ``top`` keeps the first rows. Totals always cover the whole model.

    Example usage::

        report = memlens.layers("resnet50", batch=32, sort="macs", top=10)
        print(report.totals.params, report.totals.macs, report.rows[0].formula)
    """
    from memlens._setup import model_spec
    from memlens.engine.build import build_fake
    from memlens.strategies.apply import prepare_model

    if sort is not None and sort not in SORT_KEYS:
        raise WorkloadError("sort", sort, "allowed: " + ", ".join(SORT_KEYS))
    for name, value in (("depth", depth), ("top", top)):
        if value is not None and (isinstance(value, bool) or value < 0):
            raise WorkloadError(name, value, "must be a non-negative integer")
    workload = Workload.from_fields(fields, base=workload, use="layers")
    weight_format = dtype or _WEIGHT_FORMAT[workload.precision]
    if weight_format not in FORMATS:
        raise WorkloadError("dtype", weight_format, "allowed: " + ", ".join(FORMATS))
    spec = model_spec(model, workload, inputs)
    built = build_fake(spec, workload)
    with built.mode:
        prepare_model(built.model, built.inputs, workload)
    seen = observe(built, workload.training)
    rows = _layer_rows(built.model, seen, weight_format, formulas(extra_formulas))
    report = LayerReport(
        model=spec.name,
        source=spec.source,
        workload=workload,
        dtype=weight_format,
        rows=rows,
        totals=_totals(rows),
        num_params=sum(p.numel() for p in built.model.parameters()),
        layer_count=len(rows),
        depth=depth,
        sort=sort,
        saved_outside_bytes=seen.saved_bytes_outside,
    )
    report.notes = _notes(report)
    if depth is not None:
        report.rows = _at_depth(report.rows, depth, built.model, seen.calls)
    if sort is not None:
        report.rows.sort(key=lambda r: getattr(r, SORT_KEYS[sort]), reverse=True)
    if top is not None:
        report.rows = report.rows[:top]
    return report


def _units(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(path, module, kind) of every layer and container, in registration order."""
    out: list[tuple[str, nn.Module, str]] = []
    atomic: list[str] = []
    for path, module in model.named_modules():
        if any(a == "" or path.startswith(a + ".") for a in atomic):
            continue
        has_children = any(True for _ in module.children())
        if isinstance(module, ATOMIC) or not has_children:
            out.append((path, module, "layer"))
            if has_children:
                atomic.append(path)
        else:
            out.append((path, module, "own"))
    return out


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _layer_rows(
    model: nn.Module, seen: Observation, weight_format: str, registry: Formulas
) -> list[LayerRow]:
    counted_at: dict[int, str] = {}
    rows: list[tuple[int, LayerRow]] = []
    units = _units(model)
    for index, (path, module, kind) in enumerate(units):
        params = list(module.parameters(recurse=kind == "layer"))
        counted = [p for p in params if id(p) not in counted_at]
        tied = [p for p in params if id(p) in counted_at]
        tied_to = sorted({counted_at[id(p)] or "<root>" for p in tied})
        for p in counted:
            counted_at[id(p)] = path
        rec = seen.calls.get(path)
        if kind == "layer":
            inside = [path] + [_join(path, n) for n, _ in module.named_modules() if n]
            saved = sum(seen.calls[n].saved_bytes for n in inside if n in seen.calls)
            macs = seen.flops.get(path, 0) // 2
            formula = formula_for(module, registry)
        else:
            saved = rec.saved_bytes if rec is not None else 0
            macs = seen.own_flops.get(path, 0) // 2
            formula = shapes_formula(params) if params else None
            if not (params or macs or saved):
                continue
        row = LayerRow(
            path=path,
            type=type(module).__name__,
            kind=kind,
            calls=rec.calls if rec is not None else 0,
            input_shapes=rec.input_shapes if rec is not None and kind == "layer" else [],
            output_shapes=rec.output_shapes if rec is not None and kind == "layer" else [],
            params=sum(p.numel() for p in counted),
            trainable=sum(p.numel() for p in counted if p.requires_grad),
            frozen=sum(p.numel() for p in counted if not p.requires_grad),
            tied_params=sum(p.numel() for p in tied),
            tied_to=tied_to,
            formula=formula,
            mismatch=formula is not None and formula.value != sum(p.numel() for p in params),
            weight_bytes=sum(sum(tensor_bytes(tuple(p.shape), weight_format)) for p in counted),
            output_bytes=rec.output_bytes if rec is not None and kind == "layer" else 0,
            io_bytes=rec.io_bytes if rec is not None and kind == "layer" else 0,
            saved_bytes=saved,
            macs=macs,
        )
        # executed rows in call order, then the never-called ones in registration order
        rank = rec.order if rec is not None else (1 << 62) + index
        rows.append((rank, row))
    rows.sort(key=lambda r: r[0])
    return [row for _, row in rows]


def _totals(rows: list[LayerRow]) -> LayerTotals:
    def total(attr: str) -> int:
        return sum(getattr(r, attr) for r in rows)

    return LayerTotals(
        params=total("params"),
        trainable=total("trainable"),
        frozen=total("frozen"),
        tied_params=total("tied_params"),
        weight_bytes=total("weight_bytes"),
        output_bytes=total("output_bytes"),
        saved_bytes=total("saved_bytes"),
        macs=total("macs"),
    )


def _at_depth(
    rows: list[LayerRow], depth: int, model: nn.Module, calls: dict[str, ModuleCalls]
) -> list[LayerRow]:
    """Rows deeper than ``depth`` merged into their ancestor at ``depth``."""
    groups: dict[str, list[LayerRow]] = {}
    for r in rows:
        key = ".".join(r.path.split(".")[:depth]) if r.depth > depth else r.path
        groups.setdefault(key, []).append(r)
    modules = dict(model.named_modules())
    out = []
    for key, members in groups.items():
        if len(members) == 1 and members[0].path == key:
            out.append(members[0])
            continue
        rec = calls.get(key)
        out.append(
            LayerRow(
                path=key,
                type=type(modules[key]).__name__,
                kind="group",
                calls=rec.calls if rec is not None else 0,
                input_shapes=rec.input_shapes if rec is not None else [],
                output_shapes=rec.output_shapes if rec is not None else [],
                params=sum(m.params for m in members),
                trainable=sum(m.trainable for m in members),
                frozen=sum(m.frozen for m in members),
                tied_params=sum(m.tied_params for m in members),
                tied_to=sorted({t for m in members for t in m.tied_to}),
                formula=None,
                mismatch=any(m.mismatch for m in members),
                weight_bytes=sum(m.weight_bytes for m in members),
                output_bytes=rec.output_bytes if rec is not None else 0,
                io_bytes=rec.io_bytes if rec is not None else 0,
                saved_bytes=sum(m.saved_bytes for m in members),
                macs=sum(m.macs for m in members),
            )
        )
    return out


def _notes(report: LayerReport) -> list[str]:
    notes = []
    for r in report.mismatches:
        f = r.formula
        assert f is not None
        notes.append(
            f"{r.path or '<root>'}: formula {f.expression} = {f.value:,} but the layer has "
            f"{r.params + r.tied_params:,} parameters"
        )
    for r in report.rows:
        if r.tied_params:
            notes.append(
                f"{r.path or '<root>'}: {r.tied_params:,} parameters shared with "
                f"{', '.join(r.tied_to)}, counted there"
            )
    if report.totals.params != report.num_params:
        notes.append(
            f"rows add up to {report.totals.params:,} parameters; "
            f"the model has {report.num_params:,}"
        )
    if report.saved_outside_bytes:
        notes.append(f"{report.saved_outside_bytes:,} bytes saved for backward outside any module")
    return notes
