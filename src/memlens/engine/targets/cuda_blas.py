"""The cuBLAS workspace: allocated by the first matrix multiply on a CUDA device, then kept.

PyTorch's cuBLAS handle pool gives each (handle, stream) a workspace, allocated through the
caching allocator when the first cuBLAS op runs (``getNewWorkspace`` in
aten/src/ATen/cuda/CublasHandlePool.cpp), so it shows in ``memory_allocated`` for the rest of
the process. Its size is the target's (:attr:`memlens.targets.Target.workspace_bytes`, from
the catalog: 32 MiB on sm90, 8,519,680 bytes otherwise).
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, Persistent, register_rule

aten = torch.ops.aten


@register_rule(
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.addbmm.default,
    aten._scaled_mm.default,
)
def cublas_workspace(call: OpCall) -> list[Persistent]:
    nbytes = call.target.workspace_bytes
    return [Persistent("cublas workspace", nbytes)] if nbytes > 0 else []
