"""Quantised linear weights in bitsandbytes' layouts: bytes of weights and metadata exact,
and the dequantised weight of one layer alive at a time, in forward and in backward."""

from __future__ import annotations

import math

import pytest
from torch import nn

import memlens
from memlens.categories import Category, Phase

IN, HID, OUT = 256, 512, 10
KW = {"batch": 16, "input_shape": (IN,)}


def _model() -> nn.Module:
    # the last Linear is the output head: bitsandbytes' integration leaves it unquantised
    return nn.Sequential(
        nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, IN), nn.ReLU(), nn.Linear(IN, OUT)
    )


LAYERS = [(IN, HID), (HID, IN)]  # (in, out) of the quantised layers
FP32_REST = 4 * (HID + IN + OUT * IN + OUT)  # biases and the head stay fp32


def _weights(scheme: str, n: int, out: int) -> int:
    if scheme == "int8":  # int8 weight + fp32 absmax per output row (SCB)
        return n + 4 * out
    blocks = math.ceil(n / 64)
    code = 16 * 4  # the 16-entry fp32 FP4 / NF4 code of each layer's quantisation state
    if scheme == "int4":  # packed nibbles + fp32 absmax per 64 elements
        return (n + 1) // 2 + 4 * blocks + code
    # nf4: packed nibbles, uint8 absmax per block, fp32 absmax per 256 blocks, fp32 offset
    return (n + 1) // 2 + blocks + 4 * math.ceil(blocks / 256) + 4 + code


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_weight_bytes_are_exact(scheme):
    est = memlens.estimate(_model, device="cuda", mode="inference", quantize=scheme, **KW)
    params = sum(
        b.nbytes
        for b in est.timeline.blocks
        if b.category is Category.PARAMETERS and b.phase is Phase.SETUP
    )
    shared = 256 * 4 if scheme == "nf4" else 0  # one dynamic map for all nested absmaxes
    expected = sum(_weights(scheme, i * o, o) for i, o in LAYERS) + shared + FP32_REST
    assert params == expected
    assert est.num_params == sum(p.numel() for p in _model().parameters())  # logical count
    assert est.strategies["quantized_layers"] == 2


def _dequantised(est, dtype_bytes: int) -> list:
    sizes = {i * o * dtype_bytes for i, o in LAYERS}
    return [b for b in est.timeline.blocks if b.nbytes in sizes and b.op == "aten.empty"]


def _overlap(a, b) -> bool:
    end_a = a.free_at if a.free_at is not None else 1 << 60
    end_b = b.free_at if b.free_at is not None else 1 << 60
    return a.alloc_at < end_b and b.alloc_at < end_a


@pytest.mark.parametrize("scheme", ["int4", "nf4"])
def test_one_dequantised_weight_at_a_time(scheme):
    est = memlens.estimate(
        _model, device="cuda", quantize=scheme, lora="r=4,targets=0,2", precision="bf16", **KW
    )
    temps = _dequantised(est, 2)
    phases = [t.phase for t in temps]
    # backward dequantises again for the gradient of a layer's input; the first layer's
    # input (the data) needs none
    assert phases.count(Phase.FORWARD) == 2 and phases.count(Phase.BACKWARD) == 1
    assert all(t.free_at is not None for t in temps)
    assert not any(_overlap(a, b) for i, a in enumerate(temps) for b in temps[i + 1 :])


def test_nf4_double_quantised_absmax_is_a_transient():
    est = memlens.estimate(_model, device="cuda", mode="inference", quantize="nf4", **KW)
    n = IN * HID
    absmax = [
        b for b in est.timeline.blocks if b.nbytes == 4 * math.ceil(n / 64) and b.op == "aten.empty"
    ]
    assert absmax and all(b.free_at is not None for b in absmax)


def test_qlora_trains_only_the_adapters():
    # fp32 compute: CPU half-precision matmuls add oneDNN scratchpads (see the precision tests)
    kwargs = {"quantize": "nf4", "lora": "r=8,targets=0,2"}
    est = memlens.estimate(_model, device="cpu", optimizer="adamw", **KW, **kwargs)
    assert est.trainable_params == 8 * (IN + HID) * 2
    real = memlens.measure(_model, device="cpu", optimizer="adamw", **KW, **kwargs)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.02)


def test_quantised_weights_shrink_the_step():
    full = memlens.estimate(_model, device="cuda", mode="inference", **KW)
    nf4 = memlens.estimate(_model, device="cuda", mode="inference", quantize="nf4", **KW)
    assert nf4.breakdown["parameters"] < 0.3 * full.breakdown["parameters"]


def test_unknown_scheme_names_the_field():
    with pytest.raises(memlens.WorkloadError) as info:
        memlens.estimate(_model, device="cpu", quantize="int3", **KW)
    assert info.value.field == "quantize"
