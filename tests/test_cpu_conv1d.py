"""1-D convolutions on CPU run as 2-D ones of unit height (engine/targets/cpu_conv.py): one
real call's allocator peak against the outputs plus the 2-D rules' buffers, to the byte."""

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
    outs = out if isinstance(out, tuple) else (out,)
    nbytes = sum(t.untyped_storage().nbytes() for t in outs if isinstance(t, torch.Tensor))
    return max([nbytes, *RULES[op](OpCall(op, args, {}, out, "cpu", CPU))])


# (batch, channels, length, out channels, kernel, stride, padding, dilation)
CONVS = [
    (4, 64, 200, 64, 3, 1, 0, 4),  # TCN: dilated, causal (padded outside)
    (4, 1, 8000, 32, 80, 16, 0, 1),  # M5's first layer on raw audio
    (4, 128, 100, 128, 7, 1, 3, 1),
    (4, 40, 200, 64, 1, 1, 0, 1),
]


@pytest.mark.parametrize(("n", "c", "length", "o", "k", "s", "p", "d"), CONVS)
def test_conv1d_rules_match_the_allocator(n, c, length, o, k, s, p, d) -> None:
    x, w, b = torch.randn(n, c, length), torch.randn(o, c, k), torch.randn(o)
    fwd = aten.convolution.default
    args = (x, w, b, [s], [p], [d], False, [0], 1)
    assert _predicted(fwd, args) == allocator_peak(lambda: fwd(*args))
    y = fwd(*args)
    bwd = aten.convolution_backward.default
    bargs = (torch.randn_like(y), x, w, [o], [s], [p], [d], False, [0], 1, [c != 1, True, True])
    assert _predicted(bwd, bargs) == allocator_peak(lambda: bwd(*bargs))
