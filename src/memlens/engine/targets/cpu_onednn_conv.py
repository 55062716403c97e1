"""oneDNN (mkldnn) CPU convolutions: the buffers the primitives allocate through PyTorch.

With plain NCHW tensors the primitive works on *blocked* layouts (``nChw16c`` on AVX-512,
``nChw8c`` on AVX2): it reorders the source and the weights into new buffers (channels
padded to the block), computes into a blocked destination, then reorders that into the plain
output PyTorch returns. Backward does the same for each gradient, after making the incoming
gradient contiguous. The first layer of a network (few input channels) keeps its source
plain in the forward and the weight gradient (not in the input gradient). None of these
buffers is an op output, so no dispatch mode sees them; measured with the profiler's
allocation records they are exactly these sizes. Sources cited are oneDNN v3.12 (commit
80afa71, the one bundled with torch 2.14); the ISA is PyTorch's CPU capability.

**Direct weight gradients and their reductions.** The direct kernels split the batch over
threads and reduce the partial weight gradients in a scratchpad that ideep allocates as a
tensor once the inputs are reordered. AVX-512's ``jit_avx512_common_convolution_bwd_weights_t``
(``balance`` chooses ``nthr_mb``) books ``(nthr_mb - 1)`` copies of the padded weight and
bias gradient plus a page-aligned barrier (``init_scratchpad`` in
src/cpu/x64/jit_avx512_common_conv_kernel.cpp), 17.4 KiB for a 3->16 7x7 first layer at
batch 2 on two threads; AVX2's ``jit_avx2_convolution_bwd_weights_t`` uses
``cpu_reducer_t`` buffers (src/cpu/x64/cpu_reducer.cpp). The AVX-512 kernel takes 1-3 or a
at least 16 input channels and limited paddings; a problem it refuses falls to the AVX2
kernel (8-channel blocks) and then to gemm, in the order of cpu_convolution_list.cpp.
1x1 convolutions go to ``jit_avx512_common_1x1`` / ``jit_avx2_1x1``, whose reductions and
compacted strided source (``rtus``) are modelled for the weight gradient too. Grouped
convolutions with 8 or 4 channels per group block by 8 or 4 on AVX-512.

Not modelled: the forward's compacted source of a strided 1x1 convolution and its padded
bias (the forward rule is not given stride and bias), the scratchpad of the brgemm kernel
AVX2 and AVX-512 use for strided input gradients (``brgconv_strided``: per-thread input and
batch buffers, ~60 KiB for a 16-channel 3x3 stride-2 layer; below the weight-gradient phase
at larger sizes), ``ip_convolution`` (a filter covering the whole input), half precision.
Both ISAs are checked against the allocator on an AVX-512 host: ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` makes oneDNN and PyTorch take their AVX2 paths.

**Weight gradients that fall back to gemm.** oneDNN picks the first implementation in
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

**Channels-last tensors** (``mkldnn_conv_use_channels_last``): source and destination stay
NHWC views, only the weights are reordered, and PyTorch's ``mkldnn_convolution_backward``
(aten/src/ATen/native/mkldnn/Conv.cpp) copies a weight that is not channels-last contiguous
and returns the weight gradient as ``mkldnn_to_dense(...).to(ChannelsLast)``. Modelled for
fp32 depthwise problems (ConvNeXt's 7x7): on AVX-512 a weight gradient ``jit_uni_dw`` refuses
runs ``jit_avx512_common`` on ``nxc`` data, which pads each group's single input and output
channel to 16 (``aBCde16c16b``: 256 times the gradient, 9.2 MiB for 192 channels).
Regular channels-last convolutions (``brgconv``) are :mod:`.cpu_brgconv`'s; not modelled:
AVX2's ``gemm`` weight gradient on ``nxc`` data.
"""

from __future__ import annotations

import math
from fractions import Fraction

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


def _first_layer_forward(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> bool:
    """Whether the forward keeps the source plain: ``is_1stconv`` in
    src/cpu/x64/jit_avx512_common_conv_kernel.cpp takes fewer than 16 input channels on
    AVX-512 (fp32); elsewhere an RGB-like source. An unstrided, unpadded 1x1 convolution (the
    output as large as the input) runs the 1x1 kernel, which blocks every source."""
    if w.shape[-2:] == (1, 1) and out.shape[-2:] == x.shape[-2:]:
        return False
    if "AVX512" in isa() and x.dtype == torch.float32:
        return groups == 1 and x.shape[1] < 16
    return _first_layer(x.shape[1], groups)


def _data_block(x: torch.Tensor, w: torch.Tensor, groups: int) -> int:
    """The channel block of the forward and the input gradient. On AVX-512 (fp32) a grouped
    convolution whose channels per group are not a multiple of 16 tries 8, then 4
    (``ok_to_try_lower_zmm`` in ``jit_avx512_common_conv_fwd_kernel_t::init_conf`` and
    ``..._bwd_data_kernel_f32_t::init_conf``)."""
    ic, oc = x.shape[1] // groups, w.shape[0] // groups
    if "AVX512" in isa() and x.dtype == torch.float32 and groups > 1 and (ic % 16 or oc % 16):
        return next((simd for simd in (8, 4) if ic % simd == 0 and oc % simd == 0), 16)
    return _block()


def channels_last(x: torch.Tensor, w: torch.Tensor) -> bool:
    """``mkldnn_conv_use_channels_last`` (aten/src/ATen/native/ConvUtils.h): the input's or
    the weight's suggested memory format is channels-last (4-D)."""
    from torch._prims_common import suggest_memory_format

    return x.dim() == 4 and torch.channels_last in (
        suggest_memory_format(x),
        suggest_memory_format(w),
    )


def _depthwise(x: torch.Tensor, w: torch.Tensor, groups: int) -> bool:
    return groups > 1 and x.shape[1] == groups == w.shape[0]


def _cl_weight_copy(w: torch.Tensor) -> int:
    """``weight_t.contiguous(memory_format)`` in ``mkldnn_convolution`` and
    ``mkldnn_convolution_backward`` (aten/src/ATen/native/mkldnn/Conv.cpp): a copy unless the
    weight is already channels-last contiguous (a depthwise ``[g, 1, kh, kw]`` one is)."""
    return 0 if w.is_contiguous(memory_format=torch.channels_last) else w.numel() * w.element_size()


def _cl_forward(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> list[int]:
    """Channels-last forward (Note [MKLDNN Convolution Memory Formats] in Conv.cpp: source and
    destination are views of the NHWC tensors, only the weights are reordered). A depthwise
    fp32 problem runs ``brdgmm_dw`` (AVX-512) or ``jit_uni_dw`` (AVX2) on ``Goihw{block}g``
    weights, groups padded to the block, without a scratchpad; other grouped problems and
    half precision are not modelled (empty list; regular ones are :mod:`.cpu_brgconv`'s)."""
    if not _depthwise(x, w, groups) or x.dtype != torch.float32:
        return []
    block = _block()
    wts = math.ceil(groups / block) * block * math.prod(w.shape[-2:]) * w.element_size()
    return [_cl_weight_copy(w) + out.untyped_storage().nbytes() + wts]


def forward(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, groups: int) -> list[int]:
    """Peak bytes inside oneDNN's forward: reorders, blocked result, output."""
    if channels_last(x, w):
        return _cl_forward(x, w, out, groups)
    block, elem = _data_block(x, w, groups), x.element_size()
    first = _first_layer_forward(x, w, out, groups)
    src = 0 if first else _blocked(x.shape, elem, block)
    dst = _blocked(out.shape, elem, block)
    wts = _weights(w, groups, block, first)
    return [max(src + wts + dst, dst + out.untyped_storage().nbytes())]


def _direct_weight_grad(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> bool:
    """Whether a direct (blocked-layout) kernel takes the fp32 weight gradient.

    Depthwise problems go to ``jit_uni_dw_conv_bwd_weights_kernel_t::init_conf``
    (src/cpu/x64/jit_uni_dw_conv_kernel_utils.cpp, every ISA): ``kw <= 3``, ``stride_w <=
    kw``, paddings of at most half the filter (above 1, a multiple of the stride) and an
    input at least ``kh + (-t_pad mod stride_h)`` tall (``boundaries_ok``), so ConvNeXt's 7x7
    depthwise gradient and EfficientNet's 3x3 one on 2x2 maps fall to gemm. Others go to
    ``jit_avx512_common`` on AVX-512 (see :func:`_avx512_direct_scratchpad`), else to
    ``jit_avx2_conv_bwd_weights_kernel_f32_t`` (its boundary and ``params_ok`` tests), which
    AVX-512 hosts also have."""
    c, o, (kh, kw), (ih, iw), (oh, ow) = x.shape[1], w.shape[0], w.shape[-2:], x.shape[-2:], out_hw
    (sh, sw), (t, left) = stride, padding
    bottom = max(0, (oh - 1) * sh + kh - ih - t)  # calculate_end_padding
    right = max(0, (ow - 1) * sw + kw - iw - left)
    if groups > 1 and c == groups and o == groups:
        pads = max(t, bottom) <= kh // 2 and max(left, right) <= kw // 2
        # the input holds the filter; a padding above 1 is a multiple of the stride
        fits = ih >= kh + (-t) % sh and all(p <= 1 or p % sh == 0 for p in (t, bottom))
        return kw <= 3 and sw <= kw and pads and fits
    args = (x, w, out_hw, stride, padding, dilation, groups)
    if "AVX512" in isa():  # jit_avx512_common, else jit_avx2 (cpu_convolution_list.cpp)
        threads = torch.get_num_threads()
        if _avx512_direct_scratchpad(*args, False, threads) is not None:
            return True
    elif isa() != "AVX2":
        return True
    return _avx2_direct_accepts(*args)


def _avx2_direct_accepts(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> bool:
    """Whether ``jit_avx2_conv_bwd_weights_kernel_f32_t::init_conf`` accepts a non-depthwise
    problem (its boundary and ``params_ok`` tests)."""
    c, o, (kh, kw), (ih, iw), (oh, ow) = x.shape[1], w.shape[0], w.shape[-2:], x.shape[-2:], out_hw
    (sh, sw), (t, left) = stride, padding
    bottom, right = _end_pad(t, oh, ih, sh, kh), _end_pad(left, ow, iw, sw, kw)
    if any(d != 1 for d in dilation):
        return False
    boundaries = t < kh and bottom < kh and left < kw and right < kw
    channels = groups == 1 or (c // groups % 8 == 0 and o // groups % 8 == 0)
    return boundaries and channels and kw < 14 and kh <= ih


def _gemm_weight_grad_scratchpad(
    x: torch.Tensor, w: torch.Tensor, out_hw: tuple[int, int], stride: list[int], groups: int
) -> int:
    """Bytes of ``gemm_convolution_bwd_weights_t``'s scratchpad for fp32 NCHW (0 when it
    refuses the problem and the reference kernel, without one, runs)."""
    n, c, ih, iw = x.shape
    (kh, kw), (oh, ow) = w.shape[-2:], out_hw
    ic, ks, os_ = c // groups, kh * kw, oh * ow
    # dnnl_get_max_threads(); f32 lanes of the vector ISA (512 or 256 bits)
    threads, simd_w = torch.get_num_threads(), 16 if "AVX512" in isa() else 8
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


_PAGE = 4096  # simple_barrier::ctx_t's alignment and size (cpu_barrier.hpp, not Windows)


def _book(nbytes: int, align: int = _ALIGN) -> int:
    """Bytes ``registry_t::book`` reserves for an entry: its size plus its alignment (none
    for an empty entry)."""
    return nbytes + max(align, _ALIGN) if nbytes else 0


def _reduce_balance(
    nthr: int, job_size: int, njobs: int, reduction_size: int, max_buffer: int
) -> tuple[int, int, int]:
    """``reduce_balancer_t::balance`` (src/cpu/x64/cpu_reducer.cpp), lock-free so threads may
    share a group: the groups, the threads per group and the jobs per group at most, for
    ``njobs`` jobs of ``job_size`` floats each summed over ``reduction_size``."""
    min_jobs = max(1, njobs // nthr)
    max_jobs = max(1, max_buffer // (nthr * job_size))
    groups = min(njobs // min_jobs, nthr)
    per_group = min(nthr // groups, reduction_size)
    jobs_ub = -(-njobs // groups)
    best = njobs * job_size * reduction_size
    for jobs in range(min_jobs, njobs):
        c_groups = min(njobs // jobs, nthr)
        c_per_group = min(nthr // c_groups, reduction_size)
        c_jobs_ub = -(-njobs // c_groups)
        if c_per_group > 1 and c_jobs_ub > max_jobs:
            continue
        cost = job_size * c_jobs_ub * (-(-reduction_size // c_per_group) + (c_per_group != 1))
        if cost < best:
            groups, per_group, jobs_ub, best = c_groups, c_per_group, c_jobs_ub, cost
    return groups, per_group, jobs_ub


def _reducer_scratchpad(
    nthr: int, job_size: int, njobs: int, reduction_size: int, max_buffer: int, two_d: bool = False
) -> int:
    """Bytes ``cpu_reducer_t<f32>::conf_t::init_scratchpad`` books: every thread of a group but
    the first gets a page-aligned buffer, and each group a barrier; ``cpu_reducer_2d_t`` gives
    every thread one, 128-byte aligned."""
    groups, per_group, jobs_ub = _reduce_balance(nthr, job_size, njobs, reduction_size, max_buffer)
    if per_group == 1:
        return 0
    barriers = _book(_PAGE * groups, _PAGE)
    if two_d:
        return _book(4 * groups * per_group * jobs_ub * job_size) + barriers
    return _book(4 * groups * (per_group - 1) * jobs_ub * job_size, _PAGE) + barriers


def _rtus(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    groups: int,
) -> bool:
    """Whether a strided 1x1 convolution has its source compacted to unit stride
    (``rtus_prepare`` in src/cpu/x64/jit_uni_1x1_conv_utils.hpp: one group, no padding,
    output times stride equal to the input)."""
    (kh, kw), (ih, iw), (oh, ow), (sh, sw) = w.shape[-2:], x.shape[-2:], out_hw, stride
    unpadded = not any(padding) and oh * sh == ih and ow * sw == iw
    return kh == kw == 1 and groups == 1 and (sh, sw) != (1, 1) and unpadded


def _avx2_1x1(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    groups: int,
) -> bool:
    """Whether ``jit_avx2_1x1_convolution`` takes the problem (its ``init_conf``: one group,
    a 1x1 filter, no padding, unit stride once ``rtus`` compacted the source)."""
    unit = tuple(stride) == (1, 1) and not any(padding) and w.shape[-2:] == (1, 1)
    return groups == 1 and (unit or _rtus(x, w, out_hw, stride, padding, groups))


def _avx2_1x1_weight_grad_scratchpad(
    x: torch.Tensor, w: torch.Tensor, out_hw: tuple[int, int], strided: bool, bias: bool
) -> int:
    """Scratchpad of ``jit_avx2_1x1_convolution_bwd_weights_t`` (``init_balancers`` in
    src/cpu/x64/jit_avx2_1x1_convolution.hpp, blocking from
    ``jit_avx2_1x1_conv_kernel_f32_t::init_conf``): a 2-D reducer of the weight gradient over
    batch and pixels, a bias reducer, a padded bias, and the compacted source per thread."""
    threads, n = torch.get_num_threads(), x.shape[0]
    nb_ic, nb_oc, os_ = -(-x.shape[1] // 8), -(-w.shape[0] // 8), out_hw[0] * out_hw[1]

    def blocking(nb: int, limit: int) -> int:
        while nb > limit and (nb % 2 == 0 or nb % 3 == 0):
            nb //= 2 if nb % 2 == 0 else 3
        return nb

    oc_blk, ic_blk = blocking(nb_oc, 32), blocking(nb_ic, 9)
    job = oc_blk * ic_blk * 64
    njobs = -(-nb_oc // oc_blk) * -(-nb_ic // ic_blk)
    total = _reducer_scratchpad(threads, job, njobs, n * os_, threads * job * 8, two_d=True)
    if bias:
        total += _reducer_scratchpad(threads, 8, nb_oc, n, threads * job * 8)
        if w.shape[0] % 8:
            total += _book(4 * nb_oc * 8)  # key_conv_padded_bias
    if strided:  # rtus_prepare_space_info: nb_bcast_blocking * is * ic_block per thread
        total += _book(4 * threads * ic_blk * 8 * os_)
    return total


def _best_divider(value: int, lo: int, hi: int, find_max: bool) -> int:
    """``best_divider`` (src/cpu/x64/jit_uni_1x1_conv_utils.hpp): the divider in [lo, hi] that
    leaves the smallest share of padding, the largest (``find_max``) or smallest of equals."""
    hi = max(1, min(hi, value))
    lo = max(1, min(lo, hi))
    best, loss_min = hi, None
    for d in range(hi, lo - 1, -1):
        padded = -(-value // d) * d
        loss = Fraction(padded - value, padded)
        if loss_min is None or loss < loss_min or (not find_max and loss == loss_min):
            best, loss_min = d, loss
    return best


def _avx512_1x1_weight_grad_scratchpad(
    x: torch.Tensor, w: torch.Tensor, out_hw: tuple[int, int], strided: bool, bias: bool
) -> int:
    """Scratchpad of ``jit_avx512_common_1x1_convolution_bwd_weights_t``
    (src/cpu/x64/jit_avx512_common_1x1_conv_kernel.cpp: ``init_conf``'s weight-gradient
    blocking, ``balance`` and ``init_scratchpad``; ``init_balancers`` in
    jit_avx512_common_1x1_convolution.hpp): ``(nthr_mb - 1)`` copies of the padded weight
    gradient and a barrier when the batch is split, a bias reducer, a padded bias, and the
    compacted source of a strided convolution per thread."""
    threads, mb = torch.get_num_threads(), x.shape[0]
    nb_bcast, nb_load = -(-x.shape[1] // 16), -(-w.shape[0] // 16)
    is_ = out_hw[0] * out_hw[1]  # after rtus the source has the output's pixels
    reduce_block = _best_divider(is_, 7, 16, True)
    if is_ % reduce_block:
        reduce_block = _best_divider(out_hw[1], 4, out_hw[1], False)
    if reduce_block > 256:
        reduce_block = 1
    nb_reduce = -(-is_ // reduce_block)

    def mem(t_mb: int, t_oc: int, t_ic: int) -> int:
        rows = -(-mb * nb_reduce // t_mb)
        return (
            rows * -(-nb_bcast // t_ic) * 16 * reduce_block
            + rows * -(-nb_load // t_oc) * 16 * reduce_block
            + 12 * -(-nb_load // t_oc) * -(-nb_bcast // t_ic) * 256
        )

    nthr_mb = nthr_oc = nthr_ic = 1
    best = mem(1, 1, 1)
    for t_mb in range(1, min(threads, mb * nb_reduce) + 1):
        for t_oc in range(1, min(threads // t_mb, nb_load) + 1):
            t_ic = min(threads // t_mb // t_oc, nb_bcast)
            if mem(t_mb, t_oc, t_ic) <= best:
                best, nthr_mb, nthr_oc, nthr_ic = mem(t_mb, t_oc, t_ic), t_mb, t_oc, t_ic
    if threads // 2 < nthr_mb < threads:
        nthr_mb = min(mb, threads)
    nthr = nthr_mb * nthr_oc * nthr_ic
    total = 0
    if bias and w.shape[0] % 16:
        total += _book(4 * nb_load * 16)  # key_conv_padded_bias
    if nthr_mb > 1:  # key_conv_wei_reduction and its barrier
        total += _book(4 * nb_load * nb_bcast * 256 * (nthr_mb - 1)) + _book(_PAGE, _PAGE)
    if bias:
        total += _reducer_scratchpad(nthr, 16, nb_load, mb, nthr * 3 * 5 * 5 * 16 * 16)
    if strided:  # rtus_prepare_space_info: nb_bcast_blocking * is * ic_block per thread
        total += _book(4 * nthr * _best_divider(nb_bcast, 5, nb_bcast, False) * is_ * 16)
    return total


def end_padding(pad: int, out: int, size: int, stride: int, ext_k: int) -> int:
    """oneDNN's ``calculate_end_padding`` (src/common/utils.hpp); negative where the last
    window ends inside the input."""
    return (out - 1) * stride + ext_k - size - pad


def _end_pad(pad: int, out: int, size: int, stride: int, ext_k: int) -> int:
    """:func:`end_padding`, clamped at zero."""
    return max(0, end_padding(pad, out, size, stride, ext_k))


def _avx2_direct_reducers(
    x: torch.Tensor, w: torch.Tensor, groups: int, bias: bool, threads: int
) -> int:
    """Scratchpad of ``jit_avx2_convolution_bwd_weights_t`` (init_balancers in
    src/cpu/x64/jit_avx2_convolution.hpp): a reducer over the batch for the weights, one for
    the bias, each with a 2 MiB buffer cap; channels padded to 8 except a 3-channel source
    (``flat``), and a padded bias when the output channels are not a multiple of 8."""
    n, c = x.shape[:2]
    ic, oc = c // groups, w.shape[0] // groups
    ic_block = ic if ic == 3 else 8
    nb_ic = -(-ic // ic_block)
    nb_oc = -(-oc // 8)
    job = math.prod(w.shape[-2:]) * ic_block * 8
    total = _reducer_scratchpad(threads, job, groups * nb_ic * nb_oc, n, 1 << 21)
    if bias:
        total += _reducer_scratchpad(threads, 8, groups * nb_oc, n, 1 << 21)
        if oc % 8:
            total += _book(4 * groups * nb_oc * 8)  # key_conv_padded_bias
    return total


def _avx512_balance(
    mb: int,
    ngroups: int,
    nb_oc: int,
    nb_ic: int,
    ic_block: int,
    src: tuple[int, int],
    dst: tuple[int, int],
    k: tuple[int, int],
    stride: tuple[int, int],
    two_d: bool,
    threads: int,
) -> tuple[int, int]:
    """``jit_avx512_common_conv_bwd_weights_kernel_f32_t::balance``: the threads in all and
    those splitting the batch (``nthr``, ``nthr_mb``), minimising its memory, then compute,
    cost model. ``src``/``dst`` are the (h, w) it sees (transposed for the ``ow == 1`` kernel)."""
    if threads < ngroups:
        return threads, 1
    nthr_g, nthr = ngroups, threads // ngroups
    (ih, iw), (oh, ow), (kh, kw), (sh, sw) = src, dst, k, stride
    ih_red, oh_red = (ih, oh) if two_d else (1, 1)
    ih_no, oh_no = (1, 1) if two_d else (ih, oh)
    nthr_oh = max(1, oh_red // 9)  # min_oh_reduce
    g = -(-ngroups // nthr_g)

    def mem(t_mb: int, t_oc: int, t_ic: int) -> int:
        src_cost = -(-mb * ih_red // t_mb) * g * -(-nb_ic // t_ic) * ic_block * ih_no * iw
        dst_cost = -(-mb * oh_red // t_mb) * g * -(-nb_oc // t_oc) * 16 * oh_no * ow
        wei_cost = 8 * g * -(-nb_oc // t_oc) * -(-nb_ic // t_ic) * kh * kw * ic_block * 16
        return src_cost // sh // sw + dst_cost + wei_cost

    def comp(t_mb: int, t_oc: int, t_ic: int) -> int:
        return -(-mb * oh_red // t_mb) * g * -(-nb_oc // t_oc) * -(-nb_ic // t_ic)

    mb_max = min(nthr, mb * nthr_oh)
    splits = [
        (t_mb, t_oc, min(nthr // t_mb // t_oc, nb_ic))
        for t_mb in range(1, mb_max + 1)
        for t_oc in range(1, min(nthr // t_mb, nb_oc) + 1)
    ]
    best = (1, 1, 1)
    best_mem = mem(*best)
    for split in splits:  # step 1: lowest memory cost, the last of equals
        if mem(*split) <= best_mem:
            best, best_mem = split, mem(*split)
    best_comp = comp(*best)
    for split in splits:  # step 2: lower compute cost within 110% of that memory
        cost = comp(*split)
        if (cost <= best_comp and mem(*split) < 1.1 * best_mem) or 4 * cost <= 3 * best_comp:
            best, best_comp = split, cost
    t_mb, t_oc, t_ic = best
    if threads // 2 < t_mb < threads:
        t_mb = min(mb * nthr_oh, threads)
    return t_mb * nthr_g * t_oc * t_ic, t_mb


def _avx512_direct_scratchpad(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    bias: bool,
    threads: int,
    nxc: bool = False,
) -> int | None:
    """Scratchpad of ``jit_avx512_common_convolution_bwd_weights_t<f32>`` on plain PyTorch
    tensors (``nxc``: channels-last ones, whose source stays plain for any first layer below
    16 channels, with ``harness_mb_reduction`` and no transposed ``ow == 1`` kernel), None
    where its ``init_conf`` refuses the problem
    (src/cpu/x64/jit_avx512_common_conv_kernel.cpp, ``..._bwd_weights_kernel_f32_t::init_conf``,
    ``balance`` and ``init_scratchpad``; ``init_balancers`` in
    jit_avx512_common_convolution.hpp). When ``balance`` splits the batch over ``nthr_mb``
    threads, all but the first accumulate into their own copy of the weight (and bias)
    gradient: ``(nthr_mb - 1) * (wei_size + bia_size)`` floats, plus a page-aligned barrier.
    A bias gradient adds a batch reducer and, for output channels not a multiple of 16, a
    padded bias."""
    n, c, ih, iw = x.shape
    (oh, ow), (kh, kw), (sh, sw), (t, left) = out_hw, w.shape[-2:], stride, padding
    ic, oc = c // groups, w.shape[0] // groups
    dh, dw = dilation[0] - 1, dilation[1] - 1
    ext_kh, ext_kw = (kh - 1) * (dh + 1) + 1, (kw - 1) * (dw + 1) + 1
    if (dh and (sh != 1 or ext_kh > ih)) or (dw and sw != 1):
        return None
    right, bottom = _end_pad(left, ow, iw, sw, ext_kw), _end_pad(t, oh, ih, sh, ext_kh)
    hw_transp = (
        not nxc
        and 14 <= kw < 20
        and ow == 1
        and kw == iw
        and sh == sw == 1
        and dh == dw == 0
        and t == left == right == bottom == 0
    )
    first = ic < 16 and groups == 1  # is_1stconv: source kept plain, weights Ohwi16o
    oc_pad = -(-oc // 16) * 16 if groups == 1 else oc
    ic_block = ic if first else 16
    ic_pad = -(-ic // 16) * 16 if groups == 1 and not first else ic
    if (
        oc_pad % 16
        or ic_pad % ic_block
        or (first and ic > 3 and not nxc)
        or not (left < ext_kw and right < ext_kw and left <= 28 and right <= 28)
        or not (t <= ext_kh // 2 and bottom <= ext_kh // 2)
        or (kw > 14 and not hw_transp)
    ):
        return None
    two_d = dh == 0 and oh > 9 and not hw_transp and not nxc  # harness_2d_reduction
    src, dst = ((iw, ih), (ow, oh)) if hw_transp else ((ih, iw), (oh, ow))
    k = (kw, kh) if hw_transp else (kh, kw)
    nb_oc, nb_ic = oc_pad // 16, ic_pad // ic_block
    nthr, nthr_mb = _avx512_balance(
        n, groups, nb_oc, nb_ic, ic_block, src, dst, k, (sh, sw), two_d, threads
    )
    total = 0
    if nthr_mb > 1:  # key_conv_wei_bia_reduction and its barrier
        size = groups * oc_pad * (ic_pad * kh * kw + 1)
        total += _book(4 * size * (nthr_mb - 1)) + _book(_PAGE, _PAGE)
    if bias:
        if oc % 16:
            total += _book(4 * groups * oc_pad)  # key_conv_padded_bias
        total += _reducer_scratchpad(nthr, 16, groups * nb_oc, n, nthr * 3 * 5 * 5 * 16 * 16)
    return total


def _weight_grad_kernel(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    bias: bool,
) -> tuple[int, bool, int]:
    """The direct weight-gradient kernel oneDNN picks: its channel block, whether it keeps
    the source plain, and its scratchpad bytes (the first in ``backward_weights, f32`` of
    src/cpu/cpu_convolution_list.cpp that accepts the problem). On AVX-512 a problem
    ``jit_avx512_common`` refuses (4 to 15 input channels, its padding limits) falls to
    ``jit_avx2``, with 8-channel blocks."""
    threads = torch.get_num_threads()  # dnnl_get_max_threads()
    c, o = x.shape[1], w.shape[0]
    depthwise = groups > 1 and c == groups == o  # jit_*_dw: its scratchpad is not modelled
    avx2_first = groups == 1 and c == 3  # jit_avx2's "flat" source
    if x.dtype != torch.float32 or depthwise:
        return _block(), _first_layer(c, groups), 0
    if isa() == "AVX2":
        if _avx2_1x1(x, w, out_hw, stride, padding, groups):
            strided = tuple(stride) != (1, 1)
            return 8, False, _avx2_1x1_weight_grad_scratchpad(x, w, out_hw, strided, bias)
        return 8, avx2_first, _avx2_direct_reducers(x, w, groups, bias, threads)
    if "AVX512" in isa():
        if _avx2_1x1(x, w, out_hw, stride, padding, groups):  # jit_avx512_common_1x1, alike
            strided = tuple(stride) != (1, 1)
            return 16, False, _avx512_1x1_weight_grad_scratchpad(x, w, out_hw, strided, bias)
        args = (x, w, out_hw, stride, padding, dilation, groups, bias, threads)
        scratch = _avx512_direct_scratchpad(*args)
        if scratch is not None:
            return 16, _first_layer(c, groups), scratch
        if _avx2_direct_accepts(x, w, out_hw, stride, padding, dilation, groups):
            return 8, avx2_first, _avx2_direct_reducers(x, w, groups, bias, threads)
    return _block(), _first_layer(c, groups), 0


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    mask: list[bool],
    bias_channels: int | None = None,
) -> list[int]:
    """Peak bytes inside oneDNN's backward, the gradients it returns included.
    ``bias_channels``: the bias gradient's channels where the kernel does not compute it
    (``ref_deconvolution`` sums a transposed convolution's own and books the kernel's
    scratchpad as one nested entry, :func:`transposed_backward`)."""
    if channels_last(x, w):
        return _cl_backward(grad_out, x, w, stride, padding, dilation, groups, mask)
    elem = x.element_size()
    go_copy = 0 if grad_out.is_contiguous() else grad_out.numel() * elem
    gi = x.numel() * elem
    high = 0
    held = 0  # outputs already produced inside the op
    if mask[0]:  # grad_input: reorder grad_out and weights, blocked result, reorder back
        # the data-gradient kernels have no plain first-layer variant: a 1-3 channel input
        # gradient is blocked (padded) too, and so are the weights
        d_block = _data_block(x, w, groups)
        go_d, gi_b = _blocked(grad_out.shape, elem, d_block), _blocked(x.shape, elem, d_block)
        high = max(high, go_d + _weights(w, groups, d_block, False) + gi_b, gi_b + gi)
        held += gi
    if mask[1]:  # grad_weight: reorder grad_out and source, blocked result, reorder back
        gw = w.numel() * elem
        # ideep's bias gradient, made before the call
        gb = (w.shape[0] if bias_channels is None else bias_channels) * elem if mask[2] else 0
        kernel_bias = mask[2] and bias_channels is None

        def nest(scratch: int) -> int:  # ref_deconvolution books the kernel's as key_nested
            return scratch if bias_channels is None else _book(scratch)

        out_hw = (grad_out.shape[-2], grad_out.shape[-1])
        if x.dtype == torch.float32 and not _direct_weight_grad(
            x, w, out_hw, stride, padding, dilation, groups
        ):  # gemm on plain layouts: the result in ideep's buffer, then the copy out
            scratch = nest(_gemm_weight_grad_scratchpad(x, w, out_hw, stride, groups))
            high = max(high, held + gb + gw + scratch, held + gb + 2 * gw)
        else:
            wblock, wfirst, scratch = _weight_grad_kernel(
                x, w, out_hw, stride, padding, dilation, groups, kernel_bias
            )
            scratch = nest(scratch)
            go_w = _blocked(grad_out.shape, elem, wblock)
            src_w = 0 if wfirst else _blocked(x.shape, elem, wblock)
            wts_w = _weights(w, groups, wblock, wfirst)
            # then the returned bias gradient is copied out, next to ideep's, and the weights'
            high = max(high, held + gb + go_w + src_w + wts_w + scratch, held + 2 * gb + wts_w + gw)
    return [go_copy + high]


def transposed_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    mask: list[bool],
) -> list[int]:
    """Peak bytes inside a transposed convolution's backward on plain tensors
    (``mkldnn_convolution_transpose_backward`` in aten/src/ATen/native/mkldnn/Conv.cpp);
    an empty list where not modelled (channels-last tensors, groups).

    oneDNN's ``ref_deconvolution`` (src/cpu/ref_deconvolution.cpp) runs the input gradient
    as the forward of the convolution that takes ``grad_out`` to ``x``'s shape (weights in
    their PyTorch ``[in, out, kh, kw]`` order are that convolution's ``[oc, ic, kh, kw]``):
    the blocked reorders and result of :func:`forward`, then the copy into the returned
    gradient. The weight gradient is that convolution's, with ``grad_out`` as its source and
    ``x`` as its outgoing gradient (:func:`backward`); ``ref_deconvolution`` sums the bias
    gradient over ``grad_out`` itself."""
    if channels_last(x, w) or groups != 1:
        return []
    elem = x.element_size()
    go_copy = 0 if grad_out.is_contiguous() else grad_out.numel() * elem
    high = held = 0
    if mask[0]:
        high, held = forward(grad_out, w, x, groups)[0], x.numel() * elem
    if mask[1]:
        weights = backward(
            x, grad_out, w, stride, padding, dilation, groups, [False, True, mask[2]], w.shape[1]
        )
        high = max(high, held + weights[0])
    return [go_copy + high]


def _cl_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    mask: list[bool],
) -> list[int]:
    """Channels-last fp32 depthwise backward on AVX-512 (``mkldnn_convolution_backward`` in
    aten/src/ATen/native/mkldnn/Conv.cpp); an empty list where it is not modelled.

    The input gradient is the NHWC output itself (``jit_uni_dw`` backward data reads
    ``Goihw16g`` weights, groups padded to 16). The weight gradient goes to
    ``jit_uni_dw_convolution_bwd_weights_t`` where its ``init_conf`` accepts the problem (see
    :func:`_direct_weight_grad`), else to ``jit_avx512_common_convolution_bwd_weights_t``,
    which on ``nxc`` data pads each group's input and output channels to 16: its diff weights
    are ``gOIhw16i16o``-like (``aBCde16c16b``, groups x 16 x 16 x kh x kw), 256 times a
    depthwise 7x7 gradient, with the padded bias and batch reductions of
    :func:`_avx512_direct_scratchpad`. ``mkldnn_convolution_backward_weights`` then returns
    ``mkldnn_to_dense(grad_w).to(ChannelsLast)``: a plain copy and a channels-last copy, next
    to ideep's bias gradient and its dense copy. Not modelled: ``jit_uni_dw``'s weight-gradient
    scratchpad (freed before those copies), AVX2's ``gemm`` weight gradient on ``nxc``, and
    regular (``brgconv``) convolutions."""
    if not _depthwise(x, w, groups) or x.dtype != torch.float32 or "AVX512" not in isa():
        return []
    elem, threads, g = x.element_size(), torch.get_num_threads(), groups
    ks = math.prod(w.shape[-2:])
    go_cl = grad_out.is_contiguous(memory_format=torch.channels_last)
    base = _cl_weight_copy(w) + (0 if go_cl else grad_out.numel() * elem)
    high = held = 0
    if mask[0]:
        held = x.numel() * elem
        high = held + math.ceil(g / 16) * 16 * ks * elem
    if mask[1]:
        gw, gb = w.numel() * elem, w.shape[0] * elem if mask[2] else 0
        out_hw = (grad_out.shape[-2], grad_out.shape[-1])
        if _direct_weight_grad(x, w, out_hw, stride, padding, dilation, groups):
            wts, scratch = math.ceil(g / 16) * 16 * ks * elem, 0  # jit_uni_dw
        else:
            wide = torch.empty((g * 16, 16, *w.shape[-2:]), device="meta", dtype=w.dtype)
            wide_x = torch.empty((x.shape[0], g * 16, *x.shape[-2:]), device="meta")
            args = (wide_x, wide, out_hw, stride, padding, dilation, g, mask[2], threads)
            scratch = _avx512_direct_scratchpad(*args, nxc=True)
            if scratch is None:  # jit_avx2, then gemm: not modelled
                return []
            if mask[2]:  # key_conv_padded_bias: one output channel per group, padded to 16
                scratch += _book(4 * g * 16)
            wts = g * 256 * ks * elem
        high = max(high, held + gb + wts + scratch, held + 2 * gb + wts + 2 * gw)
    return [base + high]
