"""ONNX graphs: parameters from initializers, and the inference peak by liveness.

The model is loaded without its external data, so only the graph and inline initializers
are read. Symbolic batch dimensions of the inputs are set to ``batch`` (other named
dimensions from ``dims``), ONNX shape inference sizes every intermediate value, and one
walk over the topologically ordered nodes finds the peak.

What :attr:`OnnxSummary.peak_bytes` counts, exactly:

- every initializer (weights; those of If/Loop/Scan subgraphs too), alive throughout;
- every graph input at the given batch, alive throughout;
- the intermediates alive while the peak node runs: its inputs, its outputs, and every
  earlier output still needed by a later node; a value dies after its last consumer
  (a node using it inside a subgraph counts as a consumer); graph outputs never die.
  Outputs of ``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze`` and ``Identity`` share
  their input's memory (as onnxruntime's aliasing kernels and PyTorch views do): they add
  no bytes and keep that memory alive as long as they are used.

Known limitations: scratch memory inside a kernel (convolution workspaces), the runtime's
arena rounding and overhead, and tensors inside subgraphs (liveness is top level only) are
not counted. Tensors whose size inference could not determine are listed in
:attr:`OnnxSummary.unknown` and left out, so the activation totals are then lower bounds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memlens._errors import ConfigError, HeaderError, MissingExtraError, WorkloadError
from memlens.sources.weights import DtypeTotals, TensorInfo, contained

#: Ops whose output is a view of their first input in onnxruntime (kernels declared with
#: ``.Alias(0, 0)``) and in PyTorch; they allocate nothing.
ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})

#: Bits per element of each ``TensorProto.DataType`` (``STRING`` has no fixed size).
DTYPE_BITS: dict[str, int] = {
    "DOUBLE": 64, "INT64": 64, "UINT64": 64, "COMPLEX64": 64, "COMPLEX128": 128,
    "FLOAT": 32, "INT32": 32, "UINT32": 32,
    "FLOAT16": 16, "BFLOAT16": 16, "INT16": 16, "UINT16": 16,
    "INT8": 8, "UINT8": 8, "BOOL": 8, "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8,
    "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8, "FLOAT8E8M0": 8,
    "INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2,
}  # fmt: skip


@dataclass(frozen=True)
class OnnxSummary:
    """Weights and inference memory of an ONNX graph (see the module docstring for what the
    peak includes). Dtypes are ONNX's names (``FLOAT``, ``FLOAT16``, ``INT64``...)."""

    path: str
    batch: int
    opset: int
    by_dtype: dict[str, DtypeTotals]  # initializers, subgraphs' included
    inputs: tuple[TensorInfo, ...]  # graph inputs that could be sized, batch applied
    activation_bytes: int  # every intermediate tensor that allocates, summed
    peak_bytes: int  # weight_bytes + input_bytes + live intermediates at the peak node
    peak_node: str | None  # node name, or "OpType#index" when unnamed; None: no nodes
    peak_op: str | None
    peak_live: tuple[TensorInfo, ...]  # intermediates alive at the peak, largest first
    unknown: tuple[str, ...]  # tensors that could not be sized, left out of the totals
    notes: tuple[str, ...] = ()

    format = "onnx"

    def __repr__(self) -> str:
        from memlens._repr import brief

        return brief(
            self,
            path=self.path,
            batch=self.batch,
            weight_bytes=self.weight_bytes,
            peak_bytes=self.peak_bytes,
            peak_node=self.peak_node,
            unknown=len(self.unknown),
        )

    def summary(self) -> str:
        """The long form, as plain text."""
        from memlens._repr import rows
        from memlens.units import fmt_bytes

        pairs = [
            ("parameters", f"{self.n_params:,}"),
            ("weights", fmt_bytes(self.weight_bytes)),
            ("inputs", fmt_bytes(self.input_bytes)),
            ("inference peak", f"{fmt_bytes(self.peak_bytes)} at {self.peak_node}"),
        ]
        notes = [f"note: {n}" for n in self.notes]
        return "\n".join([f"{self.path} (batch {self.batch})", *rows(pairs), *notes])

    @property
    def n_params(self) -> int:
        return sum(d.params for d in self.by_dtype.values())

    @property
    def weight_bytes(self) -> int:
        return sum(d.bytes for d in self.by_dtype.values())

    @property
    def input_bytes(self) -> int:
        return sum(t.nbytes for t in self.inputs)


def summarize_onnx(
    path: str | Path, *, batch: int = 1, dims: Mapping[str, int] | None = None
) -> OnnxSummary:
    """Parameters and inference peak of the ONNX model at ``path``.

    ``batch`` replaces the first dimension of each graph input where it is symbolic;
    ``dims`` gives values to other named dimensions (``{"sequence": 128}``).
    """
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise WorkloadError("batch", batch, "must be a positive integer")
    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, OSError) as e:
        raise HeaderError(f"{p}: cannot read as ONNX ({e})") from e
    if model.ir_version == 0 or not model.HasField("graph"):
        raise HeaderError(f"{p}: not an ONNX model (no IR version or graph)")
    _check_external(p, model.graph)
    notes = _substitute(model.graph, batch, dict(dims or {}))
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises several unrelated types for unsupported models
        raise HeaderError(f"{p}: ONNX shape inference failed ({e})") from e
    graph = model.graph

    unknown: list[str] = []
    by_dtype: dict[str, list[int]] = {}
    n_external = 0
    for name, elem_type, init_dims, external in _initializers(graph):
        _, shape, dtype, nbytes = _tensor_info(name, elem_type, init_dims)
        row = by_dtype.setdefault(dtype, [0, 0, 0])
        row[0] += 1
        row[1] += _numel(shape)
        row[2] += nbytes or 0
        if nbytes is None:
            unknown.append(name)
        n_external += external
    if n_external:
        notes.append(f"{n_external} initializers are in external data files (sized, not read)")

    persistent = {t.name for t in graph.initializer}
    persistent |= {s.values.name for s in graph.sparse_initializer}
    inputs: list[TensorInfo] = []
    for vi in graph.input:
        if vi.name not in persistent:
            info = _value_info(vi)
            if info[3] is None:
                unknown.append(vi.name)
            else:
                inputs.append(TensorInfo(*info))
    persistent |= {vi.name for vi in graph.input}
    values = {vi.name: _value_info(vi) for vi in (*graph.value_info, *graph.output)}
    peak = _liveness(p, graph, persistent, values)
    unknown.extend(peak.unknown)
    if any(_subgraphs(n) for n in graph.node):
        notes.append("If/Loop/Scan subgraphs: weights counted, their internal tensors are not")
    if unknown:
        notes.append(
            f"{len(unknown)} tensors could not be sized ({', '.join(unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''}); totals leave them out (lower bounds)"
        )
    ordered = sorted(by_dtype.items(), key=lambda kv: (-kv[1][2], kv[0]))
    totals = {k: DtypeTotals(*v) for k, v in ordered}
    weight_bytes = sum(d.bytes for d in totals.values())
    return OnnxSummary(
        path=str(p),
        batch=batch,
        opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
        by_dtype=totals,
        inputs=tuple(inputs),
        activation_bytes=peak.activation_bytes,
        peak_bytes=weight_bytes + sum(t.nbytes for t in inputs) + peak.live_bytes,
        peak_node=peak.node,
        peak_op=peak.op,
        peak_live=peak.live,
        unknown=tuple(unknown),
        notes=tuple(notes),
    )


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise MissingExtraError("onnx", "onnx", "reading ONNX files") from e
    return onnx


@dataclass(frozen=True)
class _Peak:
    activation_bytes: int  # all allocating intermediates, summed
    live_bytes: int  # intermediates alive while the peak node runs
    node: str | None
    op: str | None
    live: tuple[TensorInfo, ...]
    unknown: tuple[str, ...]


def _liveness(
    path: Path, graph: Any, persistent: set[str], values: dict[str, tuple[Any, ...]]
) -> _Peak:
    """Walk the nodes in order; find where the live intermediates weigh the most."""
    nodes = list(graph.node)
    root: dict[str, str | None] = dict.fromkeys(persistent)  # value -> its storage (None: kept)
    last: dict[str, int] = {}  # storage -> index of its last consumer
    for i, node in enumerate(nodes):
        for name in _consumed(node):
            if name not in root:
                raise HeaderError(
                    f"{path}: node {_node_name(node, i)} uses {name!r} before any node makes it "
                    "(graph not topologically sorted, or the value is undefined)"
                )
            storage = root[name]
            if storage is not None:
                last[storage] = i
        aliased = node.op_type in ALIAS_OPS and node.domain in ("", "ai.onnx") and node.input
        for out in filter(None, node.output):
            root[out] = root[node.input[0]] if aliased else out
            if not aliased:
                last[out] = i
    for out in graph.output:
        storage = root.get(out.name)
        if storage is not None:
            last[storage] = len(nodes)
    dying: dict[int, list[str]] = {}
    for storage, i in last.items():
        dying.setdefault(i, []).append(storage)

    sizes = {s: values[s][3] if s in values else None for s in last}
    live: set[str] = set()
    live_bytes, best_bytes, best_i, best_live = 0, 0, None, ()
    for i, node in enumerate(nodes):
        for out in filter(None, node.output):
            if root[out] == out:
                live.add(out)
                live_bytes += sizes[out] or 0
        if best_i is None or live_bytes > best_bytes:
            best_bytes, best_i, best_live = live_bytes, i, tuple(live)
        for storage in dying.get(i, ()):
            live.discard(storage)
            live_bytes -= sizes[storage] or 0
    held = sorted((s for s in best_live if sizes[s]), key=lambda s: (-(sizes[s] or 0), s))
    return _Peak(
        activation_bytes=sum(b for b in sizes.values() if b),
        live_bytes=best_bytes,
        node=None if best_i is None else _node_name(nodes[best_i], best_i),
        op=None if best_i is None else nodes[best_i].op_type,
        live=tuple(TensorInfo(*values[s]) for s in held),
        unknown=tuple(s for s in last if sizes[s] is None),
    )


def _substitute(graph: Any, batch: int, dims: dict[str, int]) -> list[str]:
    """Fix symbolic dimensions in place: the inputs' first (batch), then those in ``dims``."""
    for name, value in dims.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise WorkloadError(f"dims[{name!r}]", value, "must be a positive integer")
    init_names = {t.name for t in graph.initializer}
    notes, named = [], set()
    values = dict(dims)
    for vi in graph.input:
        shape = vi.type.tensor_type.shape
        if vi.name in init_names or not vi.type.HasField("tensor_type") or not shape.dim:
            continue
        named.update(d.dim_param for d in shape.dim if d.dim_param)
        first = shape.dim[0]
        if first.dim_param:
            values.setdefault(first.dim_param, batch)
        elif not first.HasField("dim_value"):
            first.dim_value = batch
        elif first.dim_value != batch:
            notes.append(
                f"input {vi.name!r} has a fixed first dimension of {first.dim_value}; "
                f"batch={batch} not applied to it"
            )
    missing = set(dims) - named
    if missing:
        raise ConfigError(
            f"dims {sorted(missing)} name no input dimension; the inputs' named dimensions "
            f"are {sorted(named) or 'none'}"
        )
    for vi in (*graph.input, *graph.output, *graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in values:
                d.dim_value = values[d.dim_param]
    return notes


def _value_info(vi: Any) -> tuple[str, tuple[int, ...], str, int | None]:
    """``(name, shape, dtype, nbytes)``; ``nbytes`` is None when it cannot be known."""
    if not vi.type.HasField("tensor_type"):
        return vi.name, (), "UNKNOWN", None
    tt = vi.type.tensor_type
    if not tt.HasField("shape") or not all(
        d.HasField("dim_value") and d.dim_value >= 0 for d in tt.shape.dim
    ):
        return vi.name, (), _dtype_name(tt.elem_type), None
    return _tensor_info(vi.name, tt.elem_type, [d.dim_value for d in tt.shape.dim])


def _tensor_info(
    name: str, elem_type: int, dims: list[int]
) -> tuple[str, tuple[int, ...], str, int | None]:
    dtype = _dtype_name(elem_type)
    bits = DTYPE_BITS.get(dtype)
    nbytes = None if bits is None else -(-_numel(dims) * bits // 8)
    return name, tuple(dims), dtype, nbytes


def _dtype_name(elem_type: int) -> str:
    try:
        return _onnx().TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"UNKNOWN({elem_type})"


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _subgraphs(node: Any) -> list[Any]:
    out = []
    for attr in node.attribute:
        if attr.type == attr.GRAPH:
            out.append(attr.g)
        elif attr.type == attr.GRAPHS:
            out.extend(attr.graphs)
    return out


def _initializers(graph: Any) -> Iterator[tuple[str, int, list[int], bool]]:
    """``(name, elem_type, dims, external)`` of every initializer, subgraphs' included.

    Sparse initializers are sized as dense, as runtimes usually hold them.
    """
    for t in graph.initializer:
        yield t.name, t.data_type, list(t.dims), t.data_location == t.EXTERNAL
    for s in graph.sparse_initializer:
        yield s.values.name, s.values.data_type, list(s.dims), False
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _initializers(sub)


def _check_external(path: Path, graph: Any) -> None:
    """Refuse external data placed outside the model's folder (an absolute ``location``, one
    with ``..`` or a symlink out): it is never read, but a file that names one is hostile."""
    for t in graph.initializer:
        if t.data_location == t.EXTERNAL:
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            contained(path.parent, location, f"{path}: external data of {t.name[:80]!r}")
    for node in graph.node:
        for sub in _subgraphs(node):
            _check_external(path, sub)


def _consumed(node: Any) -> set[str]:
    """Values a node reads: its inputs and the outer-scope values its subgraphs use."""
    used = {n for n in node.input if n}
    for sub in _subgraphs(node):
        used |= _free_names(sub)
    return used


def _free_names(graph: Any) -> set[str]:
    """Names a subgraph uses but does not define (its outer-scope references)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    used = {o.name for o in graph.output}
    for node in graph.node:
        used |= _consumed(node)
        defined.update(node.output)
    return used - defined


def _node_name(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"
