"""Turn whatever the user names into a :class:`ModelSpec`.

A model is named by a string (a known name, ``timm/NAME``, a factory spec, a file), a
zero-argument callable returning an ``nn.Module``, or an ``nn.Module``. Names are matched
case- and punctuation-insensitively; a miss suggests the closest known names.

Each *provider* module exposes ``names() -> dict[str, dict]`` (canonical name -> metadata,
where an ``aliases`` list names other spellings) and ``resolve(name) -> ModelSpec | None``,
and may expose ``resolve_path(text) -> ModelSpec | None`` for paths and Hub ids; this module
only dispatches between them. Options such as ``task`` reach the providers whose functions
take them as keyword arguments.

Providers are imported one at a time and asked in order, so a name the first one knows
(a bundled LLM config) imports neither torchvision nor timm; only an unknown name, whose
suggestions need every list, asks them all.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

from memlens._errors import ConfigError, UnknownModelError
from memlens._loader import is_factory_spec, load_factory
from memlens.sources.base import ModelSpec
from memlens.sources.timm_models import PREFIX as TIMM_PREFIX

#: Name providers (modules of this package), most specific first, each imported when first
#: asked: bundled configs need neither torchvision nor timm, timm is asked only about names
#: under its ``PREFIX``; Hugging Face paths and Hub ids last.
PROVIDERS = ("bundled", "torchvision_models", "timm_models", "huggingface")


def providers() -> Iterator[ModuleType]:
    """The provider modules, in :data:`PROVIDERS` order, imported one at a time."""
    for name in PROVIDERS:
        yield import_module(f"memlens.sources.{name}")


def normalize(name: str) -> str:
    """``'Llama-3-8B'``, ``'llama_3_8b'`` and ``'LLAMA 3 8B'`` all become ``'llama38b'``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def known_names() -> dict[str, dict[str, Any]]:
    """Every name memlens knows, with its provider's metadata (imports every provider)."""
    out: dict[str, dict[str, Any]] = {}
    for provider in providers():
        for name, meta in provider.names().items():
            out.setdefault(name, meta)
    return out


def _may_name(provider: ModuleType, name: str) -> bool:
    """Whether ``name`` can be one of the provider's (a provider with a ``PREFIX`` names only
    what starts with it, so its name list need not be built for anything else)."""
    prefix = getattr(provider, "PREFIX", None)
    return prefix is None or normalize(name).startswith(normalize(prefix))


def _canonical(provider: ModuleType, name: str) -> str | None:
    """The provider's name for ``name``, matched exactly, then ignoring case and punctuation,
    then by alias."""
    if not _may_name(provider, name):
        return None
    names = provider.names()
    if name in names:
        return name
    key = normalize(name)
    for candidate in names:
        if normalize(candidate) == key:
            return candidate
    for candidate, meta in names.items():
        if any(normalize(alias) == key for alias in meta.get("aliases", ())):
            return candidate
    return None


def suggest(name: str, n: int = 5) -> list[str]:
    """Known names closest to ``name``."""
    by_key: dict[str, str] = {}
    for known, meta in known_names().items():
        for alias in (known, *meta.get("aliases", ())):
            by_key.setdefault(normalize(alias), known)
    close = difflib.get_close_matches(normalize(name), list(by_key), n=3 * n, cutoff=0.6)
    return list(dict.fromkeys(by_key[k] for k in close))[:n]


def _with_inputs(spec: ModelSpec, inputs: Any) -> ModelSpec:
    if inputs is not None:
        from memlens.sources.factory import generic_inputs

        spec.make_inputs = generic_inputs(inputs)
    return spec


def _ask(
    fn: Callable[..., ModelSpec | None], text: str, options: dict[str, Any]
) -> ModelSpec | None:
    """``fn(text, **options)`` with the options ``fn`` takes; the others must not matter."""
    accepted = inspect.signature(fn).parameters
    spec = fn(text, **{k: v for k, v in options.items() if k in accepted})
    unused = [k for k in options if k not in accepted]
    if spec is not None and unused:
        raise ConfigError(f"{', '.join(unused)} does not apply to {spec.source} model {spec.name}")
    return spec


def _by_name(text: str, options: dict[str, Any]) -> ModelSpec | None:
    """The spec of the first provider that knows ``text`` (exactly, or by a spelling of one
    of its names); later providers are not imported."""
    for provider in providers():
        spec = _ask(provider.resolve, text, options)  # an exact name needs no name list
        if spec is None:
            canonical = _canonical(provider, text)
            if canonical is not None and canonical != text:
                spec = _ask(provider.resolve, canonical, options)
        if spec is not None:
            return spec
    return None


def resolve(
    model: Any, *, inputs: Any = None, task: str | None = None, trust_remote_code: bool = False
) -> ModelSpec:
    """A :class:`ModelSpec` for a name, spec, file, callable or ``nn.Module``.

    ``task`` picks a Hugging Face model's head (``causal-lm``, ``seq-cls``...);
    ``trust_remote_code`` lets a Hub config run its repository's own code.
    """
    from torch import nn

    from memlens.sources import factory

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
    if len(text) > 4096 or any(len(part) > 255 for part in text.split("/")):
        raise UnknownModelError(
            text[:60] + "…", hint=f"{len(text)} characters: longer than any name or path"
        )
    options: dict[str, Any] = {"task": task} if task else {}
    if is_factory_spec(text):
        return factory.module_spec(load_factory(text), text, "factory", inputs)
    spec = _by_name(text, options)
    # a Hub-style "org/name" id whose last part is known ("meta-llama/Meta-Llama-3-8B"),
    # unless it is a local folder ("models/gpt2" holding its own config.json) or timm's
    hub_style = "/" in text and not text.lower().startswith(TIMM_PREFIX)
    if spec is None and hub_style and not Path(text).exists():
        spec = _by_name(text.rsplit("/", 1)[1], options)
    if spec is not None:
        return _with_inputs(spec, inputs)
    if trust_remote_code:
        options["trust_remote_code"] = True
    for provider in providers():
        resolve_path = getattr(provider, "resolve_path", None)
        spec = _ask(resolve_path, text, options) if resolve_path is not None else None
        if spec is not None:
            return spec
    raise UnknownModelError(text, suggest(text))
