"""Per-op knowledge the dispatch mode cannot see: memory an op allocates *inside* itself.

Rules live in one registry filled by a decorator (as ``torch.utils.flop_counter`` does for
FLOPs). A rule is a small function of an :class:`OpCall` returning the sizes of the
op-internal buffers it allocates and frees before returning, for the target device. Users
can pass extra rules, merged per trace; nothing global is mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

aten = torch.ops.aten


@dataclass(frozen=True)
class OpCall:
    """One op call as a rule sees it."""

    func: Any
    args: tuple
    kwargs: dict
    out: Any
    device: str  # target device kind: "cpu" or "cuda"


Rule = Callable[[OpCall], Iterable[int]]
Rules = dict[Any, Rule]

_REGISTRY: Rules = {}


def register_rule(*ops: Any) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the workspace rule of ``ops`` (OpOverloadPackets or overloads)."""

    def wrap(fn: Rule) -> Rule:
        for op in ops:
            overloads = (
                [getattr(op, o) for o in op.overloads()]
                if isinstance(op, torch._ops.OpOverloadPacket)
                else [op]
            )
            for overload in overloads:
                if overload in _REGISTRY:
                    raise ValueError(f"duplicate workspace rule for {overload}")
                _REGISTRY[overload] = fn
        return fn

    return wrap


def rules(extra: Rules | None = None) -> Rules:
    """The registered rules, with ``extra`` merged on top for one trace."""
    return {**_REGISTRY, **(extra or {})}
