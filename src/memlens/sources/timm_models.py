"""timm models by name: ``timm/NAME`` (``timm/vit_base_patch16_224``)."""

from __future__ import annotations

import functools
from typing import Any

from memlens._errors import MissingExtraError
from memlens.sources.base import ModelSpec
from memlens.sources.vision import image_inputs

PREFIX = "timm/"
#: The ``source`` of these models' metadata and specs.
SOURCE = "timm"


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise MissingExtraError("timm", "timm", "timm models") from e
    return timm


@functools.cache
def names() -> dict[str, dict[str, Any]]:
    """``timm/NAME`` for every model timm can build (empty if timm is missing)."""
    try:
        timm = _timm()
    except MissingExtraError:
        return {}
    return {PREFIX + n: {"family": "vision", "source": SOURCE} for n in timm.list_models()}


def resolve(name: str) -> ModelSpec | None:
    if not name.lower().startswith(PREFIX):
        return None
    timm = _timm()
    arch = name[len(PREFIX) :]
    if arch not in timm.list_models():
        return None
    cfg = timm.get_pretrained_cfg(arch)
    shape = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    num_classes = (cfg.num_classes if cfg is not None else None) or 1000

    def build() -> Any:
        return timm.create_model(arch, pretrained=False)

    return ModelSpec(
        name=name,
        build=build,
        make_inputs=image_inputs(shape, num_classes),
        family="vision",
        source=SOURCE,
        loss_kind="classification",
        metadata={"input_shape": list(shape), "num_classes": num_classes},
    )
