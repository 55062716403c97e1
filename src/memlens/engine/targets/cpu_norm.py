"""CPU LayerNorm: contiguous copies of strided inputs and backward's per-thread buffers.

``layer_norm_cpu`` and ``layer_norm_backward_cpu`` (aten/src/ATen/native/layer_norm.cpp) call
``expect_contiguous()`` on the input, the incoming gradient, the weight and the bias: a strided
tensor, such as the channels-last view ConvNeXt normalises (``x.permute(0, 2, 3, 1)``), is
copied for the length of the call. The backward kernel
(``LayerNormBackwardKernelImplInternal`` in aten/src/ATen/native/cpu/layer_norm_kernel.cpp)
reduces the weight and bias gradients through ``at::zeros({2, num_threads, N})`` of the
accumulation type (fp32 for fp32 inputs; half-precision buffers are not modelled).
"""

from __future__ import annotations

import math

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _copy(t: torch.Tensor | None) -> int:
    """Bytes ``expect_contiguous`` allocates for ``t`` (0 when already contiguous)."""
    if t is None or t.is_contiguous():
        return 0
    return t.numel() * t.element_size()


def _outputs(out: tuple) -> int:
    return sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))


@register_rule(aten.native_layer_norm.default)
def layer_norm(call: OpCall) -> list[int]:
    x, _, weight, bias = call.args[:4]
    copies = _copy(x) + _copy(weight) + _copy(bias)
    if call.device != "cpu" or not copies:
        return []
    return [copies + _outputs(call.out)]


@register_rule(aten.native_layer_norm_backward.default)
def layer_norm_backward(call: OpCall) -> list[int]:
    grad, x, shape, _, _, weight, bias, mask = call.args[:8]
    if call.device != "cpu":
        return []
    copies = _copy(grad) + _copy(x) + _copy(weight) + _copy(bias)
    buffer = 0
    if (mask[1] or mask[2]) and x.dtype == torch.float32:
        buffer = 2 * torch.get_num_threads() * math.prod(shape) * 4
    if not copies and not buffer:
        return []
    return [copies + buffer + _outputs(call.out)]
