"""Image models: inputs at the model's own resolution, classification loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memlens._errors import WorkloadError
from memlens.sources.base import Inputs

if TYPE_CHECKING:
    from torch import nn

    from memlens.workload import Workload


def _model_shape(model: nn.Module, default: tuple[int, ...]) -> tuple[int, ...]:
    """The resolution the built model declares (``image_size`` of torchvision's ViTs), which
    can differ from its pretrained weights' crop (vit_h_14: 518 with weights, 224 without)."""
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and len(default) == 3:
        return (default[0], size, size)
    return default


def image_inputs(
    default_shape: tuple[int, ...], num_classes: int | None
) -> Callable[[nn.Module, Workload], Inputs]:
    """``make_inputs`` for an image model: a batch of images and random class targets."""

    def make(model: nn.Module, workload: Workload) -> Inputs:
        import torch

        if workload.seq_len is not None:
            raise WorkloadError(
                "seq_len",
                workload.seq_len,
                f"does not apply to an image model ({type(model).__name__} reads images): set "
                "its input size with input_shape, e.g. 3x224x224",
            )
        native = _model_shape(model, default_shape)
        shape = workload.input_shape or native
        if len(shape) != len(native) or shape[0] != native[0]:
            want = "x".join(map(str, native))
            raise WorkloadError(
                "input_shape",
                "x".join(map(str, shape)),
                f"{type(model).__name__} reads {native[0]}-channel images of shape CxHxW "
                f"(its own: {want})",
            )
        x = torch.randn(workload.batch, *shape)
        targets = None
        if num_classes:
            targets = torch.randint(0, num_classes, (workload.batch,))
        return Inputs(args=(x,), targets=targets)

    return make
