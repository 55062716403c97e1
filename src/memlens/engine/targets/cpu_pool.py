"""CPU 2-D max pooling: the copies of strided operands.

``max_pool2d_kernel_impl`` and ``max_pool2d_backward_kernel_impl`` (aten/src/ATen/native/cpu/
MaxPoolKernel.cpp) pick the kernel by the suggested memory format of the input (forward) or
of the incoming gradient (backward): ``cpu_max_pool`` / ``cpu_max_pool_backward`` for
contiguous, the ``_channels_last`` ones for channels-last. Each takes ``.contiguous(format)``
of every operand (input, output and indices forward; grad_output, indices and grad_input
backward): an operand not already contiguous in that format is copied for the length of the
call (a grad_input, allocated in the input's format, is copied back at the end). The forward's
output and indices are allocated in the input's format, so only a strided input is copied.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor::suggest_memory_format()`` (channels-last when the strides are NHWC's)."""
    return suggest_memory_format(t)


def _copy(t: torch.Tensor, fmt: torch.memory_format) -> int:
    return 0 if t.is_contiguous(memory_format=fmt) else t.numel() * t.element_size()


def _outputs(out: tuple) -> int:
    return sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))


@register_rule(aten.max_pool2d_with_indices.default)
def max_pool2d(call: OpCall) -> list[int]:
    x = call.args[0]
    if call.device != "cpu" or x.dim() != 4:
        return []
    copy = _copy(x, _format(x))
    return [_outputs(call.out) + copy] if copy else []


@register_rule(aten.max_pool2d_with_indices_backward.default)
def max_pool2d_backward(call: OpCall) -> list[int]:
    grad, indices, grad_input = call.args[0], call.args[7], call.out
    if call.device != "cpu" or grad.dim() != 4:
        return []
    fmt = _format(grad)
    copies = _copy(grad, fmt) + _copy(indices, fmt) + _copy(grad_input, fmt)
    return [grad_input.untyped_storage().nbytes() + copies] if copies else []
