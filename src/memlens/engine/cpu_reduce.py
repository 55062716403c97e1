"""CPU reductions of half-precision tensors: the fp32 copies ``mean`` makes inside itself.

On CPU, ``mean`` of a bfloat16 or float16 tensor is computed as cast to fp32, sum, divide,
cast back (``mean_out`` in aten/src/ATen/native/ReduceOps.cpp, "For accuracy reasons,
BF16/FP16 mean should be computed via the following approach"): it makes an fp32 copy of
the result, then ``sum_out`` makes an fp32 copy of the input; both are alive together and
freed before the op returns. Fake tensors run ``mean``'s meta function, which makes
neither.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten
_HALF = (torch.bfloat16, torch.float16)


@register_rule(aten.mean.default, aten.mean.dim)
def half_mean(call: OpCall) -> list[int]:
    x, out = call.args[0], call.out
    if call.device != "cpu" or out.dtype not in _HALF:
        return []
    return [4 * x.numel() + 4 * out.numel()]
