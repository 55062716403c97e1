"""Optimizer offload (ZeRO-Offload style): the optimizer runs in host memory.

The device keeps the parameters and their gradients. The host keeps an fp32 master copy of
each trainable parameter, an fp32 gradient buffer, and the optimizer state of the masters.
A step copies the device gradients into the host buffers, runs the optimizer on the
masters (on the host CPU), and copies the masters back into the device parameters. Blocking
copies between devices convert dtypes on the host side, so the device allocates nothing for
them (``copy_`` in aten/src/ATen/native/cuda/Copy.cu).

The engine runs everything on fake CPU tensors; the allocations made inside the optimizer's
``host_region`` are host memory, which the recorder keeps out of the device timeline and
reports separately.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class OffloadedOptimizer:
    """An optimizer over ``params`` that keeps its state and fp32 masters on ``host``.

    ``make_inner`` builds the real optimizer over the host masters; ``host_region`` is
    entered around every host allocation (the engine's recorder uses it to tell host from
    device memory). Masters, gradient buffers and state are made at the first step, as
    optimizer state is.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        make_inner: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        host: str = "cpu",
        host_region: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.param_groups = [{"params": list(params)}]
        self._make_inner = make_inner
        self._host = torch.device(host)
        self._host_region = host_region
        self._masters: list[torch.Tensor] = []
        self.inner: torch.optim.Optimizer | None = None

    @property
    def state(self) -> dict[Any, Any]:
        return {} if self.inner is None else self.inner.state

    @torch.no_grad()
    def step(self) -> None:
        params = self.param_groups[0]["params"]
        with self._host_region():
            if self.inner is None:
                for p in params:
                    master = torch.empty(p.shape, dtype=torch.float32, device=self._host)
                    master.copy_(p)
                    master.grad = torch.empty_like(master)
                    self._masters.append(master)
                self.inner = self._make_inner(self._masters)
            for p, master in zip(params, self._masters, strict=True):
                if p.grad is not None:
                    master.grad.copy_(p.grad)
            self.inner.step()
        for p, master in zip(params, self._masters, strict=True):
            p.copy_(master)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None
