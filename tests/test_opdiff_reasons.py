"""The op-level differential benchmark's table of known causes (benchmarks/opdiff.py
``REASONS``): a reported call a reason matches is listed under "Remaining, with reasons", one
it does not match stays in the main table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from memlens.measurement.opdiff import Call, Calls, TensorMeta

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import opdiff  # noqa: E402

aten = torch.ops.aten


def _meta(*shape: int) -> TensorMeta:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return TensorMeta(shape, tuple(reversed(strides)), torch.float32)


def _conv_backward(groups: int) -> Call:
    """A 3x3 convolution's backward (padding 1) on 2x2 maps of 32 channels."""
    x, w, g = _meta(2, 32, 2, 2), _meta(32, 32 // groups, 3, 3), _meta(2, 32, 2, 2)
    args = (g, x, w, (0,), (1, 1), (1, 1), (1, 1), False, (0, 0), groups, (True, True, False))
    call = Call(aten.convolution_backward.default, args, (), False, 0, 0)
    call.count, call.workloads = 1, {"sample train"}
    call.real_peak, call.real_kept = 1 << 20, 0  # 1 MiB more than the engine's 0: reported
    return call


def test_a_reported_call_with_a_reason_is_listed_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    depthwise = opdiff.Reason(
        "convolution_backward.default", lambda c: c.args[9] > 1, "a depthwise kernel (Dw.cpp)"
    )
    monkeypatch.setattr(opdiff, "REASONS", [depthwise])
    calls = Calls()
    calls.calls = {(0,): _conv_backward(32), (1,): _conv_backward(1)}
    assert [opdiff.reason(c) for c in calls.calls.values()] == ["a depthwise kernel (Dw.cpp)", None]
    text = opdiff.markdown(calls, [], "python benchmarks/opdiff.py", 60.0)
    assert "- reported: 2; without a known cause: 1, with one (Remaining, with reasons): 1" in text
    assert "- exact to the byte (peak and kept): 0; largest difference under the floor: 0 B" in text
    main, remaining = text.split("## Remaining, with reasons")
    assert "float32[32, 32, 3, 3]" in main and "float32[32, 32, 3, 3]" not in remaining
    assert "float32[32, 1, 3, 3]" in remaining and "a depthwise kernel (Dw.cpp)." in remaining


def test_every_reason_names_an_op_and_a_source() -> None:
    for r in opdiff.REASONS:
        assert r.op.count(".") == 1 and (".cpp" in r.why or ".py" in r.why)
