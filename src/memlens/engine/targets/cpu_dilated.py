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
(``is_blocking_applicable`` false) the columns are the whole ``ic * ks * os`` and ``nthr``
is all threads when ``outer_threading`` holds, else 1. With it, ``nthr`` is all threads and
the blocks are the best of ``try_cfg``'s candidates (mirrored in :func:`_blocks`, with the
C++ unsigned arithmetic of its ``L2`` terms and float efficiencies), sized against the
per-core L2 (``platform::get_per_core_cache_size(2)``, read from sysfs; where sysfs has no
L2 the whole columns are taken, an upper bound). ideep allocates the scratchpad as a
tensor while its destination exists, then PyTorch copies the destination
into the tensor it returns (``_mkldnn_convolution`` in aten/src/ATen/native/mkldnn/Conv.cpp:
``mkldnn_to_dense`` of ideep's result): the peak is the larger of destination + scratchpad
and two outputs.
"""

from __future__ import annotations

import functools
import math
import struct
from pathlib import Path

import torch

from memlens.engine.targets.cpu_onednn_conv import end_padding, isa

_ALIGN = 128  # memory_tracking: default_alignment, added to each booked scratchpad entry
_GEMM_THRESHOLD = 64 * 1024  # gemm_thrld in jit_gemm_convolution_utils::init_conf
_U64 = 1 << 64


@functools.cache
def l2_per_core() -> int | None:
    """Bytes of L2 per logical CPU (oneDNN's ``get_per_core_cache_size(2)``), None if unknown."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            shared = (index / "shared_cpu_list").read_text().strip()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:])
        if level != "2" or kind == "Instruction" or unit is None or not size[:-1].isdigit():
            continue
        cpus = sum(
            int(b) - int(a) + 1 if "-" in r else 1
            for r in shared.split(",")
            for a, _, b in [r.partition("-")]
        )
        return int(size[:-1]) * unit // max(1, cpus)
    return None


def _f32(v: float) -> float:
    """``v`` rounded to a C++ ``float``."""
    return struct.unpack("f", struct.pack("f", v))[0]


def _ud(a: int, b: int) -> int:
    """C++ ``size_t`` division (``L2`` is unsigned), read back as ``dim_t``."""
    r = (a % _U64) // (b % _U64)
    return r - _U64 if r >= 1 << 63 else r


def _div_up(a: int, b: int) -> int:
    return -(-a // b)


def _rnd_up(a: int, b: int) -> int:
    return _div_up(a, b) * b


def _sat(lo: int, hi: int, v: int) -> int:
    return max(lo, min(hi, v))


def _blocks(
    mb: int,
    ic: int,
    oc: int,
    os_: int,
    ks: int,
    sh: int,
    sw: int,
    threads: int,
    simd_w: int,
    l2: int,
) -> tuple[int, int]:
    """(ic_block, os_block) of the blocked fp32 NCHW gemm forward: ``try_cfg``, ``explore_cfg``
    and the ``nthr_oc`` loop of ``jit_gemm_convolution_utils::init_conf``."""
    spatial, k, simd = mb * os_, ic * ks, simd_w
    best = {"eff": 0.0, "ocb": 1, "osb": 1, "icb": ic}

    def max_icb(ocb: int, osb: int, oc_thr: int, os_thr: int) -> int:  # calc_max_icb
        out_b, inp_row, col_row = ocb * osb, sh * sw * osb, ks * osb
        if osb >= os_thr:
            m = _ud(l2, inp_row + col_row)
            if ocb < oc_thr:
                m = min(m, _ud(l2 - out_b, col_row + ks * ocb))
        else:
            m = _ud(l2 - out_b, inp_row + col_row + ks * oc_thr)
        return _ud(l2 - out_b, inp_row + col_row + ks * oc_thr) if m < ic else m

    def try_cfg(nthr_oc: int, ocb: int, osb: int) -> None:
        max_oc, min_oc = _div_up(oc, nthr_oc), max(1, oc // nthr_oc)
        max_os = _div_up(spatial, threads // nthr_oc)
        ocb, osb = _sat(8, max_oc, ocb), _sat(simd, max_os, osb)
        min_os = _div_up(spatial, _div_up(threads, nthr_oc))
        if oc % nthr_oc > threads % nthr_oc:
            max_thr = max_oc * max_os
        else:
            max_thr = max(max_oc * min_os, min_oc * max_os)
        low_os = max(1, spatial // _div_up(threads, nthr_oc))
        if threads % nthr_oc > oc % nthr_oc:
            min_thr = min_oc * low_os
        else:
            min_thr = min(max_oc * low_os, min_oc * (spatial // (threads // nthr_oc)))
        ocb, os_max = min(max_oc, ocb), min(os_, max_os)
        osb = min(os_max, osb)
        m = max_icb(ocb, osb, max_oc, max_os)
        mem = 20 if m < 1 else 1  # non_cache_access
        icb = max(1, ic // _div_up(ic, max(1, m)))
        kb, osb_c = icb * ks, _rnd_up(osb, simd)
        out_ops = mem * max_oc * _rnd_up(max_os, simd)
        out_ops *= 1 if icb == ic else 2 * _div_up(ic, icb) - 1
        inp_size = ic * _rnd_up(max_os * sh * sw, simd)
        koeff = _f32(osb_c) / _f32(osb)
        col_ops = int(mem * (_f32(ks * inp_size) * koeff + _f32(ks * inp_size) * koeff))
        col_ops *= 8 if sw != 1 else 1  # strided_im2col_k
        ops = mem * ks * inp_size + col_ops + mem * max_oc * _rnd_up(k, simd) + out_ops
        eff = (
            (_f32(min_thr) / _f32(max_thr)) ** 8
            * (_f32(max_oc) / _f32(_rnd_up(max_oc, ocb)))
            * (_f32(os_max) / _f32(_rnd_up(os_max, osb)))
            * (_f32(ic) / _f32(_rnd_up(ic, icb)))
            * (_f32(osb) / _f32(_rnd_up(osb, 3 * simd)))
            * (_f32(_f32(_f32(max_os) / simd) * max_oc * k) / _f32(ops))
            * math.sqrt(_f32(_f32(osb) * ocb * kb) / _f32(_f32(max_oc) * max_os * k))
            * (
                _f32(_f32(_f32(osb) / simd) * ocb * kb)
                / _f32(osb_c * kb + ocb * _rnd_up(kb, simd) + ocb * osb_c)
            )
        )
        res = _f32(float(eff) ** (1 / 14.5))  # k_sum
        if res > best["eff"]:
            best.update(eff=res, ocb=ocb, osb=osb, icb=icb)

    def explore(n: int, ocb: int, osb: int) -> None:
        try_cfg(n, ocb, osb)
        try_cfg(n, ocb // 8 * 8, osb // 48 * 48)
        try_cfg(n, _rnd_up(ocb, 8), osb // 48 * 48)
        try_cfg(n, _rnd_up(ocb, 8), _rnd_up(osb, simd))
        try_cfg(n, _rnd_up(ocb, 8), _rnd_up(osb, 48))

    for n in range(1, threads + 1):
        moc, mos = _div_up(oc, n), _div_up(spatial, threads // n)
        try_cfg(n, moc, mos)
        if (best["ocb"], best["osb"], best["icb"]) == (moc, mos, ic):
            continue
        a_k, b_k = sh * sw + ks, ks * moc
        ocb = _sat(8, moc, _ud(l2 - a_k * ic * simd - b_k * ic, simd))
        explore(n, ocb, _sat(simd, mos, _ud(l2 - b_k * ic, a_k * ic + ocb)))
        icb_max = max(1, _ud(l2, 2 * 8 * a_k + 2 * b_k))
        if icb_max < ic:
            icb = ic // max(1, ic // icb_max)
            osb = max(1, _ud(l2 - 2 * b_k * icb, 2 * icb * a_k))
            ocb = _ud(_ud(l2, 2), osb)
            if ocb > moc:
                ocb = moc
                osb = _sat(simd, mos, _ud(l2 - b_k * icb, a_k * icb + ocb))
            elif osb > mos:
                osb = mos
                ocb = _sat(8, moc, _ud(l2 - a_k * icb * osb - b_k * icb, osb))
            explore(n, ocb, osb)
        osb = max(simd, _ud(l2 - b_k * ic, a_k * ic + moc) // simd * simd)
        explore(n, moc, osb)
    return best["icb"], best["osb"]


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
    bottom, right = end_padding(top, oh, ih, sh, ext_h), end_padding(left, ow, iw, sw, ext_w)
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
        l2 = l2_per_core()
        icb, osb = (
            (c, os_) if l2 is None else _blocks(n, c, o, os_, ks, *stride, threads, simd_w, l2 // 4)
        )
        cols, nthr = icb * ks * osb, threads
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
    scratch, nbytes = gemm_forward_scratchpad(x, w, out_hw, stride), out.untyped_storage().nbytes()
    return [max(nbytes + scratch, 2 * nbytes)]
