"""safetensors headers: tensor names, dtypes, shapes and byte spans, never the data.

A ``.safetensors`` file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON,
then the tensor data. Each JSON entry gives ``dtype``, ``shape`` and ``data_offsets``
(``[begin, end)`` relative to the data section). The header is checked as strictly as the
``safetensors`` library itself checks it (spans contiguous, covering the data exactly), and
a header that lies is refused before anything it claims is allocated.

Sharded checkpoints are an index (``*.safetensors.index.json``, whose ``weight_map`` maps
each tensor to its shard file) or a folder of ``*.safetensors`` files. A shard must resolve
inside the model's folder (:func:`~memlens.sources.weights.contained`: no absolute names, no
``..``, no symlink out), so an index cannot make memlens open ``/etc/shadow``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from memlens._errors import HeaderError
from memlens.sources.weights import (
    PICKLE_REFUSAL,
    TensorInfo,
    WeightsSummary,
    contained,
    load_json,
    merge_tensors,
)

#: Largest header accepted, the ``safetensors`` library's own ``MAX_HEADER_SIZE``
#: (https://github.com/huggingface/safetensors/blob/main/safetensors/src/tensor.rs).
MAX_HEADER_BYTES = 100_000_000

#: Bits per element of each safetensors dtype (``Dtype`` in safetensors/src/tensor.rs).
DTYPE_BITS: dict[str, int] = {
    "F64": 64, "I64": 64, "U64": 64, "C64": 64,
    "F32": 32, "I32": 32, "U32": 32,
    "F16": 16, "BF16": 16, "I16": 16, "U16": 16,
    "F8_E4M3": 8, "F8_E5M2": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8,
    "I8": 8, "U8": 8, "BOOL": 8,
    "F6_E2M3": 6, "F6_E3M2": 6,
    "F4": 4,
}  # fmt: skip


def read_file(path: str | Path) -> WeightsSummary:
    """Summarise one ``.safetensors`` file from its header."""
    p = Path(path)
    tensors, metadata = read_header(p)
    return WeightsSummary("safetensors", (str(p),), tensors, metadata)


def read_index(path: str | Path) -> WeightsSummary:
    """Summarise a sharded checkpoint from its index and every shard's header.

    The index's ``weight_map`` must name exactly the tensors each shard holds.
    """
    p = Path(path)
    if p.stat().st_size > MAX_HEADER_BYTES:
        raise HeaderError(f"{p}: {p.stat().st_size} bytes is too large for an index file")
    index = load_json(p.read_bytes(), str(p))
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise HeaderError(f"{p}: an index needs a 'weight_map' object of tensor name -> shard file")
    expected: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        expected.setdefault(shard, set()).add(tensor)
    groups: list[tuple[str, tuple[TensorInfo, ...]]] = []
    metadata: dict[str, Any] = {}
    shards = {s: contained(p.parent, s, f"{p}: the weight_map's shard") for s in expected}
    missing = sorted(s for s, path in shards.items() if not path.is_file())
    if missing:
        shown = [m[:100] for m in missing[:5]]
        more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
        raise HeaderError(f"{p}: shard files named in the weight_map are missing: {shown}{more}")
    for shard, names in sorted(expected.items()):
        shard_path = shards[shard]
        tensors, shard_meta = read_header(shard_path)
        held = {t.name for t in tensors}
        if held != names:
            raise HeaderError(f"{p}: weight_map disagrees with {shard}: {_diff(names, held)}")
        groups.append((str(shard_path), tensors))
        for k, v in shard_meta.items():
            metadata.setdefault(k, v)
    index_meta = index.get("metadata") or {}
    if not isinstance(index_meta, dict):
        raise HeaderError(f"{p}: 'metadata' must be an object")
    metadata.update(index_meta)
    tensors = merge_tensors(groups)
    stored = sum(t.nbytes for t in tensors)
    total = index_meta.get("total_size")
    notes: tuple[str, ...] = ()
    if isinstance(total, int) and total != stored:
        notes = (f"index total_size {total} differs from the {stored} bytes the shards hold",)
    paths = (str(p), *(g[0] for g in groups))
    return WeightsSummary("safetensors", paths, tensors, metadata, notes)


def read_folder(path: str | Path) -> WeightsSummary:
    """Summarise a folder: its one ``*.safetensors.index.json``, else all its ``*.safetensors``."""
    p = Path(path)
    indexes = sorted(p.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise HeaderError(
            f"{p}: several indexes ({', '.join(i.name for i in indexes)}); pass one of them"
        )
    if indexes:
        return read_index(indexes[0])
    files = sorted(
        contained(p, f.name, f"{p}: the file") for f in p.glob("*.safetensors") if f.is_file()
    )
    if not files:
        others = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".gguf"))
        hint = f"; found {', '.join(others)}" if others else ""
        if any(not o.endswith(".gguf") for o in others):
            hint += f" ({PICKLE_REFUSAL})"
        raise HeaderError(f"{p}: no *.safetensors files or safetensors index in this folder{hint}")
    groups, metadata = [], {}
    for f in files:
        tensors, meta = read_header(f)
        groups.append((str(f), tensors))
        for k, v in meta.items():
            metadata.setdefault(k, v)
    return WeightsSummary(
        "safetensors", tuple(str(f) for f in files), merge_tensors(groups), metadata
    )


def read_header(path: Path) -> tuple[tuple[TensorInfo, ...], dict[str, Any]]:
    """Validated tensors (in data order) and ``__metadata__`` of one file."""
    size = path.stat().st_size
    if size < 8:
        raise HeaderError(f"{path}: {size} bytes is too short for a safetensors header")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise HeaderError(
                f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte cap "
                "(corrupt, or not a safetensors file)"
            )
        if 8 + n > size:
            raise HeaderError(
                f"{path}: header length {n} runs past the end of the file ({size} bytes)"
            )
        header = load_json(f.read(n), str(path))
    if not isinstance(header, dict):
        raise HeaderError(f"{path}: header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise HeaderError(f"{path}: __metadata__ must be an object of strings")
    data_size = size - 8 - n
    spans = sorted(
        (_entry(path, name, entry, data_size) for name, entry in header.items()),
        key=lambda s: (s[0], s[1]),
    )
    cursor, previous = 0, None
    for begin, end, info in spans:
        if begin < cursor:
            raise HeaderError(f"{path}: tensors {previous!r} and {info.name!r} overlap")
        if begin > cursor:
            raise HeaderError(
                f"{path}: {begin - cursor} bytes before {info.name!r} belong to no tensor"
            )
        cursor, previous = end, info.name
    if cursor != data_size:
        raise HeaderError(
            f"{path}: tensors cover {cursor} bytes but the data section holds {data_size}"
        )
    return tuple(s[2] for s in spans), metadata


def _entry(path: Path, name: str, entry: Any, data_size: int) -> tuple[int, int, TensorInfo]:
    """Check one header entry; return its ``(begin, end, info)``."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise HeaderError(f"{where} needs 'dtype', 'shape' and 'data_offsets'")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise HeaderError(f"{where} has unknown dtype {dtype!r}; known: {', '.join(DTYPE_BITS)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise HeaderError(f"{where} has invalid shape {shape!r}: need non-negative integers")
    if (
        not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets))
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise HeaderError(f"{where} has invalid data_offsets {offsets!r}: need [begin, end]")
    begin, end = offsets
    if end > data_size:
        raise HeaderError(
            f"{where}: data_offsets {offsets} run past the end of the file "
            f"(data section is {data_size} bytes)"
        )
    numel = 1
    for d in shape:
        numel *= d
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise HeaderError(
            f"{where}: shape {shape} of {dtype} needs {bits / 8:g} bytes "
            f"but data_offsets span {end - begin}"
        )
    return begin, end, TensorInfo(name, tuple(shape), dtype, end - begin)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _diff(expected: set[str], held: set[str]) -> str:
    parts = []
    for label, names in (
        ("missing from the shard", expected - held),
        ("not in the weight_map", held - expected),
    ):
        if names:
            shown = sorted(names)[:3]
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            parts.append(f"{label}: {', '.join(shown)}{more}")
    return "; ".join(parts)
