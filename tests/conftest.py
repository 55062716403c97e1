"""Shared fixtures: small models whose every byte can be computed by hand."""

from __future__ import annotations

import pytest
from torch import nn


def tiny_mlp() -> nn.Module:
    """Linear(4->3) + ReLU + Linear(3->2): 23 parameters, 92 bytes in fp32."""
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def small_cnn() -> nn.Module:
    """A small residual-free CNN classifier (conv, batch norm, pooling, linear)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


@pytest.fixture
def mlp_factory():
    return tiny_mlp


def cli_exit_code(*args: str) -> int:
    """The console script's exit code for ``memlens *args`` (errors are formatted by
    ``memlens.cli.main``)."""
    import sys

    from memlens.cli import main

    argv, sys.argv = sys.argv, ["memlens", *args]
    try:
        with pytest.raises(SystemExit) as info:
            main()
    finally:
        sys.argv = argv
    return int(info.value.code or 0)
