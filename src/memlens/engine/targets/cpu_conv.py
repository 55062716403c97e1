"""CPU convolutions: the buffers PyTorch's CPU backends allocate inside ``aten.convolution``.

``_select_conv_backend`` (aten/src/ATen/native/Convolution.cpp) sends a 4-D, non-transposed
CPU convolution to oneDNN when ``ConvParams::use_mkldnn`` passes, otherwise (not dilated,
NNPACK not applicable) to PyTorch's own ``Slow2d`` (im2col and gemm). The two allocate
different hidden buffers: :mod:`memlens.engine.targets.cpu_onednn_conv` and
:mod:`memlens.engine.targets.cpu_slow_conv`. Which one runs depends on the machine, and a CPU target
is the machine tracing it: ``use_mkldnn`` takes bfloat16 and float16 only where oneDNN
computes them natively (``mkldnn_bf16_device_check``/``mkldnn_fp16_device_check`` in
aten/src/ATen/native/mkldnn/Utils.h: AVX-512 (bw, vl, dq) or AVX-NE-CONVERT for bf16), so on
an AVX2 CPU half-precision convolutions run ``Slow2d``. fp32 ones go to oneDNN except
small problems (batch 1, one group, a kernel of at most 3 in some dimension, at most 20,480
input elements) and, on one thread, unstrided 1x1 convolutions of batches below 16.

A 1-D convolution runs as a 2-D one of unit height (``view1d_as_2d``), and is modelled as
one. Channels-last ones run with NHWC views (:mod:`memlens.engine.targets.cpu_brgconv` for
regular fp32 ones on AVX-512, depthwise ones in :mod:`.cpu_onednn_conv`). Transposed fp32
ones on AVX-512 (``MkldnnTranspose``) go to :func:`.cpu_brgconv.transposed_forward` and
:func:`.cpu_onednn_conv.transposed_backward`. Dilated (``slow_conv_dilated2d``), NNPACK,
3-D and other transposed convolutions are not modelled;
neither are oneDNN's small scratchpads (tens to a hundred KiB), nor, on AVX2, its gemm
fallbacks for the forward pass and the input gradient (filters overhanging a tiny input;
grouped convolutions with a number of channels per group that is not a multiple of 8): they
use plain layouts and im2col columns, not the blocked buffers modelled.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule
from memlens.engine.targets import cpu_brgconv, cpu_dilated, cpu_onednn_conv, cpu_slow_conv

aten = torch.ops.aten


def _uses_mkldnn(
    x: torch.Tensor, w: torch.Tensor, stride: list[int], dilation: list[int], groups: int
) -> bool:
    """Mirror of ``ConvParams::use_mkldnn`` for CPU tensors (Convolution.cpp)."""
    if not torch.backends.mkldnn.is_available() or not torch.backends.mkldnn.enabled:
        return False
    if x.dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if x.dtype == torch.float16:
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    if x.dtype != torch.float32:
        return False
    strided = any(s != 1 for s in stride)
    dilated = any(d != 1 for d in dilation)
    one_by_one = w.shape[-1] == 1 and w.shape[-2] == 1
    fast = strided or dilated or x.shape[0] >= 16 or not one_by_one or torch.get_num_threads() > 1
    big = groups > 1 or (w.shape[-1] > 3 and w.shape[-2] > 3) or x.shape[0] > 1 or x.numel() > 20480
    return fast and big


def _uses_nnpack(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Mirror of ``ConvParams::use_nnpack`` for 4-D, non-dilated CPU tensors."""
    return (
        torch._nnpack_available()
        and x.dtype == torch.float32
        and w.shape[-2] < 17
        and w.shape[-1] < 17
        and x.shape[0] >= 16
    )


def _backend(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: list[int],
    dilation: list[int],
    transposed: bool,
    groups: int,
) -> str | None:
    """``_select_conv_backend``'s choice where it is modelled: "mkldnn", "mkldnn_transpose"
    (fp32 on AVX-512), "slow2d" or None. Plain (contiguous NCHW) inputs, and channels-last
    ones on oneDNN (Slow2d's channels-last path is not modelled)."""
    if x.dim() != 4:
        return None
    if transposed:
        modelled = cpu_brgconv.avx512() and cpu_brgconv.applies(x, w, dilation, groups)
        return (
            "mkldnn_transpose"
            if modelled and _uses_mkldnn(x, w, stride, dilation, groups)
            else None
        )
    if not x.is_contiguous():
        cl = cpu_onednn_conv.channels_last(x, w)
        return "mkldnn" if cl and _uses_mkldnn(x, w, stride, dilation, groups) else None
    if _uses_mkldnn(x, w, stride, dilation, groups):
        return "mkldnn"
    if any(d != 1 for d in dilation) or _uses_nnpack(x, w):
        return None
    return "slow2d"


def _as_2d(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """A 1-D convolution's tensors as ``_convolution`` runs them (``params.view1d_as_2d()``
    and ``view4d`` in aten/src/ATen/native/Convolution.cpp): ``(N, C, L)`` as ``(N, C, 1, L)``,
    with a unit height added to stride, padding and dilation."""
    return [t.unsqueeze(2) for t in tensors]


@register_rule(aten.convolution.default)
def conv_forward(call: OpCall) -> list[int]:
    x, w = call.args[0], call.args[1]
    stride, padding, dilation, transposed, _, groups = call.args[3:9]
    if call.device != "cpu":
        return []
    out = call.out
    if x.dim() == 3 and not transposed:
        x, w, out = _as_2d(x, w, out)
        stride, padding, dilation = [1, *stride], [0, *padding], [1, *dilation]
    match _backend(x, w, stride, dilation, transposed, groups):
        case "mkldnn_transpose":
            return cpu_brgconv.transposed_forward(x, w, out, stride, padding) or []
        case "mkldnn":
            if cpu_onednn_conv.channels_last(x, w) and cpu_brgconv.applies(x, w, dilation, groups):
                return cpu_brgconv.forward(x, w, out, stride, padding) or []
            gemm = cpu_dilated.forward(x, w, out, stride, padding, dilation, groups)
            return gemm if gemm is not None else cpu_onednn_conv.forward(x, w, out, groups)
        case "slow2d":
            return cpu_slow_conv.forward(x, w, out, stride, padding, groups)
    return []


@register_rule(aten.convolution_backward.default)
def conv_backward(call: OpCall) -> list[int]:
    grad_out, x, w, bias_sizes = call.args[0:4]
    stride, padding, dilation, transposed, _, groups, mask = call.args[4:11]
    if call.device != "cpu":
        return []
    if x.dim() == 3 and not transposed:
        grad_out, x, w = _as_2d(grad_out, x, w)
        stride, padding, dilation = [1, *stride], [0, *padding], [1, *dilation]
    match _backend(x, w, stride, dilation, transposed, groups):
        case "mkldnn_transpose":
            args = (stride, padding, dilation, groups, mask)
            return cpu_onednn_conv.transposed_backward(grad_out, x, w, *args)
        case "mkldnn":
            if cpu_onednn_conv.channels_last(x, w) and cpu_brgconv.applies(x, w, dilation, groups):
                return cpu_brgconv.backward(grad_out, x, w, stride, padding, mask) or []
            return cpu_onednn_conv.backward(grad_out, x, w, stride, padding, dilation, groups, mask)
        case "slow2d":
            return cpu_slow_conv.backward(grad_out, x, w, bias_sizes, stride, padding, groups, mask)
    return []
