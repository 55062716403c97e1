"""Byte quantities: parsing and formatting.

Bytes are ``int`` everywhere inside memlens. Reports show binary units (KiB, MiB, GiB,
1024-based) and say so; vendors quote decimal units (KB, MB, GB, 1000-based), which
:func:`parse_size` accepts too.
"""

from __future__ import annotations

import re

from memlens._errors import ConfigError

_BINARY = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_DECIMAL = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse ``"24GiB"``, ``"16 GB"``, ``"512MiB"``, ``"100B"`` or an ``int`` byte count into
    bytes. A string needs its unit: ``"16"`` is refused (``16GiB?``), not read as 16 bytes."""
    if isinstance(text, int):
        if text <= 0:
            raise ConfigError(f"size must be positive, got {text}")
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ConfigError(f"cannot parse size {text!r}: use e.g. 24GiB, 16GB or 512MiB")
    if not m.group(2):
        guess = "GiB" if float(m.group(1)) <= 256 else "MiB"  # a device, else a context
        raise ConfigError(
            f"size {text!r} has no unit: {m.group(1)}{guess}? "
            "(units: GiB, MiB, GB, MB; B for bytes)"
        )
    number, unit = float(m.group(1)), m.group(2).lower()
    factor = _BINARY.get(unit) or _DECIMAL.get(unit)
    if factor is None:
        allowed = ", ".join(["B", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB"])
        raise ConfigError(f"unknown unit {m.group(2)!r} in {text!r}: use one of {allowed}")
    value = int(round(number * factor))
    if value <= 0:
        raise ConfigError(f"size must be positive, got {text!r}")
    return value


def fmt_bytes(n: int | float, *, precision: int = 2) -> str:
    """Format a byte count with binary units: ``fmt_bytes(3 * 2**30) == '3.00 GiB'``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{sign}{n / factor:.{precision}f} {unit}"
    return f"{sign}{int(n)} B"


def fmt_decimal(n: int | float, *, precision: int = 2) -> str:
    """Format a byte count with decimal (vendor) units: ``fmt_decimal(16e9) == '16.00 GB'``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if n >= factor:
            return f"{sign}{n / factor:.{precision}f} {unit}"
    return f"{sign}{int(n)} B"


def fmt_count(n: int | float) -> str:
    """Format a count with SI suffixes: ``fmt_count(25_557_032) == '25.56M'``."""
    for unit, factor in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{unit}"
    return str(int(n))
