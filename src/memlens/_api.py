"""The Python API beside :func:`memlens.estimate`: every CLI command has a twin here.

Each function takes ``(model, workload=None, *, device=..., inputs=None, loss=None,
**fields)`` as :func:`memlens.estimate` does; ``fields`` are :class:`~memlens.Workload` fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from memlens._errors import WorkloadError
from memlens._setup import prepare, resolve_model
from memlens.devices import Device
from memlens.measurement import Measurement, measure_spec
from memlens.plan import FitResult, SweepResult, plan_fit, plan_sweep
from memlens.plan._sweep import DEFAULT_BATCHES
from memlens.plan.batch import DEFAULT_CAP
from memlens.plan.tracer import Tracer
from memlens.workload import Workload, parse_batches

__all__ = ["fit", "measure", "sweep"]


def measure(
    model: Any,
    workload: Workload | None = None,
    *,
    device: str = "cuda",
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    force: bool = False,
    **fields: Any,
) -> Measurement:
    """Run one steady-state step of ``model`` for real and measure it (arguments as
    :func:`memlens.estimate`; ``device`` is ``"cpu"`` or ``"cuda"``; ``checkpoint="auto"``
    needs a budget: measure the ``modules:...`` an estimate chose instead). With
    ``step=fn`` the user's own step function runs, the same that :func:`memlens.estimate`
    traces.

    The step is estimated first and refused (:class:`~memlens.MeasureError`) when its
    estimate exceeds the memory free on the device now (the host's available memory on
    ``cpu``); ``force=True`` skips that check. A step that cannot be traced is run unchecked.

    Known limitations: the data-loading fields are validated but no DataLoader runs: the
    measured peak is the step's alone (the estimate's ``host`` table has the pipeline's).
    """
    work, target = prepare(workload, fields, "measure", device=device)
    spec, work = resolve_model(model, work, fields, workload, inputs)
    if not force:
        from memlens._errors import TraceError
        from memlens.measurement.guard import check_room
        from memlens.plan._checkpoint import estimate_step

        try:
            est = estimate_step(spec, work, target, loss)
        except TraceError:
            est = None  # the real run is the only answer
        if est is not None:
            check_room(est.peak_bytes if target.kind == "cpu" else est.total_bytes, target.kind)
    return measure_spec(spec, work, target, loss=loss)


def fit(
    model: Any,
    workload: Workload | None = None,
    *,
    batch: int | None = None,
    max_batch: int = DEFAULT_CAP,
    strategies: bool = True,
    device: str | Device = "cuda",
    budget: int | str | None = None,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    **fields: Any,
) -> FitResult:
    """The largest batch size of ``model`` whose step fits ``device`` (or ``budget``), exact to
    one, and the cheapest strategy combinations that fit at ``batch``.

    Other arguments are those of :func:`memlens.estimate`; ``device`` must have a capacity (a
    catalog name, ``"cpu"``, or any kind with a ``budget``). ``batch`` is the target batch of
    the strategy table; by default the power of two above the largest batch that fits (1 when
    none does). ``max_batch`` caps the search; ``strategies=False`` skips the table.

    Example usage::

        result = memlens.fit("resnet50", device="v100-16gb", optimizer="adam")
        print(result.max_batch, result.traces)
        for option in result.strategies.fitting:
            print(option.label, option.total_bytes, option.risk)
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise WorkloadError("max_batch", max_batch, "must be a positive integer")
    tracer = Tracer(
        model, workload, "fit", fields, device=device, budget=budget, inputs=inputs, loss=loss
    )
    return plan_fit(tracer, batch=batch, max_batch=max_batch, strategies=strategies)


def sweep(
    model: Any,
    workload: Workload | None = None,
    *,
    batches: str | Iterable[int] = DEFAULT_BATCHES,
    device: str | Device = "cuda",
    budget: int | str | None = None,
    inputs: Any = None,
    loss: Callable[..., torch.Tensor] | None = None,
    **fields: Any,
) -> SweepResult:
    """Estimate ``model`` at each batch size of ``batches`` (``[1, 8, 32]`` or ``"1,8,32"``;
    other arguments as in :func:`memlens.estimate`).

    Example usage::

        result = memlens.sweep("resnet50", batches=[1, 8, 32, 64], device="v100-16gb")
        for e in result.estimates:
            print(e.workload.batch, e.peak_bytes, e.total_bytes)
    """
    sizes = parse_batches(batches)
    tracer = Tracer(
        model, workload, "sweep", fields, device=device, budget=budget, inputs=inputs, loss=loss
    )
    return plan_sweep(tracer, sizes)
