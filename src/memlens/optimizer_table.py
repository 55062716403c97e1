"""The optimizers a workload can name, one row each; this module never imports torch.

A row says which class a trace builds (PyTorch's own, or memlens's for ``lion`` and
``adam-8bit``) with which arguments, the implementations it has, its state per parameter (the
tensors, and their bytes as a function of the parameter's shape) and what a step allocates
besides. The workload validates names and implementations against it,
:mod:`memlens.strategies.optimizers` builds from it, and the layouts give optimizer state
without a trace.

Implementations: the per-tensor loop (``for-loop``); the multi-tensor ``foreach`` kernels,
which allocate each intermediate for all parameters at once; the ``fused`` kernels, which
allocate none. ``auto`` is the target's default (PyTorch's
``torch.optim.optimizer._default_to_fused_or_foreach``: ``foreach`` for CUDA tensors, the
loop on CPU).

Step counters: PyTorch's optimizers keep a 0-dim fp32 ``step`` tensor per parameter, on the
host unless the implementation is fused (then on the device, beside the state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

#: Implementations, as ``optimizer_impl`` names them; ``auto`` picks the target's default.
IMPLS = ("foreach", "for-loop", "fused")
IMPL_CHOICES = ("auto", *IMPLS)

#: bitsandbytes' 8-bit optimizers (bitsandbytes/optim/optimizer.py, ``Optimizer2State``): one
#: fp32 absmax per block of 2048 elements and moment; tensors smaller than ``min_8bit_size``
#: keep fp32 state.
BNB_BLOCK = 2048
BNB_MIN_8BIT_SIZE = 4096
#: The dynamic quantisation maps (``create_dynamic_map``): 256 fp32 values each, one signed
#: map for the first moment and one unsigned map for the second, shared by all parameters.
BNB_QMAP_SIZE = 256

#: Bytes of one parameter's state from its shape and element size (step counters excluded).
Layout = Callable[[tuple[int, ...], int], int]


@dataclass(frozen=True)
class OptimizerRow:
    """One optimizer (see the module docstring)."""

    name: str
    cls: str  # dotted path of the class a trace builds
    options: tuple[tuple[str, float], ...]  # constructor keywords besides the parameters
    impls: tuple[str, ...]  # implementations it has (``for-loop`` always)
    state: tuple[str, ...]  # state tensors a parameter may have, as the optimizer names them
    layout: Layout
    step_counter: bool  # a 0-dim fp32 ``step`` tensor per parameter
    temporaries: str  # what a step allocates besides the state
    shared_state_bytes: int = 0  # once per optimizer, if any parameter uses it

    @property
    def impl_choices(self) -> tuple[str, ...]:
        """The values ``optimizer_impl`` may take with this optimizer."""
        return ("auto", *self.impls)

    def state_bytes(self, shape: tuple[int, ...], element_bytes: int) -> int:
        """State bytes of one parameter, its step counter included."""
        return self.layout(shape, element_bytes) + (4 if self.step_counter else 0)


def _copies(k: int) -> Layout:
    """``k`` tensors like the parameter."""
    return lambda shape, size: k * math.prod(shape) * size


def _factored(shape: tuple[int, ...], size: int) -> int:
    """Adafactor: a parameter of two or more dimensions keeps its second moment factored
    into a row and a column vector (``row_var``, ``col_var``); others keep it whole."""
    n = math.prod(shape)
    if len(shape) < 2:
        return n * size
    return (n // shape[-1] + n // shape[-2]) * size


def _bnb_8bit(shape: tuple[int, ...], size: int) -> int:
    """Two ``uint8`` moments and an fp32 absmax per 2048-element block of each, or two fp32
    moments under 4096 elements (bitsandbytes' layout, whatever the parameter's dtype)."""
    n = math.prod(shape)
    if n < BNB_MIN_8BIT_SIZE:
        return 2 * 4 * n
    return 2 * n + 2 * 4 * math.ceil(n / BNB_BLOCK)


_LOOP_ONLY = ("for-loop",)
_TORCH_TEMPORARIES = (
    "foreach: each intermediate for all parameters at once; for-loop: for one parameter at "
    "a time; fused: none"
)

#: Every optimizer a workload can name, in the order the CLI lists them.
OPTIMIZERS: dict[str, OptimizerRow] = {
    row.name: row
    for row in (
        OptimizerRow(
            "sgd",
            "torch.optim.SGD",
            (("lr", 1e-3),),
            IMPLS,
            (),
            _copies(0),
            step_counter=False,
            temporaries=_TORCH_TEMPORARIES,
        ),
        OptimizerRow(
            "sgd-momentum",
            "torch.optim.SGD",
            (("lr", 1e-3), ("momentum", 0.9)),
            IMPLS,
            ("momentum_buffer",),
            _copies(1),
            step_counter=False,
            temporaries=_TORCH_TEMPORARIES,
        ),
        OptimizerRow(
            "adam",
            "torch.optim.Adam",
            (("lr", 1e-3),),
            IMPLS,
            ("exp_avg", "exp_avg_sq"),
            _copies(2),
            step_counter=True,
            temporaries=_TORCH_TEMPORARIES,
        ),
        OptimizerRow(
            "adamw",
            "torch.optim.AdamW",
            (("lr", 1e-3),),
            IMPLS,
            ("exp_avg", "exp_avg_sq"),
            _copies(2),
            step_counter=True,
            temporaries=_TORCH_TEMPORARIES,
        ),
        OptimizerRow(
            "adafactor",
            "torch.optim.Adafactor",
            (("lr", 1e-2),),
            ("foreach", "for-loop"),
            ("row_var", "col_var", "variance"),
            _factored,
            step_counter=True,
            temporaries=_TORCH_TEMPORARIES.removesuffix("; fused: none"),
        ),
        OptimizerRow(
            "lion",
            "memlens.strategies.optimizers.Lion",
            (),
            _LOOP_ONLY,
            ("exp_avg",),
            _copies(1),
            step_counter=False,
            temporaries="the sign update of one parameter at a time",
        ),
        OptimizerRow(
            "adam-8bit",
            "memlens.strategies.optimizers.Adam8bit",
            (),
            _LOOP_ONLY,
            ("state1", "state2", "absmax1", "absmax2"),
            _bnb_8bit,
            step_counter=False,
            temporaries="one parameter's two moments dequantised to fp32 at a time",
            shared_state_bytes=2 * BNB_QMAP_SIZE * 4,
        ),
    )
}

#: Optimizer names, for choices and help.
NAMES: tuple[str, ...] = tuple(OPTIMIZERS)


def implementations(name: str) -> tuple[str, ...]:
    """The ``optimizer_impl`` values ``name`` allows (``auto`` first)."""
    return OPTIMIZERS[name].impl_choices
