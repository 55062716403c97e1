"""What a weights file holds, as its header tells it: :class:`TensorInfo` per stored tensor
and the :class:`WeightsSummary` of a file (or of a sharded checkpoint). The header readers
(:mod:`.safetensors_header`, :mod:`.gguf_header`, :mod:`.onnx_graph`) build them;
:func:`memlens.sources.checkpoint.summarize` picks the reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from memlens._errors import HeaderError

#: Why a pickle-based checkpoint (``torch.save``) is refused rather than read.
PICKLE_REFUSAL = (
    "pickle-based checkpoints are not read (they can run code); "
    "convert to safetensors or give the model's config.json / name instead"
)


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor: ``shape`` in PyTorch order (outermost first), ``nbytes`` on disk."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class DtypeTotals:
    """Tensors, elements and bytes stored in one dtype."""

    tensors: int
    params: int
    bytes: int


@dataclass(frozen=True)
class WeightsSummary:
    """What a checkpoint's weights weigh, from its headers alone.

    ``by_dtype`` is keyed by the format's own dtype names (safetensors ``BF16``, GGUF
    ``Q4_K``). ``weight_bytes`` is exact: the sum of every tensor's stored bytes (headers,
    alignment padding and index files excluded). ``metadata`` passes through the file's own
    metadata (safetensors ``__metadata__`` plus an index's ``metadata``; GGUF ``general.*``
    and architecture keys). ``notes`` lists facts a reader should know that are not errors.
    """

    format: str  # "safetensors" or "gguf"
    paths: tuple[str, ...]
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def n_tensors(self) -> int:
        return len(self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def by_dtype(self) -> dict[str, DtypeTotals]:
        """Totals per dtype, largest byte count first."""
        acc: dict[str, list[int]] = {}
        for t in self.tensors:
            row = acc.setdefault(t.dtype, [0, 0, 0])
            row[0] += 1
            row[1] += t.numel
            row[2] += t.nbytes
        ordered = sorted(acc.items(), key=lambda kv: (-kv[1][2], kv[0]))
        return {k: DtypeTotals(*v) for k, v in ordered}

    @property
    def largest(self) -> TensorInfo | None:
        """The tensor with the most bytes (first in file order on ties)."""
        return max(self.tensors, key=lambda t: t.nbytes, default=None)


def merge_tensors(groups: Iterable[tuple[str, Iterable[TensorInfo]]]) -> tuple[TensorInfo, ...]:
    """Concatenate per-file tensor lists, refusing a name stored in two files."""
    seen: dict[str, str] = {}
    out: list[TensorInfo] = []
    for path, infos in groups:
        for t in infos:
            if t.name in seen:
                raise HeaderError(
                    f"tensor {t.name!r} is stored twice, in {seen[t.name]} and {path}"
                )
            seen[t.name] = path
            out.append(t)
    return tuple(out)
