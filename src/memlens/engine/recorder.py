"""Record every storage allocation and free of a step run on fake tensors.

The private :class:`_RecordingMode` sees each ATen op below autograd (so composite ops are
seen as the ops they decompose into, and backward ops are seen too). For each output
tensor it looks at the *storage*: a storage seen for the first time is an allocation; views
and in-place results share a storage and are not counted again. A ``weakref.finalize`` on
the storage records the free when the last tensor using it dies (including tensors that
autograd saved for backward). :class:`Recorder` owns the state and the :class:`Timeline`:
the live storages, the module stack, the phase, and whether activation checkpointing is
recomputing a forward pass. The target's kernel rules (:mod:`memlens.engine.rules`) add what
ops allocate inside themselves.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import (
    TorchDispatchMode,
    _disable_current_modes,
    is_traceable_wrapper_subclass,
    is_traceable_wrapper_subclass_type,
)
from torch.utils.weak import WeakIdKeyDictionary

from memlens._errors import TraceError
from memlens.categories import Category, Phase
from memlens.engine.flops import count_flops
from memlens.engine.modules import ModuleStack
from memlens.engine.rules import OpCall, OutputBytes, Persistent, Rules
from memlens.engine.shadow import Reads, Shadows
from memlens.routing import assignment
from memlens.targets import Target
from memlens.timeline import Timeline

aten = torch.ops.aten

# Metadata-only ops: no storage can come out of them.
_SKIP = {
    aten.size.default,
    aten.stride.default,
    aten.sym_size.int,
    aten.sym_stride.int,
    aten.sym_numel.default,
    aten.sym_storage_offset.default,
    aten.is_contiguous.default,
    aten.dim.default,
    aten.numel.default,
}

# Data-dependent output shapes: the real one where the inputs have shadows, else ``count``
# elements selected (a read: every element, the upper bound, or none).
_UPPER_BOUND_SHAPES: dict[Any, Callable[[torch.Tensor, int], torch.Tensor]] = {
    aten.nonzero.default: lambda t, count: torch.empty((count, t.dim()), dtype=torch.long),
    aten.masked_select.default: lambda t, count: torch.empty((count,), dtype=t.dtype),
}


#: Indexing ops whose indices may be boolean masks (the output or the positions written then
#: depend on the mask's values).
_MASK_INDEXED = frozenset(
    {
        aten.index.Tensor,
        aten.index_put.default,
        aten.index_put_.default,
        aten._index_put_impl_.default,
    }
)


def _has_mask(indices: Any) -> bool:
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


#: Matrix products and the positions of their two operands, whose dtypes the real kernels
#: require equal (``addmm_impl_cpu_``, ``bmm_out_or_baddbmm_`` in aten/src/ATen/native/
#: LinearAlgebra.cpp; cuBLAS likewise) and the meta kernels do not check: a fake trace of a
#: ``.double()`` model fed float inputs would run where the real step fails.
_SAME_DTYPE: dict[Any, tuple[int, int]] = {
    aten.mm.default: (0, 1),
    aten.bmm.default: (0, 1),
    aten.mv.default: (0, 1),
    aten.dot.default: (0, 1),
    aten.addmm.default: (1, 2),
    aten.baddbmm.default: (1, 2),
    aten.addmv.default: (1, 2),
    aten.addbmm.default: (1, 2),
}


#: Namespaces of communication ops: their outputs are the ``collectives`` category
#: (``torch/distributed/_functional_collectives.py``, ``torch/csrc/distributed/c10d/Ops.cpp``,
#: FSDP2's ``fsdp::all_gather_copy_in`` / ``chunk_cat`` in ``_fsdp_collectives.py``).
_COLLECTIVE_NAMESPACES = frozenset(
    {"c10d", "_c10d_functional", "_c10d_functional_autograd", "fsdp"}
)


def _storage_tensors(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """The tensors holding ``t``'s memory: ``t``, or the inner tensors of a wrapper subclass
    (a DTensor's local shard), recursively (``__tensor_flatten__``)."""
    if is_traceable_wrapper_subclass(t):
        for name in t.__tensor_flatten__()[0]:
            inner = getattr(t, name)
            if isinstance(inner, torch.Tensor):  # a DTensor also names its device mesh
                yield from _storage_tensors(inner)
    else:
        yield t


def _describe(t: torch.Tensor) -> str:
    """``float32[32, 64, 112, 112]``: what reports show of a block's tensor."""
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


def _holds_experts(module: torch.nn.Module, experts: int) -> bool:
    """Whether ``module`` holds ``experts`` experts (see :meth:`Recorder._router`)."""
    for child in module.children():
        if isinstance(child, torch.nn.ModuleList) and len(child) == experts:
            return True
    names = ("num_experts", "num_local_experts", "n_routed_experts")
    return any(getattr(module, name, None) == experts for name in names)


class Recorder:
    """Owns the timeline of the step being traced and the identity of live storages."""

    def __init__(
        self, model: torch.nn.Module, rules: Rules, target: Target, reads: Reads | None = None
    ) -> None:
        self.modules = ModuleStack(model, self.is_recomputing)
        self._names = {id(m): name for name, m in model.named_modules()}
        self.rules = rules
        self.target = target
        self._persistent: set[str] = set()  # names of the library buffers allocated so far
        self._recompute_depth = 0  # > 0 while checkpointing recomputes a forward pass
        self.timeline = Timeline()
        self.phase = Phase.SETUP
        self.reads = reads or Reads("neutral")  # data-dependent reads: answered and recorded
        self.routing = "balanced"  # the MoE routing policy (memlens.routing)
        self.routed: list[str] = []  # the routers routed by policy (module paths)
        self._closed = False
        self.counting_flops = True
        self.shadows = Shadows()
        self._ids = itertools.count()
        self._key_of: WeakIdKeyDictionary = WeakIdKeyDictionary()  # storage -> key
        self._block_of: dict[int, int] = {}  # key -> block id in the current timeline
        self._meta: dict[int, tuple[int, Category]] = {}  # key -> (nbytes, category) for carry-over
        self._host_depth = 0  # > 0 while allocations are host memory (an offloaded optimizer)
        self._host_bytes: dict[int, int] = {}  # key -> bytes of live host storages
        self.host_live = 0
        self.host_peak = 0  # host bytes at their peak in the current timeline
        self.flops = 0  # FLOPs of the current timeline's ops
        self.recompute_flops = 0  # of which: re-run by activation checkpointing

    # -- storages ---------------------------------------------------------------------
    def _key(self, storage: torch.UntypedStorage) -> int | None:
        return self._key_of.get(storage)

    def track(
        self,
        t: torch.Tensor,
        category: Category,
        op: str,
        module: str | None = None,
        nbytes: int | None = None,
    ) -> int | None:
        """Record ``t``'s storage as allocated now (no-op if already known); ``module``: its
        owner when not the module running now (a parameter's); ``nbytes``: its real size
        where a rule says the fake kernel's differs (:class:`OutputBytes`). A wrapper
        subclass (DTensor) is recorded as its inner tensors."""
        if is_traceable_wrapper_subclass(t):
            for inner in _storage_tensors(t):
                self.track(inner, category, op, module)
            return None
        storage = t.untyped_storage()
        if storage in self._key_of:
            return None
        key = next(self._ids)
        self._key_of[storage] = key
        nbytes = storage.nbytes() if nbytes is None else nbytes
        if self._host_depth:
            self._host_bytes[key] = nbytes
            self.host_live += nbytes
            self.host_peak = max(self.host_peak, self.host_live)
            nbytes = 0  # takes no device memory
        self._meta[key] = (nbytes, category)
        self._block_of[key] = self.timeline.alloc(
            nbytes,
            category,
            self.phase,
            self.modules.current if module is None else module,
            op,
            _describe(t),
        )
        weakref.finalize(storage, self._on_free, key).atexit = False
        return key

    def _on_free(self, key: int) -> None:
        if self._closed:
            return
        block = self._block_of.pop(key, None)
        self._meta.pop(key, None)
        self.host_live -= self._host_bytes.pop(key, 0)
        if block is not None:
            self.timeline.free(block)

    def set_category(self, t: torch.Tensor, category: Category) -> None:
        """Re-label the live storage of ``t`` (e.g. a gradient once it lands in ``.grad``)."""
        for inner in _storage_tensors(t):
            key = self._key(inner.untyped_storage())
            if key is None or key not in self._block_of:
                continue
            self.timeline.blocks[self._block_of[key]].category = category
            self._meta[key] = (self._meta[key][0], category)

    def set_host(self, t: torch.Tensor) -> None:
        """``t`` lives in host memory on the target device: it takes no device bytes."""
        for inner in _storage_tensors(t):
            key = self._key(inner.untyped_storage())
            if key is None or key not in self._block_of:
                continue
            self.timeline.blocks[self._block_of[key]].nbytes = 0
            self._meta[key] = (0, self._meta[key][1])

    def resized(self, storage: torch.UntypedStorage, nbytes: int) -> None:
        """``storage.resize_(nbytes)`` ran: its old bytes are freed and ``nbytes`` allocated.

        Resizing a storage in place is how FSDP materialises and frees unsharded parameters
        (``torch/distributed/fsdp/_fully_shard/_fsdp_param.py`` ``alloc_storage`` /
        ``free_storage``); the storage stays one object, so it keeps its key and becomes a
        new block, counted as parameters.
        """
        key = self._key(storage)
        if key is None or self._host_depth:
            return
        block = self._block_of.pop(key, None)
        if block is not None:
            self.timeline.free(block)
        self._meta[key] = (nbytes, Category.PARAMETERS)
        if nbytes:
            self._block_of[key] = self.timeline.alloc(
                nbytes, Category.PARAMETERS, self.phase, self.modules.current, "storage.resize_"
            )

    @contextlib.contextmanager
    def host(self) -> Iterator[None]:
        """Storages allocated inside are host memory: out of the device timeline, counted in
        :attr:`host_peak`."""
        self._host_depth += 1
        try:
            yield
        finally:
            self._host_depth -= 1

    def transient(self, nbytes: int, op: str) -> None:
        """An op-internal buffer: allocated and freed inside one op."""
        if nbytes > 0 and not self._host_depth:
            block = self.timeline.alloc(
                nbytes, Category.TEMPORARIES, self.phase, self.modules.current, op + ":workspace"
            )
            self.timeline.free(block)

    def close(self) -> Timeline:
        """Stop recording (later frees are teardown) and return the current timeline."""
        self._closed = True
        return self.timeline

    def new_timeline(self) -> Timeline:
        """Start a fresh timeline whose setup holds every storage alive now."""
        finished, self.timeline = self.timeline, Timeline()
        self.phase = Phase.SETUP
        self.flops = self.recompute_flops = 0
        self.host_peak = self.host_live
        for key in sorted(self._block_of):
            nbytes, category = self._meta[key]
            # a library buffer keeps its name (reports list the workspaces by it)
            library = category is Category.FRAMEWORK_OVERHEAD
            old = finished.blocks[self._block_of[key]]
            op = old.op if library else "carried"
            self._block_of[key] = self.timeline.alloc(
                nbytes, category, Phase.SETUP, old.module, op, old.tensor
            )
        return finished

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.timeline.mark_phase(phase)
        self.modules.reset()

    def label_survivors(self, phase: Phase, category: Category) -> None:
        """Blocks allocated in ``phase`` and still alive become ``category``."""
        for key, block_id in self._block_of.items():
            block = self.timeline.blocks[block_id]
            if block.phase == phase and block.category == Category.TEMPORARIES:
                block.category = category
                self._meta[key] = (self._meta[key][0], category)

    # -- activation checkpointing ------------------------------------------------------
    def is_recomputing(self) -> bool:
        """True while a checkpointed segment re-runs its forward inside the backward pass."""
        return self._recompute_depth > 0

    @contextlib.contextmanager
    def recomputation(self) -> Iterator[None]:
        """Entered by activation checkpointing around each recomputed forward pass."""
        self._recompute_depth += 1
        try:
            yield
        finally:
            self._recompute_depth -= 1

    # -- ops ----------------------------------------------------------------------------
    def dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if func in _SKIP:
            return func(*args, **kwargs)
        if func is aten._local_scalar_dense.default:
            return self._neutral_value(args[0])
        if func in _MASK_INDEXED and _has_mask(args[1]):
            return self._with_mask_indices(func, args, kwargs)
        bound = _UPPER_BOUND_SHAPES.get(func)
        operands = _SAME_DTYPE.get(func)
        if operands is not None:
            a, b = (args[i] for i in operands)
            if a.dtype != b.dtype:
                raise TraceError(
                    f"RuntimeError: the operands of {func.overloadpacket.__name__} have dtypes "
                    f"{a.dtype} and {b.dtype}, which the real kernel refuses (give inputs of "
                    "the model's dtype, or run it under autocast)",
                    op=str(func.overloadpacket.__name__),
                    module=self.modules.current,
                )
        try:
            out = (
                self._data_shaped(func, args, kwargs, bound)
                if bound is not None
                else func(*args, **kwargs)
            )
        except TraceError:
            raise
        except Exception as e:
            raise TraceError(
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                op=str(func.overloadpacket.__name__),
                module=self.modules.current,
            ) from e
        self.shadows.propagate(func, args, kwargs, out)
        if func is aten.topk.default:
            self._route(args, kwargs, out)
        name = f"aten.{func.overloadpacket.__name__}"
        if self.counting_flops:
            self._count_flops(func, args, kwargs, out)
        rule = self.rules.get(func)
        sizes: dict[int, int] = {}  # output index -> real bytes (OutputBytes)
        if rule is not None:
            for buffer in rule(OpCall(func, args, kwargs, out, self.target.kind, self.target)):
                if isinstance(buffer, Persistent):
                    self._library_buffer(buffer)
                elif isinstance(buffer, OutputBytes):
                    sizes[buffer.index] = buffer.nbytes
                else:
                    self.transient(buffer, name)
        if func.namespace in _COLLECTIVE_NAMESPACES:
            name, category = (
                f"{func.namespace}.{func.overloadpacket.__name__}",
                Category.COLLECTIVES,
            )
        else:
            category = Category.TEMPORARIES
        for i, t in enumerate(torch.utils._pytree.tree_leaves(out)):
            if isinstance(t, torch.Tensor):
                self.track(t, category, name, nbytes=sizes.get(i))
        if func.namespace == "c10d" and name.endswith("_"):
            # an in-place collective (allreduce_, _allgather_base_): its tensors are the
            # communication buffers (a DDP bucket; what becomes a gradient is relabelled
            # when it lands in .grad)
            for t in torch.utils._pytree.tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor):
                    self.set_category(t, Category.COLLECTIVES)
        return out

    def _count_flops(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        n = count_flops(func, args, kwargs, out)
        self.flops += n
        if self.is_recomputing():
            self.recompute_flops += n

    def _library_buffer(self, buffer: Persistent) -> None:
        """A library's buffer that lives on once allocated (the cuBLAS workspace), not tied
        to a tensor; allocated at its first use only."""
        if buffer.name in self._persistent:
            return
        self._persistent.add(buffer.name)
        key = next(self._ids)
        category = Category.FRAMEWORK_OVERHEAD
        self._meta[key] = (buffer.nbytes, category)
        self._block_of[key] = self.timeline.alloc(
            buffer.nbytes, category, self.phase, self.modules.current, buffer.name
        )

    def _with_mask_indices(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``x[mask]`` (and its backward's ``index_put``): ATen turns each boolean mask into
        the long indices of its nonzero elements (``expandTensors``, aten/src/ATen/native/
        IndexingUtils.h: ``index.nonzero()``, then ``nonzero.select(1, j)`` per dimension)
        and indexes with those; the ``nonzero`` is data-shaped (its shadow's value, or a
        read)."""
        indices: list[Any] = []
        for i in args[1]:
            if i is not None and i.dtype in (torch.bool, torch.uint8):
                nonzero = self.dispatch(aten.nonzero.default, (i,), {})
                indices += [nonzero.select(1, j) for j in range(i.dim())]
            else:
                indices.append(i)
        return self.dispatch(func, (args[0], indices, *args[2:]), kwargs)

    def _data_shaped(self, func: Any, args: tuple, kwargs: dict, bound: Callable) -> Any:
        """An op whose output shape is data-dependent (``nonzero``): a fake of the real output
        where its inputs have shadows (a router's expert mask), else a read's answer."""
        real = self.shadows.run_real(func, args, kwargs)
        if isinstance(real, torch.Tensor):
            out = torch.empty(real.shape, dtype=real.dtype)
            self.shadows.seed(out, real)
            return out
        t = args[0]
        name = f"torch.{func.overloadpacket.__name__}"
        return bound(t, t.numel() if self.reads.selects_all(name, self.modules.current) else 0)

    def _route(self, args: tuple, kwargs: dict, out: Any) -> None:
        """A router's top-k (over as many choices as its MoE layer has experts) gets, as the
        real value of its indices, the assignment of the routing policy
        (:func:`memlens.routing.assignment`), not a neutral read."""
        t, k = args[0], args[1]
        dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
        indices = out[1]
        if self.shadows.get(indices) is not None or dim not in (-1, t.dim() - 1):
            return
        experts = t.shape[-1]
        router = self._router(experts)
        if router is None or not 0 < k <= experts:
            return
        tokens = indices.numel() // k
        with _disable_current_modes():  # a real tensor, not a fake one
            real = assignment(tokens, k, experts, self.routing).reshape(indices.shape)
        self.shadows.seed(indices, real)
        if router not in self.routed:
            self.routed.append(router)

    def _router(self, experts: int) -> str | None:
        """The path of the module calling ``topk`` if it, or a module whose code called it,
        holds ``experts`` experts: a ``ModuleList`` of that length (Mixtral's, Qwen2-MoE's,
        DeepSeek's ``experts``) or a ``num_experts`` / ``num_local_experts`` /
        ``n_routed_experts`` of that value (DeepSeek's router). Found from the callers'
        ``self``: the warm-up step runs without module hooks."""
        if experts < 2:
            return None
        frame, seen = sys._getframe(2), 0
        while frame is not None and seen < 3:
            owner = frame.f_locals.get("self")
            if isinstance(owner, torch.nn.Module):
                seen += 1
                if _holds_experts(owner, experts):
                    return self._names.get(id(owner), type(owner).__name__)
            frame = frame.f_back
        return None

    def _neutral_value(self, t: torch.Tensor) -> Any:
        """Answer a data-dependent scalar read (``.item()``, ``if tensor:``): the shadow's
        value, else the read policy's answer (:class:`~memlens.engine.shadow.Reads`)."""
        shadow = self.shadows.get(t)
        if shadow is not None:
            with _disable_current_modes():
                return shadow.item()
        constant = getattr(t, "constant", None)
        if constant is not None:
            with _disable_current_modes():
                return constant.item()
        return self.reads.scalar(t, self.modules.current)


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: some order of its dimensions is contiguous."""
    if t.numel() < 2:
        return True
    expected = 1
    for size, stride in sorted(
        (p for p in zip(t.shape, t.stride(), strict=True) if p[0] != 1), key=lambda p: p[1]
    ):
        if stride != expected:
            return False
        expected *= size
    return True


def _reference_counts(t: torch.Tensor) -> tuple[int, int]:
    """(holders of ``t``'s TensorImpl, holders of its storage) as seen inside a dispatch."""
    return t._use_count(), torch._C._storage_Use_Count(t.untyped_storage()._cdata)


@functools.cache
def _sole_reference_counts() -> tuple[int, int] | None:
    """:func:`_reference_counts` of an autograd input buffer's first gradient when the buffer
    is its only holder, as a dispatch mode sees it while the engine accumulates a second one
    (measured once on a two-element graph: the dispatcher's own references vary with the
    PyTorch build); ``None`` where the engine accumulates without an ``aten.add`` the mode
    sees, or a PyTorch lacks the reference counts or the current node (every sum is then
    traced out of place, an upper bound)."""
    if not (hasattr(torch.Tensor, "_use_count") and hasattr(torch._C, "_current_autograd_node")):
        return None
    seen: list[tuple[int, int]] = []

    class Probe(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
            if func is aten.add.Tensor and torch._C._current_graph_task_id() != -1:
                seen.append(_reference_counts(args[0]))
            return func(*args, **(kwargs or {}))

    with _disable_current_modes(), torch.inference_mode(False), torch.enable_grad():
        h = torch.ones(2, requires_grad=True) * 2
        y = (h.exp() + h.sin()).sum()  # h's buffer: sin's gradient first, then exp's is added
        with Probe():
            y.backward()
    return seen[0] if len(seen) == 1 else None


class RecordingMode(TorchDispatchMode):
    """The dispatch mode that feeds a :class:`Recorder` (kept small on purpose).

    An op on a wrapper subclass (a DTensor) is handed back (``NotImplemented``) so that the
    subclass runs it, with this mode still active: the mode then sees the ops on the inner
    (local) tensors, which hold the memory. While active, ``UntypedStorage.resize_`` (which
    no dispatch mode sees) reports to the recorder, as PyTorch's own
    ``torch/distributed/_tools/mem_tracker.py`` patches it.

    Gradients that meet in backward are summed by the autograd engine's input buffer
    (``torch/csrc/autograd/input_buffer.cpp`` ``accumulate``) *in place*, into the first
    one, when that one is a dense tensor nothing else holds (``can_accumulate_inplace``) and
    the second is no "tensor-subclass-like" tensor; while a dispatch mode is active every
    tensor is subclass-like, so the trace would see an out-of-place ``aten.add`` (a new
    storage the real step never allocates). The mode tells that add apart (it runs after the
    producing node's post hooks, which it registers on each node of backward) and runs it as
    the real step does, ``add_``, when the first gradient is held by the buffer alone.
    """

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder
        self._resize: Any = None
        self._node: Any = None  # the autograd node whose backward runs now
        self._applied = False  # whether its post hooks ran: what follows is accumulation
        self._sole: tuple[int, int] | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        if any(is_traceable_wrapper_subclass_type(t) for t in types):
            return NotImplemented
        if self._sole is not None and torch._C._current_graph_task_id() != -1:
            self._follow_node()
            if func is aten.add.Tensor and self._accumulates_in_place(args, kwargs):
                func = aten.add_.Tensor
        return self.recorder.dispatch(func, args, kwargs or {})

    def _follow_node(self) -> None:
        node = torch._C._current_autograd_node()
        if node is self._node:
            return
        self._node, self._applied = node, False
        # AccumulateGrad feeds no buffer, and steals its gradient only without post hooks
        if node is not None and node.name() != "torch::autograd::AccumulateGrad":
            node.register_hook(self._node_applied)

    def _node_applied(self, *_: Any) -> None:
        self._applied = torch._C._current_autograd_node() is self._node

    def _accumulates_in_place(self, args: tuple, kwargs: dict | None) -> bool:
        """Whether this ``aten.add`` is the engine summing two gradients that the real step
        sums in place (``input_buffer.cpp`` ``accumulate``, ``can_accumulate_inplace``)."""
        if not self._applied or kwargs or len(args) != 2 or torch.is_grad_enabled():
            return False
        old, new = args
        if not (
            isinstance(old, torch.Tensor)
            and isinstance(new, torch.Tensor)
            and old.shape == new.shape
            and not old.is_sparse
            and not old.is_nested
            and not old._is_zerotensor()
            and _dense(old)
        ):
            return False
        if _reference_counts(old) != self._sole:
            return False
        # not an inner op of a wrapper subclass's own dispatch (a DTensor's gradients are
        # subclass-like in the real step too: summed out of place)
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "__torch_dispatch__":
                return False
            frame = frame.f_back
        return True

    def __enter__(self) -> RecordingMode:
        self._sole = _sole_reference_counts()
        original = self._resize = torch.UntypedStorage.resize_
        recorder = self.recorder

        def resize_(storage: torch.UntypedStorage, nbytes: int) -> Any:
            out = original(storage, nbytes)
            recorder.resized(storage, int(nbytes))
            return out

        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        torch.UntypedStorage.resize_ = self._resize  # type: ignore[method-assign]
        self._node = None
        super().__exit__(*exc)
