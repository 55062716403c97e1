"""What a byte is for (:class:`Category`) and when it is used (:class:`Phase`)."""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    """Every byte belongs to exactly one category; reports list them in this order."""

    PARAMETERS = "parameters"  # model weights (nn.Parameter storages)
    BUFFERS = "buffers"  # registered buffers (batch-norm running stats, rotary tables)
    INPUTS = "inputs"  # the step's inputs and targets
    ACTIVATIONS = "activations"  # made in forward and alive at its end: saved for backward, outputs
    GRADIENTS = "gradients"  # parameter .grad storages
    OPTIMIZER_STATE = "optimizer_state"  # optimizer.state tensors (momentum, Adam moments, step)
    TEMPORARIES = "temporaries"  # live only inside an op or between ops of one phase
    KV_CACHE = "kv_cache"  # key/value cache of autoregressive generation
    COLLECTIVES = "collectives"  # communication buffers (all-gather, reduce-scatter, all-reduce)
    ALLOCATOR_SLACK = "allocator_slack"  # reserved by the caching allocator but not allocated
    FRAMEWORK_OVERHEAD = "framework_overhead"  # CUDA context, library workspaces

    def __str__(self) -> str:
        return self.value


#: Categories the engine assigns to traced storages (the last two come from the allocator model).
TRACED_CATEGORIES: tuple[Category, ...] = tuple(Category)[:-2]


class Phase(str, Enum):
    """Where in the step an allocation happens."""

    SETUP = "setup"  # model, inputs and state that exist before the step starts
    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"

    def __str__(self) -> str:
        return self.value
