"""The optimizers of :data:`memlens.optimizer_table.OPTIMIZERS`, built for a trace or a run.

``lion`` and ``adam-8bit`` are implemented here (:class:`Lion` keeps one momentum buffer;
:class:`Adam8bit` keeps bitsandbytes' blockwise 8-bit state layout); the others are PyTorch's.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable

import torch
from torch import nn

from memlens._errors import ConfigError
from memlens.optimizer_table import (
    BNB_BLOCK,
    BNB_MIN_8BIT_SIZE,
    BNB_QMAP_SIZE,
    IMPLS,
    OPTIMIZERS,
    OptimizerRow,
)
from memlens.strategies.offload import OffloadedOptimizer


def make_optimizer(
    name: str, params: list[nn.Parameter], *, impl: str = "for-loop"
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` with implementation ``impl`` (``auto`` resolved
    by the caller: the target's default), or its loop if it has no such implementation (the
    workload refuses one asked for explicitly, so only a target's default can be missing:
    ``lion`` on CUDA runs its loop)."""
    row = OPTIMIZERS.get(name)
    if row is None:
        raise ConfigError(f"unknown optimizer {name!r}")
    if impl not in IMPLS:
        raise ConfigError(f"unknown optimizer implementation {impl!r}: use {', '.join(IMPLS)}")
    if impl not in row.impls:
        impl = "for-loop"
    return _class(row)(params, **dict(row.options), **_impl_flags(row, impl))


def _class(row: OptimizerRow) -> type[torch.optim.Optimizer]:
    module, _, name = row.cls.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _impl_flags(row: OptimizerRow, impl: str) -> dict[str, bool]:
    """Constructor flags choosing ``impl`` (none for a class with one implementation)."""
    if row.impls == ("for-loop",):
        return {}
    if impl == "fused":
        return {"fused": True}
    return {"foreach": impl == "foreach"}


def is_fused(optimizer: torch.optim.Optimizer | OffloadedOptimizer) -> bool:
    """Fused optimizers keep their ``step`` counters on the device."""
    return any(group.get("fused") for group in optimizer.param_groups)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): one momentum
    buffer per parameter; the update is the sign of an interpolation of momentum and gradient.
    Per-parameter loop; the sign update is the only temporary."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                _lion_update(
                    p, p.grad, state["exp_avg"], group["lr"], beta1, beta2, group["weight_decay"]
                )


def _lion_update(
    p: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    if weight_decay:
        p.mul_(1 - lr * weight_decay)
    update = exp_avg.mul(beta1).add_(grad, alpha=1 - beta1).sign_()
    p.add_(update, alpha=-lr)
    exp_avg.mul_(beta2).add_(grad, alpha=1 - beta2)


class Adam8bit(torch.optim.Optimizer):
    """Adam with bitsandbytes' blockwise 8-bit state layout (``bnb.optim.Adam8bit``), for
    when bitsandbytes is not installed.

    State of a parameter of ``n >= 4096`` elements: two ``uint8`` moments (``n`` bytes each)
    and two fp32 absmax vectors (``ceil(n / 2048)`` each); smaller parameters keep two fp32
    moments; two shared 256-entry fp32 code maps. The step dequantises one parameter's
    moments into fp32 temporaries, updates them, and quantises them back.

    Known limitations: values use a linear 8-bit code rather than bitsandbytes' dynamic map
    (memory is the same). bitsandbytes' CUDA kernel fuses the dequantisation into registers,
    so on CUDA the two fp32 temporaries of the largest parameter (8 bytes per element) are an
    upper bound of what it allocates in the optimizer step.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )
        self._qmaps: tuple[torch.Tensor, torch.Tensor] | None = None

    def _init_state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        state["step"] = 0
        if p.numel() < BNB_MIN_8BIT_SIZE:
            state["state1"] = torch.zeros_like(p, dtype=torch.float32)
            state["state2"] = torch.zeros_like(p, dtype=torch.float32)
            return state
        if self._qmaps is None:
            self._qmaps = (
                torch.zeros(BNB_QMAP_SIZE, dtype=torch.float32, device=p.device),
                torch.zeros(BNB_QMAP_SIZE, dtype=torch.float32, device=p.device),
            )
        blocks = math.ceil(p.numel() / BNB_BLOCK)
        state["state1"] = torch.zeros_like(p, dtype=torch.uint8)
        state["qmap1"] = self._qmaps[0]
        state["state2"] = torch.zeros_like(p, dtype=torch.uint8)
        state["qmap2"] = self._qmaps[1]
        state["absmax1"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
        state["absmax2"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p] or self._init_state(p)
                state["step"] += 1
                if state["state1"].dtype == torch.float32:
                    _adam(p, p.grad, state["state1"], state["state2"], state["step"], group)
                else:
                    _adam_8bit(p, state, group)


def _adam(
    p: torch.Tensor,
    grad: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    group: dict,
) -> None:
    """One Adam update of ``p`` with its fp32 moments (parameters under 4096 elements)."""
    beta1, beta2 = group["betas"]
    if group["weight_decay"]:
        p.mul_(1 - group["lr"] * group["weight_decay"])
    m.lerp_(grad.float() if grad.dtype != m.dtype else grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    denom = v.sqrt().div_(math.sqrt(bias2)).add_(group["eps"])
    p.addcdiv_(m, denom, value=-group["lr"] / bias1)


def _adam_8bit(p: torch.Tensor, state: dict, group: dict) -> None:
    """Dequantise both moments to fp32 temporaries, update, quantise them back."""
    beta1, beta2 = group["betas"]
    grad = p.grad
    m = _dequantize(state["state1"], state["absmax1"], signed=True)
    v = _dequantize(state["state2"], state["absmax2"], signed=False)
    if group["weight_decay"]:
        p.mul_(1 - group["lr"] * group["weight_decay"])
    m.lerp_(grad.float() if grad.dtype != m.dtype else grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    _quantize_(v, state["state2"], state["absmax2"], signed=False)
    step, bias1 = state["step"], 1 - beta1 ** state["step"]
    v.sqrt_().div_(math.sqrt(1 - beta2**step)).add_(group["eps"])
    p.addcdiv_(m, v, value=-group["lr"] / bias1)
    _quantize_(m, state["state1"], state["absmax1"], signed=True)


def _blocks(t: torch.Tensor) -> list[tuple[torch.Tensor, slice]]:
    """Views of a flat tensor as rows of :data:`BNB_BLOCK` (the full blocks, then the rest),
    with the slice of the absmax vector each covers."""
    flat = t.view(-1)
    full = flat.numel() // BNB_BLOCK
    out = [(flat[: full * BNB_BLOCK].view(full, BNB_BLOCK), slice(0, full))] if full else []
    if flat.numel() % BNB_BLOCK:
        out.append((flat[full * BNB_BLOCK :].view(1, -1), slice(full, full + 1)))
    return out


def _dequantize(q: torch.Tensor, absmax: torch.Tensor, *, signed: bool) -> torch.Tensor:
    out = q.to(torch.float32)
    for rows, span in _blocks(out):
        if signed:
            rows.sub_(127)
        rows.mul_(absmax[span].unsqueeze(1) / (127 if signed else 255))
    return out


def _quantize_(x: torch.Tensor, q: torch.Tensor, absmax: torch.Tensor, *, signed: bool) -> None:
    """Blockwise absmax quantisation of ``x`` into ``q`` (``x`` is overwritten)."""
    for rows, span in _blocks(x):
        torch.linalg.vector_norm(rows, float("inf"), dim=1, out=absmax[span])
        rows.div_(absmax[span].clamp(min=1e-12).unsqueeze(1)).mul_(127 if signed else 255)
        if signed:
            rows.add_(127)
    q.copy_(x.round_())
