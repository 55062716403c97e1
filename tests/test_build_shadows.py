"""Model construction reads true values of small tensors computed from factories (real
shadows, engine/build.py), so architectures computed with tensor ops are built as for real."""

from __future__ import annotations

import torch
from torch import nn

import memlens


class _Computed(nn.Module):
    """Widths from ``arange``/``pow``/``round``/``tolist`` and depths from ``torch.tensor``,
    as torchvision's RegNet computes them (``BlockParams.from_init_params``)."""

    def __init__(self) -> None:
        super().__init__()
        widths = (torch.round(16 * torch.pow(1.5, torch.arange(4))) // 8 * 8).int().tolist()
        depths = torch.diff(torch.tensor([0, 1, 3, 4, 6])).tolist()
        layers, cin = [], 8
        for w, d in zip(widths, depths, strict=True):
            for _ in range(d):
                layers.append(nn.Linear(cin, w))
                cin = w
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_architecture_computed_with_tensor_ops_is_built_for_real() -> None:
    est = memlens.estimate(_Computed, device="cpu", batch=2, input_shape=(8,), mode="inference")
    assert est.num_params == sum(p.numel() for p in _Computed().parameters())


def test_regnet_widths() -> None:
    from torchvision.models import regnet_y_400mf

    est = memlens.estimate(
        "regnet_y_400mf", device="cpu", batch=1, input_shape=(3, 32, 32), mode="inference"
    )
    assert est.num_params == sum(p.numel() for p in regnet_y_400mf().parameters())
