"""One model, one device, many estimates: the planner's only way to learn a memory figure.

:class:`Tracer` resolves the model once, calls :func:`memlens.estimate` with fixed arguments
plus per-call changes, caches every answer and counts the traces, so that a planner's cost can
be reported in traces (one trace is one :func:`memlens.estimate` call).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import torch

from memlens._errors import ConfigError, WorkloadError
from memlens._estimate import estimate, make_workload
from memlens._results import Estimate
from memlens.devices import Device, resolve_device
from memlens.sources.registry import resolve
from memlens.workload import Workload

#: Errors that mean "this option or value is not supported", raised before any tracing.
UNSUPPORTED = (TypeError, WorkloadError, ConfigError)


class Tracer:
    """Estimates of one model on one device, cached by (batch, changed arguments)."""

    def __init__(
        self,
        model: Any,
        *,
        device: str | Device,
        budget: int | str | None,
        inputs: Any = None,
        loss: Callable[..., torch.Tensor] | None = None,
        **workload: Any,
    ) -> None:
        self.spec = resolve(model, inputs=inputs)
        self.kind, self.device = resolve_device(device, budget)
        self.loss = loss
        self.workload = workload  # mode, optimizer, precision, shapes, strategy options
        self.count = 0  # estimate calls made
        self._cache: dict[tuple[Any, ...], Estimate] = {}

    def __call__(self, batch: int, **changes: Any) -> Estimate:
        """The estimate at ``batch`` with ``changes`` to the fixed arguments (cached)."""
        key = (batch, *sorted(changes.items()))
        if key not in self._cache:
            self._cache[key] = estimate(
                self.spec,
                loss=self.loss,
                batch=batch,
                device=self.device if self.device is not None else self.kind,
                **{**self.workload, **changes},
            )
            self.count += 1
        return self._cache[key]

    def cached(self, batch: int, **changes: Any) -> Estimate | None:
        return self._cache.get((batch, *sorted(changes.items())))

    def accepts(self, **changes: Any) -> bool:
        """Whether :func:`memlens.estimate` takes these arguments and values (no tracing).

        A name must be an explicit parameter of :func:`memlens.estimate` or a field of
        :class:`Workload` that the workload really sets: what lands in ``Workload.options``
        is left unread.
        """
        names = {
            n
            for n, p in inspect.signature(estimate).parameters.items()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        } | {f.name for f in dataclasses.fields(Workload)}
        if not set(changes) <= names:
            return False
        try:
            workload = make_workload(device=self.kind, **{**self.workload, **changes})
        except UNSUPPORTED:
            return False
        return not set(changes) & set(workload.options)
