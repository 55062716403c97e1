"""Before a real run: refuse a step whose estimate does not fit the memory free now.

A step larger than the host's available memory swaps or is killed by the kernel's OOM killer
(taking the user's session with it); one larger than a GPU's free memory fails after its
setup. The estimate is checked first and the run refused with both figures, unless forced.
"""

from __future__ import annotations

from pathlib import Path

from memlens._errors import MeasureError
from memlens.units import fmt_bytes


def available_bytes(kind: str) -> int | None:
    """Memory free for a new allocation now: the host's ``MemAvailable`` (Linux
    ``/proc/meminfo``: free plus reclaimable page cache) for ``cpu``, the device's free
    memory (``torch.cuda.mem_get_info``) for ``cuda``; None where it cannot be read."""
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_room(needed: int, kind: str) -> None:
    """Refuse a run of ``needed`` bytes (the estimate: allocated peak on the host, reserved
    memory plus context on a GPU) when less is free on ``kind``."""
    free = available_bytes(kind)
    if free is not None and needed > free:
        where = "this host" if kind == "cpu" else "the GPU"
        raise MeasureError(
            f"the step needs about {fmt_bytes(needed)} (its estimate) but {where} has "
            f"{fmt_bytes(free)} free: a real run would swap or be killed; run it anyway with "
            "memlens measure --force (force=True)"
        )
