"""What a model's weights weigh in each storage format, quantisation metadata included.

Works from parameter shapes alone (the model is built on fake tensors: no weights, no
memory). Each unique parameter (tied ones counted once) is stored in one format of
:mod:`memlens.formats`, with the constants that format stores beside it; a format's constants
shared by every tensor (nf4's nested map) count once.

The *keep* policy names parameter roles stored in high precision (``keep_dtype``, bf16 by
default) under formats narrower than it: ``embeddings`` (embedding tables, position
embeddings, class tokens), ``norms`` (parameters of normalisation layers), ``head`` (the
last layer with parameters, in registration order: the classifier or LM head) and
``biases``. Buffers (batch-norm running statistics) are reported apart, in their own dtype.

A parameter count (``memlens size 70B``) never imports torch; a model does, to be built.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memlens._errors import ConfigError
from memlens._repr import brief
from memlens.formats import NAMES, WEIGHT_FORMATS, WeightFormat

if TYPE_CHECKING:
    from torch import nn

    from memlens.sources.base import Inputs

#: Format names, in report order.
FORMATS: tuple[str, ...] = NAMES
ROLES: tuple[str, ...] = ("embeddings", "norms", "head", "biases", "weights")
DEFAULT_KEEP: tuple[str, ...] = ("embeddings", "norms", "head")
DEFAULT_GROUP_SIZE = 128

_COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_COUNT_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
_EMBEDDING_NAME = re.compile(r"embed|token", re.IGNORECASE)


@dataclass(frozen=True)
class ParamTensor:
    """One unique parameter: its name (first owner), shape and role."""

    name: str
    shape: tuple[int, ...]
    role: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def tensor_bytes(
    shape: tuple[int, ...], fmt: str, group_size: int = DEFAULT_GROUP_SIZE, metadata: bool = True
) -> tuple[int, int]:
    """(payload bytes, metadata bytes) of one tensor stored in ``fmt`` (see
    :mod:`memlens.formats`)."""
    layout = _format(fmt)
    payload = layout.payload(shape).nbytes
    if not metadata:
        return payload, 0
    return payload, sum(c.nbytes for c in layout.metadata(shape, group_size))


def _format(name: str) -> WeightFormat:
    layout = WEIGHT_FORMATS.get(name)
    if layout is None:
        raise ConfigError(f"unknown format {name!r}: use one of {', '.join(FORMATS)}")
    return layout


@dataclass
class SizeRow:
    """The model in one format."""

    format: str
    bits: int  # payload bits per quantised weight
    quantized_params: int  # stored in ``format``
    kept_params: int  # kept in high precision by the policy
    payload_bytes: int
    metadata_bytes: int  # scales, zero points, absmax, code tables
    kept_bytes: int
    total_bytes: int

    @property
    def bits_per_param(self) -> float:
        """Effective bits per parameter, everything included."""
        params = self.quantized_params + self.kept_params
        return 8 * self.total_bytes / params if params else 0.0


@dataclass
class SizeReport:
    """The model's weights in every format, under one keep policy."""

    model: str
    source: str
    num_params: int
    roles: dict[str, int]  # parameters per role
    buffer_bytes: int  # registered buffers in their own dtype, not in the rows
    group_size: int
    keep: tuple[str, ...]
    keep_dtype: str
    metadata: bool
    rows: list[SizeRow] = field(default_factory=list)

    def row(self, fmt: str) -> SizeRow:
        for r in self.rows:
            if r.format == fmt:
                return r
        raise KeyError(fmt)

    def __repr__(self) -> str:
        return brief(
            self,
            model=self.model,
            num_params=self.num_params,
            formats=[r.format for r in self.rows],
            buffer_bytes=self.buffer_bytes,
        )

    def summary(self) -> str:
        """The long form, as plain text: the size in each weight format."""
        from memlens._repr import rows
        from memlens.units import fmt_bytes

        pairs = [(r.format, fmt_bytes(r.total_bytes)) for r in self.rows]
        return "\n".join([f"{self.model}: {self.num_params:,} parameters", *rows(pairs)])


def _is_norm(module: nn.Module) -> bool:
    return "Norm" in type(module).__name__


def parameter_tensors(model: nn.Module) -> list[ParamTensor]:
    """Every unique parameter with its role (ties take the first owner's)."""
    head = None
    for _, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not _is_norm(module):
            head = module
    seen: set[int] = set()
    out = []
    for path, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            out.append(
                ParamTensor(
                    f"{path}.{name}" if path else name, tuple(p.shape), _role(module, name, p, head)
                )
            )
    return out


def _role(module: nn.Module, name: str, p: nn.Parameter, head: nn.Module | None) -> str:
    from torch import nn

    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embeddings"
    if _is_norm(module):
        return "norms"
    if module is head:
        return "head"
    if _EMBEDDING_NAME.search(name) and not isinstance(
        module, (nn.Linear, nn.modules.conv._ConvNd)
    ):
        return "embeddings"
    if p.dim() == 1 and name.endswith("bias"):
        return "biases"
    return "weights"


def parse_keep(keep: str | Iterable[str]) -> tuple[str, ...]:
    """``"embeddings,norms,head"`` (or ``"none"``) into a validated tuple of roles."""
    items = [k.strip().lower() for k in (keep.split(",") if isinstance(keep, str) else keep)]
    items = [k for k in items if k and k != "none"]
    bad = [k for k in items if k not in ROLES or k == "weights"]
    if bad:
        allowed = ", ".join(r for r in ROLES if r != "weights")
        raise ConfigError(f"unknown --keep role(s) {', '.join(bad)}: use {allowed} or none")
    return tuple(dict.fromkeys(items))


#: Parameters of the largest model a count may name (a quadrillion: far past any model).
_MAX_COUNT = 1e15


def parse_count(text: str) -> int | None:
    """A parameter count such as ``175B``, ``7e9`` or ``10000000``; None if ``text`` is not one."""
    m = _COUNT_RE.match(text)
    if not m:
        return None
    count = float(m.group(1)) * _COUNT_SUFFIX[m.group(2).lower()]
    if not 1 <= count < _MAX_COUNT:
        raise ConfigError(f"parameter count {text!r} is out of range (1 to 1e15)")
    return int(count)


def size_of_tensors(
    tensors: list[ParamTensor],
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
    keep: tuple[str, ...] = DEFAULT_KEEP,
    keep_dtype: str = "bf16",
    metadata: bool = True,
    formats: Iterable[str] = FORMATS,
) -> list[SizeRow]:
    """One :class:`SizeRow` per format for these tensors under the keep policy."""
    if group_size < 1:
        raise ConfigError(f"group size must be a positive integer, got {group_size}")
    if keep_dtype not in WEIGHT_FORMATS:
        raise ConfigError(f"unknown keep dtype {keep_dtype!r}: use one of {', '.join(FORMATS)}")
    rows = []
    for fmt in formats:
        layout = _format(fmt)
        narrower = layout.bits < WEIGHT_FORMATS[keep_dtype].bits
        q_params = k_params = payload = meta = kept = 0
        for t in tensors:
            if narrower and t.role in keep:
                k_params += t.numel
                kept += sum(tensor_bytes(t.shape, keep_dtype, group_size, metadata))
                continue
            p, m = tensor_bytes(t.shape, fmt, group_size, metadata)
            q_params += t.numel
            payload += p
            meta += m
        if metadata and q_params:
            meta += sum(s.nbytes for s in layout.shared)
        rows.append(
            SizeRow(
                fmt, layout.bits, q_params, k_params, payload, meta, kept, payload + meta + kept
            )
        )
    return rows


def size(
    model: Any,
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
    keep: str | Iterable[str] = DEFAULT_KEEP,
    keep_dtype: str = "bf16",
    metadata: bool = True,
    formats: Iterable[str] = FORMATS,
) -> SizeReport:
    """The size of ``model``'s weights in every format of :mod:`memlens.formats`.

    ``model`` is anything :func:`memlens.estimate` accepts, or a parameter count (an ``int``:
    one tensor of plain weights, so the keep policy has nothing to keep). ``metadata=False``
    counts the payload only; ``keep=()`` quantises everything.

    Example usage::

        report = memlens.size("llama-3-8b", group_size=64, keep="embeddings,norms,head")
        print(report.row("nf4").total_bytes)
    """
    keep_roles = parse_keep(keep)
    if isinstance(model, int) and not isinstance(model, bool):
        if model < 1:
            raise ConfigError(f"a parameter count must be positive, got {model}")
        tensors = [ParamTensor("params", (model,), "weights")]
        name, source, buffers = "parameter count", "count", 0
    else:
        tensors, buffers, name, source = _model_tensors(model)
    rows = size_of_tensors(
        tensors,
        group_size=group_size,
        keep=keep_roles,
        keep_dtype=keep_dtype,
        metadata=metadata,
        formats=formats,
    )
    roles = {r: sum(t.numel for t in tensors if t.role == r) for r in ROLES}
    return SizeReport(
        model=name,
        source=source,
        num_params=sum(t.numel for t in tensors),
        roles={r: n for r, n in roles.items() if n},
        buffer_bytes=buffers,
        group_size=group_size,
        keep=keep_roles,
        keep_dtype=keep_dtype,
        metadata=metadata,
        rows=rows,
    )


def _model_tensors(model: Any) -> tuple[list[ParamTensor], int, str, str]:
    from memlens.engine.build import build_fake
    from memlens.sources.registry import resolve
    from memlens.workload import Workload

    spec = resolve(model)
    no_inputs = dataclasses.replace(spec, make_inputs=_no_inputs)  # shapes need no inputs
    built = build_fake(no_inputs, Workload(mode="inference"))
    buffers = {id(b): b.numel() * b.element_size() for b in built.model.buffers()}
    return parameter_tensors(built.model), sum(buffers.values()), spec.name, spec.source


def _no_inputs(model: nn.Module, workload: object) -> Inputs:
    from memlens.sources.base import Inputs

    return Inputs()
