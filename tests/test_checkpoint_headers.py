"""safetensors and GGUF headers, pickle refusal and the checkpoint front door."""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from memlens._errors import HeaderError
from memlens.report.json import to_json
from memlens.sources import gguf_header
from memlens.sources.checkpoint import is_checkpoint_path, summarize

safetensors_torch = pytest.importorskip("safetensors.torch")
gguf = pytest.importorskip("gguf")

SF_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int8: "I8",
    torch.bool: "BOOL",
    torch.int64: "I64",
}


def _tensors() -> dict[str, torch.Tensor]:
    return {
        "embed.weight": torch.zeros(10, 6, dtype=torch.bfloat16),
        "fc.weight": torch.zeros(5, 4),
        "fc.bias": torch.zeros(5, dtype=torch.float16),
        "q.weight": torch.zeros(3, 7, dtype=torch.int8),
        "mask": torch.zeros(2, 3, dtype=torch.bool),
        "scale": torch.tensor(2.0),  # 0-dim
        "empty": torch.zeros(0, 4),
        "steps": torch.zeros(3, dtype=torch.int64),
    }


def _expected(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for t in tensors.values():
        row = out.setdefault(SF_NAMES[t.dtype], {"tensors": 0, "params": 0, "bytes": 0})
        row["tensors"] += 1
        row["params"] += t.numel()
        row["bytes"] += t.numel() * t.element_size()
    return out


def _assert_matches(summary, tensors: dict[str, torch.Tensor]) -> None:
    assert summary.format == "safetensors"
    assert summary.n_tensors == len(tensors)
    assert summary.n_params == sum(t.numel() for t in tensors.values())
    assert summary.weight_bytes == sum(t.numel() * t.element_size() for t in tensors.values())
    assert {k: dataclasses.asdict(v) for k, v in summary.by_dtype.items()} == _expected(tensors)
    by_name = {t.name: t for t in summary.tensors}
    for name, t in tensors.items():
        assert by_name[name].shape == tuple(t.shape)
        assert by_name[name].dtype == SF_NAMES[t.dtype]


# --- safetensors -------------------------------------------------------------------------


def test_safetensors_file_exact(tmp_path: Path) -> None:
    tensors = _tensors()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"format": "pt", "note": "x"})
    s = summarize(path)
    _assert_matches(s, tensors)
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert s.weight_bytes == path.stat().st_size - 8 - header_len
    assert s.largest is not None
    assert (s.largest.name, s.largest.shape, s.largest.dtype, s.largest.nbytes) == (
        "embed.weight",
        (10, 6),
        "BF16",
        120,
    )
    assert s.metadata == {"format": "pt", "note": "x"}
    d = json.loads(json.dumps(to_json(s, detail=True)))
    assert d["weight_bytes"] == s.weight_bytes and len(d["tensors"]) == len(tensors)
    assert "tensors" not in to_json(s)


def _write_shards(folder: Path, *, index: bool = True) -> dict[str, torch.Tensor]:
    tensors = _tensors()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[:3],
        "model-00002-of-00002.safetensors": names[3:],
    }
    for shard, keys in shards.items():
        safetensors_torch.save_file(
            {k: tensors[k] for k in keys}, str(folder / shard), metadata={"format": "pt"}
        )
    if index:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map = {k: shard for shard, keys in shards.items() for k in keys}
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
        )
    return tensors


def test_sharded_index_and_folder(tmp_path: Path) -> None:
    tensors = _write_shards(tmp_path)
    via_index = summarize(tmp_path / "model.safetensors.index.json")
    via_folder = summarize(tmp_path)
    for s in (via_index, via_folder):
        _assert_matches(s, tensors)
        assert len(s.paths) == 3 and s.notes == ()
        assert s.metadata["total_size"] == s.weight_bytes


def test_folder_without_index(tmp_path: Path) -> None:
    tensors = _write_shards(tmp_path, index=False)
    s = summarize(tmp_path)
    _assert_matches(s, tensors)
    assert len(s.paths) == 2


def test_index_total_size_mismatch_is_a_note(tmp_path: Path) -> None:
    _write_shards(tmp_path)
    index = tmp_path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["metadata"]["total_size"] += 1
    index.write_text(json.dumps(data))
    assert "differs" in summarize(index).notes[0]


def test_index_disagreeing_with_shards(tmp_path: Path) -> None:
    _write_shards(tmp_path)
    index = tmp_path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["mask"] = "model-00001-of-00002.safetensors"  # it is in shard 2
    index.write_text(json.dumps(data))
    with pytest.raises(HeaderError, match=r"weight_map disagrees.*missing from the shard: mask"):
        summarize(index)
    data["weight_map"]["mask"] = "model-00003-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(HeaderError, match=r"missing: \['model-00003-of-00002.safetensors'\]"):
        summarize(tmp_path)


def test_tensor_in_two_shards_refused(tmp_path: Path) -> None:
    safetensors_torch.save_file({"w": torch.zeros(2)}, str(tmp_path / "a.safetensors"))
    safetensors_torch.save_file({"w": torch.zeros(3)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(HeaderError, match="'w' is stored twice"):
        summarize(tmp_path)


def _craft(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _f32(shape: list[int], begin: int, end: int, dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CORRUPT_SAFETENSORS = {
    "length past EOF": ({"w": _f32([2], 0, 8)}, bytes(8), 10_000, "runs past the end of the file"),
    "absurd length": ({"w": _f32([2], 0, 8)}, bytes(8), 2**60, "exceeds the 100000000-byte cap"),
    "bad JSON": (b'{"w": {"dtype": ', bytes(8), None, "not valid JSON"),
    "not an object": (b"[1, 2]", b"", None, "must be a JSON object"),
    "offsets past EOF": ({"w": _f32([2**40], 0, 2**42)}, bytes(8), None, "run past the end"),
    "shape/bytes mismatch": ({"w": _f32([3], 0, 8)}, bytes(8), None, r"needs 12 bytes.*span 8"),
    "unknown dtype": ({"w": _f32([2], 0, 8, "F13")}, bytes(8), None, "unknown dtype 'F13'"),
    "negative dim": ({"w": _f32([-2], 0, 8)}, bytes(8), None, "invalid shape"),
    "reversed offsets": ({"w": _f32([2], 8, 0)}, bytes(8), None, "invalid data_offsets"),
    "overlap": ({"a": _f32([2], 0, 8), "b": _f32([2], 4, 12)}, bytes(12), None, "overlap"),
    "gap": ({"a": _f32([1], 4, 8)}, bytes(8), None, "4 bytes before 'a' belong to no tensor"),
    "trailing data": ({"a": _f32([1], 0, 4)}, bytes(8), None, "cover 4 bytes but the data"),
    "duplicate key": (b'{"a": {}, "a": {}}', b"", None, "'a' appears twice"),
    "missing field": ({"a": {"dtype": "F32"}}, b"", None, "needs 'dtype', 'shape'"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_SAFETENSORS))
def test_lying_safetensors_header_refused_without_allocating(tmp_path: Path, case: str) -> None:
    header, data, length, message = CORRUPT_SAFETENSORS[case]
    path = _craft(tmp_path / "bad.safetensors", header, data, length)
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match=message) as info:
            summarize(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 2 * 2**20


def test_short_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(HeaderError, match="too short"):
        summarize(path)


# --- pickle refusal and dispatch -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".weights"])
def test_pickle_checkpoints_are_never_unpickled(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save({"w": torch.zeros(2)}, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(HeaderError, match=r"pickle-based checkpoints are not read \(they can run"):
        summarize(path)


def test_unknown_suffix_dispatched_by_magic(tmp_path: Path) -> None:
    tensors = {"w": torch.zeros(3, 2)}
    path = tmp_path / "weights.dat"
    safetensors_torch.save_file(tensors, str(path))
    assert summarize(path).weight_bytes == 24
    path.write_bytes(b"hello, world")
    with pytest.raises(HeaderError, match="unrecognised checkpoint format"):
        summarize(path)
    with pytest.raises(HeaderError, match="no such file"):
        summarize(tmp_path / "absent.safetensors")


def test_folder_of_pickles_explains(tmp_path: Path) -> None:
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(HeaderError, match=r"found pytorch_model\.bin \(pickle-based"):
        summarize(tmp_path)


def test_is_checkpoint_path(tmp_path: Path) -> None:
    _write_shards(tmp_path, index=False)
    for text in [
        "m.safetensors",
        "a/model.safetensors.index.json",
        "m.gguf",
        "m.onnx",
        "pytorch_model.bin",
        "x.PT",
        "y.ckpt",
        str(tmp_path),
    ]:
        assert is_checkpoint_path(text), text
    for text in [
        "resnet50",
        "meta-llama/Meta-Llama-3-8B",
        "config.json",
        "pkg.mod:fn",
        "models.py:build",
        str(tmp_path / "nothing"),
    ]:
        assert not is_checkpoint_path(text), text


# --- GGUF ----------------------------------------------------------------------------------


def _write_gguf(path: Path) -> None:
    q = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_token_list([f"tok{i}" for i in range(100)])
    w.add_tensor("f32", np.zeros((4, 64), np.float32))
    w.add_tensor("f16", np.zeros((3, 32), np.float16))
    w.add_tensor("q8", np.zeros((2, 2 * 34), np.uint8), raw_dtype=q.Q8_0)  # 2 rows of 64
    w.add_tensor("q4", np.zeros((3, 4 * 18), np.uint8), raw_dtype=q.Q4_0)  # 3 rows of 128
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_exact(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path)
    s = summarize(path)
    # Q8_0: 34 bytes per 32 elements; Q4_0: 18 bytes per 32 (ggml type_traits)
    expected = {
        "F32": {"tensors": 1, "params": 256, "bytes": 256 * 4},
        "F16": {"tensors": 1, "params": 96, "bytes": 96 * 2},
        "Q8_0": {"tensors": 1, "params": 128, "bytes": 128 // 32 * 34},
        "Q4_0": {"tensors": 1, "params": 384, "bytes": 384 // 32 * 18},
    }
    assert s.format == "gguf"
    assert {k: dataclasses.asdict(v) for k, v in s.by_dtype.items()} == expected
    assert s.weight_bytes == sum(v["bytes"] for v in expected.values())
    assert {t.name: t.shape for t in s.tensors} == {
        "f32": (4, 64),
        "f16": (3, 32),
        "q8": (2, 64),
        "q4": (3, 128),
    }
    assert s.metadata == {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.context_length": 128,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
    }
    reader = gguf.GGUFReader(str(path))  # the package's own reading agrees
    assert {t.name: int(t.n_bytes) for t in reader.tensors} == {t.name: t.nbytes for t in s.tensors}


def test_builtin_ggml_table_matches_gguf_package() -> None:
    for t, (block, size) in gguf.constants.GGML_QUANT_SIZES.items():
        if int(t) in gguf_header.BUILTIN_TYPES:
            assert gguf_header.BUILTIN_TYPES[int(t)] == (t.name, block, size)


def _gguf_bytes(
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    kv: bytes = b"",
    n_kv: int = 0,
    tensors: list[tuple[bytes, list[int], int, int]] | None = None,
    data: int = 64,
) -> bytes:
    """A GGUF file written by hand: ``tensors`` are (name, ne, ggml type, offset)."""
    tensors = [(b"w", [32], 0, 0)] if tensors is None else tensors
    out = (
        magic
        + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors, n_kv)
        + kv
    )
    for name, ne, ggml_type, offset in tensors:
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(ne))
        out += struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", ggml_type, offset)
    return out + bytes(-len(out) % 32) + bytes(data)


def _kv_string(key: bytes, value: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(value)) + value


def test_handmade_gguf_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    kv = _kv_string(b"general.architecture", b"toy") + _kv_string(b"toy.extra", b"yes")
    path.write_bytes(
        _gguf_bytes(
            kv=kv, n_kv=2, tensors=[(b"a", [8, 2], 0, 0), (b"b", [32], 8, 64)], data=64 + 34
        )
    )
    s = summarize(path)
    assert {t.name: (t.shape, t.nbytes) for t in s.tensors} == {"a": ((2, 8), 64), "b": ((32,), 34)}
    assert s.metadata == {"general.architecture": "toy", "toy.extra": "yes"}


CORRUPT_GGUF = {
    "bad magic": (dict(magic=b"GGML"), "not a GGUF file"),
    "version 1": (dict(version=1), "GGUF version 1 is not supported"),
    "absurd tensor count": (dict(n_tensors=2**40), "tensor count 1099511627776 exceeds"),
    "absurd kv count": (dict(n_kv=2**50), "metadata count .* exceeds"),
    "huge key length": (dict(kv=struct.pack("<Q", 2**62), n_kv=1), "runs past the end"),
    "huge string value": (
        dict(kv=struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 2**61), n_kv=1),
        "runs past the end",
    ),
    "huge array": (
        dict(kv=struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 2**40), n_kv=1),
        "claims 1099511627776 elements",
    ),
    "bad value type": (
        dict(kv=struct.pack("<Q", 1) + b"k" + struct.pack("<I", 77), n_kv=1),
        "unknown value type 77",
    ),
    "five dims": (dict(tensors=[(b"w", [1, 1, 1, 1, 32], 0, 0)]), "5 dims"),
    "unknown ggml type": (dict(tensors=[(b"w", [32], 99, 0)]), "unknown ggml type 99"),
    "partial block": (dict(tensors=[(b"w", [33], 8, 0)]), "row length 33 is not a multiple"),
    "offset past EOF": (dict(tensors=[(b"w", [32], 0, 2**40)]), "runs past the end of the file"),
    "huge dims": (dict(tensors=[(b"w", [2**40, 2**40], 0, 0)]), "runs past the end of the file"),
    "unaligned": (dict(tensors=[(b"w", [4], 0, 4)]), "not 32-aligned"),
    "overlap": (dict(tensors=[(b"a", [16], 0, 0), (b"b", [16], 0, 32)], data=128), "overlap"),
    "duplicate tensor": (dict(tensors=[(b"a", [8], 0, 0), (b"a", [8], 0, 32)]), "appears twice"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_GGUF))
def test_lying_gguf_header_refused_without_allocating(tmp_path: Path, case: str) -> None:
    kwargs, message = CORRUPT_GGUF[case]
    path = tmp_path / "bad.gguf"
    path.write_bytes(_gguf_bytes(**kwargs))
    tracemalloc.start()
    try:
        with pytest.raises(HeaderError, match=message) as info:
            summarize(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 2 * 2**20


def test_truncated_gguf_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path)
    raw = path.read_bytes()
    for cut in (3, 20, 100, 400):
        path.write_bytes(raw[:cut])
        with pytest.raises(HeaderError):
            summarize(path)
