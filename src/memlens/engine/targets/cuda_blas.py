"""cuBLAS and cuBLASLt workspaces: allocated by BLAS ops on a CUDA device, through the
caching allocator.

- **cuBLAS**: every BLAS op gets its handle from ``getCurrentCUDABlasHandle()``
  (aten/src/ATen/cuda/CublasHandlePool.cpp), which gives the (handle, stream) a workspace at
  first use (``setWorkspaceForHandle`` -> ``getNewWorkspace``, allocated from the caching
  allocator) and keeps it until ``clearCublasWorkspaces()``: it shows in ``memory_allocated``
  for the rest of the process. Handles are reserved per thread (``PoolWindow``), and the
  backward pass runs on autograd's device thread, so ops run inside backward
  (``torch._C._current_graph_task_id() != -1``) get a second workspace: an inference from the
  handle pool, listed in the target's assumptions. Size: the target's
  (:attr:`memlens.cuda_stack.CudaStack.cublas_workspace_bytes`: 8,519,680 bytes, 32 MiB on
  sm90, or ``CUBLAS_WORKSPACE_CONFIG``).
- **cuBLASLt**: ``addmm`` with a 1-D bias (``nn.Linear`` with bias) runs cuBLASLt's
  ``gemm_and_bias`` when ``useLtInterface`` holds (aten/src/ATen/native/cuda/Blas.cpp
  ``addmm_out_cuda_impl``, CUDA >= 12.1 form). Its handle is the cuBLAS one
  (``getCurrentCUDABlasLtHandle`` casts ``getCurrentCUDABlasHandle()``), so the cuBLAS
  workspace is allocated too; the Lt workspace (``CUBLASLT_WORKSPACE_SIZE``, 1 MiB) is
  allocated per call before PyTorch 2.8, kept per (handle, stream) from 2.8 (PR #156495), and
  is the cuBLAS workspace itself once unified workspaces are the default
  (:attr:`memlens.cuda_stack.CudaStack.cublaslt_workspace`).
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, Persistent, register_rule

aten = torch.ops.aten

#: Ops that reach ``addmm_out_cuda_impl``'s cuBLASLt branch.
_LT_OPS = (aten.addmm.default, aten._addmm_activation.default)
#: Dtypes ``useLtInterface`` accepts.
_LT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@register_rule(
    aten.mm.default,
    aten.addmm.default,
    aten._addmm_activation.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.addbmm.default,
    aten._scaled_mm.default,
)
def cublas_workspace(call: OpCall) -> list[Persistent | int]:
    thread = " (autograd thread)" if torch._C._current_graph_task_id() != -1 else ""
    nbytes = call.target.workspace_bytes
    out: list[Persistent | int] = []
    if nbytes > 0:
        out.append(Persistent("cuBLAS workspace" + thread, nbytes))
    stack = call.target.stack
    if stack is not None and call.func in _LT_OPS and _uses_lt(call):
        lt = stack.cublaslt_workspace_bytes
        if stack.cublaslt_workspace == "per-call":
            out.append(lt)
        elif stack.cublaslt_workspace == "persistent":
            out.append(Persistent("cuBLASLt workspace" + thread, lt))
    return out


def _uses_lt(call: OpCall) -> bool:
    """``useLtInterface`` of ``addmm_out_cuda_impl``: ``beta == 1``, a contiguous 1-D bias of
    ``mat2``'s width, a contiguous 2-D result, a floating dtype and both of ``mat2``'s dims
    above 1."""
    bias, _mat1, mat2 = call.args[:3]
    beta = call.kwargs.get("beta", call.args[3] if len(call.args) > 3 else 1)
    out = call.out
    return (
        beta == 1
        and bias.dim() == 1
        and out.dim() == 2
        and bias.shape[0] == mat2.shape[1]
        and bias.is_contiguous()
        and out.is_contiguous()
        and out.dtype in _LT_DTYPES
        and mat2.shape[0] > 1
        and mat2.shape[1] > 1
    )
