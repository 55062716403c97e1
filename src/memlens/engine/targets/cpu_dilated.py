"""oneDNN forward convolutions the direct kernels refuse: plain-layout gemm (im2col).

A dilated convolution whose filter overhangs a small input by more than the output width
(DeepLabV3's ASPP: 3x3 filters dilated 12, 24 and 36 on 4x4 maps, padding = dilation) is
refused by oneDNN's direct fp32 kernels, and ``gemm_convolution_fwd_t`` runs it on PyTorch's
plain NCHW tensors: no blocked reorders of source, weights or destination (oneDNN v3.12,
the version bundled with torch 2.14; ``ONEDNN_VERBOSE=1`` shows ``x64:gemm:jit`` on ``abcd``).

**Refusal** (``jit_avx512_common_conv_fwd_kernel::init_conf`` in
src/cpu/x64/jit_avx512_common_conv_kernel.cpp, ``jit_avx2_conv_fwd_kernel_f32::init_conf``
in src/cpu/x64/jit_avx2_conv_kernel_f32.cpp): ``kernel_outside_src`` (a dilated filter
extent ``ext_k <= `` a padding, top/bottom/left/right) returns ``unimplemented``, and so
does ``args_ok``'s ``jcp.l_pad <= jcp.ur_w``: both kernels take ``ur_w <= ow``, so a left
padding wider than the output always fails it. (A padding between ``ur_w`` and ``ow``
fails it too; ``ur_w`` is a register-blocking heuristic not mirrored here, so such a
problem keeps the blocked model of :mod:`.cpu_onednn_conv`.)

**Scratchpad** (``jit_gemm_convolution_utils::init_conf`` in
src/cpu/gemm_convolution_utils.cpp, NCHW forward branch): im2col columns of
``ic_block * ks * os_block`` floats per thread, ``nthr`` threads, one booking padded by 128
bytes (``registry_t::book``, src/common/memory_tracking.hpp). Without the spatial blocking
(``is_blocking_applicable`` false) the columns are the whole ``ic * ks * os`` and ``nthr`` is
all threads when ``outer_threading`` holds, else 1. With it, the blocks come from a cache
heuristic (``try_cfg``) and ``nthr`` is all threads; the blocks are taken whole
(``ic * ks * os``): exact when the output map has at most ``simd_w`` positions and each
thread's share of the batch covers a map (every candidate ``os_block`` is then ``os``) and
the columns fit the per-core L2 (``ic_block = ic``), an upper bound otherwise. ideep allocates the
scratchpad as a tensor while the output exists: the peak is output + scratchpad.
"""

from __future__ import annotations

import torch

from memlens.engine.targets.cpu_onednn_conv import isa

_ALIGN = 128  # memory_tracking: default_alignment, added to each booked scratchpad entry
_GEMM_THRESHOLD = 64 * 1024  # gemm_thrld in jit_gemm_convolution_utils::init_conf


def _end_pad(begin: int, out: int, size: int, stride: int, ext: int) -> int:
    """oneDNN's ``calculate_end_padding``."""
    return (out - 1) * stride + ext - (size + begin)


def direct_refuses(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> bool:
    """Whether oneDNN's direct fp32 kernels certainly refuse this 2-D forward (see module)."""
    plain = x.dim() == 4 and x.is_contiguous() and w.is_contiguous()
    if x.dtype != torch.float32 or groups != 1 or not plain or w.shape[-2:] == (1, 1):
        return False
    if isa() not in ("AVX2", "AVX512"):
        return False
    (kh, kw), (ih, iw), (oh, ow) = w.shape[-2:], x.shape[-2:], out_hw
    (sh, sw), (top, left) = stride, padding
    ext_h, ext_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    bottom, right = _end_pad(top, oh, ih, sh, ext_h), _end_pad(left, ow, iw, sw, ext_w)
    outside = ext_w <= left or ext_w <= right or ext_h <= top or ext_h <= bottom
    return outside or left > ow


def gemm_forward_scratchpad(
    x: torch.Tensor, w: torch.Tensor, out_hw: tuple[int, int], stride: list[int]
) -> int:
    """Bytes of ``gemm_convolution_fwd_t``'s scratchpad (fp32 NCHW, one group)."""
    n, c, ih, iw = x.shape
    o, (kh, kw), (oh, ow) = w.shape[0], w.shape[-2:], out_hw
    threads, simd_w = torch.get_num_threads(), 16 if "AVX512" in isa() else 8
    ks, os_ = kh * kw, oh * ow
    unit = (oh, ow) == (ih, iw) and ks == 1 and tuple(stride) == (1, 1)
    if unit:
        return 0
    spatial = n * os_
    k = c * ks
    blocking = (
        spatial >= threads * simd_w or os_ < n or (stride[1] == 1 and k <= 0.05 * o)
    )  # is_blocking_applicable with im2col_sz != 0 (2-D)
    if blocking:
        cols, nthr = c * ks * os_, threads
    else:
        outer_eff = n / (-(-n // threads) * threads)
        inner = -(-os_ // simd_w) * -(-o // simd_w)
        inner_eff = inner / (-(-inner // threads) * threads)
        outer = (
            os_ // threads < 512
            and n != 1
            and (outer_eff / inner_eff >= 1 or os_ * c * o // threads < _GEMM_THRESHOLD)
        )
        cols, nthr = c * ks * os_, threads if outer else 1
    return 4 * nthr * cols + _ALIGN


def forward(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> list[int] | None:
    """Peak bytes inside a oneDNN forward that runs as plain gemm, None where a direct
    (blocked) kernel may take it."""
    out_hw = (out.shape[-2], out.shape[-1])
    if not direct_refuses(x, w, out_hw, stride, padding, dilation, groups):
        return None
    scratch = gemm_forward_scratchpad(x, w, out_hw, stride)
    return [out.untyped_storage().nbytes() + scratch]
