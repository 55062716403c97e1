"""cuBLAS operand copies: an operand cuBLAS cannot read in place is cloned inside the op.

cuBLAS reads each matrix as row- or column-major with a leading dimension at least the
other extent. PyTorch's CUDA matmul kernels check each operand and clone one that is neither
into a contiguous tensor, which lives until the op returns (a ``c10::MaybeOwned`` local), so
no dispatch mode sees it. Source: aten/src/ATen/native/cuda/Blas.cpp:

- ``prepare_matrix_for_cublas`` (via ``cublasCommonArgs``, used by ``addmm_out_cuda_impl``
  for ``mm`` and ``addmm``): no copy if ``tensor.is_non_overlapping_and_dense()``, or if
  ``strides[0] == 1 && strides[1] >= max(1, sizes[0])`` (column-major), or
  ``strides[1] == 1 && strides[0] >= max(1, sizes[1])`` (row-major); otherwise
  ``tensor.clone(at::MemoryFormat::Contiguous)``.
- ``prepare_batch_matrix_for_cublas`` (``baddbmm_out_cuda_impl``, for ``bmm`` and
  ``baddbmm``): the same two layout tests on the last two dims (the batch stride is never
  checked, so an expanded batch dim alone is no reason to copy); otherwise a copy unless
  ``tensor.is_contiguous() && strides[1] != 0 && strides[2] != 0``.

The usual case is the gradient of ``loss = out.sum()``: ``sum_backward`` is
``grad.expand(sizes)``, strides all 0, so both backward matrix multiplies of the last linear
layer (grad_input = grad @ W, grad_weight = grad^T @ x) clone the full ``tokens x vocab``
gradient; each clone is freed when its op returns, so they never coexist. ``mean()``
divides the expanded gradient, a dense tensor the CPU trace also shows (``mean_backward``
in tools/autograd/FunctionsManual.cpp).

The result of these ops is allocated (``at::empty``) before the operands are prepared, so the
transient reported is the copies plus the output they coexist with (the convention of the
engine's rules: a transient is recorded just before the op's outputs).
"""

from __future__ import annotations

import torch
from torch._prims_common import (
    is_non_overlapping_and_dense_or_false as is_non_overlapping_and_dense,
)

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _blas_layout(strides: tuple[int, ...], rows: int, cols: int) -> bool:
    """Column-major or row-major with a large enough leading dimension."""
    s_row, s_col = strides
    return (s_row == 1 and s_col >= max(1, rows)) or (s_col == 1 and s_row >= max(1, cols))


def matrix_copy_bytes(t: torch.Tensor) -> int:
    """Bytes ``prepare_matrix_for_cublas`` clones for a 2-D operand (0 if read in place)."""
    if t.dim() != 2 or t.numel() == 0 or is_non_overlapping_and_dense(t):
        return 0
    if _blas_layout(tuple(t.stride()), t.shape[0], t.shape[1]):
        return 0
    return _nbytes(t)


def batch_copy_bytes(t: torch.Tensor) -> int:
    """Bytes ``prepare_batch_matrix_for_cublas`` clones for a 3-D operand (0 if read in
    place); the whole logical tensor, expanded batch dims included."""
    if t.dim() != 3 or t.numel() == 0:
        return 0
    if _blas_layout(tuple(t.stride()[1:]), t.shape[1], t.shape[2]):
        return 0
    if t.is_contiguous() and t.stride(1) != 0 and t.stride(2) != 0:
        return 0
    return _nbytes(t)


def _out_bytes(call: OpCall) -> int:
    out = call.out
    return _nbytes(out) if isinstance(out, torch.Tensor) else 0


@register_rule(aten.mm.default, aten.addmm.default, aten._addmm_activation.default)
def cublas_matrix_copies(call: OpCall) -> list[int]:
    mats = call.args[0:2] if call.func is aten.mm.default else call.args[1:3]
    copies = sum(matrix_copy_bytes(m) for m in mats)
    return [copies + _out_bytes(call)] if copies else []


@register_rule(aten.bmm.default, aten.baddbmm.default)
def cublas_batch_copies(call: OpCall) -> list[int]:
    mats = call.args[0:2] if call.func is aten.bmm.default else call.args[1:3]
    copies = sum(batch_copy_bytes(m) for m in mats)
    return [copies + _out_bytes(call)] if copies else []
