"""DeepLabV3's ASPP on CPU: dilated convolutions oneDNN's direct kernels refuse run as plain
gemm (im2col columns, no blocked reorders); :mod:`memlens.engine.targets.cpu_dilated`."""

from __future__ import annotations

import pytest
import torch

from memlens.engine.rules import OpCall
from memlens.engine.targets.cpu_dilated import direct_refuses
from memlens.engine.targets.cpu_onednn_conv import isa
from memlens.engine.targets.emulation import kernel_rules
from memlens.measurement.cpu import allocator_peak
from memlens.targets import resolve_target

aten = torch.ops.aten
CPU = resolve_target("cpu")
pytestmark = pytest.mark.skipif(
    isa() not in ("AVX2", "AVX512"), reason="oneDNN's x64 kernels are modelled"
)


def _call(n: int, c: int, hw: int, o: int, d: int, p: int) -> tuple:
    x, w = torch.randn(n, c, hw, hw), torch.randn(o, c, 3, 3)
    return (x, w, None, [1, 1], [p, p], [d, d], False, [0, 0], 1)


def _predicted(args: tuple) -> int:
    func = aten.convolution.default
    out = func(*args)
    inside = list(kernel_rules(CPU)[func](OpCall(func, args, {}, out, "cpu", CPU)))
    return max([out.untyped_storage().nbytes(), *inside])


# (batch, channels, size, out channels, dilation, padding): ASPP's rates on small maps
ASPP = [
    (2, 96, 4, 32, 12, 12),  # DeepLabV3 at 64x64 input: the filter's taps all miss but one
    (2, 96, 4, 32, 5, 5),  # left padding 5 wider than the 4-wide output
    (2, 64, 4, 32, 2, 5),  # kernel_outside_src: extent 5 <= padding 5
    (2, 64, 4, 32, 4, 4),  # padding 4 = output width: the direct kernel takes it
    (2, 64, 16, 32, 12, 12),  # a larger map: the direct kernel takes it
    (4, 96, 4, 32, 12, 12),  # batch 4: try_cfg blocks the input channels
    (2, 96, 8, 32, 12, 12),  # 8x8 maps: try_cfg blocks the input channels
    (2, 32, 32, 16, 36, 36),  # 32x32 maps: the copy into PyTorch's output is the peak
]


@pytest.mark.parametrize(("n", "c", "hw", "o", "d", "p"), ASPP)
def test_dilated_convolution_matches_the_allocator(n, c, hw, o, d, p) -> None:
    args = _call(n, c, hw, o, d, p)
    assert _predicted(args) == allocator_peak(lambda: aten.convolution.default(*args))


def test_refusal_follows_the_padding_and_filter_extent() -> None:
    x, w = torch.randn(2, 64, 4, 4), torch.randn(32, 64, 3, 3)
    assert direct_refuses(x, w, (4, 4), [1, 1], [5, 5], [5, 5], 1)
    assert not direct_refuses(x, w, (4, 4), [1, 1], [4, 4], [4, 4], 1)
    assert not direct_refuses(x, torch.randn(32, 64, 1, 1), (4, 4), [1, 1], [0, 0], [1, 1], 1)
