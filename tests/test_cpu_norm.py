"""CPU LayerNorm rules (engine/targets/cpu_norm.py): one real call's allocator peak against
its outputs plus the contiguous copies and backward's per-thread buffers, to the byte."""

from __future__ import annotations

import pytest
import torch

from memlens.engine.rules import OpCall
from memlens.engine.targets.emulation import kernel_rules
from memlens.measurement.cpu import allocator_peak
from memlens.targets import resolve_target

aten = torch.ops.aten
CPU = resolve_target("cpu")
RULES = kernel_rules(CPU)


def _predicted(op, args) -> int:
    out = op(*args)
    outs = sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))
    return max([outs, *RULES[op](OpCall(op, args, {}, out, "cpu", CPU))])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, True)])
def test_layer_norm_over_channels(channels_last, mask) -> None:
    """ConvNeXt's LayerNorm over the channels of a permuted NCHW map."""
    x = torch.randn(4, 32, 16, 16).permute(0, 2, 3, 1)
    x = x if channels_last else x.contiguous()
    w, b = torch.randn(32), torch.randn(32)
    fwd = aten.native_layer_norm.default
    args = (x, [32], w, b, 1e-5)
    assert _predicted(fwd, args) == allocator_peak(lambda: fwd(*args))
    y, mean, rstd = fwd(*args)
    grad = torch.randn(4, 32, 16, 16).permute(0, 2, 3, 1)
    grad = grad if channels_last else grad.contiguous()
    bwd = aten.native_layer_norm_backward.default
    bargs = (grad, x, [32], mean, rstd, w, b, list(mask))
    assert _predicted(bwd, bargs) == allocator_peak(lambda: bwd(*bargs))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    ("layout", "mask"),
    [
        ("contiguous", (True, True, True)),
        ("contiguous", (False, True, True)),
        ("contiguous", (True, False, False)),
        ("channels_last", (True, True, True)),
    ],
)
def test_batch_norm_backward(train, layout, mask) -> None:
    """Contiguous layouts (the strided path's reductions and the channels-last kernel's
    per-thread buffers, a few hundred bytes, are not modelled)."""
    x = torch.randn(4, 32, 16, 16)
    w, b, mean, var = torch.randn(32), torch.randn(32), torch.zeros(32), torch.ones(32)
    _, save_mean, save_invstd = aten.native_batch_norm.default(x, w, b, mean, var, True, 0.1, 1e-5)
    grad = torch.randn_like(x)
    if layout == "channels_last":
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    bwd = aten.native_batch_norm_backward.default
    args = (grad, x, w, mean, var, save_mean, save_invstd, train, 1e-5, list(mask))
    assert _predicted(bwd, args) == allocator_peak(lambda: bwd(*args))
