"""oneDNN's brgemm convolutions on channels-last fp32 tensors (``brgconv``), AVX-512 and AVX2.

With channels-last tensors (``mkldnn_conv_use_channels_last``) a regular (one group)
convolution runs ``brgemm_convolution_fwd_t`` / ``brgemm_1x1_convolution_fwd_t``
(src/cpu/x64/jit_brgemm_conv.cpp, jit_brgemm_1x1_conv.cpp; oneDNN v3.12, commit 80afa71,
the one bundled with torch 2.14) on NHWC views of PyTorch's tensors. PyTorch's
``_mkldnn_convolution`` (aten/src/ATen/native/mkldnn/Conv.cpp) first copies an input or a
weight that is not channels-last contiguous (``.contiguous(ChannelsLast)``: a channels-last
weight makes a plain input channels-last too), allocates the NHWC output, and ideep's
``convolution_forward::do_compute`` allocates the primitive's scratchpad before reordering
the weights into the primitive's ``Acdb{oc_block}a`` layout: all are alive together.

**Scratchpad** (``brgemm_convolution_utils::init_scratchpad`` in
src/cpu/x64/jit_brgemm_conv_utils.cpp): the brgemm batch, ``nthr * adjusted_batch_size``
``brgemm_batch_element_t`` (40 bytes), booked with a 4 KiB alignment
(``registry_t::book``, src/common/memory_tracking.hpp), where ``adjusted_batch_size =
div_up(rnd_up(gemm_batch_size * 40, 4096), 40)`` keeps each thread's batch on its own pages.
The forward's ``gemm_batch_size`` is at most ``kh * kw`` (``nb_ic_blocking`` is 1 in
``calc_blocks``; ``iterate_ker_block``), so a filter of at most 102 taps books 103 elements
per thread. fp32 outputs need no accumulation buffer (``use_buffer``: ``dst_dt != acc_dt``).

**Weight layout** (``pick_tags``): ``oc_block`` is one of 64, 48, 32, 16 (AVX-512's 16-lane
accumulators times ``ocb``), tried from ``min(div_up(oc, 16), 4)`` down;
``fast_check_oc_block`` (``..._1x1`` for 1x1 filters) admits 64 only when the padded
channels are a multiple of 64 (and, for regular filters, fewer than 192; for 1x1 ones, a
large output) and 48 only when they are a multiple of 48 with a large input (at most 384
channels) or when 48-blocking wastes under 5% (1x1). Among the admitted blocks ``est_eff``,
a cost model not mirrored here, picks; the largest admitted block is taken, as it picked in
every shape checked (ConvNeXt's downsampling, stems, 3x3 and 1x1 layers of 48-240 output
channels). The block only matters where it does not divide the channels. AVX2's
``brgemm<avx2>`` blocks by 8 to 32 and ``est_eff`` does choose among them (24 for 96
channels, 32 for 192): its forward is modelled where every candidate pads alike (channels
a multiple of 96, as ConvNeXt's), its backward (``gemm`` weight gradient on ``nxc``) not.

A one-wide output of a one-wide filter (counted after :func:`_width_fold`: ConvNeXt's
downsampling to a 1x1 map) tries ``exec_trans``, whose input buffer and mask are modelled
where their sizes are known (:func:`_trans_buffers`). Not modelled (``None``): other
``exec_trans`` problems (one input channel (``relo``), strided or padded 1x1 filters
(``rtus``), unit height strides), filters of more than 102 taps,
groups, dilation and ``ip_convolution`` (a filter covering the whole input, more than 27
taps). ``exec_trans`` and ``ip_convolution`` are AVX-512's only.
"""

from __future__ import annotations

import math

import torch

from memlens.engine.targets import cpu_onednn_conv
from memlens.engine.targets.cpu_onednn_conv import end_padding

_BATCH_ELEMENT = 40  # sizeof(brgemm_batch_element_t): union of two pointers, vvpad, comp
_P4K = 4096
_ALIGN = 128  # memory_tracking::default_alignment


def _book(nbytes: int, align: int = _ALIGN) -> int:
    """Bytes ``registry_t::book`` reserves: the size plus its alignment (nothing if empty)."""
    return nbytes + max(align, _ALIGN) if nbytes else 0


def batch_scratchpad(threads: int, gemm_batch_size: int) -> int:
    """``key_brgemm_primitive_batch``: per thread ``adjusted_batch_size`` batch elements."""
    per_thread = -(-(-(-gemm_batch_size * _BATCH_ELEMENT // _P4K) * _P4K) // _BATCH_ELEMENT)
    return _book(threads * per_thread * _BATCH_ELEMENT, _P4K)


def oc_block(oc: int, in_sp: int, out_sp: int, strides: int, one_by_one: bool) -> int:
    """The largest output-channel block ``fast_check_oc_block`` (or ``..._1x1``) admits on
    AVX-512 fp32: ``in_sp``/``out_sp`` are the input/output spatial sizes, ``strides`` the
    product of the strides."""
    rnd_oc = -(-oc // 16) * 16
    for ocb in range(min(-(-oc // 16), 4), 0, -1):
        block = 16 * ocb
        if one_by_one:
            if block == 64 and not (rnd_oc % 64 == 0 and out_sp >= 64 * strides):
                continue
            if block == 48 and oc / (-(-oc // 48) * 48) < 0.95:
                continue
        else:
            if block == 64 and not (rnd_oc % 64 == 0 and rnd_oc * 4 < 192 * 4):
                continue
            if block == 48 and not (
                rnd_oc % 48 == 0 and rnd_oc * 4 <= 384 * 4 and in_sp > 81 * strides
            ):
                continue
        return block
    return 16


def avx512() -> bool:
    """Whether PyTorch and oneDNN run AVX-512 kernels here."""
    return "AVX512" in torch.backends.cpu.get_cpu_capability()


def _avx2_padded_oc(oc: int) -> int | None:
    """AVX2's padded output channels: its blocks are ``8 * ocb`` for ``ocb`` from
    ``min(div_up(oc, 8), 4)`` (2 for large outputs or ``loop_gcndhw``) down to 1, and
    ``est_eff``, not mirrored, picks one; known where every candidate pads alike."""
    sizes = {-(-oc // (8 * ocb)) * 8 * ocb for ocb in range(1, min(-(-oc // 8), 4) + 1)}
    return sizes.pop() if len(sizes) == 1 else None


def applies(x: torch.Tensor, w: torch.Tensor, dilation: list[int], groups: int) -> bool:
    """Whether the problem is a regular fp32 one of brgconv's ISAs (AVX-512, AVX2)."""
    isa = torch.backends.cpu.get_cpu_capability()
    return (
        isa in ("AVX2", "AVX512")
        and x.dtype == torch.float32
        and groups == 1
        and x.dim() == 4
        and all(d == 1 for d in dilation)
    )


def forward(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor,
    stride: list[int],
    padding: list[int],
) -> list[int] | None:
    """Peak bytes inside a channels-last brgconv forward (weight copy, output, scratchpad,
    reordered weights), None where not modelled (see the module docstring)."""
    o, i, kh, kw = w.shape
    (ih, iw), (oh, ow) = x.shape[-2:], out.shape[-2:]
    one_by_one = kh == kw == 1
    if one_by_one and (any(s != 1 for s in stride) or any(padding)):
        return None  # rtus: exec_trans with a compacted source buffer
    wide = avx512()
    fold = _width_fold(i, iw, kw, stride[1], padding[1], ow, 16 if wide else 8)
    ic, kw_f = i * fold, kw // fold
    ip_like = oh == ow == 1 and not any(padding) and all(s == 1 for s in stride)
    if wide and ip_like and kh * kw > 27 and x.shape[0] > 1:
        return None  # ip_convolution_fwd_t (check_conv_ip in src/cpu/x64/ip_convolution.cpp)
    if kh * kw_f * _BATCH_ELEMENT > _P4K:  # the batch's size then depends on kh_block
        return None
    threads = torch.get_num_threads()
    trans = 0  # exec_trans (AVX-512 only): a 1-wide output of a 1-wide filter, one channel
    if wide and not one_by_one and ((kw_f == 1 and ow == 1) or (ic == 1 and kw_f * kh > 1)):
        folded = [stride[0], stride[1] // fold]
        trans = _trans_buffers(ic, ih, iw // fold, oh, folded, padding, kh, threads)
        if ic == 1 or trans is None:
            return None
    if wide:
        block = oc_block(o, ih * iw, oh * ow, math.prod(stride), one_by_one)
        padded = -(-o // block) * block
    else:
        padded = _avx2_padded_oc(o)
        if padded is None:
            return None
    elem = w.element_size()
    copy = sum(
        0 if t.is_contiguous(memory_format=torch.channels_last) else t.numel() * elem
        for t in (x, w)
    )
    wts = padded * i * kh * kw * elem
    scratch = batch_scratchpad(threads, 1 if one_by_one else kh * kw_f) + trans
    return [copy + out.untyped_storage().nbytes() + scratch + wts]


def _trans_buffers(
    ic: int,
    ih: int,
    iw: int,
    oh: int,
    stride: list[int],
    padding: list[int],
    kh: int,
    threads: int,
) -> int | None:
    """``exec_trans``'s input buffer and mask for a 1-wide output of a 1-wide (folded)
    filter (``init_conf`` and ``init_scratchpad``, jit_brgemm_conv_utils.cpp): per thread
    ``rnd_up(ds * hs * iwp * nb_ic * LDA, 4096)`` floats and ``rnd_up(nb_oh * nb_ow *
    nb_ic, 4096)`` bytes, each booked 4 KiB aligned. Their blocks (``oh_block``,
    ``ic_block``) come from cost heuristics; the sizes are known where even the largest
    blocks fit one page (``hs <= ihp + pads``, ``nb_ic * ic_block < 2 * ic``), else None.
    Unit height strides (``is_os_blocking``) are not modelled."""
    (sh, sw), (t, left) = stride, padding
    if sh == 1:
        return None
    bottom = end_padding(t, oh, ih, sh, kh)
    hs = ih + t + bottom + max(0, t) + max(0, bottom)
    iwp = iw + left + end_padding(left, 1, iw, sw, 1)  # LDA: sw * ic_block, kw 1
    if hs * iwp * sw * 2 * ic > _P4K or oh * ic > _P4K:
        return None
    return _book(threads * _P4K * 4, _P4K) + _book(threads * _P4K, _P4K)


def _width_fold(ic: int, iw: int, kw: int, sw: int, left: int, ow: int, simd: int) -> int:
    """``trans_dim_koef`` (``init_jcp`` in jit_brgemm_conv_utils.cpp): a forward whose
    width stride exceeds 1 and has no width padding runs as ``[iw / k][kw / k][sw / k][ic *
    k]`` for the largest ``k`` dividing ``iw``, ``kw`` and ``sw`` (``k <= min(kw, sw, iw)``)
    that keeps ``ic * k`` a multiple of the ISA's ``simd_w`` once above it. ConvNeXt's 2x2
    stride-2 downsampling becomes a 1-wide filter over twice the channels."""
    right = end_padding(left, ow, iw, sw, kw)
    if kw == 1 or sw == 1 or left > 0 or right > 0 or (ic > simd and ic % simd):
        return 1
    return max(
        k
        for k in range(1, min(kw, sw, iw) + 1)
        if iw % k == 0 and kw % k == 0 and sw % k == 0 and (ic * k <= simd or ic * k % simd == 0)
    )


def _data_scratchpad(
    x: torch.Tensor,
    w: torch.Tensor,
    out_hw: tuple[int, int],
    stride: list[int],
    padding: list[int],
    threads: int,
    deconv: bool = False,
) -> tuple[int, int] | None:
    """Input gradient: (the reordered weights' bytes, the scratchpad's), None where not
    modelled (``deconv``: as the forward of a transposed convolution, which oneDNN refuses
    for spatial sizes the strides do not divide).

    Unit strides run ``brgemm_convolution_bwd_t`` (src/cpu/x64/jit_brgemm_conv_bwd.cpp): a
    forward brgconv of the incoming gradient with the weights' channels swapped, its
    scratchpad booked whole as one nested entry (``key_nested``, 128-byte alignment), its
    weights ``Bcda{block}b`` with the forward's block rule on the input channels. Other
    strides run ``brgemm_convolution_bwd_strided_t`` (``init_conf`` and ``init_scratchpad``
    in src/cpu/x64/jit_brgemm_conv_bwd_utils.cpp): the batch, a per-thread input buffer of
    ``rnd_up(odp * ohp * owp * oc, 4096)`` floats (the outgoing gradient grown by the
    filter's overflow, ``oc_block = oc``) and a mask of ``rnd_up(nb_ih * nb_iw, 4096)``
    bytes, one page while even one block per pixel fits it; an input width the stride does
    not divide (``has_uneven_iw``: ``exec_trans``) adds a per-thread output buffer of
    ``rnd_up(iw_block * stride_w * ic, 4096)`` floats, one page while even the widest block
    (``rnd_up(iw, stride_w)``) fits it."""
    o, i, kh, kw = w.shape
    (ih, iw), (oh, ow) = x.shape[-2:], out_hw
    (sh, sw), (t, left) = stride, padding
    if sh == sw == 1:
        one_by_one = kh == kw == 1 and not any(padding)
        if (not one_by_one and ((kw == 1 and iw == 1) or o == 1)) or kh * kw * 40 > _P4K:
            return None  # the swapped forward's exec_trans, or a batch size not mirrored
        block = oc_block(i, oh * ow, ih * iw, 1, one_by_one)
        nested = batch_scratchpad(threads, 1 if one_by_one else kh * kw)
        return -(-i // block) * block * o * kh * kw * 4, _book(nested)
    sp = -(-iw // sw) * sw  # the width blocked, rounded to the stride when uneven
    if deconv and (iw % sw or ih % sh):
        return None  # "deconvolution with uneven spatial dimensions is not supported"
    if (kh == kw == 1) or kh * kw * 40 > _P4K or ih * sp > _P4K or sp * sw * i > _P4K:
        return None  # the 1x1 blocking, large batches, masks or output buffers
    block = 16
    for icb in range(min(-(-i // 16), 4), 0, -1):  # fast_check_ic_block, the largest kept
        block, rnd_ic = 16 * icb, -(-i // 16) * 16
        if block == 64 and not (rnd_ic % 64 == 0 and rnd_ic < 192):
            continue
        if block == 48 and not (rnd_ic % 48 == 0 and rnd_ic <= 384 and oh * ow > 81 * sh * sw):
            continue
        break
    bottom, right = end_padding(t, oh, ih, sh, kh), end_padding(left, ow, iw, sw, kw)
    ohp = oh + max(0, kh - 1 - t) // sh + max(0, kh - 1 - bottom) // sh
    owp = ow + max(0, kw - 1 - left) // sw + max(0, kw - 1 - right) // sw
    inp = -(-ohp * owp * o // _P4K) * _P4K
    scratch = batch_scratchpad(threads, kh * kw)
    scratch += _book(threads * inp * 4, _P4K) + _book(threads * _P4K, _P4K)
    if iw % sw:  # key_conv_brgemm_out_buffer
        scratch += _book(threads * _P4K * 4, _P4K)
    return -(-i // block) * block * o * kh * kw * 4, scratch


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    padding: list[int],
    mask: list[bool],
) -> list[int] | None:
    """Peak bytes inside a channels-last regular backward, the gradients included; None
    where not modelled.

    ``mkldnn_convolution_backward`` (aten/src/ATen/native/mkldnn/Conv.cpp) copies what of
    the incoming gradient, the input and the weight is not channels-last contiguous, then
    runs the input gradient (NHWC, PyTorch's own tensor; reordered weights and
    scratchpad, :func:`_data_scratchpad`) and the weight gradient:
    ``jit_avx512_common_convolution_bwd_weights_t`` (or its 1x1 variant) on ``nxc`` data,
    whose diff weights are ``ABcd16b16a`` (both channel counts padded to 16; ``Acdb16a``,
    input channels unpadded, for fewer than 16 of them, ``is_1stconv``) with the scratchpads
    of :func:`.cpu_onednn_conv._avx512_direct_scratchpad`. ``mkldnn_to_dense(...)`` and
    ``.to(ChannelsLast)`` then copy the weight gradient twice, next to ideep's bias gradient
    and its copy."""
    if not avx512():
        return None  # AVX2's weight gradient on nxc data falls to gemm: not modelled
    o, i, kh, kw = w.shape
    elem, threads = x.element_size(), torch.get_num_threads()
    out_hw = (grad_out.shape[-2], grad_out.shape[-1])
    base = sum(
        0 if t.is_contiguous(memory_format=torch.channels_last) else t.numel() * elem
        for t in (grad_out, x, w)
    )
    high = held = 0
    if mask[0]:
        data = _data_scratchpad(x, w, out_hw, stride, padding, threads)
        if data is None:
            return None
        held = x.numel() * elem
        high = held + sum(data)
    if mask[1]:
        gw, gb = w.numel() * elem, o * elem if mask[2] else 0
        one_by_one = kh == kw == 1 and tuple(stride) == (1, 1) and not any(padding)
        if one_by_one:
            scratch = cpu_onednn_conv._avx512_1x1_weight_grad_scratchpad(
                x, w, out_hw, False, mask[2]
            )
        else:
            args = (x, w, out_hw, stride, padding, [1, 1], 1, mask[2], threads)
            scratch = cpu_onednn_conv._avx512_direct_scratchpad(*args, nxc=True)
            if scratch is None:  # jit_avx2, then gemm, on nxc: not modelled
                return None
        i_pad = i if i < 16 and not one_by_one else -(-i // 16) * 16
        wts = -(-o // 16) * 16 * i_pad * kh * kw * elem
        high = max(high, held + gb + wts + scratch, held + 2 * gb + wts + 2 * gw)
    return [base + high]


def transposed_forward(
    x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, stride: list[int], padding: list[int]
) -> list[int] | None:
    """Peak bytes inside a transposed fp32 convolution on AVX-512, None where not modelled.

    PyTorch's ``_mkldnn_convolution_transpose`` (aten/src/ATen/native/mkldnn/Conv.cpp) runs
    ideep's ``convolution_transpose_forward`` and oneDNN picks ``brgemm_deconvolution_fwd_t``
    (src/cpu/x64/jit_brgemm_deconv.cpp): with strides, the input gradient of the convolution
    it transposes (``brgemm_convolution_bwd_strided_t``), its scratchpad booked as one
    nested entry, its layouts are NHWC (``acdb``) with
    ``Acdb{block}a`` weights (:func:`_data_scratchpad`, on the convolution whose input is
    this one's output). A plain NCHW input is reordered to NHWC and the result computed
    into ideep's own NHWC buffer; ``mkldnn_to_dense`` (MKLDNNConversions.cpp) then copies it
    into a tensor with its strides and returns ``.contiguous()`` of that: three outputs at
    once. A channels-last input computes straight into the output, after
    ``weight.contiguous(ChannelsLast)``. Not modelled: unit strides (on a plain input
    ``ref_deconvolution`` over the blocked jit kernels runs them)."""
    if all(s == 1 for s in stride) or not avx512():
        return None  # a plain input runs ref_deconvolution over blocked jit kernels
    conv_x = torch.empty(out.shape, dtype=out.dtype, device="meta")
    threads = torch.get_num_threads()
    data = _data_scratchpad(conv_x, w, x.shape[-2:], stride, padding, threads, deconv=True)
    if data is None:
        return None
    wts, scratch = data[0], _book(data[1])  # the deconvolution's key_nested
    o = out.untyped_storage().nbytes()
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1:
        copy = 0 if w.is_contiguous(memory_format=torch.channels_last) else w.numel() * 4
        return [copy + scratch + wts + o]
    return [max(scratch + x.numel() * x.element_size() + wts + o, 3 * o)]
