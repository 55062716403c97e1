"""``checkpoint="auto"``: the fewest repeated blocks to checkpoint so that a step fits."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from memlens._errors import WorkloadError
from memlens._pipeline import estimate_spec
from memlens._results import Estimate
from memlens.sources.base import ModelSpec
from memlens.targets import Target
from memlens.workload import Workload


def auto_checkpoint(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    loss: Callable[..., torch.Tensor] | None,
) -> Estimate:
    """Checkpoint the fewest repeated blocks that make the step fit ``target``.

    Blocks are taken in decreasing order of the activations they keep for backward (in the
    trace without checkpointing); the count is found by bisection, one trace per probe
    (peak memory falls as blocks are added). The returned estimate's workload names the
    chosen blocks (``modules:...``), so that it can be measured as it is.
    """
    if target.capacity_bytes is None:
        raise WorkloadError(
            "checkpoint", "auto", "needs a device capacity: pass a catalog device or a budget"
        )
    t0 = time.perf_counter()
    plain = estimate_spec(spec, workload.with_(checkpoint="none"), target, loss)
    order = plain.strategies.get("blocks_by_activations", [])
    if plain.fits or not order:
        plain.seconds = time.perf_counter() - t0
        return plain

    def probe(k: int) -> Estimate:
        names = ",".join(order[:k])
        return estimate_spec(spec, workload.with_(checkpoint=f"modules:{names}"), target, loss)

    best = probe(len(order))
    if best.fits:
        lo, hi = 0, len(order)  # plain (0 blocks) does not fit, all of them do
        while hi - lo > 1:
            mid = (lo + hi) // 2
            candidate = probe(mid)
            if candidate.fits:
                hi, best = mid, candidate
            else:
                lo = mid
    best.seconds = time.perf_counter() - t0
    return best


def estimate_step(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Estimate:
    """The estimate of one step, its checkpointed blocks chosen first under ``auto``; under
    a parallel layout (``world_size > 1``), the worst rank's."""
    if workload.layout.distributed:
        from memlens.distributed.estimate import estimate_parallel

        return estimate_parallel(spec, workload, target, loss)
    if workload.checkpoint == "auto":
        return auto_checkpoint(spec, workload, target, loss)
    return estimate_spec(spec, workload, target, loss)
