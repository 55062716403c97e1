"""CPU kernel rules, op by op: one real call's allocator peak (profiler records) against the
op's outputs plus what its rule says it allocates inside, on this machine's ISA. An AVX-512
host checks the AVX2 rules too when run with ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2``."""

from __future__ import annotations

import pytest
import torch

from memlens.engine.rules import OpCall
from memlens.engine.targets.emulation import kernel_rules
from memlens.measurement.cpu import allocator_peak
from memlens.targets import resolve_target

aten = torch.ops.aten
CPU = resolve_target("cpu")
RULES = kernel_rules(CPU)
HALF_ON_ONEDNN = torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _predicted_peak(func, args: tuple, out) -> int:
    outs = out if isinstance(out, tuple) else (out,)
    out_bytes = sum(t.untyped_storage().nbytes() for t in outs if isinstance(t, torch.Tensor))
    inside = list(RULES[func](OpCall(func, args, {}, out, "cpu", CPU)))
    return max([out_bytes, *inside])


# (batch, channels, size, out channels, kernel, stride, padding, groups, dtype, bias)
CONVS = [
    (2, 64, 16, 64, 3, 1, 1, 1, torch.float32, False),  # oneDNN, blocked layouts
    (2, 3, 32, 16, 7, 2, 3, 1, torch.float32, False),  # oneDNN, plain first-layer source
    (4, 3, 32, 8, 3, 1, 1, 1, torch.float32, True),  # first layer: batch-split reductions
    (16, 3, 16, 8, 5, 1, 2, 1, torch.float32, True),
    (4, 1, 28, 16, 5, 1, 2, 1, torch.float32, False),  # one channel: AVX2 pads it to 8
    (2, 8, 16, 16, 3, 1, 1, 1, torch.float32, False),  # AVX-512 hands 4-15 channels to jit_avx2
    (4, 16, 8, 16, 3, 1, 1, 2, torch.float32, False),  # 8 per group: AVX-512 blocks by 8 too
    (2, 64, 8, 64, 1, 1, 0, 1, torch.float32, True),  # 1x1: AVX2's 2-D weight reducer
    (2, 64, 2, 64, 3, 1, 1, 1, torch.float32, False),  # filter taller than the input
    (1, 64, 1, 64, 3, 1, 1, 1, torch.float32, True),  # batch 1 on 1x1 maps
    (1, 16, 8, 32, 3, 1, 1, 1, torch.float32, True),  # small problem: Slow2d
    (2, 64, 2, 64, 3, 1, 1, 64, torch.float32, True),  # depthwise 3x3 on 2x2: gemm gradient
    (4, 32, 8, 64, 3, 1, 1, 1, torch.bfloat16, True),
    (4, 32, 8, 64, 1, 1, 0, 1, torch.bfloat16, True),
    (4, 32, 8, 64, 3, 1, 1, 4, torch.bfloat16, True),
    (4, 32, 8, 32, 3, 2, 1, 32, torch.float16, False),
]


@pytest.mark.parametrize(("n", "c", "hw", "o", "k", "s", "p", "g", "dtype", "bias"), CONVS)
def test_convolution_rules_match_the_allocator(n, c, hw, o, k, s, p, g, dtype, bias) -> None:
    if dtype != torch.float32 and HALF_ON_ONEDNN:
        pytest.skip("oneDNN computes half precision here: its scratchpads are not modelled")
    x = torch.randn(n, c, hw, hw, dtype=dtype)
    w = torch.randn(o, c // g, k, k, dtype=dtype)
    b = torch.randn(o, dtype=dtype) if bias else None
    fwd = (x, w, b, [s, s], [p, p], [1, 1], False, [0, 0], g)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )
    bwd = (torch.randn_like(y), x, w, [o] if bias else None, *fwd[3:], [c != 3, True, bias])
    grads = aten.convolution_backward.default(*bwd)
    assert _predicted_peak(aten.convolution_backward.default, bwd, grads) == allocator_peak(
        lambda: aten.convolution_backward.default(*bwd)
    )


@pytest.mark.parametrize(
    ("shape", "dims"),
    [((4, 64, 8, 8), [0, 2, 3]), ((4, 64, 8, 8), [0, 2]), ((4, 64, 8, 8), [2, 3]), ((8, 16), [0])],
)
def test_half_sum_rule_matches_the_allocator(shape, dims) -> None:
    x = torch.randn(*shape, dtype=torch.bfloat16)
    out = aten.sum.dim_IntList(x, dims)
    predicted = _predicted_peak(aten.sum.dim_IntList, (x, dims), out)
    assert predicted == allocator_peak(lambda: aten.sum.dim_IntList(x, dims))


# channels-last depthwise: (batch, channels, size, kernel, padding, bias)
CL_DEPTHWISE = [
    (2, 192, 2, 7, 3, True),  # ConvNeXt's 7x7: AVX-512 pads each group's gradient to 16x16
    (2, 40, 5, 7, 3, False),  # groups not a multiple of 16
    (2, 24, 6, 5, 2, True),
    (4, 64, 8, 3, 1, True),  # 3x3: jit_uni_dw takes the weight gradient, unpadded
]


@pytest.mark.parametrize(("n", "c", "hw", "k", "p", "bias"), CL_DEPTHWISE)
def test_channels_last_depthwise_rules_match_the_allocator(n, c, hw, k, p, bias) -> None:
    x = torch.randn(n, c, hw, hw).to(memory_format=torch.channels_last)
    w, b = torch.randn(c, 1, k, k), torch.randn(c) if bias else None
    fwd = (x, w, b, [1, 1], [p, p], [1, 1], False, [0, 0], c)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return  # AVX2's gemm weight gradient on nxc data is not modelled
    bwd = (torch.randn_like(y), x, w, [c] if bias else None, *fwd[3:], [True, True, bias])
    grads = aten.convolution_backward.default(*bwd)
    assert _predicted_peak(aten.convolution_backward.default, bwd, grads) == allocator_peak(
        lambda: aten.convolution_backward.default(*bwd)
    )


# channels-last regular convolutions (brgconv): (batch, in, size, out, kernel, stride, padding)
CL_REGULAR = [
    (2, 96, 4, 192, 2, 2, 0),  # ConvNeXt's downsampling: weight copy, Acdb32a weights
    (2, 96, 2, 192, 2, 2, 0),  # to a 1x1 map: exec_trans's input buffer and mask
    (2, 3, 32, 48, 4, 4, 0),  # 48 outputs on a small input: 32-blocks pad them to 64
    (2, 3, 64, 48, 4, 4, 0),  # a large input admits 48-blocks
    (2, 64, 8, 144, 3, 1, 1),  # unit stride: the input gradient is a forward brgconv
    (2, 64, 16, 128, 1, 1, 0),  # 1x1: brgconv_1x1 and the 1x1 weight gradient
    (8, 16, 64, 16, 3, 2, 1),  # strided input gradient: its input buffer sets the peak
    (8, 16, 15, 16, 3, 2, 1),  # an odd width: exec_trans adds an output buffer
]


@pytest.mark.parametrize(("n", "c", "hw", "o", "k", "s", "p"), CL_REGULAR)
def test_channels_last_brgconv_rules_match_the_allocator(n, c, hw, o, k, s, p) -> None:
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("brgconv's rules model AVX-512")
    x = torch.randn(n, c, hw, hw).to(memory_format=torch.channels_last)
    w, b = torch.randn(o, c, k, k), torch.randn(o)
    fwd = (x, w, b, [s, s], [p, p], [1, 1], False, [0, 0], 1)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )
    for mask in ([True, True, True], [True, False, False]):
        bwd = (torch.randn_like(y), x, w, [o], *fwd[3:], mask)
        grads = aten.convolution_backward.default(*bwd)
        assert _predicted_peak(aten.convolution_backward.default, bwd, grads) == allocator_peak(
            lambda bwd=bwd: aten.convolution_backward.default(*bwd)
        )


# transposed convolutions: (batch, in, size, out, kernel, stride, padding, output padding)
TRANSPOSED = [
    (2, 256, 2, 128, 2, 2, 0, 0),  # U-Net's up-convolutions: brg_deconv on NHWC, 3 outputs
    (8, 16, 32, 8, 2, 2, 0, 0),  # large maps: the dense copies set the forward's peak
    (2, 64, 8, 32, 3, 2, 1, 1),  # output padding
]


@pytest.mark.parametrize(("n", "c", "hw", "o", "k", "s", "p", "op"), TRANSPOSED)
def test_transposed_convolution_rules_match_the_allocator(n, c, hw, o, k, s, p, op) -> None:
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("the transposed convolutions' rules model AVX-512")
    x, w, b = torch.randn(n, c, hw, hw), torch.randn(c, o, k, k), torch.randn(o)
    fwd = (x, w, b, [s, s], [p, p], [1, 1], True, [op, op], 1)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )
    go = torch.randn(n, o * 2, *y.shape[-2:])[:, :o]  # a slice of a concatenation's gradient
    bwd = (go, x, w, [o], *fwd[3:], [True, True, True])
    grads = aten.convolution_backward.default(*bwd)
    assert _predicted_peak(aten.convolution_backward.default, bwd, grads) == allocator_peak(
        lambda: aten.convolution_backward.default(*bwd)
    )


def test_brgconv_width_fold_matches_the_allocator() -> None:
    """A 12x12 stride-12 filter (144 taps) folds its width into the channels: 12 taps batched."""
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("brgconv's rules model AVX-512")
    x = torch.randn(2, 16, 48, 48).to(memory_format=torch.channels_last)
    fwd = (x, torch.randn(32, 16, 12, 12), None, [12, 12], [0, 0], [1, 1], False, [0, 0], 1)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )


@pytest.mark.parametrize("shape", [(2, 96, 4, 192, 2, 2, 0), (2, 3, 64, 96, 4, 4, 0)])
def test_channels_last_brgconv_forward_on_avx2(shape) -> None:
    """AVX2's brgemm<avx2> forward where its output-channel blocks (8-32) all pad alike."""
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        pytest.skip("run with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2")
    n, c, hw, o, k, s, p = shape
    x = torch.randn(n, c, hw, hw).to(memory_format=torch.channels_last)
    fwd = (x, torch.randn(o, c, k, k), torch.randn(o), [s, s], [p, p], [1, 1], False, [0, 0], 1)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )


def test_brgconv_copies_a_plain_input_of_a_channels_last_weight() -> None:
    """A channels-last weight makes oneDNN take a plain input channels-last: a copy."""
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("brgconv's backward rules model AVX-512")
    w = torch.randn(96, 64, 3, 3).to(memory_format=torch.channels_last)
    fwd = (torch.randn(2, 64, 8, 8), w, torch.randn(96), [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    y = aten.convolution.default(*fwd)
    assert _predicted_peak(aten.convolution.default, fwd, y) == allocator_peak(
        lambda: aten.convolution.default(*fwd)
    )
    bwd = (torch.randn_like(y), *fwd[:2], [96], *fwd[3:], [True, True, True])
    grads = aten.convolution_backward.default(*bwd)
    assert _predicted_peak(aten.convolution_backward.default, bwd, grads) == allocator_peak(
        lambda: aten.convolution_backward.default(*bwd)
    )


@pytest.mark.parametrize(
    ("shape", "threads"),
    [((2, 16, 64, 32, 3, 1, 1), 4), ((2, 8, 16, 48, 5, 1, 2), 2)],
)
def test_nxc_weight_gradient_matches_the_allocator(shape, threads) -> None:
    """jit_avx512_common on nxc data: batch-only reductions (no 2-D harness), and a plain
    source for a first layer of 4-15 channels."""
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("brgconv's backward rules model AVX-512")
    n, c, hw, o, k, s, p = shape
    x = torch.randn(n, c, hw, hw).to(memory_format=torch.channels_last)
    w = torch.randn(o, c, k, k)
    y = aten.convolution.default(x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1)
    bwd = (torch.randn_like(y), x, w, [o], [s, s], [p, p], [1, 1], False, [0, 0], 1)
    bwd += ([False, True, True],)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        grads = aten.convolution_backward.default(*bwd)
        predicted = _predicted_peak(aten.convolution_backward.default, bwd, grads)
        assert predicted == allocator_peak(lambda: aten.convolution_backward.default(*bwd))
    finally:
        torch.set_num_threads(before)
