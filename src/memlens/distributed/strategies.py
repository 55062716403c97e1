"""A workload's strategies with its parallel layout applied: the
:class:`~memlens.engine.protocol.StepStrategies` the engine traces (on the fake process group)
and the measurer runs (on a real one), so both parallelise the model identically."""

from __future__ import annotations

import contextlib
from typing import Any

from torch import nn
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental import implicit_replication

from memlens._errors import WorkloadError
from memlens.distributed.parallelize import ReducerBuckets, apply_fsdp, apply_tp
from memlens.distributed.pipeline import cut, in_flight
from memlens.engine.protocol import Applied, HostRegion, StepStrategies
from memlens.sources.base import Inputs
from memlens.workload import Workload


def check_traceable(workload: Workload) -> None:
    """Refuse what the traced path cannot run, naming the field."""
    layout = workload.layout
    if layout.pp > 1:
        if not workload.training:
            raise WorkloadError("pp", layout.pp, "pipeline stages are traced for training")
        for name, value, default in (
            ("step", workload.step, None),
            ("loop", workload.loop, "pytorch"),
            ("grad_accum", workload.grad_accum, 1),
        ):
            if value != default:
                raise WorkloadError(name, value, "pipeline stages run their schedule's step")
        in_flight(layout, 0)  # refuses a schedule that is not traced
    if layout.cp > 1:
        raise WorkloadError(
            "cp",
            layout.cp,
            "PyTorch's context parallel (torch.distributed.tensor.experimental."
            "context_parallel) runs only CUDA's flash and memory-efficient attention kernels, "
            "which a CPU trace cannot run; the analytic model covers context parallelism",
        )
    if workload.checkpoint == "auto":
        raise WorkloadError("checkpoint", "auto", "is not searched under a parallel layout yet")
    if workload.offload_optimizer and layout.fsdp != "none":
        raise WorkloadError(
            "offload_optimizer",
            True,
            "FSDP's CPUOffloadPolicy is not traced yet (the host/device split of its "
            "sharded parameters, gradients and optimizer state)",
        )


class ParallelStrategies:
    """``inner`` (a workload's strategies) plus the layout on ``meshes``
    (:func:`memlens.distributed.world.meshes`); DDP's buckets are modelled unless
    ``model_ddp`` is false (a real run wraps its model in the real DDP)."""

    def __init__(
        self,
        inner: StepStrategies,
        workload: Workload,
        meshes: dict[str, DeviceMesh],
        *,
        model_ddp: bool = True,
        stage: int = 0,
    ) -> None:
        self.inner = inner
        self.workload = workload
        self.layout = workload.layout
        self.meshes = meshes
        self.model_ddp = model_ddp  # False: the caller wraps the real model in DDP itself
        self.buckets: ReducerBuckets | None = None
        self.stage = stage  # the pipeline stage this rank runs

    def prepare(self, model: nn.Module, inputs: Inputs) -> Applied:
        """The pipeline stage's part of the model, the workload's strategies, then tensor
        parallelism, then FSDP or DDP (torchtitan's order: ``pipeline_llama`` cuts the
        stages, ``parallelize_llama`` applies TP, activation checkpointing, then FSDP)."""
        layout = self.layout
        if layout.pp > 1:
            cut(model, layout.pp, self.stage)
        applied = self.inner.prepare(model, inputs)
        if layout.tp > 1:
            apply_tp(model, self.meshes["tp"])
        if layout.fsdp != "none":
            blocks = self.inner.blocks(model)
            # outside the fake mode: FSDP over a 2-D mesh slices the mesh's real rank tensor;
            # its own tensors derive from the (fake) parameters
            with unset_fake_temporarily():
                apply_fsdp(model, self.meshes["fsdp"], blocks, layout, self.workload)
        elif layout.ddp and self.workload.training and self.model_ddp:
            self.buckets = ReducerBuckets(
                model, self.workload.bucket_cap_mb, self.workload.gradient_as_bucket_view
            )
        return applied

    def optimizer(self, params: list[nn.Parameter], host_region: HostRegion) -> Any:
        """The workload's optimizer. Under tensor parallelism without FSDP some parameters are
        DTensors (the split projections) and some plain tensors (embeddings, norms, head):
        a multi-tensor (``foreach``) step over both mixes them in one op, which DTensor
        refuses; its step runs under ``implicit_replication`` (plain tensors read as
        replicated, no copy), as a real TP step must."""
        opt = self.inner.optimizer(params, host_region)
        mixed = len({isinstance(p, DTensor) for p in params}) > 1
        if mixed and hasattr(opt, "step"):
            step = opt.step

            def replicated_step(*args: Any, **kwargs: Any) -> Any:
                with implicit_replication():
                    return step(*args, **kwargs)

            opt.step = replicated_step
        return opt

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[Any]:
        """FSDP runs AMP through its mixed-precision policy instead of autocast."""
        if self.layout.fsdp != "none" and self.workload.amp:
            return contextlib.nullcontext()
        return self.inner.autocast(device_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
