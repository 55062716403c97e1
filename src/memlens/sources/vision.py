"""Image models: inputs at the model's own resolution, classification loss."""

from __future__ import annotations

import torch
from torch import nn

from memlens.sources.base import Inputs
from memlens.workload import Workload


def image_inputs(default_shape: tuple[int, ...], num_classes: int | None) -> callable:  # type: ignore[valid-type]
    """``make_inputs`` for an image model: a batch of images and random class targets."""

    def make(model: nn.Module, workload: Workload) -> Inputs:
        shape = workload.input_shape or default_shape
        x = torch.randn(workload.batch, *shape)
        targets = None
        if num_classes:
            targets = torch.randint(0, num_classes, (workload.batch,))
        return Inputs(args=(x,), targets=targets)

    return make
