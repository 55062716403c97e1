"""torchvision classification models by name (``resnet50``, ``vit_b_16``...)."""

from __future__ import annotations

import functools
from typing import Any

from memlens._errors import MissingExtraError
from memlens.sources.base import ModelSpec
from memlens.sources.vision import image_inputs

#: The ``source`` of these models' metadata and specs.
SOURCE = "torchvision"


def _tv() -> Any:
    try:
        import torchvision
    except ImportError as e:  # pragma: no cover - torchvision is a test dependency
        raise MissingExtraError("torchvision", "vision", "torchvision models") from e
    return torchvision


@functools.cache
def names() -> dict[str, dict[str, Any]]:
    """Classification model names torchvision offers, with metadata (may be empty)."""
    try:
        tv = _tv()
    except MissingExtraError:
        return {}
    out = {}
    for name in tv.models.list_models(module=tv.models):
        out[name] = {"family": "vision", "source": SOURCE}
    return out


def _input_size(name: str) -> tuple[int, int, int]:
    tv = _tv()
    try:
        weights = tv.models.get_model_weights(name).DEFAULT
        crop = weights.transforms.keywords.get("crop_size")
        meta = weights.meta
    except (ValueError, AttributeError, KeyError):
        return (3, 224, 224)
    if crop is None:
        size = meta.get("min_size", (224, 224))
        return (3, *size)
    return (3, crop, crop)


def resolve(name: str) -> ModelSpec | None:
    if name not in names():
        return None
    tv = _tv()
    shape = _input_size(name)
    num_classes = 1000

    def build() -> Any:
        return tv.models.get_model(name, weights=None)

    return ModelSpec(
        name=name,
        build=build,
        make_inputs=image_inputs(shape, num_classes),
        family="vision",
        source=SOURCE,
        loss_kind="classification",
        metadata={"input_shape": list(shape), "num_classes": num_classes},
    )
