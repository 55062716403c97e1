"""PyTorch's own CPU convolution (``Slow2d``): the im2col ``columns`` it allocates inside itself.

Convolutions that oneDNN does not take (bf16/fp16 on a CPU without native support, small
fp32 problems, see :mod:`memlens.engine.targets.cpu_conv`) run ``thnn_conv2d``
(aten/src/ATen/native/ConvolutionMM2d.cpp):

- forward, ``slow_conv2d_forward_out_cpu``: ``compute_columns2d`` unfolds the input into an
  ``N x (C*kh*kw) x (oh*ow)`` tensor of the input's dtype (a view for 1x1 kernels with
  stride 1 and no padding), then the output is allocated while it is alive;
- backward, ``slow_conv2d_backward_out_cpu``: the grad input is computed through per-thread
  ``std::make_unique`` buffers (not PyTorch's allocator), the grad bias by ``sum_out`` (with
  fp32 buffers in half precision, :func:`memlens.engine.targets.cpu_reduce.sum_acc_buffer`), then
  the grad weight allocates ``columns`` again, with the earlier gradients alive;
- ``grad_output.contiguous()`` copies a non-contiguous incoming gradient in each of them.

Groups are not native to it: ``_convolution`` and ``convolution_backward``
(aten/src/ATen/native/Convolution.cpp) loop over groups on ``subtensor(...).contiguous()``
slices (the input and grad-output slices are copies unless the batch is 1; the weight and
bias slices are views), keep each group's results and ``at::cat`` them at the end, so the
pieces and the concatenation are alive together.
"""

from __future__ import annotations

import math

import torch

from memlens.engine.targets.cpu_reduce import sum_acc_buffer


def _columns(
    x_shape: torch.Size,
    w_shape: torch.Size,
    out_hw: tuple[int, int],
    elem: int,
    stride: list[int],
    padding: list[int],
) -> int:
    """Bytes of ``compute_columns2d``'s unfolded input of one group (``w_shape[1]`` channels;
    0: a view of the input)."""
    kh, kw = w_shape[-2:]
    if kh == kw == 1 and all(s == 1 for s in stride) and all(p == 0 for p in padding):
        return 0
    return x_shape[0] * w_shape[1] * kh * kw * math.prod(out_hw) * elem


def _slice_copy(t: torch.Tensor, groups: int) -> int:
    """Bytes of one group's ``subtensor(t, 1, groups, g).contiguous()`` (a view at batch 1)."""
    return 0 if t.shape[0] == 1 else t.numel() // groups * t.element_size()


def forward(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor,
    stride: list[int],
    padding: list[int],
    groups: int,
) -> list[int]:
    """Peak bytes inside ``Slow2d``'s forward, the output included."""
    elem, out_bytes = x.element_size(), out.untyped_storage().nbytes()
    cols = _columns(x.shape, w.shape, out.shape[-2:], elem, stride, padding)
    if groups == 1:
        return [cols + out_bytes] if cols else []
    # last group: the earlier outputs, its input slice, columns and output; then the cat
    return [max(out_bytes + _slice_copy(x, groups) + cols, 2 * out_bytes)]


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    bias_sizes: list[int] | None,
    stride: list[int],
    padding: list[int],
    groups: int,
    mask: list[bool],
) -> list[int]:
    """Peak bytes inside ``Slow2d``'s backward, the gradients it returns included."""
    elem = x.element_size()
    gi = x.numel() * elem if mask[0] else 0
    gw = w.numel() * elem if mask[1] else 0
    gb = math.prod(bias_sizes) * elem if mask[2] and bias_sizes else 0
    cols = _columns(x.shape, w.shape, grad_out.shape[-2:], elem, stride, padding) if mask[1] else 0
    if groups == 1:
        go_copy = 0 if grad_out.is_contiguous() else grad_out.numel() * elem
        acc = sum_acc_buffer(grad_out.shape, grad_out.stride(), [0, 2, 3], x.dtype) if gb else 0
        high = _nogroup_peak(gi, gw, gb, go_copy, cols, acc)
        return [high] if high > gi + gw + gb else []
    # last group: the earlier groups' results, its slices and its own peak; then the cats
    n, o, oh, ow = grad_out.shape
    go_g = (n, o // groups, oh, ow)
    strides_g = (o // groups * oh * ow, oh * ow, ow, 1)
    acc = sum_acc_buffer(go_g, strides_g, [0, 2, 3], x.dtype) if gb else 0
    earlier = (gi + gw + gb) // groups * (groups - 1)
    slices = _slice_copy(grad_out, groups) + _slice_copy(x, groups)
    last = _nogroup_peak(gi // groups, gw // groups, gb // groups, 0, cols, acc)
    return [max(earlier + slices + last, 2 * (gi + gw + gb))]


def _nogroup_peak(gi: int, gw: int, gb: int, go_copy: int, cols: int, acc: int) -> int:
    """``slow_conv2d_backward_out_cpu``: grad input (with the incoming gradient made
    contiguous), grad bias (``sum_out``, with its fp32 buffers), then grad weight."""
    return max(go_copy + gi, gi + gb + acc, gi + gb + gw + go_copy + cols if gw else 0)
