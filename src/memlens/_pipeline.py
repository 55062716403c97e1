"""From a model spec, a workload and a target to an :class:`Estimate`: trace, replay, sum up.

The workload's strategies are built here for the target
(:class:`~memlens.strategies.apply.WorkloadStrategies`) and handed to the engine; the
timeline is replayed under the target's allocator model, and the target's context and its
assumptions (``Target.assumptions``) go into the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from memlens._results import Estimate
from memlens.allocator import replay
from memlens.categories import Category, Phase
from memlens.engine.explore import explore
from memlens.engine.explore import unknowns as read_unknowns
from memlens.engine.targets.emulation import kernel_unknowns
from memlens.engine.trace import Trace, trace
from memlens.sources.base import ModelSpec
from memlens.strategies.apply import WorkloadStrategies
from memlens.strategies.data import host_memory
from memlens.targets import Target
from memlens.timeline import Timeline
from memlens.workload import Workload


def estimate_spec(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Estimate:
    """Trace ``spec`` for ``workload`` on ``target`` and summarise it."""
    t0 = time.perf_counter()
    result = trace_spec(spec, workload, target, loss)
    est = from_trace(result, spec.name, spec.source, workload, target, time.perf_counter() - t0)
    if spec.metadata.get("settings"):  # what was used, from where (memlens._setup)
        est.strategies["settings"] = dict(spec.metadata["settings"])
    return est


def trace_spec(
    spec: ModelSpec,
    workload: Workload,
    target: Target,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Trace:
    """The engine's trace of ``spec`` for ``workload`` on ``target``, with its strategies;
    under ``data_dependent=explore``, the branch of largest peak
    (:func:`memlens.engine.explore.explore`)."""

    def run(flipped: str | None) -> Trace:
        strategies = WorkloadStrategies(workload, target)
        return trace(spec, workload, target, strategies, loss=loss, flipped=flipped)

    def peak(t: Trace) -> int:
        return replay(t.timeline, target.allocator).peak_allocated

    return explore(run, peak, workload.data_dependent)


def from_trace(
    result: Trace,
    spec_name: str,
    source: str,
    workload: Workload,
    target: Target,
    seconds: float,
) -> Estimate:
    """Replay a trace under the target's allocator model and summarise its peak."""
    timeline = result.timeline
    alloc = replay(timeline, target.allocator)
    index = alloc.peak_index
    breakdown = (
        {c.value: n for c, n in timeline.breakdown_at(index, alloc.sizes).items()}
        if index >= 0
        else {}
    )
    block = timeline.blocks[timeline.events[index][0]] if index >= 0 else None
    first_peak = None
    if result.first_step is not None:
        first_peak = replay(result.first_step, target.allocator).peak_allocated
    unknowns = read_unknowns(result.branches)
    if result.routed:
        unknowns.append(
            f"MoE routing: {workload.moe_routing} (memlens.routing) at {len(result.routed)} "
            "router(s); the warm-up step routes balanced, so every expert has optimizer state"
        )
    unknowns += strategy_unknowns(workload, target, result)
    unknowns += target.assumptions
    unknowns += kernel_unknowns(target, {b.op for b in timeline.blocks})
    input_bytes = sum(b.nbytes for b in timeline.blocks if b.category is Category.INPUTS)
    return Estimate(
        model=spec_name,
        source=source,
        workload=workload,
        device=target.device,
        num_params=result.num_params,
        trainable_params=result.trainable_params,
        peak_bytes=alloc.peak_allocated,
        reserved_peak_bytes=alloc.peak_reserved,
        breakdown=breakdown,
        peak_phase=block.phase.value if block is not None else "setup",  # its allocation
        peak_module=block.module if block is not None else "",
        peak_op=block.op if block is not None else "",
        context_bytes=target.context_bytes,
        timeline=timeline,
        allocator=alloc,
        first_step_peak_bytes=first_peak,
        seconds=seconds,
        unknowns=unknowns,
        strategies=_strategies(workload, result),
        step_flops=result.flops,
        recompute_flops=result.recompute_flops,
        host=host_memory(workload, input_bytes, result.host_peak_bytes),
    )


def _strategies(workload: Workload, result: Trace) -> dict[str, Any]:
    """What the strategies did, for reports and the planner."""
    applied = result.applied
    out: dict[str, Any] = {
        "micro_batch": workload.batch,
        "grad_accum": workload.grad_accum,
        "effective_batch": workload.effective_batch,
        "checkpointed": [list(group) for group in applied.checkpoint],
        "frozen_params": applied.frozen_params,
        "lora_params": applied.lora_params,
        "quantized_layers": len(applied.quantized),
    }
    if result.branches:
        out["data_dependent"] = result.branches
    if result.routed:
        out["moe_routing"] = workload.moe_routing
    if workload.training:
        out["blocks_by_activations"] = _blocks_by_activations(result)
        # the step: the user's own function, or a loop preset and what it implied
        if workload.step is not None:
            out["step"] = str(workload.step)
        else:
            out["loop"] = workload.loop
            out["loop_implied"] = workload.loop_implied
    return out


def _blocks_by_activations(result: Trace) -> list[str]:
    """The repeated blocks, most activation bytes kept for backward first."""
    timeline = result.timeline
    start = timeline.phase_starts.get(Phase.BACKWARD)
    if start is None or not result.blocks:
        return list(result.blocks)
    kept = dict.fromkeys(result.blocks, 0)
    for b in timeline.live_at(start - 1):
        if b.category is Category.ACTIVATIONS:
            for name in result.blocks:
                if b.module == name or b.module.startswith(name + "."):
                    kept[name] += b.nbytes
                    break
    return sorted(kept, key=lambda n: -kept[n])


def strategy_unknowns(workload: Workload, target: Target, result: Trace) -> list[str]:
    """What the trace of these strategies on ``target`` cannot know, said explicitly."""
    notes = []
    if target.kind == "cpu" and (
        _onednn_half(workload.precision) or _traced_onednn_half(result.timeline)
    ):
        notes.append(
            "half-precision CPU matmuls and convolution backward passes allocate oneDNN "
            "scratchpads (matmuls: tens to hundreds of KiB per thread; convolution weight "
            "gradients: fp32 accumulators about the size of the fp32 weight gradient, plus "
            "per-thread buffers) that are not modelled"
        )
        if any(b.op == "aten.mkldnn_rnn_layer" for b in result.timeline.blocks):
            notes.append(
                "half-precision LSTMs run oneDNN's brgemm RNN: the workspace kept for backward "
                "is modelled, its weight reorders and scratchpads are not "
                "(engine/targets/cpu_rnn.py)"
            )
    if target.kind == "cuda" and "recurrent" in result.families:
        notes.append(
            "recurrent layers are traced as the CPU runs them; on CUDA, cuDNN's RNN "
            "(_cudnn_rnn, aten/src/ATen/native/cudnn/RNN.cpp) runs all layers at once with a "
            "workspace per call and, in training, a reserve space kept for backward, both "
            "sized by cuDNN (cudnnGetRNNTempSpaceSizes): not modelled"
        )
    if target.kind == "cuda" and "torch-transformer" in result.families and not workload.training:
        notes.append(
            "nn.TransformerEncoderLayer and nn.MultiheadAttention in eval run fused kernels "
            "on CUDA (_transformer_encoder_layer_fwd, _native_multi_head_attention: "
            "aten/src/ATen/native/transformers/cuda/attention.cu); they are traced unfused, "
            "their buffers not modelled"
        )
    if "bf16" in workload.precision and not target.bf16:
        notes.append(
            f"{target.name} has no native bfloat16 arithmetic (compute capability below 8.0): "
            "PyTorch emulates it there, in kernels whose internal buffers are not modelled"
        )
    if workload.optimizer == "adam-8bit" and target.kind == "cuda":
        notes.append(
            "adam-8bit: bitsandbytes fuses dequantisation into its CUDA kernel; the two fp32 "
            "moment temporaries of the largest parameter in the optimizer step are an upper bound"
        )
    if workload.step is not None and workload.training:
        notes.append(
            f"step {workload.step}: traced as written on fake CPU tensors; its phases are "
            "inferred (backward from torch.autograd.backward/grad, the optimizer phase from "
            "optimizer.step); autocast and loss scaling are the function's own (its "
            "torch.autocast('cuda') regions autocast the trace; a GradScaler('cuda') is "
            "disabled on the CPU fake tensors: its few scalars are not counted)"
        )
    elif workload.uses_fused_default and workload.training:
        notes.append(
            f"{workload.loop}: its default optimizer is assumed fused (transformers' "
            "adamw_torch_fused, its default with torch >= 2.8 since transformers PR #37358)"
        )
    if workload.quantize == "int8" and result.applied.quantized:
        notes.append(
            "int8: LLM.int8's forward quantises the input and runs an int8 matmul; it is "
            "traced as a dequantised matmul (same weights and saved tensors, other temporaries)"
        )
    return notes


#: The ops oneDNN runs on CPU, as the timeline names them (their outputs' blocks).
_ONEDNN_OPS = frozenset(
    {
        "aten.mm",
        "aten.addmm",
        "aten.bmm",
        "aten.baddbmm",
        "aten.convolution",
        "aten.convolution_backward",
        "aten.mkldnn_rnn_layer",
    }
)


def _traced_onednn_half(timeline: Timeline) -> bool:
    """Whether the step ran a oneDNN op in a half type this machine's oneDNN computes natively
    (a model built in bf16 whatever the workload's precision)."""
    for b in timeline.blocks:
        if b.op in _ONEDNN_OPS:
            if b.tensor.startswith("bfloat16") and _onednn_half("bf16"):
                return True
            if b.tensor.startswith("float16") and _onednn_half("fp16"):
                return True
    return False


def _onednn_half(precision: str) -> bool:
    """Whether this machine's oneDNN runs ``precision``'s half type natively (else PyTorch's
    own kernels run it, whose buffers the CPU rules model: ``engine/targets/cpu_slow_conv.py``)."""
    if precision.startswith("bf16"):
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision.startswith("fp16"):
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False
