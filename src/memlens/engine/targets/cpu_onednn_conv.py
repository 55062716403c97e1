"""oneDNN (mkldnn) CPU convolutions: the buffers the primitives allocate through PyTorch.

With plain NCHW tensors the primitive works on *blocked* layouts (``nChw16c`` on AVX-512,
``nChw8c`` on AVX2): it reorders the source and the weights into new buffers (channels
padded to the block), computes into a blocked destination, then reorders that into the plain
output PyTorch returns. Backward does the same for each gradient, after making the incoming
gradient contiguous. The first layer of a network (few input channels) keeps its source
plain. None of these buffers is an op output, so no dispatch mode sees them; measured with
the profiler's allocation records they are exactly these sizes.

**AVX2 weight gradients that fall back to gemm.** oneDNN picks the first implementation in
its list that accepts the problem (src/cpu/cpu_convolution_list.cpp, ``backward_weights,
f32``). On AVX2 the direct kernel refuses a filter taller than the input
(``jit_avx2_conv_bwd_weights_kernel_f32_t::init_conf`` in
src/cpu/x64/jit_avx2_conv_kernel_f32.cpp: ``jcp.kh <= jcp.ih /* [bwd_w:r2] */``, with the
padding, ``kw < 14`` and per-group channel limits next to it; AVX-512's
``jit_avx512_common_conv_bwd_weights`` has no such limit), e.g. a 3x3 convolution on the 2x2
maps of a ResNet's last stage at 64x64 input. The problem then goes to
``gemm_convolution_bwd_weights_t`` on plain layouts, whose scratchpad
(``jit_gemm_convolution_utils::init_conf`` in src/cpu/gemm_convolution_utils.cpp, NCHW
weight-gradient branch) holds a per-thread weight-gradient reduction booked as
``book<float>(nthr * weights_d.size())`` (``size()`` is in bytes: four bytes per byte of
weights and thread) and the per-thread im2col columns; each entry is padded by 128 bytes
(``registry_t::book`` in src/common/memory_tracking.hpp). PyTorch's ideep allocates that
scratchpad as a tensor, so it is measured: 75.6 MB for a 512x512x3x3 convolution with two
threads. Thread count, limits and column blocking follow that source.
"""

from __future__ import annotations

import math

import torch

_ALIGN = 128  # memory_tracking: default_alignment, added to each booked scratchpad entry


def isa() -> str:
    """The vector ISA PyTorch (and oneDNN) use on this host: "AVX512", "AVX2", "DEFAULT"..."""
    return torch.backends.cpu.get_cpu_capability()


def _block() -> int:
    """oneDNN's channel block for this host's vector ISA (16 on AVX-512, else 8)."""
    return 16 if "AVX512" in isa() else 8


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


def forward(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> list[int]:
    """Peak bytes inside oneDNN's forward: reorders, blocked result, output."""
    block, elem = _block(), x.element_size()
    first = _first_layer(x.shape[1], groups)
    src = 0 if first else _blocked(x.shape, elem, block)
    dst = _blocked(out.shape, elem, block)
    wts = _weights(w, groups, block, first)
    return [max(src + wts + dst, dst + out.untyped_storage().nbytes())]


def _avx2_direct_weight_grad(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> bool:
    """Whether ``jit_avx2_conv_bwd_weights_kernel_f32_t::init_conf`` accepts the problem
    (its boundary and ``params_ok`` tests; depthwise problems go to ``jit_uni_dw``)."""
    c, o, (kh, kw), (ih, iw), (oh, ow) = x.shape[1], w.shape[0], w.shape[-2:], x.shape[-2:], out_hw
    if groups > 1 and c == groups and o == groups:
        return True
    if any(d != 1 for d in dilation):
        return False
    (sh, sw), (t, left) = stride, padding
    bottom = max(0, (oh - 1) * sh + kh - ih - t)  # calculate_end_padding
    right = max(0, (ow - 1) * sw + kw - iw - left)
    boundaries = t < kh and bottom < kh and left < kw and right < kw
    channels = groups == 1 or (c // groups % 8 == 0 and o // groups % 8 == 0)
    return boundaries and channels and kw < 14 and kh <= ih


def _gemm_weight_grad_scratchpad(
    x: torch.Tensor, w: torch.Tensor, out_hw: tuple[int, int], stride: list[int], groups: int
) -> int:
    """Bytes of ``gemm_convolution_bwd_weights_t``'s scratchpad for fp32 NCHW on AVX2 (0 when
    it refuses the problem and the reference kernel, without one, runs)."""
    n, c, ih, iw = x.shape
    (kh, kw), (oh, ow) = w.shape[-2:], out_hw
    ic, ks, os_ = c // groups, kh * kw, oh * ow
    threads, simd_w = torch.get_num_threads(), 32 // 4  # dnnl_get_max_threads(); 256-bit f32
    weights, src, dst = 4 * w.numel(), 4 * x.numel(), 4 * n * w.shape[0] * os_
    limit = min(1 << 30, 15 * threads * (src + weights + dst))
    unit = oh == ih and ow == iw and ks == 1 and all(s == 1 for s in stride)
    im2col = 0 if unit else ic * ks * os_
    estimate = 4 * threads * weights + 4 * threads * ic * ks * simd_w
    outer = estimate < limit and os_ // threads < 256 and (n != 1 or groups > 2)
    nthr = threads if outer else 1
    booked = 4 * nthr * weights + _ALIGN  # key_conv_wei_reduction: nthr * size() floats
    if booked > limit:
        return 0
    cols = 4 * nthr * im2col
    if cols > limit - booked:  # spatial blocking to fit the columns under the limit
        os_block = max(simd_w, int((limit - booked) // (4 * nthr * ic * ks) * 0.05))
        cols = 4 * nthr * ic * ks * os_block
    total = booked + (cols + _ALIGN if cols else 0)
    return total if total <= limit else 0


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    mask: list[bool],
) -> list[int]:
    """Peak bytes inside oneDNN's backward, the gradients it returns included."""
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
        out_hw = (grad_out.shape[-2], grad_out.shape[-1])
        if (
            isa() == "AVX2"
            and x.dtype == torch.float32
            and not _avx2_direct_weight_grad(x, w, out_hw, stride, padding, dilation, groups)
        ):  # gemm on plain layouts: the result in ideep's buffer, then the copy out
            scratch = _gemm_weight_grad_scratchpad(x, w, out_hw, stride, groups)
            high = max(high, held + gw + scratch, held + 2 * gw)
        else:
            high = max(high, held + go_b + src_b + wts, held + wts + gw)
    return [go_copy + high]
