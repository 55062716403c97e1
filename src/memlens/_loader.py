"""Callables named by a spec: ``path/file.py:function`` or ``package.module:function`` (model
factories, the user's own step). Torch-free."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memlens._errors import ConfigError

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
