"""Property-based tests of the file readers: random bytes and random JSON fed to every header
and config reader end in a memlens error or a summary, never another exception, never a file
opened outside the model's folder, never the outside file's bytes in a message, in bounded
time and memory."""

from __future__ import annotations

import json
import struct
import sys
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from memlens._errors import MemlensError  # noqa: E402
from memlens.sources import checkpoint, gguf_header, huggingface, safetensors_header  # noqa: E402

#: What the outside file holds: it must never be opened, nor appear in an error.
SECRET = b"root:x:0:0:SECRET-OUTSIDE-THE-FOLDER"
#: Python memory a reader may allocate for a file under 1 KiB: bounded memory.
MAX_MEMORY = 16 * 2**20
FUZZ = settings(
    max_examples=40,
    deadline=3000,  # ms per example: bounded time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

_opened: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes | Path):
        _opened.append(str(args[0] if not isinstance(args[0], bytes) else args[0].decode()))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only inside _watch


@contextmanager
def _watch() -> Iterator[list[str]]:
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@contextmanager
def _model_folder() -> Iterator[Path]:
    """A fresh folder ``root/model`` beside ``root/outside.safetensors`` (the secret)."""
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "model"
        folder.mkdir()
        (Path(root) / "outside.safetensors").write_bytes(SECRET)
        yield folder


def _check(folder: Path, read: Callable[[], Any]) -> None:
    """``read()`` returns or raises a MemlensError; opens nothing outside ``folder``; no
    message carries the secret."""
    tracemalloc.start()
    try:
        with _watch() as opened:
            try:
                read()
            except MemlensError as e:
                assert SECRET.decode() not in str(e)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_MEMORY, f"a reader of a file under 1 KiB allocated {peak} bytes"
    inside = str(folder.resolve())
    outside = [p for p in opened if str(Path(p).resolve()).startswith(str(folder.parent))]
    assert all(str(Path(p).resolve()).startswith(inside) for p in outside), opened


def _header(payload: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(payload)) + payload + data


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)
DTYPES = st.sampled_from([*safetensors_header.DTYPE_BITS, "F128", "", "f32"])
ENTRY = st.fixed_dictionaries(
    {
        "dtype": DTYPES,
        "shape": st.lists(st.integers(-2, 70), max_size=3),
        "data_offsets": st.lists(st.integers(-5, 300), min_size=0, max_size=3),
    }
)
SHARD_NAMES = st.sampled_from(
    [
        "model-1.safetensors",
        "../outside.safetensors",
        "../../outside.safetensors",
        "/etc/passwd",
        "",
        "a\x00b",
        "sub/../../outside.safetensors",
        "link.safetensors",
        "x" * 300,
    ]
)


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Import what the readers import lazily (their imports open files outside the folder)."""
    pytest.importorskip("onnx")
    with _model_folder() as folder:
        for name, raw in (("a.onnx", b"\x08\x07"), ("a.gguf", b"GGUF"), ("a.bin", b"PK")):
            (folder / name).write_bytes(raw)
            with pytest.raises(MemlensError):
                checkpoint.summarize(folder / name)


@FUZZ
@given(
    raw=st.binary(max_size=512),
    suffix=st.sampled_from([".safetensors", ".gguf", ".onnx", ".weights"]),
)
def test_random_bytes_in_every_reader(raw: bytes, suffix: str) -> None:
    with _model_folder() as folder:
        path = folder / f"m{suffix}"
        path.write_bytes(raw)
        _check(folder, lambda: checkpoint.summarize(path))


@FUZZ
@given(value=JSON, data=st.binary(max_size=64))
def test_random_json_as_a_safetensors_header(value: Any, data: bytes) -> None:
    with _model_folder() as folder:
        path = folder / "m.safetensors"
        path.write_bytes(_header(json.dumps(value).encode(), data))
        _check(folder, lambda: safetensors_header.read_file(path))


@FUZZ
@given(entries=st.dictionaries(st.text(max_size=5), ENTRY, max_size=4), pad=st.integers(0, 300))
def test_random_tensor_entries(entries: dict[str, Any], pad: int) -> None:
    with _model_folder() as folder:
        path = folder / "m.safetensors"
        path.write_bytes(_header(json.dumps(entries).encode(), bytes(pad)))
        _check(folder, lambda: safetensors_header.read_file(path))


@FUZZ
@given(weight_map=st.dictionaries(st.text(max_size=4), SHARD_NAMES, max_size=4), extra=JSON)
def test_random_index_never_leaves_the_folder(weight_map: dict[str, str], extra: Any) -> None:
    with _model_folder() as folder:
        shard = folder / "model-1.safetensors"
        shard.write_bytes(
            _header(b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', bytes(4))
        )
        (folder / "link.safetensors").symlink_to(folder.parent / "outside.safetensors")
        index = folder / "model.safetensors.index.json"
        index.write_text(json.dumps({"weight_map": weight_map, "metadata": extra}))
        _check(folder, lambda: safetensors_header.read_index(index))
        _check(folder, lambda: checkpoint.summarize(folder))


@FUZZ
@given(value=JSON)
def test_random_json_as_a_config(value: Any) -> None:
    with _model_folder() as folder:
        path = folder / "config.json"
        path.write_text(json.dumps(value))

        def read() -> None:
            huggingface.check_config(huggingface.read_config(path), str(path))

        _check(folder, read)


@FUZZ
@given(depth=st.integers(30, 5000), kind=st.sampled_from("[{"))
def test_deep_nesting_is_refused_quickly(depth: int, kind: str) -> None:
    opening, closing = (b"[", b"]") if kind == "[" else (b'{"a":', b"}")
    payload = opening * depth + (b"1" if kind == "{" else b"") + closing * depth
    with _model_folder() as folder:
        path = folder / "m.safetensors"
        path.write_bytes(_header(payload))
        with pytest.raises(MemlensError):
            safetensors_header.read_file(path)


@FUZZ
@given(raw=st.binary(max_size=256))
def test_random_gguf_after_the_magic(raw: bytes) -> None:
    with _model_folder() as folder:
        path = folder / "m.gguf"
        path.write_bytes(gguf_header.MAGIC + raw)
        _check(folder, lambda: gguf_header.read_file(path))
