"""What the engine applies to emulate a target on CPU fake tensors.

Tracing always runs on fake CPU tensors (the autograd engine cannot run backward on fake CUDA
tensors without a driver); where the target's kernels behave differently, the trace follows
the target's traits (:class:`memlens.targets.Target`):

- ``kernel_rules`` picks a rule set (:data:`RULE_SETS`): CPU rules follow PyTorch's
  convolution backend choice on this machine (oneDNN's blocked layouts and gemm scratchpads,
  PyTorch's im2col ``Slow2d``) and half-precision reductions' fp32 copies; CUDA rules add
  the buffers CUDA kernels allocate inside themselves (table below). Two tables may rule one
  op (the cuBLAS workspace and cuBLAS's operand copies both rule ``mm``): the op gets both.
- ``attention`` (the workload option) and the target route ``scaled_dot_product_attention``
  to the kernel the target runs (:mod:`.cuda_attention`), a choice no dispatch mode sees;
  on CUDA, fp16 -> fp32 softmax takes the fused ``half_to_float`` kernel (:mod:`.cuda_softmax`)
  and training dropout the fused kernel with its bool mask (:mod:`.cuda_dropout`).
- ``autocast`` picks the autocast op lists applied under AMP: CUDA's are registered at the
  ``AutocastCPU`` key while tracing (:mod:`.cuda_autocast`).
- What a rule set cannot know about an op the step runs is listed in the estimate's
  ``unknowns`` (:data:`KERNEL_UNKNOWNS`, :func:`kernel_unknowns`).

Ops of CUDA-target traces (resnet18, gpt2, bert-base-uncased, vit_b_16 on an H100, fp32 and
fp16-amp, small batches), by what the CUDA trace does with them:

==========================================================  =================================
ops                                                         on CUDA
==========================================================  =================================
``mm``, ``addmm``, ``bmm``, ``baddbmm`` (what ``linear``,   modelled: cuBLAS/cuBLASLt
``matmul`` and attention's score products decompose into)   workspaces (:mod:`.cuda_blas`),
                                                            operand copies of non-BLAS
                                                            layouts such as a stride-0 sum
                                                            gradient (:mod:`.cuda_cublas_layout`)
``scaled_dot_product_attention``                            modelled: routed to flash, memory-
                                                            efficient or math attention
                                                            (:mod:`.cuda_attention`)
``_scaled_dot_product_flash_attention`` (+ backward)        forward as its meta kernel (output,
                                                            fp32 LSE, RNG state); backward
                                                            scratch modelled (:mod:`.cuda_sdpa`)
``_scaled_dot_product_efficient_attention`` (+ backward)    forward as its meta kernel (LSE
                                                            padded to 32); backward ``delta``
                                                            modelled, its workspace unknown
``softmax``/``log_softmax`` fp16 -> fp32 (explicit          modelled: fused, no fp32 copy
dtype, or CUDA's autocast policy)                           (:mod:`.cuda_softmax`)
``dropout`` in training                                     modelled: fused ``native_dropout``,
                                                            bool mask (:mod:`.cuda_dropout`)
``embedding_dense_backward``                                modelled above 3072 indices
                                                            (:mod:`.cuda_embedding`); cub's
                                                            sort storage unknown
``_to_copy`` under autocast                                 modelled: CUDA's autocast lists
                                                            (:mod:`.cuda_autocast`)
``_foreach_*`` (optimizer)                                  same as the trace: the target's
                                                            default (foreach) is traced
``convolution``, ``convolution_backward``                   outputs as the trace; cuDNN
                                                            workspace unknown
``native_batch_norm`` (+ backward)                          outputs as the trace; cuDNN's
                                                            reserve space unknown
``index`` (advanced indexing)                               output as the trace; its backward's
                                                            index sort (``index_put_``) unknown
``native_layer_norm`` (+ backward), ``_log_softmax``        same as the trace: outputs and
(+ backward), ``nll_loss_forward``/``backward``,            saved statistics are what the
``max_pool2d_with_indices`` (+ backward), ``embedding``,    meta kernels give; no global
``cat``, ``clone``, ``constant_pad_nd``,                    scratch in these CUDA kernels
``select_backward``, elementwise (``add``, ``mul``,         (half-precision sums accumulate
``div``, ``sub``, ``pow``, ``tanh``, ``gelu`` and their     in fp32 in registers, so the
backwards, ``threshold_backward``, comparisons,             CPU's fp32 copies of
``masked_fill``, ``bitwise_and``, ``logical_not``,          :mod:`.cpu_reduce` are not
``reciprocal``), reductions (``sum``, ``mean``, ``all``,    applied; the small staging
``any``, ``cumsum``), factories (``empty``, ``zeros``,      buffers of multi-block
``ones``, ``full``, ``arange``, ``*_like``, ``new_*``,      reductions, Reduce.cuh, and of
``lift_fresh``)                                             cub scans are not modelled)
==========================================================  =================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from memlens.engine.rules import Rule, Rules, rules_of
from memlens.engine.targets import (
    cpu_batch_norm,
    cpu_conv,
    cpu_elementwise,
    cpu_embedding,
    cpu_fft,
    cpu_group_norm,
    cpu_index,
    cpu_matmul,
    cpu_norm,
    cpu_pool,
    cpu_reduce,
    cpu_rnn,
    cpu_sdpa,
    cpu_transformer,
    cpu_upsample,
    cuda_blas,
    cuda_cublas_layout,
    cuda_embedding,
    cuda_sdpa,
    sampling,
)
from memlens.engine.targets.cpu_rnn_native import NativeRNN
from memlens.engine.targets.cuda_attention import Attention, rerouted
from memlens.engine.targets.cuda_autocast import cuda_autocast_policy
from memlens.engine.targets.cuda_dropout import CudaDropout
from memlens.engine.targets.cuda_softmax import CudaSoftmax
from memlens.engine.targets.linear import InPlaceBias
from memlens.targets import Target


def _chained(*tables: Rules) -> Rules:
    """One rule set from tables that may rule the same op (the cuBLAS workspace and the
    operand copies of ``mm``): such an op gets every table's buffers, in order."""
    out: dict[Any, list[Rule]] = {}
    for table in tables:
        for op, fn in table.items():
            out.setdefault(op, []).append(fn)
    return {op: fns[0] if len(fns) == 1 else _chain(fns) for op, fns in out.items()}


def _chain(fns: list[Rule]) -> Rule:
    def rule(call: Any) -> list[Any]:
        return [buffer for fn in fns for buffer in fn(call)]

    return rule


#: Kernel-rule sets by :attr:`Target.kernel_rules`.
RULE_SETS: dict[str, Rules] = {
    "cpu": rules_of(
        cpu_batch_norm,
        cpu_conv,
        cpu_elementwise,
        cpu_embedding,
        cpu_fft,
        cpu_group_norm,
        cpu_index,
        cpu_matmul,
        cpu_norm,
        cpu_pool,
        cpu_reduce,
        cpu_rnn,
        cpu_sdpa,
        cpu_transformer,
        cpu_upsample,
        sampling,
    ),
    "cuda": _chained(
        rules_of(cuda_blas), rules_of(cuda_cublas_layout, cuda_embedding, cuda_sdpa, sampling)
    ),
}


def kernel_rules(target: Target, extra: Rules | None = None) -> Rules:
    """The target's rule set, with ``extra`` rules merged on top for one trace."""
    return {**RULE_SETS[target.kernel_rules], **(extra or {})}


@contextlib.contextmanager
def emulated(target: Target, *, amp: bool, attention: str = "auto") -> Iterator[None]:
    """While active, attention (the ``attention`` option) and (under AMP) autocast follow
    the target's kernels."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(InPlaceBias())  # as on every device: see .linear
        stack.enter_context(NativeRNN())  # ATen's native RNNs, packed sequences
        if target.kernel_rules == "cpu":
            stack.enter_context(cpu_transformer.fast_path())  # fused encoder layers, MHA
        if rerouted(target, attention):
            stack.enter_context(Attention(target, attention))
        if target.kernel_rules == "cuda":
            stack.enter_context(CudaSoftmax())
            stack.enter_context(CudaDropout())
        if amp and target.autocast == "cuda":
            stack.enter_context(cuda_autocast_policy())
        yield


#: Per rule set: an op, as the timeline names its blocks, -> what the trace cannot know about
#: it on that target (copied into the estimate's ``unknowns`` when the step runs it).
KERNEL_UNKNOWNS: dict[str, dict[str, str]] = {
    "cuda": {
        "aten.convolution": (
            "cuDNN convolution workspaces are not modelled: cuDNN's heuristics (or "
            "cudnn.benchmark) pick a plan per shape whose workspace is allocated per call "
            "through the caching allocator (run_conv_plan, aten/src/ATen/native/cudnn/"
            "Conv_v8.cpp); its size is internal to cuDNN"
        ),
        "aten.native_batch_norm": (
            "cuDNN batch norm's reserve space (cudnnGetBatchNormalizationTrainingExReserve"
            "SpaceSize) is not modelled"
        ),
        "aten._scaled_dot_product_efficient_attention_backward": (
            "the memory-efficient attention backward workspace is not modelled (sized by the "
            "dispatched kernel's template constants, kernel_backward.h workspace_size())"
        ),
        "aten._scaled_dot_product_flash_attention": (
            "attention traced as PyTorch's flash kernel; on sm90/sm100 with a bundled cuDNN "
            "newer than 9.15 PyTorch prefers cuDNN attention (check_prefer_cudnn_attention, "
            "aten/src/ATen/native/transformers/cuda/sdp_utils.cpp), which saves the same "
            "output and fp32 log-sum-exp but whose workspace is not modelled"
        ),
        "aten.index": (
            "the backward of advanced indexing (index_put_ with accumulate=True) sorts its "
            "indices on CUDA (index_put_with_sort_kernel, aten/src/ATen/native/cuda/"
            "Indexing.cu): linear, sorted and original int64 indices per indexed element, not "
            "modelled"
        ),
        "aten.embedding_dense_backward": (
            "cub's radix-sort temporary storage in embedding backward is not modelled"
        ),
    },
}


def kernel_unknowns(target: Target, ops: set[str]) -> list[str]:
    """What :data:`KERNEL_UNKNOWNS` says about the ``ops`` a traced step ran on ``target``."""
    table = KERNEL_UNKNOWNS.get(target.kernel_rules, {})
    return [text for op, text in table.items() if op in ops]
