"""The devices memlens budgets for: capacity, bandwidth and fixed overheads.

Figures and their sources live in ``data/devices.json``, not here. Names are matched case- and
punctuation-insensitively, with or without the vendor's prefix (``"H100"``, ``"h100-80gb"`` and
``"NVIDIA H100 80GB HBM3"`` are one device); a miss suggests the closest names. How the
engine emulates each kind of device is :mod:`memlens.targets`'s business.

Example usage::

    get_device("v100").capacity_bytes  # 16160 MiB: the 16 GB card, as nvidia-smi reports it
    custom_device("24GiB").capacity_bytes  # a budget (its CUDA context comes from the stack)

Known limitations:

- Capacities marked nominal (``capacity_reported`` false) are the vendor's figure; the usable
  total is lower (driver reservations, ECC on GDDR cards, the display on desktop cards).
- Overheads are per kind. The CUDA context is not a catalog figure: it depends on the CUDA
  version, module loading and the architecture, and :mod:`memlens.cuda_stack` models it per
  target from published measurements.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from memlens._errors import ConfigError, MemlensError, UnknownDeviceError
from memlens.units import fmt_bytes, parse_size

#: Leading words of vendor device names that do not tell devices apart ("NVIDIA GeForce ...").
_VENDOR_WORDS = frozenset(
    {"nvidia", "tesla", "geforce", "amd", "instinct", "google", "cloud", "apple"}
)
#: Look-alike characters, folded only to find suggestions ("v1OO" -> "v100").
_LOOKALIKES = str.maketrans({"o": "0", "l": "1", "i": "1"})


@dataclass(frozen=True)
class Device:
    """One device: how much memory it has and what is taken before any tensor exists."""

    name: str  # canonical name ("h100-80gb")
    aliases: tuple[str, ...]
    vendor: str
    kind: str  # "cuda", "rocm", "tpu", "mps" or "cpu"
    arch: str  # "sm90", "gfx942", ... ("" when unknown: a budget)
    memory_type: str
    capacity_bytes: int
    capacity_reported: bool  # the usable total (driver- or user-given), not a nominal label
    bandwidth_bytes_per_s: int | None
    # runtime context outside the allocator's counters; None for CUDA, whose context depends
    # on the software stack (memlens.cuda_stack, resolved per target)
    context_bytes: int | None
    workspace_bytes: int  # BLAS workspace, allocated through the caching allocator
    note: str


class FitsDevice:
    """Capacity, free bytes and the verdict of a result that has a ``device`` (a
    :class:`Device` or None) and a ``total_bytes`` (what the device would hold)."""

    device: Device | None
    total_bytes: int

    @property
    def capacity_bytes(self) -> int | None:
        return self.device.capacity_bytes if self.device is not None else None

    @property
    def free_bytes(self) -> int | None:
        """Capacity left at the peak (negative: short by that much)."""
        cap = self.capacity_bytes
        return None if cap is None else cap - self.total_bytes

    @property
    def fits(self) -> bool | None:
        free = self.free_bytes
        return None if free is None else free >= 0


def list_devices() -> list[Device]:
    """Every catalog device, in catalog order."""
    return list(_catalog()[0])


def get_device(name: str) -> Device:
    """The catalog device called ``name`` or one of its aliases; raises UnknownDeviceError."""
    device = _catalog()[1].get(_key(name))
    if device is None:
        raise UnknownDeviceError(name, _suggest(name, _catalog()[1]))
    return device


def custom_device(capacity_bytes: int | str, kind: str = "cuda") -> Device:
    """A device of ``capacity_bytes`` (a byte count or a size such as ``"24GiB"``) of ``kind``.

    The capacity is taken as usable memory; the kind's context and workspace still apply.
    """
    capacity = parse_size(capacity_bytes)
    context, workspace = kind_overheads(kind)
    return Device(
        name="custom",
        aliases=(),
        vendor="custom",
        kind=kind,
        arch="",
        memory_type="unknown",
        capacity_bytes=capacity,
        capacity_reported=True,
        bandwidth_bytes_per_s=None,
        context_bytes=context,
        workspace_bytes=workspace,
        note=f"user budget of {fmt_bytes(capacity)}; {kind} overheads from the catalog",
    )


@cache
def _data() -> dict[str, Any]:
    return json.loads((files("memlens") / "data" / "devices.json").read_text("utf-8"))


@cache
def _catalog() -> tuple[tuple[Device, ...], dict[str, Device]]:
    data = _data()
    devices = []
    for entry in data["devices"]:
        context, workspace = _overheads(data["overheads"][entry["kind"]], entry["arch"])
        host = entry["capacity_basis"] == "host"
        devices.append(
            Device(
                name=entry["name"],
                aliases=tuple(entry["aliases"]),
                vendor=entry["vendor"],
                kind=entry["kind"],
                arch=entry["arch"],
                memory_type=entry["memory_type"],
                capacity_bytes=_host_memory_bytes() if host else entry["capacity_bytes"],
                capacity_reported=host or entry["capacity_basis"] == "reported",
                bandwidth_bytes_per_s=entry["bandwidth_bytes_per_s"],
                context_bytes=context,
                workspace_bytes=workspace,
                note=entry["note"],
            )
        )
    by_key = {_key(alias): d for d in devices for alias in (d.name, *d.aliases)}
    return tuple(devices), by_key


def kind_overheads(kind: str, arch: str = "") -> tuple[int | None, int]:
    """(context bytes, BLAS workspace bytes) of a device of ``kind`` and ``arch`` (``""``:
    the kind's default workspace); the context is None for CUDA (see :mod:`memlens.cuda_stack`)."""
    overheads = _data()["overheads"]
    if kind not in overheads:
        raise ConfigError(f"unknown device kind {kind!r}: use one of {', '.join(overheads)}")
    return _overheads(overheads[kind], arch)


def _overheads(kind_overheads: dict[str, Any], arch: str) -> tuple[int | None, int]:
    """Context and workspace bytes of a kind; workspaces are keyed by arch prefix ("sm90")."""
    workspaces = kind_overheads["workspace_bytes"]
    prefix = next((p for p in workspaces if p != "default" and arch.startswith(p)), "default")
    return kind_overheads.get("context_bytes"), workspaces[prefix]


def _key(name: str) -> str:
    """``"NVIDIA GeForce RTX-3090"`` -> ``"rtx3090"``: lower case; no punctuation, no vendor."""
    words = re.findall(r"[a-z0-9]+", name.lower())
    while words[1:] and words[0] in _VENDOR_WORDS:
        words.pop(0)
    return "".join(words)


def _suggest(name: str, by_key: dict[str, Device], n: int = 3) -> list[str]:
    """Names of the devices whose keys are closest to ``name``'s, look-alikes folded."""
    folded = {key.translate(_LOOKALIKES): d.name for key, d in by_key.items()}
    close = difflib.get_close_matches(
        _key(name).translate(_LOOKALIKES), folded, n=n * 3, cutoff=0.6
    )
    return list(dict.fromkeys(folded[k] for k in close))[:n]


def _host_memory_bytes() -> int:
    """Total RAM of this machine: ``MemTotal`` from /proc/meminfo, else ``sysconf``."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the kernel's "kB" is KiB
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError) as exc:
        raise MemlensError("cannot read this machine's RAM size; give a budget instead") from exc
