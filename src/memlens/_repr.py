"""Short reprs of result objects: one line of at most :data:`MAX_REPR` characters (a REPL
prints a result's repr; the default dataclass one of an estimate runs to hundreds of KiB
with its timeline). Each result's ``summary()`` gives the long form as plain text."""

from __future__ import annotations

from typing import Any

from memlens.units import fmt_bytes

#: Longest repr of a result object.
MAX_REPR = 1000


def brief(obj: Any, **items: Any) -> str:
    """``Name(key=value, ...)``: ``*_bytes`` integers in binary units, other values by their
    repr cut to 80 characters, None left out, the whole cut to :data:`MAX_REPR`."""
    parts = [f"{k}={_value(k, v)}" for k, v in items.items() if v is not None]
    text = f"{type(obj).__name__}({', '.join(parts)})"
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 2] + "…)"


def _value(key: str, value: Any) -> str:
    if key.endswith("bytes") and isinstance(value, int) and not isinstance(value, bool):
        return f"'{fmt_bytes(value)}'"
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def rows(pairs: list[tuple[str, str]], indent: int = 2) -> list[str]:
    """``label  value`` lines, labels padded to one width."""
    width = max((len(label) for label, _ in pairs), default=0)
    return [" " * indent + f"{label:<{width}}  {value}" for label, value in pairs]
