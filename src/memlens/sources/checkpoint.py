"""Checkpoint files as a source: what the weights weigh, read from headers only.

:func:`summarize` is the front door. It dispatches on the path and returns a
:class:`WeightsSummary` (safetensors, sharded safetensors, GGUF) or an
:class:`~memlens.sources.onnx_graph.OnnxSummary` (ONNX). Tensor data is never read,
and pickle-based checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused,
because unpickling them can run arbitrary code.

Example usage::

    >>> s = summarize("model.safetensors")
    >>> s.n_params, s.weight_bytes, s.by_dtype["BF16"].bytes
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlens._errors import ConfigError, HeaderError

if TYPE_CHECKING:
    from memlens.sources.onnx_graph import OnnxSummary

#: Suffixes of files pickled by ``torch.save``; they are refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: Suffixes :func:`is_checkpoint_path` recognises (longest first where they overlap).
CHECKPOINT_SUFFIXES = (
    ".safetensors.index.json",
    ".bin.index.json",
    ".safetensors",
    ".gguf",
    ".onnx",
    *PICKLE_SUFFIXES,
)
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


def is_checkpoint_path(text: str) -> bool:
    """Whether ``text`` names a checkpoint file (by suffix) or a folder of safetensors shards.

    Pickle suffixes count too, so that :func:`summarize` can refuse them with a clear message.
    """
    lowered = text.strip().lower()
    if lowered.endswith(CHECKPOINT_SUFFIXES):
        return True
    path = Path(text.strip()).expanduser()
    return path.is_dir() and any(path.glob("*.safetensors*"))


def summarize(
    path: str | Path, *, batch: int = 1, dims: Mapping[str, int] | None = None
) -> WeightsSummary | OnnxSummary:
    """Summarise a checkpoint's weights (or an ONNX graph's memory) without reading tensor data.

    ``batch`` and ``dims`` (values for named symbolic dimensions) apply to ONNX files only.
    """
    from memlens.sources import gguf_header, safetensors_header

    p = Path(path).expanduser()
    name = p.name.lower()
    if p.is_dir():
        return safetensors_header.read_folder(p)
    if not p.exists():
        raise HeaderError(f"{p}: no such file or folder")
    if name.endswith(".safetensors.index.json"):
        return safetensors_header.read_index(p)
    if name.endswith(".safetensors"):
        return safetensors_header.read_file(p)
    if name.endswith(".gguf"):
        return gguf_header.read_file(p)
    if name.endswith(".onnx"):
        from memlens.sources import onnx_graph

        return onnx_graph.summarize_onnx(p, batch=batch, dims=dims)
    if name.endswith(PICKLE_SUFFIXES) or name.endswith(".bin.index.json"):
        raise HeaderError(f"{p}: {PICKLE_REFUSAL}")
    return _by_magic(p)


def _by_magic(p: Path) -> WeightsSummary:
    """Dispatch a file with an unfamiliar suffix on its first bytes."""
    from memlens.sources import gguf_header, safetensors_header

    with p.open("rb") as f:
        head = f.read(9)
    if head[:4] == gguf_header.MAGIC:
        return gguf_header.read_file(p)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip archive / raw pickle
        raise HeaderError(f"{p}: {PICKLE_REFUSAL}")
    if len(head) == 9 and head[8:9] == b"{":  # u64 header length, then a JSON object
        return safetensors_header.read_file(p)
    raise HeaderError(
        f"{p}: unrecognised checkpoint format; expected .safetensors, "
        "a *.safetensors.index.json, .gguf or .onnx"
    )


def refuse_weights_file(model: Any) -> None:
    """A weights file has no code to trace: say what to do instead."""
    if not isinstance(model, str) or not is_checkpoint_path(model):
        return
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return  # a Hugging Face model folder: its config.json is the model
    raise ConfigError(
        f"{model} holds weights, not a model to trace: `memlens inspect {model}` gives its "
        "exact weight figures; give the model's name or config.json to estimate a step"
    )
