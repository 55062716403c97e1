"""User code as a source: ``path/file.py:function``, ``package.module:function``, a callable
returning an ``nn.Module``, or an ``nn.Module`` itself."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memlens._errors import ConfigError
from memlens.sources.base import Inputs, ModelSpec
from memlens.workload import Workload

_SPEC_RE = re.compile(r"^(?P<target>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


def is_factory_spec(text: str) -> bool:
    """``file.py:fn`` or ``pkg.mod:fn`` (a Windows drive letter is not a spec)."""
    m = _SPEC_RE.match(text)
    return bool(m) and not re.match(r"^[A-Za-z]$", m.group("target"))


def load_factory(spec: str) -> Callable[[], Any]:
    """Import the callable a factory spec names; errors say which part is wrong."""
    m = _SPEC_RE.match(spec)
    if not m:
        raise ConfigError(
            f"bad factory spec {spec!r}: use path/file.py:function or pkg.mod:function"
        )
    target, attr = m.group("target"), m.group("attr")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"factory file not found: {target}")
        mod_name = f"_memlens_factory_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(mod_name, path)
        assert loader is not None and loader.loader is not None
        module = importlib.util.module_from_spec(loader)
        sys.modules[mod_name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as e:
            raise ConfigError(f"importing {target} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(
                f"cannot import module {target!r} of factory spec {spec!r}: {e}"
            ) from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{target} has no attribute {attr!r} (factory spec {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{spec!r} is not callable")
    return obj


def generic_inputs(
    user_inputs: Any = None,
) -> Callable[[nn.Module, Workload], Inputs]:
    """Inputs from the user (a tuple of tensors or a callable returning one), or a random
    batch of ``workload.input_shape``."""

    def make(model: nn.Module, workload: Workload) -> Inputs:
        if user_inputs is not None:
            got = user_inputs() if callable(user_inputs) else user_inputs
            if isinstance(got, Inputs):
                return got
            if isinstance(got, dict):
                return Inputs(kwargs=got)
            if isinstance(got, torch.Tensor):
                return Inputs(args=(got,))
            return Inputs(args=tuple(got))
        if workload.input_shape is None:
            raise ConfigError(
                "this model has no default inputs: pass --input-shape (e.g. 3x224x224) "
                "or inputs= to the API"
            )
        return Inputs(args=(torch.randn(workload.batch, *workload.input_shape),))

    return make


def module_spec(
    build: Callable[[], nn.Module], name: str, source: str, user_inputs: Any = None
) -> ModelSpec:
    """A spec for user code whose inputs come from the user or ``--input-shape``."""

    def checked_build() -> nn.Module:
        model = build()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{name} returned {type(model).__name__}, not an nn.Module")
        return model

    return ModelSpec(
        name=name,
        build=checked_build,
        make_inputs=generic_inputs(user_inputs),
        family="generic",
        source=source,
        loss_kind="mean",
    )
