"""CPU LayerNorm rules (engine/targets/cpu_norm.py): one real call's allocator peak against
its outputs plus the contiguous copies and backward's per-thread buffers, to the byte."""

from __future__ import annotations

import pytest
import torch

from memlens.engine.rules import OpCall
from memlens.engine.targets.emulation import kernel_rules
from memlens.targets import resolve_target
from test_rnn import _allocator_peak

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
    assert _predicted(fwd, args) == _allocator_peak(lambda: fwd(*args))
    y, mean, rstd = fwd(*args)
    grad = torch.randn(4, 32, 16, 16).permute(0, 2, 3, 1)
    grad = grad if channels_last else grad.contiguous()
    bwd = aten.native_layer_norm_backward.default
    bargs = (grad, x, [32], mean, rstd, w, b, list(mask))
    assert _predicted(bwd, bargs) == _allocator_peak(lambda: bwd(*bargs))
