"""The largest batch size that fits, exact to one, in few traces.

Memory is nearly affine in the batch size, but not exactly: at small batches the peak can sit
in the optimizer step (flat in the batch), and the caching allocator rounds and splits blocks,
so the curve is piecewise. The search therefore uses the affine model only to *guess*:

1. trace batch 1 (if it does not fit, nothing does);
2. scout: guess the answer from batch 1's batch-dependent categories (inputs, activations,
   KV cache; temporaries too in inference) and trace that batch;
3. fit ``a + b * batch`` to the scout alone: ``a`` is what its peak holds that does not grow
   with the batch (parameters, buffers, gradients, optimizer state, framework overhead), ``b``
   the rest per sample. Batch 1 is not used for the line: its peak is often in the optimizer
   step, where the curve is flat. Solve for the capacity and trace the answer;
4. from then on, fit the line through the two traced points nearest the boundary; repeat until
   a batch that fits and the batch above it that does not have both been traced (the guess
   lands on the answer, then on its neighbour). Should the guesses stall, bisection takes
   over, so the search always ends.

The common case costs four traces: 1, the scout, the answer and the answer plus one.

Known limitations: memory is assumed to grow with the batch size. Where it does not (a model
that pads its batch), the answer still fits and the batch above it still does not, but a
larger batch might fit again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memlens._results import Estimate
from memlens.categories import Category

#: The largest batch size searched by default.
DEFAULT_CAP = 2**16

#: Categories that grow with the batch size (temporaries too, in inference).
_PER_SAMPLE = (Category.INPUTS, Category.ACTIVATIONS, Category.KV_CACHE)
#: Categories that do not.
_FIXED = (
    Category.PARAMETERS,
    Category.BUFFERS,
    Category.GRADIENTS,
    Category.OPTIMIZER_STATE,
    Category.FRAMEWORK_OVERHEAD,
)


@dataclass(frozen=True)
class Probe:
    """One traced batch size."""

    batch: int
    total_bytes: int
    fits: bool


@dataclass
class BatchSearch:
    """The answer and how it was found.

    ``max_batch`` is 0 when even batch 1 does not fit, and equals ``cap`` when the cap itself
    fits (the answer is then a lower bound).
    """

    max_batch: int
    capacity_bytes: int
    cap: int
    probes: list[Probe]

    @property
    def traces(self) -> int:
        return len(self.probes)

    @property
    def bounded(self) -> bool:
        """False when the search stopped at the cap, not at the capacity."""
        return self.max_batch < self.cap


def search_max_batch(
    estimate_at: Callable[[int], Estimate], capacity: int, cap: int = DEFAULT_CAP
) -> BatchSearch:
    """The largest batch ``b <= cap`` with ``estimate_at(b).total_bytes <= capacity``."""
    probes: dict[int, int] = {}

    def probe(batch: int) -> Estimate:
        est = estimate_at(batch)
        probes[batch] = est.total_bytes
        return est

    def result(max_batch: int) -> BatchSearch:
        return BatchSearch(
            max_batch,
            capacity,
            cap,
            [Probe(b, n, n <= capacity) for b, n in probes.items()],
        )

    first = probe(1)
    if first.total_bytes > capacity:
        return result(0)
    scout = min(max(_scout(first, capacity), 2), cap)
    guess: int | None = _split(probe(scout), capacity)
    width, stalls = cap, 0
    while True:
        hi = min((b for b, n in probes.items() if n > capacity), default=None)
        lo = max(b for b, n in probes.items() if n <= capacity and (hi is None or b < hi))
        if lo == cap or hi == lo + 1:
            return result(lo)
        new_width = (hi or cap + 1) - lo
        stalls = stalls + 1 if 2 * new_width > width else 0
        width = new_width
        if guess is None:
            guess = (lo + hi) // 2 if stalls >= 2 and hi else _secant(probes, lo, hi, capacity)
        probe(min(max(guess, lo + 1), (hi or cap + 1) - 1))
        guess = None


def _scout(first: Estimate, capacity: int) -> int:
    """A first guess of the answer from the largest bytes batch 1's per-sample categories reach."""
    peaks = first.timeline.category_peaks(first.allocator.sizes)
    per_sample_cats = (
        _PER_SAMPLE if first.workload.training else (*_PER_SAMPLE, Category.TEMPORARIES)
    )
    per_sample = sum(peaks.get(c, 0) for c in per_sample_cats)
    return 1 + (capacity - first.total_bytes) // per_sample if per_sample > 0 else 8


def _split(est: Estimate, capacity: int) -> int:
    """The answer of the line through the batch-independent bytes at ``est``'s peak (at batch
    0) and ``est`` itself."""
    fixed = sum(n for c, n in est.budget() if c in _FIXED)
    per_sample = est.total_bytes - fixed
    if per_sample <= 0:
        return 2 * est.workload.batch
    return (capacity - fixed) * est.workload.batch // per_sample


def _secant(probes: dict[int, int], lo: int, hi: int | None, capacity: int) -> int:
    """Where the line through the two traced points nearest the boundary meets ``capacity``.

    With a bracket these are ``lo`` and ``hi``; without one, the two largest batches that fit.
    """
    if hi is None:
        below = [b for b in probes if b < lo]
        if not below:
            return 2 * lo
        p, q = max(below), lo
    else:
        p, q = lo, hi
    rise = probes[q] - probes[p]
    if rise <= 0:
        return 2 * q  # flat so far: reach further
    return p + (capacity - probes[p]) * (q - p) // rise
