"""CPU convolutions: the buffers oneDNN (mkldnn) allocates inside ``aten.convolution``.

PyTorch runs fp32/bf16 CPU convolutions through oneDNN when ``_convolution``'s
``use_mkldnn`` test passes (aten/src/ATen/native/ConvUtils.h). With plain NCHW tensors, the
primitive works on *blocked* layouts (``nChw16c`` on AVX-512, ``nChw8c`` on AVX2): it reorders
the source and the weights into new buffers (channels padded to the block), computes into
a blocked destination, then reorders that into the plain output PyTorch returns. Backward
does the same for each gradient, after making the incoming gradient contiguous. None of
these buffers is an op output, so no dispatch mode sees them; measured with the profiler's
allocation records they are exactly these sizes. The first layer of a network (few input
channels) keeps its source plain.
"""

from __future__ import annotations

import math

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _block() -> int:
    """oneDNN's channel block for this host's vector ISA (16 on AVX-512, else 8)."""
    return 16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8


def _uses_mkldnn(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    dilation: list[int],
    groups: int,
    transposed: bool,
) -> bool:
    """Mirror of ``ConvParams::use_mkldnn`` for float32 CPU inputs (ConvUtils.h)."""
    if not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled:
        return False
    if x.dtype not in (torch.float32, torch.bfloat16) or x.dim() != 4 or transposed:
        return False
    if x.dtype == torch.bfloat16:
        return True
    strided = any(s != 1 for s in stride)
    dilated = any(d != 1 for d in dilation)
    one_by_one = w.shape[-1] == 1 and w.shape[-2] == 1
    fast = strided or dilated or x.shape[0] >= 16 or not one_by_one or torch.get_num_threads() > 1
    big = groups > 1 or (w.shape[-1] > 3 and w.shape[-2] > 3) or x.shape[0] > 1 or x.numel() > 20480
    return fast and big


def _blocked(t_shape: torch.Size, elem: int, block: int) -> int:
    """Bytes of an NCHW activation in nChw{block}c layout (channels padded)."""
    n, c, *spatial = t_shape
    return n * math.ceil(c / block) * block * math.prod(spatial) * elem


def _weights(w: torch.Tensor, groups: int, block: int, first_layer: bool) -> int:
    o, i, *k = w.shape
    o_pad = math.ceil(o / groups / block) * block * groups if groups == 1 or o // groups > 1 else o
    i_pad = i if first_layer or groups > 1 else math.ceil(i / block) * block
    return o_pad * i_pad * math.prod(k) * w.element_size()


def _first_layer(c_in: int, groups: int) -> bool:
    return groups == 1 and c_in < 4  # oneDNN keeps an RGB-like source plain


def _is_plain(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous()  # channels-last inputs skip the NCHW reorders


@register_rule(aten.convolution.default)
def conv_forward(call: OpCall) -> list[int]:
    x, w = call.args[0], call.args[1]
    stride, _, dilation, transposed, _, groups = call.args[3:9]
    if call.device != "cpu" or not _is_plain(x):
        return []
    if not _uses_mkldnn(x, w, stride, dilation, groups, transposed):
        return []
    block, elem, out = _block(), x.element_size(), call.out
    first = _first_layer(x.shape[1], groups)
    src = 0 if first else _blocked(x.shape, elem, block)
    dst = _blocked(out.shape, elem, block)
    wts = _weights(w, groups, block, first)
    return [max(src + wts + dst, dst + out.untyped_storage().nbytes())]


@register_rule(aten.convolution_backward.default)
def conv_backward(call: OpCall) -> list[int]:
    grad_out, x, w = call.args[0], call.args[1], call.args[2]
    stride, _, dilation, transposed, _, groups, mask = call.args[4:11]
    if call.device != "cpu" or not _is_plain(x):
        return []
    if not _uses_mkldnn(x, w, stride, dilation, groups, transposed):
        return []
    block, elem = _block(), x.element_size()
    first = _first_layer(x.shape[1], groups)
    go_copy = 0 if grad_out.is_contiguous() else grad_out.numel() * elem
    go_b = _blocked(grad_out.shape, elem, block)
    src_b = 0 if first else _blocked(x.shape, elem, block)
    wts = _weights(w, groups, block, first)
    gi = x.numel() * elem
    high = 0
    held = 0  # outputs already produced inside the op
    if mask[0]:  # grad_input: reorder grad_out and weights, blocked result, reorder back
        gi_b = _blocked(x.shape, elem, block) if not first else gi
        high = max(high, go_b + wts + gi_b, gi_b + gi)
        held += gi
    if mask[1]:  # grad_weight: reorder grad_out and source, blocked result, reorder back
        gw = w.numel() * elem
        high = max(high, held + go_b + src_b + wts, held + wts + gw)
    return [go_copy + high]
