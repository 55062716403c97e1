"""Build a model and its inputs on fake tensors: no memory, no weights, no initialisation.

Weight initialisation never changes memory, and it is where many models fail on fake tensors
(``nn.init.trunc_normal_`` reads a value with ``aten._local_scalar_dense``). While building,
:class:`_SkipInit` returns in-place ops (``normal_``, ``uniform_``, ``fill_``, ``copy_``...)
unevaluated, and answers scalar reads with a neutral value, as Hugging Face's
``no_init_weights`` does for its own models, but for any code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from memlens._errors import ConfigError, MemlensError, TraceError
from memlens.engine.shadow import LIMIT, Shadows
from memlens.sources.base import Inputs, ModelSpec, building
from memlens.workload import Workload

aten = torch.ops.aten

# In-place ops that change a tensor's shape or storage must still run.
_SHAPE_CHANGING = {
    "resize_",
    "resize_as_",
    "set_",
    "as_strided_",
    "squeeze_",
    "unsqueeze_",
    "transpose_",
    "t_",
    "swapdims_",
    "swapaxes_",
    "detach_",
    "requires_grad_",
}


#: Ops turning a real tensor (``torch.tensor(data)``) into a fake one.
_LIFTS = {aten.lift_fresh.default, aten.lift_fresh_copy.default}


class _SkipInit(TorchDispatchMode):
    """Skip value-only in-place ops and answer scalar reads during model construction.

    Small tensors computed from factories carry real shadows (:class:`Shadows`), as while
    tracing, so architecture computed with tensor ops reads its true values (RegNet's block
    widths: ``torch.arange``, ``log``, ``round``, ``.tolist()`` in torchvision's
    ``BlockParams.from_init_params``; stochastic-depth rates from ``torch.linspace``). A skipped
    in-place op updates the shadow of its tensor; ``torch.tensor(data)`` is its own shadow.
    Other reads answer ``False`` / ``0``: that
    ends rejection-sampling loops such as ``while mask.any(): resample`` in initialisers
    imported before :func:`skip_init` ran.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shadows = Shadows()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        name, kwargs = func.overloadpacket.__name__, kwargs or {}
        if func is aten._local_scalar_dense.default:
            t, shadow = args[0], self.shadows.get(args[0])
            if shadow is not None:
                with _disable_current_modes():
                    return shadow.item()
            return False if t.dtype == torch.bool else (0.0 if t.is_floating_point() else 0)
        if (
            name.endswith("_")
            and not name.startswith("_")
            and name not in _SHAPE_CHANGING
            and args
            and isinstance(args[0], torch.Tensor)
        ):
            self.shadows.propagate(func, args, kwargs, args[0])
            return args[0]
        out = func(*args, **kwargs)
        if func in _LIFTS and not isinstance(args[0], FakeTensor):  # torch.tensor(data)
            if args[0].numel() <= LIMIT:
                with _disable_current_modes():
                    self.shadows.seed(out, args[0].clone())
        else:
            self.shadows.propagate(func, args, kwargs, out)
        return out


def _identity_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


@contextmanager
def skip_init() -> Iterator[None]:
    """Construct modules without running their weight initialisation.

    ``torch.nn.init``'s in-place initialisers become identities (restored on exit), and
    :class:`_SkipInit` catches the initialisers written by hand in model code.
    """
    saved = {
        name: fn
        for name, fn in vars(torch.nn.init).items()
        if callable(fn) and name.endswith("_") and not name.startswith("_")
    }
    swap = torch.utils.swap_tensors

    def swap_or_set(t1: torch.Tensor, t2: torch.Tensor) -> None:
        # model.to(dtype) / .half() swaps fake parameters (nn.Module._apply), which fails on
        # a tensor that has weak references (fake tensors have: the fake mode's and the
        # shadows' tables); the legacy path, ``param.data = new``, gives the same tensor
        try:
            swap(t1, t2)
        except RuntimeError as e:
            if "weakref" not in str(e):
                raise
            t1.data = t2

    try:
        for name in saved:
            setattr(torch.nn.init, name, _identity_init)
        torch.utils.swap_tensors = swap_or_set
        with _SkipInit():
            yield
    finally:
        torch.utils.swap_tensors = swap
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


class _FakeDeepcopy(TorchFunctionMode):
    """``copy.deepcopy`` of fake tensors as a real run does it: a new tensor of the same size.

    A fake parameter is a ``FakeTensor`` (``nn.Parameter`` of one returns the tensor, flagged
    ``_is_param``), so ``deepcopy`` takes ``Tensor.__deepcopy__`` (torch/_tensor.py), whose
    storage copy gives a tensor of *another* fake mode: every later op on it fails with
    "Mixing fake modes". Model code clones modules this way (``nn.TransformerEncoder``'s
    ``_get_clones``, EMA copies). Here the copy is a ``clone`` in the tensor's own mode, with
    its ``requires_grad`` and parameter flag, memoised as ``deepcopy`` expects.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if func is torch.Tensor.__deepcopy__ and isinstance(args[0], FakeTensor):
            t, memo = args
            if id(t) in memo:
                return memo[id(t)]
            with t.fake_mode:
                out = t.detach().clone()
            if isinstance(t, nn.Parameter) or getattr(t, "_is_param", False):
                out = nn.Parameter(out, t.requires_grad)
            else:
                out.requires_grad_(t.requires_grad)
            memo[id(t)] = out
            return out
        return func(*args, **kwargs)


def new_fake_mode() -> FakeTensorMode:
    """The fake-tensor mode the engine runs in (real tensors may not enter it)."""
    return FakeTensorMode(allow_non_fake_inputs=False)


@dataclass
class Built:
    """A model and its inputs, built on fake tensors inside ``mode``."""

    model: nn.Module
    inputs: Inputs
    mode: FakeTensorMode
    #: (fake input, the real tensor the user gave for it): its values are known
    real_inputs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def call_user(what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, user code run on fake tensors: an exception it raises becomes a
    :class:`TraceError` naming ``what``, the error, the user's source line and, for the
    mistakes a trace cannot get past, what to do."""
    try:
        return fn(*args)
    except MemlensError:
        raise
    except Exception as e:  # user code failing under fake tensors
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        where = _user_line(e.__traceback__)
        hint = _hint(e)
        raise TraceError(
            f"{what} failed: {type(e).__name__}: {first}"
            + (f" [{where}]" if where else "")
            + (f"; {hint}" if hint else "")
        ) from e


def _user_line(tb: Any) -> str:
    """``file:line`` of the innermost frame outside torch, memlens and the standard library."""
    import sysconfig

    skip = (torch.__path__[0], __file__.rsplit("/engine/", 1)[0], sysconfig.get_paths()["stdlib"])
    found = ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith(skip) and not name.startswith("<"):
            found = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _hint(e: Exception) -> str:
    """What to do about the user-code errors a trace on fake tensors meets."""
    text = str(e)
    if isinstance(e, ImportError):
        return "the model's code imports a module that is not installed here"
    if ".numpy()" in text or "tensor subclass" in text:
        return (
            "the code reads tensor data on the host (.numpy(), .tolist()), which fake "
            "tensors do not have: keep it out of the traced step"
        )
    if isinstance(e, TypeError) and ("positional argument" in text or "keyword argument" in text):
        return (
            "the model's forward takes other inputs than memlens made: pass inputs= "
            "(API) or give the model an example-input spec"
        )
    if "Expected more than 1 value per channel" in text or "size is too small" in text.lower():
        return "the input is too small for the model: use a larger --input-shape"
    return ""


def fakeify(module: nn.Module, mode: FakeTensorMode) -> nn.Module:
    """A copy of a real module whose parameters and buffers are fake (ties preserved); the
    user's module is left as it was."""
    memo: dict[int, Any] = {}
    for t in (*module.parameters(), *module.buffers()):
        if id(t) not in memo:
            fake = mode.from_tensor(t)
            memo[id(t)] = (
                nn.Parameter(fake, t.requires_grad) if isinstance(t, nn.Parameter) else fake
            )
    return copy.deepcopy(module, memo)


def build_fake(spec: ModelSpec, workload: Workload, mode: FakeTensorMode | None = None) -> Built:
    """Build ``spec``'s model and example inputs on fake CPU tensors."""
    mode = mode or new_fake_mode()
    with mode, skip_init(), building(workload), _FakeDeepcopy():
        model = call_user(f"building {spec.name}", spec.build)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{spec.name} built {type(model).__name__}, not an nn.Module")
    if any(not _is_fake(t) for t in _tensors_of(model)):
        model = fakeify(model, mode)  # an existing real module, or one built outside the mode
    with mode:
        inputs = call_user(f"making inputs for {spec.name}", spec.make_inputs, model, workload)
    inputs, real = _fake_inputs(inputs, mode)
    return Built(model, inputs, mode, real)


def _fake_inputs(
    inputs: Inputs, mode: FakeTensorMode
) -> tuple[Inputs, list[tuple[torch.Tensor, torch.Tensor]]]:
    """``inputs`` with each real tensor (the user's own) replaced by its fake copy, and the
    pairs (fake, real): the trace uses the real values to answer reads of them."""
    from torch.utils._pytree import tree_map

    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def fake(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and not _is_fake(x):
            copy = mode.from_tensor(x)
            pairs.append((copy, x.detach()))
            return copy
        return x

    args, kwargs, targets = tree_map(fake, (inputs.args, inputs.kwargs, inputs.targets))
    return Inputs(args=args, kwargs=kwargs, targets=targets), pairs


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _tensors_of(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()
