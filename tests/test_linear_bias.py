"""A linear layer on a strided input adds its bias in place in a real run; the trace does the
same (engine/targets/linear.py), against real CPU runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memlens


class _Head(nn.Module):
    """A vocabulary projection of a batch-first view, as after an RNN."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 4000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.transpose(0, 1))


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_strided_linear_bias_in_place(mode) -> None:
    kwargs = {"mode": mode, "batch": 16, "input_shape": (8, 64)}
    if mode == "train":
        kwargs["optimizer"] = "sgd"
    est = memlens.estimate(_Head, device="cpu", **kwargs)
    real = memlens.measure(_Head, device="cpu", **kwargs)
    assert est.peak_bytes == real.peak_bytes
