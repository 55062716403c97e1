"""CPU FFT rules (engine/targets/cpu_fft.py): one real call's allocator peak against the
output plus the copies MKL's ``_exec_fft`` makes, to the byte."""

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
SPECTRUM = (4, 8, 16, 9)


def _complex(transposed: bool = False) -> torch.Tensor:
    if transposed:
        return torch.randn(4, 9, 16, 16, dtype=torch.complex64).transpose(1, 3)[:, :8]
    return torch.randn(*SPECTRUM, dtype=torch.complex64)


CALLS = [
    ("irfft2", aten._fft_c2r.default, lambda: (_complex(), [2, 3], 2, 16)),
    ("irfftn", aten._fft_c2r.default, lambda: (_complex(), [1, 2, 3], 2, 16)),
    ("irfft", aten._fft_c2r.default, lambda: (_complex(), [3], 2, 16)),
    ("irfft strided", aten._fft_c2r.default, lambda: (_complex(True), [3], 2, 16)),
    ("rfft2", aten._fft_r2c.default, lambda: (torch.randn(4, 8, 16, 16), [2, 3], 0, True)),
    ("rfft over 1, 2", aten._fft_r2c.default, lambda: (torch.randn(4, 8, 16, 16), [1, 2], 0, True)),
    ("fft over 2", aten._fft_c2c.default, lambda: (_complex(), [2], 0, True)),
    ("fft2", aten._fft_c2c.default, lambda: (_complex(), [2, 3], 0, True)),
]


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="PocketFFT: outputs only")
@pytest.mark.parametrize(("name", "op", "make"), CALLS, ids=[c[0] for c in CALLS])
def test_fft_rules_match_the_allocator(name, op, make) -> None:
    args = make()
    out = op(*args)
    inside = list(RULES[op](OpCall(op, args, {}, out, "cpu", CPU)))
    assert max([out.untyped_storage().nbytes(), *inside]) == allocator_peak(lambda: op(*args))
