"""Real values for small fake tensors, so data-dependent reads get true answers.

Fake tensors carry no data, so ``if torch.rand([]) < self.layerdrop:`` (Hugging Face layer
drop) or a loop bound read with ``.item()`` has no value to read. :class:`Shadows` keeps, beside
a small fake tensor, a real *shadow* computed by running the same op on the shadows of its
inputs: factory ops (``rand``, ``arange``, ``full``) start shadows, and any op whose tensor
inputs all have shadows extends them. Only small tensors (at most :data:`LIMIT` elements) are
shadowed, so the cost stays that of a few tiny real ops. Tensors derived from the (random,
large) inputs have no shadow, unless the user gave real input tensors (their values are the
shadows of their fake copies, :meth:`Shadows.seed`). Integer and boolean tensors (indices,
masks: what decides control flow and output shapes) are shadowed up to :data:`INDEX_LIMIT`.

A read of a tensor without a shadow is data-dependent: :class:`Reads` answers it under the
workload's ``data_dependent`` policy and records it as a :class:`Read`, with the running
module and the source line (``file:line``) of the code that read it, so that
:mod:`memlens.engine.explore` can trace each read site's other answer. The data-dependent
output sizes of ``nonzero`` / ``masked_select`` are reads too: every element selected (the
neutral answer, an upper bound) or none.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten
from torch.utils.weak import WeakIdKeyDictionary

from memlens._errors import TraceError

#: Largest floating-point tensor (in elements) given a real shadow.
LIMIT = 4096
#: Reads at one site after which a trace stops (a ``while`` on input values never ends).
LOOP_LIMIT = 2_000
#: Largest integer or boolean tensor given a real shadow (a router's one-hot expert mask of
#: 32k tokens x top-2 x 8 experts is 512k elements).
INDEX_LIMIT = 1 << 24
#: Ops turning a real tensor (``torch.tensor(data)``, ``torch.as_tensor(a_list)``) into a fake
#: one: the real tensor is its shadow.
_LIFTS = {torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default}


def _shadowed(t: torch.Tensor) -> bool:
    """Whether ``t`` is small enough, for its kind, to get a real shadow."""
    limit = LIMIT if t.is_floating_point() or t.is_complex() else INDEX_LIMIT
    return t.numel() <= limit


class Shadows:
    """Real twins of small fake tensors, kept only while the fake tensor lives."""

    def __init__(self) -> None:
        self._real: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def get(self, t: torch.Tensor) -> torch.Tensor | None:
        return self._real.get(t)

    def seed(self, fake: torch.Tensor, real: torch.Tensor) -> None:
        """``real`` is ``fake``'s value (a real input tensor the user gave, a router's
        assignment)."""
        self._real[fake] = real

    def run_real(self, func: Any, args: tuple, kwargs: dict) -> Any | None:
        """``func`` run on the shadows of its inputs (None if one has none, or it fails): the
        real output of an op whose output shape depends on the data (``nonzero``)."""
        flat, spec = tree_flatten((args, kwargs))
        real_flat = []
        for x in flat:
            if isinstance(x, torch.Tensor):
                x = self._real.get(x)
                if x is None:
                    return None
            real_flat.append(x)
        real_args, real_kwargs = tree_unflatten(real_flat, spec)
        try:
            with _disable_current_modes():
                return func(*real_args, **real_kwargs)
        except Exception:
            return None

    def propagate(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Run ``func`` on the shadows of its inputs and shadow its small outputs."""
        if func in _LIFTS and not isinstance(args[0], FakeTensor):
            if isinstance(out, torch.Tensor) and _shadowed(out):
                with _disable_current_modes():
                    self._real[out] = args[0].clone()
            return
        for a in args:  # fast path: most ops read a tensor that has no data
            if isinstance(a, torch.Tensor) and a not in self._real:
                self._forget(out)
                return
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
            if getattr(func, "_schema", None) is not None and func._schema.is_mutable:
                # in place, returning nothing (``_foreach_add_`` on optimizer steps): the
                # shadows of the tensors it wrote are stale
                for t in tree_leaves((args, kwargs)):
                    if isinstance(t, torch.Tensor):
                        self._real.pop(t, None)
            return
        flat, spec = tree_flatten((args, kwargs))
        real_flat = []
        for x in flat:
            if isinstance(x, torch.Tensor):
                shadow = self._real.get(x)
                if shadow is None:  # an input without data: outputs (even in place) lose theirs
                    for t in outs:
                        self._real.pop(t, None)
                    return
                x = shadow
            real_flat.append(x)
        if not all(_shadowed(t) for t in outs):
            return
        real_args, real_kwargs = tree_unflatten(real_flat, spec)
        try:
            with _disable_current_modes():
                real_out = func(*real_args, **real_kwargs)
        except Exception:  # a real kernel refusing what the meta kernel allowed: no shadow
            return
        real_outs = [t for t in tree_leaves(real_out) if isinstance(t, torch.Tensor)]
        if len(real_outs) == len(outs):
            for fake, real in zip(outs, real_outs, strict=True):
                self._real[fake] = real

    def _forget(self, out: Any) -> None:
        """Outputs of an op that read data-less tensors have no shadow (in place ones lose it)."""
        if isinstance(out, torch.Tensor):
            self._real.pop(out, None)
        elif isinstance(out, (tuple, list)):
            for t in out:
                if isinstance(t, torch.Tensor):
                    self._real.pop(t, None)


#: Frames of these folders are not where a model reads a value: torch's and memlens's own.
_SKIP_DIRS = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
)
#: The standard library (contextlib, functools), whose folder may hold site-packages.
_STDLIB = os.path.dirname(os.__file__) + os.sep


def _library(name: str) -> bool:
    if name.startswith(_SKIP_DIRS) or name.startswith("<frozen"):
        return True
    return name.startswith(_STDLIB) and "site-packages" not in name


def call_site() -> str:
    """``file:line`` of the innermost frame outside torch, memlens and the standard library:
    the model code that read a value (``transformers/models/...`` paths from the package
    folder on)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not _library(name):
            short = name.split("site-packages" + os.sep, 1)[-1]
            return f"{short}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


class EndlessRead(TraceError):
    """A site read :data:`LOOP_LIMIT` times with the same answer: a ``while`` loop on input
    values, which the neutral answer never ends."""

    def __init__(self, site: str, what: str, module: str) -> None:
        self.site = site
        super().__init__(
            f"{what} read {LOOP_LIMIT} times at {site} with the same answer: a loop whose "
            "condition depends on the input values, which a trace does not have",
            module=module,
        )


@dataclass(frozen=True)
class Read:
    """One data-dependent read: where (``site``, ``module``), what was read (``bool``,
    ``int``, ``float``, ``size``) and the answer given."""

    site: str
    module: str
    kind: str
    answer: str


class Reads:
    """Answers reads of values without data, under ``policy`` (``explore``, ``neutral``,
    ``fail``), and records them.

    The neutral answers are ``True``, ``1``, ``1.0`` and, for a data-dependent size, every
    element (an upper bound); every read at the ``flipped`` site gets the other one
    (``False``, ``0``, ``0.0``, no element). ``fail`` raises :class:`TraceError` at the first
    read, naming its site.
    """

    def __init__(self, policy: str = "explore", flipped: str | None = None) -> None:
        self.policy = policy
        self.flipped = flipped
        self.log: list[Read] = []
        self._count: dict[str, int] = {}

    def _site(self, module: str, what: str) -> tuple[str, bool]:
        site = call_site()
        if self.policy == "fail":
            raise TraceError(
                f"{what} depends on the input values, which a trace does not have, read at "
                f"{site} (data_dependent=fail; use explore or neutral to estimate anyway)",
                module=module,
            )
        count = self._count[site] = self._count.get(site, 0) + 1
        if count > LOOP_LIMIT:
            raise EndlessRead(site, what, module)
        return site, site == self.flipped

    def scalar(self, t: torch.Tensor, module: str) -> bool | int | float:
        """The answer to ``.item()``, ``bool(t)``, ``int(t)`` of a tensor without data."""
        kind = "bool" if t.dtype == torch.bool else "float" if t.is_floating_point() else "int"
        what = f"the value of a {str(t.dtype)[6:]}{list(t.shape)} tensor (.item(), bool(), if)"
        site, flip = self._site(module, what)
        value: bool | int | float
        if kind == "bool":
            value = not flip
        elif kind == "float":
            value = 0.0 if flip else 1.0
        else:
            value = 0 if flip else 1
        self.log.append(Read(site, module, kind, repr(value)))
        return value

    def selects_all(self, op: str, module: str) -> bool:
        """Whether a data-dependent selection (``nonzero``) selects every element (the
        neutral upper bound) or none."""
        site, flip = self._site(module, f"the output size of {op}")
        self.log.append(Read(site, module, "size", "none" if flip else "all"))
        return not flip

    def sites(self) -> list[str]:
        """The read sites, in the order first read."""
        return list(dict.fromkeys(r.site for r in self.log))
