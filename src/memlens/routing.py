"""Mixture-of-experts routing by a stated policy, never by a neutral read.

A traced MoE layer has no router logits to rank (fake tensors carry no data), so which expert
each token goes to is decided here, by a policy (the ``moe_routing`` option):

- ``balanced`` (default): every expert receives its expected share, ``tokens x top_k /
  experts`` token-slots (the first ``tokens x top_k mod experts`` experts one more), so every
  expert runs and gets gradients and optimizer state, as a trained, load-balanced router does;
- ``worst``: every token picks the same ``top_k`` experts, each running on all the tokens: the
  largest per-expert activations (the other experts idle in that step);
- ``capacity:F``: the busiest experts receive ``ceil(F x tokens x top_k / experts)`` slots
  each (``F`` the capacity factor of GShard / Switch Transformer, at least 1), filled in order
  until the slots run out: ``capacity:1`` is ``balanced``, ``capacity:E/top_k`` is ``worst``.

:func:`expert_loads` gives the slots per expert and :func:`assignment` the ``[tokens, top_k]``
expert indices realising them (each token's ``top_k`` experts distinct), the tensor a real
router's ``torch.topk(...).indices`` would hold. The recorder (:mod:`memlens.engine.recorder`)
gives that tensor as the real value behind the router's top-k, so the model's own dispatch
code (``one_hot``, ``nonzero``/``where``, the per-expert loop) runs on true token counts.

Only the policy is torch-free; :func:`assignment` imports torch when called.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The policies, as the option's help lists them.
MOE_ROUTINGS = ("balanced", "worst", "capacity:F")


def parse_routing(value: Any) -> str:
    """The normalised policy (``balanced``, ``worst``, ``capacity:1.25``); ValueError names
    what is wrong."""
    if not isinstance(value, str):
        raise ValueError("allowed: " + ", ".join(MOE_ROUTINGS))
    text = value.strip().lower()
    if text in ("balanced", "worst"):
        return text
    if text.startswith("capacity:"):
        try:
            factor = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError("capacity:F needs a number F >= 1, e.g. capacity:1.25") from None
        if not math.isfinite(factor) or factor < 1:
            raise ValueError("capacity:F needs a number F >= 1, e.g. capacity:1.25")
        return f"capacity:{factor:g}"
    raise ValueError("allowed: " + ", ".join(MOE_ROUTINGS))


def capacity(tokens: int, top_k: int, experts: int, policy: str) -> int:
    """Token-slots of the busiest expert under ``policy`` (at most ``tokens``: an expert sees
    a token once)."""
    if not 0 < top_k <= experts:
        raise ValueError(f"top_k {top_k} must be in 1..{experts} (the number of experts)")
    fair = -(-tokens * top_k // experts)
    if policy == "balanced":
        return fair
    if policy == "worst":
        return tokens
    factor = float(parse_routing(policy).split(":", 1)[1])
    return min(tokens, max(fair, math.ceil(factor * tokens * top_k / experts)))


def expert_loads(tokens: int, top_k: int, experts: int, policy: str = "balanced") -> list[int]:
    """Token-slots each expert receives (they sum to ``tokens x top_k``)."""
    slots = tokens * top_k
    if policy == "balanced":  # round-robin: shares differ by at most one
        return [slots // experts + (e < slots % experts) for e in range(experts)]
    cap = capacity(tokens, top_k, experts, policy)
    return [max(0, min(cap, slots - e * cap)) for e in range(experts)]


def assignment(tokens: int, top_k: int, experts: int, policy: str = "balanced") -> torch.Tensor:
    """``[tokens, top_k]`` int64 expert indices realising :func:`expert_loads`.

    ``balanced`` is round-robin (slot ``j`` of token ``t`` goes to expert ``(t k + j) mod
    E``); the others fill experts in slot-major order, ``cap`` slots each, so that a token's
    slots, ``tokens >= cap`` apart, land on distinct experts.
    """
    import torch

    t = torch.arange(tokens, dtype=torch.long).unsqueeze(1)
    j = torch.arange(top_k, dtype=torch.long).unsqueeze(0)
    if policy == "balanced":
        capacity(tokens, top_k, experts, policy)  # validates top_k
        return (t * top_k + j) % experts
    cap = max(1, capacity(tokens, top_k, experts, policy))
    return (j * tokens + t) // cap
