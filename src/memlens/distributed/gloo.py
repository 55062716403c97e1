"""What gloo allocates inside its collectives on a CPU target (``ProcessGroupGloo.cpp``); on
CUDA, NCCL writes into the given tensors and allocates nothing per call.

- ``_allgather_base`` (``all_gather_into_tensor``) chunks the output and runs
  ``ProcessGroupGloo::allgather``, whose ``AsyncAllgatherWork::allgather`` gathers into one
  flat tensor shaped like the output (``newLikeFlat(outputs[0])``) and copies it into the
  chunks: a buffer of the output's bytes inside the call.
- ``_reduce_scatter_base`` (``reduce_scatter_tensor``) runs
  ``reduce_scatter_tensor_coalesced``: ``buffers.push_back(inputTensors[i].clone())``, an
  all-reduce of the clone in place, then the rank's chunk copied out: a buffer of the input's
  bytes, held by the returned work until it is waited on (counted here inside the call).
- ``allreduce`` of one dense CPU tensor reduces in place (no buffer).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch

from memlens.engine.rules import OpCall, Rules, register_rule, rules_of

c10d = torch.ops.c10d


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@register_rule(c10d._allgather_base_)
def allgather_flat_output(call: OpCall) -> Iterable[int]:
    yield _nbytes(call.args[0])


@register_rule(c10d._reduce_scatter_base_)
def reduce_scatter_input_clone(call: OpCall) -> Iterable[int]:
    yield _nbytes(call.args[1])


def gloo_rules() -> Rules:
    """The rules of this module, for :func:`memlens.engine.trace.trace`'s ``extra_rules``."""
    return rules_of(sys.modules[__name__])
