"""What a weights file holds, as its header tells it: :class:`TensorInfo` per stored tensor
and the :class:`WeightsSummary` of a file (or of a sharded checkpoint). The header readers
(:mod:`.safetensors_header`, :mod:`.gguf_header`, :mod:`.onnx_graph`) build them;
:func:`memlens.sources.checkpoint.summarize` picks the reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlens._errors import HeaderError

#: Why a pickle-based checkpoint (``torch.save``) is refused rather than read.
PICKLE_REFUSAL = (
    "pickle-based checkpoints are not read (they can run code); "
    "convert to safetensors or give the model's config.json / name instead"
)


#: Deepest nesting of arrays and objects accepted in a JSON header, index or config (real ones
#: nest 3 to 5 levels: a config's ``rope_scaling``, an index's ``weight_map``).
MAX_JSON_DEPTH = 32


def load_json(raw: bytes | str, where: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value in ``raw``: a key repeated in an object, invalid UTF-8 or JSON, or
    nesting deeper than ``max_depth`` are refused with a :class:`HeaderError` naming
    ``where``."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise HeaderError(f"{where}: key {k[:80]!r} appears twice in the JSON")
            out[k] = v
        return out

    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text, object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        if isinstance(e, HeaderError):
            raise
        raise HeaderError(f"{where} is not valid JSON ({str(e)[:200]})") from None
    except RecursionError:
        raise HeaderError(f"{where}: JSON nested deeper than {max_depth} levels") from None
    _check_depth(value, where, max_depth)
    return value


def _check_depth(value: Any, where: str, max_depth: int) -> None:
    """Refuse containers nested deeper than ``max_depth`` (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        if children and depth > max_depth:
            raise HeaderError(f"{where}: JSON nested deeper than {max_depth} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def model_root(folder: Path) -> Path:
    """The folder whose files a checkpoint in ``folder`` may name: the folder itself, or for
    a Hugging Face cache snapshot (``models--org--name/snapshots/<rev>/``, whose files are
    symlinks to ``../../blobs/``) the cached repository's folder."""
    folder = folder.resolve()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(
        ("models--", "datasets--")
    ):
        return folder.parent.parent
    return folder


def contained(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, a file named inside a checkpoint, refused unless it resolves (links
    followed) inside the model's folder (:func:`model_root`). The error names the path only,
    never what the file holds."""
    if not name or "\x00" in name or Path(name).is_absolute():
        raise HeaderError(f"{what} {name[:200]!r} is not a file name inside the model's folder")
    path = folder / name
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        raise HeaderError(f"{what} {name[:200]!r} cannot be resolved ({e})") from None
    root = model_root(folder)
    if not target.is_relative_to(root):
        raise HeaderError(
            f"{what} {name[:200]!r} resolves outside the model's folder {root}: refused"
        )
    return path


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

    def __repr__(self) -> str:
        from memlens._repr import brief

        return brief(
            self,
            format=self.format,
            files=len(self.paths),
            tensors=self.n_tensors,
            params=self.n_params,
            weight_bytes=self.weight_bytes,
            dtypes=list(self.by_dtype),
        )

    def summary(self) -> str:
        """The long form, as plain text: totals per dtype and the notes."""
        from memlens._repr import rows
        from memlens.units import fmt_bytes

        pairs = [
            (d, f"{t.params:,} params, {fmt_bytes(t.bytes)}") for d, t in self.by_dtype.items()
        ]
        head = f"{self.format}, {len(self.paths)} file(s): {self.n_params:,} parameters"
        return "\n".join([head, *rows(pairs), *(f"note: {n}" for n in self.notes)])


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
