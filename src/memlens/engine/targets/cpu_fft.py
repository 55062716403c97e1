"""CPU FFTs through MKL: the input copies and the intermediate of ``_fft_c2r``.

With MKL (``torch.backends.mkl.is_available()``), ``_fft_c2c_mkl``, ``_fft_r2c_mkl`` and
``_fft_c2r_mkl`` (aten/src/ATen/native/mkl/SpectralOps.cpp) run each transform through
``_exec_fft``, which permutes the input so that its batch dimensions come first, in stride
order, and the transformed dimensions last, then collapses the batch dimensions into one with
``reshape``: a copy of the input whenever they do not merge into one strided dimension (the
transformed dimensions are not the innermost ones). The result is written batch-first and
given back with the input's dimension order, so it keeps that permuted layout.

A multi-dimensional ``c2r`` (``irfft2``, ``irfftn``) is a ``c2c`` over all but the last
dimension into a temporary of the input's size, then a one-dimensional ``c2r`` of that
temporary, whose permuted layout makes the second step copy it again: the peak holds the
temporary, the output and that copy. Without MKL, PocketFFT (aten/src/ATen/native/
SpectralOps.cpp) allocates only the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _mkl() -> bool:
    return torch.backends.mkl.is_available()


def _step(
    shape: Sequence[int], strides: Sequence[int], dims: Sequence[int]
) -> tuple[bool, tuple[int, ...]]:
    """One ``_exec_fft`` over ``dims``: (whether the input is copied, the result's strides)."""
    ndim = len(shape)
    dims = [d % ndim for d in dims]
    batch = sorted((d for d in range(ndim) if d not in dims), key=lambda d: -strides[d])
    kept = [d for d in batch if shape[d] != 1]
    merges = all(strides[a] == shape[b] * strides[b] for a, b in zip(kept, kept[1:], strict=False))
    order = batch + list(dims)
    out_strides = [0] * ndim
    acc = 1
    for d in reversed(order):  # written contiguous in the permuted order
        out_strides[d] = acc
        acc *= shape[d]
    return not merges, tuple(out_strides)


def _bytes(shape: Sequence[int], elem: int) -> int:
    return math.prod(shape) * elem


@register_rule(aten._fft_c2c.default, aten._fft_r2c.default)
def fft_one_step(call: OpCall) -> list[int]:
    """``c2c`` and ``r2c``: one ``_exec_fft``, the output alive while the input is copied."""
    x, dims = call.args[0], call.args[1]
    if call.device != "cpu" or not _mkl():
        return []
    copied, _ = _step(x.shape, x.stride(), dims)
    if not copied:
        return []
    return [call.out.untyped_storage().nbytes() + _bytes(x.shape, x.element_size())]


@register_rule(aten._fft_c2r.default)
def fft_c2r(call: OpCall) -> list[int]:
    """``c2r``: for several dimensions a ``c2c`` into a temporary, then a 1-D ``c2r``."""
    x, dims = call.args[0], list(call.args[1])
    if call.device != "cpu" or not _mkl():
        return []
    out, size = call.out.untyped_storage().nbytes(), _bytes(x.shape, x.element_size())
    strides: tuple[int, ...] = tuple(x.stride())
    temp = first = 0
    if len(dims) > 1:
        copied, strides = _step(x.shape, strides, dims[:-1])
        temp, first = size, size * copied
    copied, _ = _step(x.shape, strides, dims[-1:])
    return [temp + max(first, out + size * copied)]
