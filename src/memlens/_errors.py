"""Exceptions raised by memlens.

All of them derive from :class:`MemlensError`, which the CLI catches once and prints as
one line::

    MemlensError
    ├── WorkloadError        a workload field is invalid (names the field and allowed values)
    ├── UnknownModelError    a model name matched nothing (carries close matches)
    ├── UnknownDeviceError   a device name matched nothing (carries close matches)
    ├── UnsupportedDeviceError  a known device memlens cannot emulate (says what to do instead)
    ├── ConfigError          a config file or factory spec is malformed (names the field)
    ├── HeaderError          a checkpoint / ONNX header is corrupt or unsupported
    ├── TraceError           the engine could not trace the step (names the op and module)
    ├── MeasureError         a real run could not be measured on the requested device
    ├── UserCodeTimeout      the user's code (factory, step) ran past ``--timeout``
    └── MissingExtraError    an optional dependency is not installed (says what to install)
"""

from __future__ import annotations

from collections.abc import Sequence


class MemlensError(Exception):
    """Base class of every error memlens raises on purpose."""


class WorkloadError(MemlensError, ValueError):
    """A workload field has an invalid value."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"invalid {field}={value!r}: {allowed}")


class UnknownModelError(MemlensError, LookupError):
    """A model name that memlens does not know."""

    def __init__(self, name: str, suggestions: Sequence[str] = (), hint: str = "") -> None:
        self.name, self.suggestions = name, list(suggestions)
        msg = f"unknown model {name!r}"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class UnknownDeviceError(MemlensError, LookupError):
    """A device name that memlens does not know."""

    def __init__(self, name: str, suggestions: Sequence[str] = (), hint: str = "") -> None:
        self.name, self.suggestions = name, list(suggestions)
        msg = f"unknown device {name!r}"
        if self.suggestions:
            msg += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class UnsupportedDeviceError(MemlensError, ValueError):
    """A known device whose kind memlens has no model of (TPU, Apple MPS)."""

    def __init__(self, name: str, reason: str, instead: str) -> None:
        self.name, self.reason, self.instead = name, reason, instead
        super().__init__(f"cannot estimate for {name}: {reason}; {instead}")


class ConfigError(MemlensError, ValueError):
    """A config file, factory spec or option string is malformed."""


class HeaderError(MemlensError, ValueError):
    """A checkpoint or model-file header is corrupt, truncated or unsupported."""


class TraceError(MemlensError, RuntimeError):
    """The engine could not run the step on fake tensors."""

    def __init__(self, reason: str, *, op: str | None = None, module: str | None = None) -> None:
        self.reason, self.op, self.module = reason, op, module
        where = []
        if op:
            where.append(f"op {op}")
        if module is not None:
            where.append(f"module {module or '<root>'}")
        super().__init__(f"cannot trace: {reason}" + (f" (at {', '.join(where)})" if where else ""))


class MeasureError(MemlensError, RuntimeError):
    """A real run could not be measured."""


class UserCodeTimeout(MemlensError, TimeoutError):
    """The user's code (a factory, a model's forward, a step) ran past the time allowed."""

    def __init__(self, seconds: float, doing: str) -> None:
        self.seconds = seconds
        super().__init__(
            f"timed out after {seconds:g} s while {doing} (--timeout {seconds:g}): the model's "
            "code did not return; raise --timeout if it is only slow"
        )


class MissingExtraError(MemlensError, ImportError):
    """An optional dependency is missing."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package, self.extra = package, extra
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'memlens[{extra}]'")
