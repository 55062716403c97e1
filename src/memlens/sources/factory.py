"""User code as a source: ``path/file.py:function``, ``package.module:function``, a callable
returning an ``nn.Module``, or an ``nn.Module`` itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memlens._errors import ConfigError, WorkloadError
from memlens.sources.base import Inputs, ModelSpec
from memlens.workload import Workload


def generic_inputs(
    user_inputs: Any = None,
) -> Callable[[nn.Module, Workload], Inputs]:
    """Inputs from the user (a tuple of tensors or a callable returning one), or a random
    batch of ``workload.input_shape``."""

    def make(model: nn.Module, workload: Workload) -> Inputs:
        if user_inputs is not None:
            given = [k for k in ("input_shape", "seq_len") if getattr(workload, k) is not None]
            if given:
                raise WorkloadError(
                    given[0],
                    getattr(workload, given[0]),
                    "does not apply when inputs= are given: the inputs set the shapes",
                )
            got = user_inputs() if callable(user_inputs) else user_inputs
            return _as_inputs(got)
        if workload.seq_len is not None:
            raise WorkloadError(
                "seq_len",
                workload.seq_len,
                "does not apply to this model (memlens makes its inputs from input_shape "
                "alone): give input_shape, or inputs= token ids to the API",
            )
        if workload.input_shape is None:
            raise ConfigError(
                "this model has no default inputs: pass --input-shape (e.g. 3x224x224) "
                "or inputs= to the API"
            )
        return Inputs(args=(torch.randn(workload.batch, *workload.input_shape),))

    return make


def _as_inputs(got: Any) -> Inputs:
    """``inputs=`` as :class:`Inputs`: a tensor, a tuple or list of tensors (positional), a
    dict of name -> tensor (keywords), or :class:`Inputs`; anything else is refused."""
    if isinstance(got, Inputs):
        return got
    if isinstance(got, torch.Tensor):
        return Inputs(args=(got,))
    if isinstance(got, dict) and all(isinstance(k, str) for k in got):
        return Inputs(kwargs=dict(got))
    if isinstance(got, tuple | list):
        return Inputs(args=tuple(got))
    raise ConfigError(
        f"inputs= must be a tensor, a tuple or list of tensors, a dict of name -> tensor, or a "
        f"callable returning one; got {type(got).__name__}"
    )


def module_spec(
    build: Callable[[], nn.Module], name: str, source: str, user_inputs: Any = None
) -> ModelSpec:
    """A spec for user code whose inputs come from the user or ``--input-shape``."""

    def checked_build() -> nn.Module:
        model = build()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{name} returned {type(model).__name__}, not an nn.Module")
        return model

    return ModelSpec(
        name=name,
        build=checked_build,
        make_inputs=generic_inputs(user_inputs),
        family="generic",
        source=source,
        loss_kind="mean",
    )
