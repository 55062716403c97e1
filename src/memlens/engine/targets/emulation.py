"""What the engine applies to emulate a target on CPU fake tensors.

Tracing always runs on fake CPU tensors (the autograd engine cannot run backward on fake CUDA
tensors without a driver); where the target's kernels behave differently, the trace follows
the target's traits (:class:`memlens.targets.Target`):

- ``kernel_rules`` picks a rule set (:data:`RULE_SETS`): CPU rules follow PyTorch's
  convolution backend choice on this machine (oneDNN's blocked layouts and gemm scratchpads,
  PyTorch's im2col ``Slow2d``) and half-precision reductions' fp32 copies; CUDA rules allocate the
  cuBLAS workspace. CUDA kernel rules also route ``scaled_dot_product_attention`` to CUDA's
  fused kernels (:mod:`.cuda_attention`), a choice no dispatch mode sees.
- ``autocast`` picks the autocast op lists applied under AMP: CUDA's are registered at the
  ``AutocastCPU`` key while tracing (:mod:`.cuda_autocast`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from memlens.engine.rules import Rule, Rules, rules_of
from memlens.engine.targets import (
    cpu_conv,
    cpu_reduce,
    cuda_blas,
    cuda_cublas_layout,
    cuda_embedding,
    cuda_sdpa,
)
from memlens.engine.targets.cuda_attention import Attention, rerouted
from memlens.engine.targets.cuda_autocast import cuda_autocast_policy
from memlens.engine.targets.cuda_softmax import CudaSoftmax
from memlens.targets import Target


def _chained(*tables: Rules) -> Rules:
    """One rule set from tables that may rule the same op (the cuBLAS workspace and the
    operand copies of ``mm``): such an op gets every table's buffers, in order."""
    out: dict[Any, list[Rule]] = {}
    for table in tables:
        for op, fn in table.items():
            out.setdefault(op, []).append(fn)
    return {op: fns[0] if len(fns) == 1 else _chain(fns) for op, fns in out.items()}


def _chain(fns: list[Rule]) -> Rule:
    def rule(call: Any) -> list[Any]:
        return [buffer for fn in fns for buffer in fn(call)]

    return rule


#: Kernel-rule sets by :attr:`Target.kernel_rules`.
RULE_SETS: dict[str, Rules] = {
    "cpu": rules_of(cpu_conv, cpu_reduce),
    "cuda": _chained(rules_of(cuda_blas), rules_of(cuda_cublas_layout, cuda_embedding, cuda_sdpa)),
}


def kernel_rules(target: Target, extra: Rules | None = None) -> Rules:
    """The target's rule set, with ``extra`` rules merged on top for one trace."""
    return {**RULE_SETS[target.kernel_rules], **(extra or {})}


@contextlib.contextmanager
def emulated(target: Target, *, amp: bool, attention: str = "auto") -> Iterator[None]:
    """While active, attention (the ``attention`` option) and (under AMP) autocast follow
    the target's kernels."""
    with contextlib.ExitStack() as stack:
        if rerouted(target, attention):
            stack.enter_context(Attention(target, attention))
        if target.kernel_rules == "cuda":
            stack.enter_context(CudaSoftmax())
        if amp and target.autocast == "cuda":
            stack.enter_context(cuda_autocast_policy())
        yield
