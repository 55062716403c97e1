"""Turn whatever the user names into a :class:`ModelSpec`.

A model is named by a string (a known name, ``timm/NAME``, a factory spec, a file), a
zero-argument callable returning an ``nn.Module``, or an ``nn.Module``. Names are matched
case- and punctuation-insensitively; a miss suggests the closest known names.

Each *provider* module exposes ``names() -> dict[str, dict]`` (canonical name -> metadata)
and ``resolve(name) -> ModelSpec | None``; this module only dispatches between them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from memlens._errors import UnknownModelError
from memlens.sources import factory, timm_models, torchvision_models
from memlens.sources.base import ModelSpec

#: Name providers, most specific first (bundled configs shadow nothing of torchvision).
PROVIDERS: list[ModuleType] = [torchvision_models, timm_models]


def normalize(name: str) -> str:
    """``'Llama-3-8B'``, ``'llama_3_8b'`` and ``'LLAMA 3 8B'`` all become ``'llama38b'``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def known_names() -> dict[str, dict[str, Any]]:
    """Every name memlens knows, with its provider's metadata."""
    out: dict[str, dict[str, Any]] = {}
    for provider in PROVIDERS:
        for name, meta in provider.names().items():
            out.setdefault(name, meta)
    return out


def _canonical(name: str) -> str | None:
    names = known_names()
    if name in names:
        return name
    key = normalize(name)
    for candidate in names:
        if normalize(candidate) == key:
            return candidate
    # a Hub-style "org/name" id whose last part is known ("meta-llama/Meta-Llama-3-8B")
    if "/" in name and not name.lower().startswith(timm_models.PREFIX):
        return _canonical(name.rsplit("/", 1)[1])
    return None


def suggest(name: str, n: int = 5) -> list[str]:
    """Known names closest to ``name``."""
    names = known_names()
    by_key = {normalize(k): k for k in names}
    close = difflib.get_close_matches(normalize(name), list(by_key), n=n, cutoff=0.6)
    return [by_key[k] for k in close]


def _with_inputs(spec: ModelSpec, inputs: Any) -> ModelSpec:
    if inputs is not None:
        spec.make_inputs = factory.generic_inputs(inputs)
    return spec


def resolve(model: Any, *, inputs: Any = None) -> ModelSpec:
    """A :class:`ModelSpec` for a name, spec, file, callable or ``nn.Module``."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, nn.Module):
        module = model
        return factory.module_spec(lambda: module, type(module).__name__, "module", inputs)
    if callable(model) and not isinstance(model, str):
        fn: Callable[[], nn.Module] = model
        return factory.module_spec(fn, getattr(fn, "__name__", "factory"), "factory", inputs)
    if not isinstance(model, str) or not model.strip():
        raise UnknownModelError(
            repr(model), hint="pass a model name, a factory spec or an nn.Module"
        )
    text = model.strip()
    if factory.is_factory_spec(text):
        return factory.module_spec(factory.load_factory(text), text, "factory", inputs)
    for provider in PROVIDERS:  # an exact name needs no name lists (they import timm)
        spec = provider.resolve(text)
        if spec is not None:
            return _with_inputs(spec, inputs)
    canonical = _canonical(text)
    if canonical is not None:
        for provider in PROVIDERS:
            spec = provider.resolve(canonical)
            if spec is not None:
                return _with_inputs(spec, inputs)
    for provider in PROVIDERS:
        resolve_path = getattr(provider, "resolve_path", None)
        spec = resolve_path(text) if resolve_path is not None else None
        if spec is not None:
            return spec
    raise UnknownModelError(text, suggest(text))
