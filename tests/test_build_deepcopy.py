"""Models that clone modules with ``copy.deepcopy`` while they are built (``nn.Transformer``'s
``_get_clones``): the copies are new fake tensors of the trace's own mode, and count."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import memlens


def _two_copies() -> nn.Module:
    layer = nn.Linear(64, 64)
    return nn.Sequential(copy.deepcopy(layer), nn.ReLU(), copy.deepcopy(layer))


def _transformer() -> nn.Module:
    return nn.Transformer(64, 4, 2, 2, 128, batch_first=True)


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_deepcopied_modules_trace_and_match_the_real_run(mode: str) -> None:
    inputs = lambda: (torch.randn(2, 16, 64), torch.randn(2, 16, 64))  # noqa: E731
    est = memlens.estimate(_transformer, device="cpu", mode=mode, inputs=inputs)
    real = memlens.measure(_transformer, device="cpu", mode=mode, inputs=inputs)
    assert est.num_params == sum(p.numel() for p in _transformer().parameters())
    assert abs(est.peak_bytes - real.peak_bytes) <= 0.01 * real.peak_bytes


def test_a_deepcopy_is_its_own_storage() -> None:
    est = memlens.estimate(_two_copies, device="cpu", mode="inference", input_shape=(64,))
    params = [b for b in est.timeline.blocks if b.category.value == "parameters"]
    assert sum(b.nbytes for b in params) == 2 * (64 * 64 + 64) * 4
