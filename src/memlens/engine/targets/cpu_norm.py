"""CPU LayerNorm and BatchNorm: copies of strided inputs, backward's buffers.

``layer_norm_cpu`` and ``layer_norm_backward_cpu`` (aten/src/ATen/native/layer_norm.cpp) call
``expect_contiguous()`` on the input, the incoming gradient, the weight and the bias: a strided
tensor, such as the channels-last view ConvNeXt normalises (``x.permute(0, 2, 3, 1)``), is
copied for the length of the call. The backward kernel
(``LayerNormBackwardKernelImplInternal`` in aten/src/ATen/native/cpu/layer_norm_kernel.cpp)
reduces the weight and bias gradients through ``at::zeros({2, num_threads, N})`` of the
accumulation type (fp32 for fp32 inputs; half-precision buffers are not modelled).

``batch_norm_backward_cpu_template`` (aten/src/ATen/native/Normalization.cpp) allocates
``grad_input`` with ``empty_like(input, input.suggest_memory_format())`` and, when input and
gradient are both contiguous in one memory format (``all_contiguous``), allocates it again
(``suggest_memory_format_contig``) before the first is released: the peak holds one more
input-sized buffer. The strided path's reductions and the channels-last kernel's per-thread
buffers (a few hundred bytes) are not modelled.
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


def _dense(t: torch.Tensor) -> bool:
    """``is_contiguous`` of Normalization.cpp: contiguous in the default or channels-last
    format."""
    return t.is_contiguous() or (
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    )


def _format(t: torch.Tensor) -> torch.memory_format:
    channels_last = t.dim() == 4 and not t.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


@register_rule(aten.native_batch_norm_backward.default)
def batch_norm_backward(call: OpCall) -> list[int]:
    grad, x, mask = call.args[0], call.args[1], call.args[9]
    if call.device != "cpu" or not mask[0]:
        return []
    if not (_dense(x) and _dense(grad) and _format(x) == _format(grad)):
        return []
    return [_outputs(call.out) + x.numel() * x.element_size()]
