"""Real values for small fake tensors, so data-dependent reads get true answers.

Fake tensors carry no data, so ``if torch.rand([]) < self.layerdrop:`` (Hugging Face layer
drop) or a loop bound read with ``.item()`` has no value to read. :class:`Shadows` keeps, beside
a small fake tensor, a real *shadow* computed by running the same op on the shadows of its
inputs: factory ops (``rand``, ``arange``, ``full``) start shadows, and any op whose tensor
inputs all have shadows extends them. Only small tensors (at most :data:`LIMIT` elements) are
shadowed, so the cost stays that of a few tiny real ops. Tensors derived from the (random,
large) inputs have no shadow; reads of those get the recorder's neutral value.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten
from torch.utils.weak import WeakIdKeyDictionary

#: Largest tensor (in elements) given a real shadow.
LIMIT = 4096


class Shadows:
    """Real twins of small fake tensors, kept only while the fake tensor lives."""

    def __init__(self) -> None:
        self._real: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def get(self, t: torch.Tensor) -> torch.Tensor | None:
        return self._real.get(t)

    def propagate(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Run ``func`` on the shadows of its inputs and shadow its small outputs."""
        for a in args:  # fast path: most ops read a tensor that has no data
            if isinstance(a, torch.Tensor) and a not in self._real:
                self._forget(out)
                return
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
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
        if any(t.numel() > LIMIT for t in outs):
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
