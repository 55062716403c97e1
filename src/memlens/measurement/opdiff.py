"""Op-level differential test: every distinct ATen call of a trace, run alone for real on
CPU, or on CUDA (fed from a CUDA target's trace: the CUDA kernel rules checked op by op).

:func:`collect` records, while the engine traces a workload, each distinct op call it sees
(op, argument shapes, strides, dtypes and values, grad mode) with what the engine counts for
it: the bytes of its new output storages (as the target's rules size them, :class:`OutputBytes`)
and its peak inside (the rules' op-internal buffers). :func:`replay` runs each call once on
real CPU tensors of the same shapes, strides and dtypes, under the profiler's allocation
records (as :mod:`memlens.measurement.cpu` measures a step), and reads the peak rise of the CPU
allocator's running total during the call and the bytes still allocated when it returns. A
call whose real bytes differ from the engine's by more than ``max(1%, 64 KiB)`` is a kernel
the rules do not know (or know wrongly). Backward ops are ATen calls of the trace too, so a
training trace checks them as well.

Integer and boolean inputs the trace knows the values of (the engine's shadows,
:mod:`memlens.engine.shadow`: index tensors built from ``arange``, a router's assignment,
``batch_sizes`` of a packed sequence made from known lengths) are replayed with those values.
Other inputs: floating tensors are filled with normal samples, integer tensors with zeros
(in range for every index), boolean tensors with ones (the engine's neutral mask). An
embedding bag's backward gets the index structure its forward would make from evenly spaced
offsets (every bag non-empty: its max mode allocates by the number of non-empty bags). Calls
that cannot run alone (an op refusing such values, a generator argument) are returned as
skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_leaves

from memlens.engine.recorder import Recorder
from memlens.engine.rules import OpCall, OutputBytes
from memlens.engine.shadow import Shadows
from memlens.measurement.cpu import allocations

aten = torch.ops.aten
#: ATen ops with nothing to compare (other namespaces, the profiler's markers, are skipped).
_IGNORED = {aten._local_scalar_dense.default}
#: Differences at or below this many bytes (or 1% of the real bytes) are not reported.
FLOOR = 64 * 1024


@dataclass(frozen=True)
class TensorMeta:
    """What a call's tensor argument is; ``value``, where the trace knew it (not part of the
    call's identity)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    value: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        contiguous = self.stride == _contiguous_strides(self.shape)
        return f"{dtype}{list(self.shape)}" + ("" if contiguous else f"@{list(self.stride)}")

    def real(self, device: str = "cpu") -> torch.Tensor:
        size = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True) if n)
        if self.dtype.is_floating_point or self.dtype.is_complex:
            flat = torch.randn(size, dtype=self.dtype, device=device)
        elif self.dtype == torch.bool:
            flat = torch.ones(size, dtype=torch.bool, device=device)
        else:
            flat = torch.zeros(size, dtype=self.dtype, device=device)
        t = flat.as_strided(self.shape, self.stride)
        if self.value is not None:
            t.copy_(self.value)
        return t


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


def _freeze(x: Any, resized: dict[int, int], shadows: Shadows | None = None) -> Any:
    """A hashable description of an argument (tensors by :class:`TensorMeta`; a byte buffer
    the fake kernel returned empty, by its real size: ``resized``, storage -> bytes). With
    ``shadows``, integer and boolean tensors whose values the trace knows carry a copy."""
    if isinstance(x, torch.Tensor):
        real = resized.get(x.untyped_storage()._cdata)
        if real is not None and x.dtype == torch.uint8 and x.numel() == 0:
            return TensorMeta((real,), (1,), torch.uint8)
        return TensorMeta(tuple(x.shape), tuple(x.stride()), x.dtype, _value(x, shadows))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v, resized, shadows) for v in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _freeze(v, resized, shadows)) for k, v in x.items()))
    if x is None or isinstance(x, (bool, int, float, str, torch.dtype, torch.layout)):
        return x
    if isinstance(x, (torch.device, torch.memory_format)):
        return x
    return repr(x)


def _value(t: torch.Tensor, shadows: Shadows | None) -> torch.Tensor | None:
    """A copy of the traced value of an integer or boolean tensor, if the trace knew it (and
    each element has its own memory, so that the replayed tensor can take it)."""
    if shadows is None or t.is_floating_point() or t.is_complex():
        return None
    if any(s == 0 and n > 1 for n, s in zip(t.shape, t.stride(), strict=True)):
        return None
    shadow = shadows.get(t)
    if shadow is None or shadow.shape != t.shape:
        return None
    with _disable_current_modes():
        return shadow.clone()


def _thaw(x: Any, device: str = "cpu") -> Any:
    if isinstance(x, TensorMeta):
        return x.real(device)
    if isinstance(x, tuple):
        return [_thaw(v, device) for v in x]
    return x


@dataclass
class Call:
    """One distinct op call of the traces, what the engine counts for it and (once
    replayed) what the real kernel allocated."""

    op: Any
    args: tuple
    kwargs: tuple
    grad: bool
    engine_kept: int
    engine_peak: int
    count: int = 0
    workloads: set[str] = field(default_factory=set)
    real_kept: int | None = None
    real_peak: int | None = None
    skipped: str | None = None

    @property
    def name(self) -> str:
        return str(self.op).removeprefix("aten.")

    @property
    def signature(self) -> str:
        def show(x: Any) -> str:
            if isinstance(x, TensorMeta):
                return str(x)
            if isinstance(x, tuple) and any(isinstance(v, TensorMeta) for v in x):
                return "[" + ", ".join(show(v) for v in x) + "]"
            return repr(x)

        parts = [show(a) for a in self.args] + [f"{k}={show(v)}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})" + (" [grad]" if self.grad else "")

    @property
    def difference(self) -> int:
        """Largest of the peak and kept differences (real - engine), by magnitude."""
        if self.real_peak is None or self.real_kept is None:
            return 0
        return max(self.real_peak - self.engine_peak, self.real_kept - self.engine_kept, key=abs)

    @property
    def reported(self) -> bool:
        if self.real_peak is None:
            return False
        return abs(self.difference) > max(FLOOR, math.ceil(0.01 * max(self.real_peak, 1)))


class Calls:
    """Distinct op calls seen while tracing, keyed by op, arguments and grad mode."""

    def __init__(self) -> None:
        self.calls: dict[tuple, Call] = {}
        self.workload = ""
        self.resized: dict[int, int] = {}  # storage of an output a rule sized -> real bytes

    def observe(self, recorder: Recorder, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        frozen = (_freeze(args, self.resized), _freeze(kwargs, self.resized))
        key = (func, *frozen, torch.is_grad_enabled())
        kept, peak, sizes = _engine_bytes(recorder, func, args, kwargs, out)
        outs = tree_leaves(out)
        for i, nbytes in sizes.items():
            self.resized[outs[i].untyped_storage()._cdata] = nbytes
        call = self.calls.get(key)
        if call is None:
            shadows = recorder.shadows
            args_, kwargs_ = (
                _freeze(args, self.resized, shadows),
                _freeze(kwargs, self.resized, shadows),
            )
            call = self.calls[key] = Call(func, args_, kwargs_, key[3], kept, peak)
        call.count += 1
        call.workloads.add(self.workload)


def _engine_bytes(
    recorder: Recorder, func: Any, args: tuple, kwargs: dict, out: Any
) -> tuple[int, int, dict[int, int]]:
    """(bytes of the call's new output storages, peak inside it, outputs a rule sized) as the
    engine counts them."""
    rule = recorder.rules.get(func)
    buffers = (
        list(rule(OpCall(func, args, kwargs, out, recorder.target.kind, recorder.target)))
        if rule is not None
        else []
    )
    sizes = {b.index: b.nbytes for b in buffers if isinstance(b, OutputBytes)}
    inputs = {
        t.untyped_storage()._cdata
        for t in tree_leaves((args, kwargs))
        if isinstance(t, torch.Tensor)
    }
    seen: set[int] = set()
    kept = 0
    for i, t in enumerate(tree_leaves(out)):
        if not isinstance(t, torch.Tensor):
            continue
        storage = t.untyped_storage()
        if storage._cdata in inputs or storage._cdata in seen:
            continue
        seen.add(storage._cdata)
        kept += sizes.get(i, storage.nbytes())
    inside = [b for b in buffers if isinstance(b, int)]
    return kept, max([kept, *inside]), sizes


@contextlib.contextmanager
def collecting(calls: Calls) -> Iterator[Calls]:
    """While active, every op the engine's recorder dispatches is observed into ``calls``."""
    original = Recorder.dispatch

    def dispatch(self: Recorder, func: Any, args: tuple, kwargs: dict) -> Any:
        out = original(self, func, args, kwargs)
        if func.namespace == "aten" and func not in _IGNORED:
            calls.observe(self, func, args, kwargs, out)
        return out

    Recorder.dispatch = dispatch  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        Recorder.dispatch = original  # type: ignore[method-assign]


def collect(
    calls: Calls,
    label: str,
    model: Any,
    *,
    device: str = "cpu",
    inputs: Any = None,
    **fields: Any,
) -> None:
    """Trace ``model`` for the ``device`` target (``memlens.estimate``'s arguments: ``cpu``,
    or a CUDA device of the catalog, whose kernel rules then size each call) into ``calls``."""
    from memlens._estimate import estimate

    calls.workload = label
    with collecting(calls):
        estimate(model, device=device, inputs=inputs, **fields)


def measure_call(
    op: Any, args: tuple, kwargs: dict, grad: bool, device: str = "cpu"
) -> tuple[int, int]:
    """(bytes kept, peak rise) of the allocator during one real call, after a warm-up call
    (oneDNN primitive creation, cuBLAS handles and workspaces, lazy initialisation): the CPU
    allocator's running total from the profiler's records, or on CUDA the caching allocator's
    ``memory_allocated`` and ``max_memory_allocated`` around the call."""
    if device == "cuda":
        return _measure_cuda_call(op, args, kwargs, grad)
    with torch.set_grad_enabled(grad):
        op(*args, **kwargs)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = op(*args, **kwargs)
    del out
    records = allocations(prof)
    if not records:
        return 0, 0
    start = records[0][2] - records[0][1]
    peak = max(total for _, _, total in records) - start
    # the output is freed after profiling stops: what is still allocated at the end is kept
    return records[-1][2] - start, peak


def _measure_cuda_call(op: Any, args: tuple, kwargs: dict, grad: bool) -> tuple[int, int]:
    with torch.set_grad_enabled(grad):
        op(*args, **kwargs)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = op(*args, **kwargs)
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - base
        peak = torch.cuda.max_memory_allocated() - base
    del out
    return kept, peak


#: Ops reading a workspace their forward returned (argument index): replayed only when a rule
#: gave its real size.
_WORKSPACE = {aten.mkldnn_rnn_layer_backward.default: 22}


def _bag_structure(args: tuple, spaced: bool) -> None:
    """Give an ``_embedding_bag_backward`` call the index structure its forward would make:
    the ``offset2bag``, bag sizes and arg-max indices of ``_embedding_bag`` run on its indices
    and offsets (``spaced``: offsets unknown, made evenly spaced, every bag non-empty as the
    CPU rules assume)."""
    grad, indices, offsets, *structure = args[:6]
    num_weights, mode, weights = args[6], args[8], args[10] if len(args) > 10 else None
    n, bags = indices.numel(), grad.shape[0]
    last = offsets.numel() == bags + 1  # include_last_offset
    if spaced:
        offsets.copy_(torch.arange(offsets.numel(), device=offsets.device) * (n // max(bags, 1)))
        if last:
            offsets[-1] = n
    weight = torch.randn(num_weights, grad.shape[1], dtype=grad.dtype, device=grad.device)
    made = aten._embedding_bag.default(
        weight,
        indices,
        offsets,
        False,
        mode,
        False,
        weights,
        last,
        args[11] if len(args) > 11 else -1,
    )
    for t, real in zip(structure, made[1:], strict=True):
        if t.shape == real.shape:
            t.copy_(real)


def replay(call: Call, device: str = "cpu") -> None:
    """Run ``call`` once on real tensors of ``device`` (``cpu`` or ``cuda``) and record what
    the allocator saw."""
    if call.op in _WORKSPACE and call.args[_WORKSPACE[call.op]].shape == (0,):
        call.skipped = "Workspace: no rule sized the forward's workspace (the kernel would crash)"
        return
    try:
        args = tuple(_thaw(a, device) for a in call.args)
        kwargs = {k: _thaw(v, device) for k, v in call.kwargs}
        if call.op is aten._embedding_bag_backward.default:
            _bag_structure(args, spaced=call.args[2].value is None)
        call.real_kept, call.real_peak = measure_call(call.op, args, kwargs, call.grad, device)
    except Exception as e:  # a call that cannot run alone is a result too
        call.skipped = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
