"""User code as a source: ``path/file.py:function``, ``package.module:function``, a callable
returning an ``nn.Module``, or an ``nn.Module`` itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from memlens._errors import ConfigError
from memlens.sources.base import Inputs, ModelSpec
from memlens.workload import Workload


def generic_inputs(
    user_inputs: Any = None,
) -> Callable[[nn.Module, Workload], Inputs]:
    """Inputs from the user (a tuple of tensors or a callable returning one), or a random
    batch of ``workload.input_shape``."""

    def make(model: nn.Module, workload: Workload) -> Inputs:
        if user_inputs is not None:
            got = user_inputs() if callable(user_inputs) else user_inputs
            if isinstance(got, Inputs):
                return got
            if isinstance(got, dict):
                return Inputs(kwargs=got)
            if isinstance(got, torch.Tensor):
                return Inputs(args=(got,))
            return Inputs(args=tuple(got))
        if workload.input_shape is None:
            raise ConfigError(
                "this model has no default inputs: pass --input-shape (e.g. 3x224x224) "
                "or inputs= to the API"
            )
        return Inputs(args=(torch.randn(workload.batch, *workload.input_shape),))

    return make


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
