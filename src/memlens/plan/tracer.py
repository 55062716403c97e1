"""One model, one device, many estimates: the planner's only way to learn a memory figure.

:class:`Tracer` resolves the model and the target once, estimates its workload plus per-call
changes, caches every answer and counts the traces, so that a planner's cost can be reported
in traces (one trace is one :func:`memlens.estimate` call).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import torch

from memlens._errors import ConfigError, WorkloadError
from memlens._results import Estimate
from memlens._setup import check_target, prepare, resolve_model
from memlens.devices import Device
from memlens.plan._checkpoint import estimate_step
from memlens.targets import Target
from memlens.workload import Workload

#: Errors that mean "this option or value is not supported", raised before any tracing.
UNSUPPORTED = (WorkloadError, ConfigError)
#: Called after each new trace with ``(batch, changes, estimate, seconds)``: the command line
#: sets it to show progress.
TRACE_HOOK: ContextVar[Callable[[int, dict[str, Any], Estimate, float], None] | None] = ContextVar(
    "memlens_trace_hook", default=None
)


class Tracer:
    """Estimates of one model on one device, cached by (batch, changed fields)."""

    def __init__(
        self,
        model: Any,
        workload: Workload | None = None,
        use: str = "estimate",
        fields: Mapping[str, Any] | None = None,
        *,
        device: str | Device | Target = "cuda",
        budget: int | str | None = None,
        inputs: Any = None,
        loss: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        """``workload`` with ``fields`` changed, as API function ``use`` takes them."""
        self.workload, self.target = prepare(
            workload, fields or {}, use, device=device, budget=budget
        )
        if self.workload.closed_form:  # the trace cannot run what only the closed form models
            raise ConfigError(
                f"{use} traces its steps; the closed form (--analytic, --deepspeed, "
                "--sequence-parallel, --checkpoint selective) answers `memlens estimate` and "
                "`memlens fit --gpus N`"
            )
        self.device = self.target.device
        self.spec, self.workload = resolve_model(
            model, self.workload, fields or {}, workload, inputs
        )
        self.loss = loss
        self.count = 0  # estimate calls made
        self._cache: dict[tuple[Any, ...], Estimate] = {}

    def __call__(self, batch: int, **changes: Any) -> Estimate:
        """The estimate at ``batch`` with ``changes`` to the workload (cached)."""
        key = (batch, *sorted(changes.items()))
        if key not in self._cache:
            workload = self.workload.with_(batch=batch, **changes)
            check_target(workload, self.target)
            started = time.perf_counter()
            self._cache[key] = estimate_step(self.spec, workload, self.target, self.loss)
            self.count += 1
            hook = TRACE_HOOK.get()
            if hook is not None:
                hook(batch, changes, self._cache[key], time.perf_counter() - started)
        return self._cache[key]

    def cached(self, batch: int, **changes: Any) -> Estimate | None:
        return self._cache.get((batch, *sorted(changes.items())))

    def accepts(self, **changes: Any) -> bool:
        """Whether the workload takes these field values (no tracing): the names must be
        :class:`Workload` fields, the changed workload valid and runnable on the target."""
        try:
            check_target(self.workload.with_(**changes), self.target)
        except UNSUPPORTED:
            return False
        return True
