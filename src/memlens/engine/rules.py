"""Per-op knowledge the dispatch mode cannot see: memory an op allocates *inside* itself.

Rules are kept as ``torch.utils.flop_counter`` keeps FLOP formulas: a decorator
(:func:`register_rule`) files a small function of an :class:`OpCall` under the ops it rules,
and refuses an op ruled twice. Each rule module is a table of its own; a *rule set* (one per
target, :mod:`memlens.engine.targets.rule_sets`) is the union of some modules' tables
(:func:`rules_of`), so rules are keyed by (rule set, op). Users can pass extra rules, merged
per trace; nothing global is mutated while tracing.

A rule returns what the op allocates inside itself: byte counts of buffers freed before it
returns, a :class:`Persistent` buffer that a library allocates once and keeps (the cuBLAS
workspace), or the :class:`OutputBytes` of an output the fake kernel sizes differently from
the real one (oneDNN's LSTM workspace, which the meta kernel returns empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from memlens.targets import Target

aten = torch.ops.aten


@dataclass(frozen=True)
class OpCall:
    """One op call as a rule sees it."""

    func: Any
    args: tuple
    kwargs: dict
    out: Any
    device: str  # the target's traced kind: "cpu" or "cuda"
    target: Target


@dataclass(frozen=True)
class Persistent:
    """A buffer a library allocates at its first use and keeps: one per ``name`` and trace."""

    name: str
    nbytes: int


@dataclass(frozen=True)
class OutputBytes:
    """The real size of an op's output (``index`` in the flattened outputs) where the fake
    kernel returns another: the recorder counts the output's storage as ``nbytes``."""

    index: int
    nbytes: int


Rule = Callable[[OpCall], Iterable[int | Persistent | OutputBytes]]
Rules = dict[Any, Rule]

_TABLES: dict[str, Rules] = {}  # module name -> the rules it registered


def register_rule(*ops: Any) -> Callable[[Rule], Rule]:
    """Register ``fn`` as the rule of ``ops`` (OpOverloadPackets or overloads) in the table
    of the module defining it."""

    def wrap(fn: Rule) -> Rule:
        table = _TABLES.setdefault(fn.__module__, {})
        for op in ops:
            overloads = (
                [getattr(op, o) for o in op.overloads()]
                if isinstance(op, torch._ops.OpOverloadPacket)
                else [op]
            )
            for overload in overloads:
                if overload in table:
                    raise ValueError(f"duplicate workspace rule for {overload}")
                table[overload] = fn
        return fn

    return wrap


def rules_of(*modules: ModuleType) -> Rules:
    """One rule set: the rules ``modules`` registered (an op ruled by two is refused)."""
    out: Rules = {}
    for module in modules:
        for op, fn in _TABLES.get(module.__name__, {}).items():
            if op in out:
                raise ValueError(f"{op} is ruled twice in one rule set ({module.__name__})")
            out[op] = fn
    return out
