"""CPU group-norm backward: its copies and per-sample, per-channel sums.

``native_group_norm_backward`` (aten/src/ATen/native/group_norm.cpp) takes
``dY.contiguous(memory_format)`` and ``X.contiguous(memory_format)`` in the input's suggested
memory format (a strided incoming gradient is copied), allocates the gradients, and the
kernel (``GroupNormBackwardKernelImplInternal`` and its channels-last variant,
aten/src/ATen/native/cpu/group_norm_kernel.cpp) reduces through ``ds`` and ``db``, two
``{N, C}`` tensors of the accumulation type (fp32 for half precision), whichever gradients
are asked for.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _copy(t: torch.Tensor, fmt: torch.memory_format) -> int:
    return 0 if t.is_contiguous(memory_format=fmt) else t.numel() * t.element_size()


@register_rule(aten.native_group_norm_backward.default)
def group_norm_backward(call: OpCall) -> list[int]:
    grad, x, n, c = call.args[0], call.args[1], call.args[5], call.args[6]
    if call.device != "cpu" or not x.numel():
        return []
    fmt = suggest_memory_format(x)
    acc = 4 if x.dtype in (torch.float16, torch.bfloat16) else x.element_size()
    outs = sum(t.untyped_storage().nbytes() for t in call.out if isinstance(t, torch.Tensor))
    return [outs + _copy(grad, fmt) + _copy(x, fmt) + 2 * n * c * acc]
