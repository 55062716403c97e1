"""CPU ``bmm``: per-batch copies of operands BLAS cannot read.

``bmm_out_or_baddbmm_`` (aten/src/ATen/native/LinearAlgebra.cpp) multiplies small problems
(contraction x rows x columns < 400) with its own loops; otherwise, for fp32, fp64 and complex
operands (no oneDNN matmul), it splits along the batch and calls ``addmm_impl_cpu_`` on each
pair of matrices, which copies a matrix whose strides are neither row- nor column-major
(``clone(MemoryFormat::Contiguous)``: the FNO's spectral weights read as ``(modes, in, out)``
from an ``(in, out, modes)`` tensor). The copies of one batch are freed before the next, so
the peak holds one matrix of each such operand. Half precision (oneDNN matmul) is not ruled.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _blas_readable(rows: int, cols: int, s0: int, s1: int) -> bool:
    """Whether ``addmm_impl_cpu_`` reads a ``rows x cols`` matrix of strides ``(s0, s1)`` in
    place: row-major or column-major with a leading dimension at least its extent."""
    return (s1 == 1 and s0 >= max(1, cols)) or (s0 == 1 and s1 >= max(1, rows))


@register_rule(aten.bmm.default)
def bmm(call: OpCall) -> list[int]:
    a, b = call.args[0], call.args[1]
    if call.device != "cpu" or a.dtype not in (
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    ):
        return []
    (_, n, k), m = a.shape, b.shape[2]
    if k * n * m < 400 or not a.shape[0]:
        return []
    copies = sum(
        t.shape[1] * t.shape[2] * t.element_size()
        for t in (a, b)
        if not _blas_readable(t.shape[1], t.shape[2], t.stride(1), t.stride(2))
    )
    return [call.out.untyped_storage().nbytes() + copies] if copies else []
