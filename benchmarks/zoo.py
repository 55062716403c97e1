"""Models of the accuracy benchmark that no source names (factories for ``file.py:fn``)."""

from __future__ import annotations

from torch import nn


def mlp() -> nn.Module:
    """A 4-layer MLP on flattened 3x64x64 images (12,288 features) with 1000 classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3 * 64 * 64, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.GELU(),
        nn.Linear(2048, 1024),
        nn.ReLU(),
        nn.Linear(1024, 1000),
    )
