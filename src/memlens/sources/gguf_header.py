"""GGUF headers: metadata and tensor infos, read with ``struct``, never the tensor data.

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic ``GGUF``,
``u32`` version, ``u64`` tensor count, ``u64`` metadata count, the metadata key/value pairs,
one info per tensor (name, ``u32`` rank, ``u64`` dims innermost first, ``u32`` ggml type,
``u64`` offset into the data section), padding to ``general.alignment``, then the data.
Every count and length is checked against the bytes left in the file before it is used,
so a lying header is refused without allocating what it claims. Versions 2 and 3 are read,
little- or big-endian; version 1 (2023) is refused.

A tensor of ggml type ``t`` with ``n`` elements stores ``n / block(t) * type_size(t)`` bytes.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any, BinaryIO

from memlens._errors import HeaderError
from memlens.sources.weights import TensorInfo, WeightsSummary

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
MAX_DIMS = 4  # GGML_MAX_DIMS in ggml.h
MAX_ARRAY_NESTING = 4
#: Numeric arrays up to this length are kept in the metadata (per-layer head counts);
#: longer ones, and every string array (tokenizer vocabularies), are skipped unread.
MAX_KEPT_ARRAY = 4096

#: ggml type id -> (name, block size in elements, bytes per block), from ``type_traits`` in
#: ggml/src/ggml.c. Used as is when the ``gguf`` package is absent; its table extends it.
BUILTIN_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}  # fmt: skip

# GGUF metadata value types -> struct format (8 = string and 9 = array are handled apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


@functools.cache
def ggml_types() -> dict[int, tuple[str, int, int]]:
    """The built-in ggml type table, extended by the ``gguf`` package's when it is installed."""
    table = dict(BUILTIN_TYPES)
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:
        return table
    for t, (block, type_size) in GGML_QUANT_SIZES.items():
        table[int(t)] = (t.name, block, type_size)
    return table


def read_file(path: str | Path) -> WeightsSummary:
    """Summarise a ``.gguf`` file from its header.

    Shapes are given in PyTorch order (outermost first), the reverse of ggml's ``ne``.
    ``metadata`` holds ``general.*``, ``split.*`` and the architecture's own keys
    (``llama.block_count``, ``llama.attention.head_count``, ...).
    """
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        r = _Reader(f, p, size)
        metadata, tensors, offsets = r.header()
        header_end = f.tell()
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise HeaderError(f"{p}: general.alignment {alignment!r} is not a power of two")
    data_start = -(-header_end // alignment) * alignment
    _check_layout(p, tensors, offsets, size - data_start, alignment)
    arch = metadata.get("general.architecture")
    prefixes = ("general.", "split.") + ((f"{arch}.",) if isinstance(arch, str) else ())
    kept = {k: v for k, v in metadata.items() if k.startswith(prefixes)}
    notes: tuple[str, ...] = ()
    if isinstance(kept.get("split.count"), int) and kept["split.count"] > 1:
        notes = (
            f"file {kept.get('split.no', 0) + 1} of {kept['split.count']} of a split model; "
            "only this file's tensors are counted",
        )
    return WeightsSummary("gguf", (str(p),), tensors, kept, notes)


class _Reader:
    """Sequential reads that never go past the end of the file."""

    def __init__(self, f: BinaryIO, path: Path, size: int) -> None:
        self.f, self.path, self.size, self.order = f, path, size, "<"

    def error(self, problem: str) -> HeaderError:
        return HeaderError(f"{self.path}: {problem} (at byte {self.f.tell()})")

    def room(self, n: int, what: str) -> None:
        if n > self.size - self.f.tell():
            raise self.error(f"{what} of {n} bytes runs past the end ({self.size} bytes)")

    def take(self, n: int, what: str) -> bytes:
        self.room(n, what)
        return self.f.read(n)

    def skip(self, n: int, what: str) -> None:
        self.room(n, what)
        self.f.seek(n, 1)

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("Q", f"{what} length")
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} is not UTF-8 ({e})") from e

    def value(self, vtype: int, what: str, *, keep: bool, depth: int = 0) -> Any:
        """One metadata value; ``None`` (and nothing allocated) when not kept."""
        if vtype in _SCALARS:
            fmt = _SCALARS[vtype]
            if keep:
                return self.scalar(fmt, what)
            self.skip(struct.calcsize(fmt), what)
            return None
        if vtype == _STRING:
            if keep:
                return self.string(what)
            self.skip(self.scalar("Q", f"{what} length"), what)
            return None
        if vtype != _ARRAY:
            raise self.error(f"{what} has unknown value type {vtype}")
        if depth >= MAX_ARRAY_NESTING:
            raise self.error(f"{what} nests arrays deeper than {MAX_ARRAY_NESTING}")
        etype, count = self.scalar("I", f"{what} element type"), self.scalar("Q", f"{what} count")
        if etype in _SCALARS:
            width = struct.calcsize(_SCALARS[etype])
            if not keep or count > MAX_KEPT_ARRAY:
                self.skip(count * width, what)
                return None
            return list(
                struct.unpack(
                    f"{self.order}{count}{_SCALARS[etype]}", self.take(count * width, what)
                )
            )
        if count > self.size - self.f.tell():  # every element takes at least one byte
            raise self.error(f"{what} claims {count} elements, more than the bytes left")
        for i in range(count):
            self.value(etype, f"{what}[{i}]", keep=False, depth=depth + 1)
        return None

    def header(self) -> tuple[dict[str, Any], tuple[TensorInfo, ...], list[int]]:
        """Metadata (kept values only), tensor infos and their data offsets."""
        magic = self.take(4, "magic")
        if magic != MAGIC:
            raise self.error(f"not a GGUF file (magic {magic!r}, expected {MAGIC!r})")
        raw_version = self.take(4, "version")
        version = struct.unpack("<I", raw_version)[0]
        if version & 0xFFFF == 0:  # written for the other byte order
            self.order, version = ">", struct.unpack(">I", raw_version)[0]
        if version not in (2, 3):
            raise self.error(f"GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = self.scalar("Q", "tensor count"), self.scalar("Q", "metadata count")
        if n_tensors > MAX_TENSORS:
            raise self.error(f"tensor count {n_tensors} exceeds {MAX_TENSORS}")
        if n_kv > MAX_KV:
            raise self.error(f"metadata count {n_kv} exceeds {MAX_KV}")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self.string("metadata key")
            if key in metadata:
                raise self.error(f"metadata key {key!r} appears twice")
            vtype = self.scalar("I", f"type of {key!r}")
            metadata[key] = self.value(vtype, repr(key), keep=not key.startswith("tokenizer."))
        metadata = {k: v for k, v in metadata.items() if v is not None}
        tensors, offsets, names = [], [], set()
        types = ggml_types()
        for _ in range(n_tensors):
            name = self.string("tensor name")
            if name in names:
                raise self.error(f"tensor {name!r} appears twice")
            names.add(name)
            n_dims = self.scalar("I", f"rank of {name!r}")
            if n_dims > MAX_DIMS:
                raise self.error(f"tensor {name!r} has {n_dims} dims, more than ggml's {MAX_DIMS}")
            ne = [self.scalar("Q", f"dims of {name!r}") for _ in range(n_dims)]
            ggml_type = self.scalar("I", f"type of {name!r}")
            offsets.append(self.scalar("Q", f"offset of {name!r}"))
            if ggml_type not in types:
                raise self.error(f"tensor {name!r} has unknown ggml type {ggml_type}")
            type_name, block, type_size = types[ggml_type]
            if (ne[0] if ne else 1) % block:
                raise self.error(
                    f"tensor {name!r}: row length {ne[0] if ne else 1} is not a multiple "
                    f"of {type_name}'s block of {block}"
                )
            numel = 1
            for d in ne:
                numel *= d
            tensors.append(
                TensorInfo(name, tuple(reversed(ne)), type_name, numel // block * type_size)
            )
        return metadata, tuple(tensors), offsets


def _check_layout(
    path: Path, tensors: tuple[TensorInfo, ...], offsets: list[int], data_size: int, align: int
) -> None:
    """Each tensor aligned, inside the file, and overlapping no other."""
    end, previous = 0, None
    for offset, t in sorted(zip(offsets, tensors, strict=True), key=lambda x: x[0]):
        if offset % align:
            raise HeaderError(f"{path}: tensor {t.name!r} offset {offset} is not {align}-aligned")
        if offset + t.nbytes > data_size:
            raise HeaderError(
                f"{path}: tensor {t.name!r} ({t.nbytes} bytes at offset {offset}) runs past "
                f"the end of the file (data section is {max(data_size, 0)} bytes)"
            )
        if offset < end:
            raise HeaderError(f"{path}: tensors {previous!r} and {t.name!r} overlap")
        end, previous = offset + t.nbytes, t.name
