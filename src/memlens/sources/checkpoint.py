"""Checkpoint files as a source: what the weights weigh, read from headers only.

:func:`summarize` is the front door. It dispatches on the path to a header reader
(:mod:`.safetensors_header`, :mod:`.gguf_header`, :mod:`.onnx_graph`) and returns a
:class:`~memlens.sources.weights.WeightsSummary` (safetensors, sharded safetensors, GGUF) or an
:class:`~memlens.sources.onnx_graph.OnnxSummary` (ONNX). Tensor data is never read,
and pickle-based checkpoints (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused,
because unpickling them can run arbitrary code.

Example usage::

    >>> s = summarize("model.safetensors")
    >>> s.n_params, s.weight_bytes, s.by_dtype["BF16"].bytes
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memlens._errors import ConfigError, HeaderError
from memlens.sources.weights import PICKLE_REFUSAL, WeightsSummary

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


def is_checkpoint_path(text: str) -> bool:
    """Whether ``text`` names a checkpoint file (by suffix) or a folder of safetensors shards.

    Pickle suffixes count too, so that :func:`summarize` can refuse them with a clear message.
    """
    lowered = text.strip().lower()
    if lowered.endswith(CHECKPOINT_SUFFIXES):
        return True
    path = Path(text.strip()).expanduser()
    try:
        return path.is_dir() and any(path.glob("*.safetensors*"))
    except OSError:  # a name too long for a path: not a checkpoint
        return False


def summarize(
    path: str | Path, *, batch: int = 1, dims: Mapping[str, int] | None = None
) -> WeightsSummary | OnnxSummary:
    """Summarise a checkpoint's weights (or an ONNX graph's memory) without reading tensor data.

    ``batch`` and ``dims`` (values for named symbolic dimensions) apply to ONNX files only.
    A file that cannot be read (missing, a folder, no permission, a name too long) is a
    :class:`HeaderError`.
    """
    p = Path(path).expanduser()
    try:
        return _summarize(p, batch, dims)
    except OSError as e:
        shown = str(e.filename or p)
        shown = shown if len(shown) <= 200 else shown[:200] + "…"
        raise HeaderError(f"{shown}: cannot read ({e.strerror or type(e).__name__})") from None


def _summarize(p: Path, batch: int, dims: Mapping[str, int] | None) -> WeightsSummary | OnnxSummary:
    from memlens.sources import gguf_header, safetensors_header

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
