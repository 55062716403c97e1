"""The :class:`Estimate` of one workload, and :func:`estimate`, the main entry point."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from memlens._errors import ConfigError, WorkloadError
from memlens.allocator import AllocatorResult, replay
from memlens.categories import Category, Phase
from memlens.devices import Device, custom_device, get_device
from memlens.engine.trace import Trace, trace
from memlens.sources.base import ModelSpec
from memlens.sources.registry import resolve
from memlens.strategies.data import HostMemory, host_memory
from memlens.timeline import Timeline
from memlens.workload import DEVICES, STRATEGY_FIELDS, LoraConfig, Workload

SCHEMA_VERSION = 1


@dataclass
class Estimate:
    """Peak memory of one step and what it is made of.

    ``peak_bytes`` is the allocator's peak of *allocated* bytes (``max_memory_allocated`` on
    CUDA, the allocator's running total on CPU); ``breakdown`` splits it by category and
    sums to it exactly. ``reserved_peak_bytes`` adds the caching allocator's slack, and
    ``total_bytes`` the per-process overhead outside the allocator (the CUDA context).
    """

    model: str
    source: str
    workload: Workload
    device: Device | None
    num_params: int
    trainable_params: int
    peak_bytes: int
    reserved_peak_bytes: int
    breakdown: dict[str, int]
    peak_phase: str
    peak_module: str
    peak_op: str
    context_bytes: int
    timeline: Timeline
    allocator: AllocatorResult
    first_step_peak_bytes: int | None
    seconds: float
    unknowns: list[str] = field(default_factory=list)
    strategies: dict[str, Any] = field(default_factory=dict)  # what the strategies did
    step_flops: int = 0  # FLOPs of the traced step
    recompute_flops: int = 0  # of which: forward ops re-run by activation checkpointing
    host: HostMemory | None = None  # host (CPU) memory outside the device's allocator

    @property
    def slack_bytes(self) -> int:
        """Reserved by the caching allocator at its peak but not allocated."""
        return self.reserved_peak_bytes - self.peak_bytes

    @property
    def total_bytes(self) -> int:
        """What the device holds at the peak: reserved memory plus the context."""
        return self.reserved_peak_bytes + self.context_bytes

    @property
    def capacity_bytes(self) -> int | None:
        return self.device.capacity_bytes if self.device is not None else None

    @property
    def free_bytes(self) -> int | None:
        """Capacity left at the peak (negative: short by that much)."""
        cap = self.capacity_bytes
        return None if cap is None else cap - self.total_bytes

    @property
    def fits(self) -> bool | None:
        free = self.free_bytes
        return None if free is None else free >= 0

    @property
    def recompute_share(self) -> float:
        """Extra compute of activation checkpointing: recomputed FLOPs over the FLOPs of the
        same step without recomputation."""
        base = self.step_flops - self.recompute_flops
        return self.recompute_flops / base if base > 0 else 0.0

    def budget(self) -> list[tuple[Category, int]]:
        """Rows of the budget table, in category order, summing to :attr:`total_bytes`."""
        rows = []
        for cat in Category:
            n = self.breakdown.get(cat.value, 0)
            if cat is Category.ALLOCATOR_SLACK:
                n += self.slack_bytes
            elif cat is Category.FRAMEWORK_OVERHEAD:
                n += self.context_bytes
            rows.append((cat, n))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (bytes as ints) with a ``schema_version``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "source": self.source,
            "workload": self.workload.to_dict(),
            "device": None
            if self.device is None
            else {
                "name": self.device.name,
                "kind": self.device.kind,
                "capacity_bytes": self.device.capacity_bytes,
            },
            "num_params": self.num_params,
            "trainable_params": self.trainable_params,
            "peak_bytes": self.peak_bytes,
            "reserved_peak_bytes": self.reserved_peak_bytes,
            "total_bytes": self.total_bytes,
            "first_step_peak_bytes": self.first_step_peak_bytes,
            "breakdown": dict(self.breakdown),
            "budget": {cat.value: n for cat, n in self.budget()},
            "peak": {"phase": self.peak_phase, "module": self.peak_module, "op": self.peak_op},
            "fits": self.fits,
            "free_bytes": self.free_bytes,
            "unknowns": list(self.unknowns),
            "seconds": round(self.seconds, 4),
            "effective_batch": self.workload.effective_batch,
            "strategies": dict(self.strategies),
            "compute": {
                "step_flops": self.step_flops,
                "recompute_flops": self.recompute_flops,
                "recompute_share": round(self.recompute_share, 6),
            },
            "host": None if self.host is None else self.host.to_dict(),
        }


def resolve_device(
    device: str | Device | None, budget: int | str | None
) -> tuple[str, Device | None]:
    """(kind to trace for, catalog device or None) from ``device`` and ``budget``."""
    if isinstance(device, Device):
        target: Device | None = device
    elif device is None or device.lower() in DEVICES:
        kind = (device or "cuda").lower()
        target = get_device("cpu") if kind == "cpu" else None
        if budget is not None:
            target = custom_device(budget, kind)
        return kind, target
    else:
        target = get_device(device)
    if budget is not None:
        target = custom_device(budget, target.kind)
    kind = "cpu" if target.kind == "cpu" else "cuda"
    return kind, target


def from_trace(
    result: Trace,
    spec_name: str,
    source: str,
    workload: Workload,
    device: Device | None,
    seconds: float,
) -> Estimate:
    """Replay a trace under the target allocator and summarise its peak."""
    timeline = result.timeline
    alloc = replay(timeline, workload.device)
    index = alloc.peak_index
    breakdown = (
        {c.value: n for c, n in timeline.breakdown_at(index, alloc.sizes).items()}
        if index >= 0
        else {}
    )
    block = timeline.blocks[timeline.events[index][0]] if index >= 0 else None
    first_peak = None
    if result.first_step is not None:
        first_peak = replay(result.first_step, workload.device).peak_allocated
    unknowns = (
        [
            f"{len(result.value_reads)} data-dependent value read(s) answered with a neutral value"
            f" (in {', '.join(sorted(set(m or '<root>' for m in result.value_reads))[:5])})"
        ]
        if result.value_reads
        else []
    )
    unknowns += strategy_unknowns(workload, result)
    input_bytes = sum(b.nbytes for b in timeline.blocks if b.category is Category.INPUTS)
    return Estimate(
        model=spec_name,
        source=source,
        workload=workload,
        device=device,
        num_params=result.num_params,
        trainable_params=result.trainable_params,
        peak_bytes=alloc.peak_allocated,
        reserved_peak_bytes=alloc.peak_reserved,
        breakdown=breakdown,
        peak_phase=block.phase.value if block is not None else "setup",  # its allocation
        peak_module=block.module if block is not None else "",
        peak_op=block.op if block is not None else "",
        context_bytes=_overheads(workload.device, device)[0],
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
    if workload.training:
        out["blocks_by_activations"] = _blocks_by_activations(result)
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


def strategy_unknowns(workload: Workload, result: Trace) -> list[str]:
    """What the trace of these strategies cannot know, said explicitly."""
    notes = []
    if workload.device == "cpu" and workload.precision != "fp32":
        notes.append(
            "half-precision CPU matmuls and convolution backward passes allocate oneDNN "
            "scratchpads (matmuls: tens to hundreds of KiB per thread; convolution weight "
            "gradients: fp32 accumulators about the size of the fp32 weight gradient, plus "
            "per-thread buffers) that are not modelled"
        )
    if workload.optimizer == "adam-8bit" and workload.device == "cuda":
        notes.append(
            "adam-8bit: bitsandbytes fuses dequantisation into its CUDA kernel; the two fp32 "
            "moment temporaries of the largest parameter in the optimizer step are an upper bound"
        )
    if workload.quantize == "int8" and result.applied.quantized:
        notes.append(
            "int8: LLM.int8's forward quantises the input and runs an int8 matmul; it is "
            "traced as a dequantised matmul (same weights and saved tensors, other temporaries)"
        )
    return notes


def make_workload(
    *,
    mode: str = "train",
    batch: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    optimizer: str = "adam",
    device: str = "cuda",
    **options: Any,
) -> Workload:
    """A :class:`Workload`; keywords among :data:`~memlens.workload.STRATEGY_FIELDS` set
    its strategies, any others are source-specific options."""
    strategies = {k: options.pop(k) for k in STRATEGY_FIELDS if k in options}
    return Workload(
        mode=mode,
        batch=1 if batch is None else batch,
        input_shape=input_shape,
        seq_len=seq_len,
        precision=precision,
        optimizer=optimizer,
        device=device,
        options=options,
        **strategies,
    )


def estimate(
    model: Any,
    *,
    inputs: Any = None,
    task: str | None = None,
    trust_remote_code: bool = False,
    loss: Callable[..., torch.Tensor] | None = None,
    mode: str = "train",
    batch: int | None = None,
    optimizer: str = "adam",
    device: str | Device = "cuda",
    budget: int | str | None = None,
    input_shape: tuple[int, ...] | None = None,
    seq_len: int | None = None,
    precision: str = "fp32",
    checkpoint: str = "none",
    freeze: str | tuple[str, ...] = (),
    lora: str | dict[str, Any] | LoraConfig | None = None,
    quantize: str | None = None,
    optimizer_impl: str = "auto",
    grad_accum: int = 1,
    offload_optimizer: bool = False,
    dataset_size: int | None = None,
    sample_shape: tuple[int, ...] | str | None = None,
    dataset_bytes: int | str | None = None,
    num_workers: int = 0,
    prefetch_factor: int | None = None,
    pin_memory: bool = False,
    **options: Any,
) -> Estimate:
    """Estimate the peak memory of one step of ``model``.

    ``model`` is a name (``"resnet50"``, ``"timm/vit_base_patch16_224"``), a factory spec
    (``"path/file.py:fn"``, ``"pkg.mod:fn"``), a zero-argument callable returning an
    ``nn.Module``, or an ``nn.Module``. ``device`` is ``"cuda"``, ``"cpu"`` or a catalog name
    (``"h100-80gb"``); ``budget`` (``"24GiB"``) overrides its capacity.

    Strategies (see :class:`~memlens.workload.Workload` and :mod:`memlens.strategies`):
    ``precision`` (``bf16-amp`` autocasts with fp32 weights), ``checkpoint`` (``blocks``,
    ``every-k:2``, ``sqrt``, ``auto``: the fewest blocks that fit the device), ``freeze``,
    ``lora`` (``"r=16,alpha=32,targets=q_proj,v_proj"``), ``quantize`` (``int8``, ``int4``,
    ``nf4``), ``optimizer_impl``, ``grad_accum``, ``offload_optimizer``; data loading
    (``dataset_size``, ``sample_shape``, ``dataset_bytes``, ``num_workers``,
    ``prefetch_factor``, ``pin_memory``) fills the host-memory table ``Estimate.host``.

    Example usage::

        est = memlens.estimate("resnet50", batch=32, optimizer="adam", device="v100-16gb")
        print(est.peak_bytes, est.breakdown, est.fits)
        est = memlens.estimate("llama-3-8b", quantize="nf4", lora="r=16", precision="bf16",
                               checkpoint="blocks", device="rtx4090-24gb")
    """
    kind, target = resolve_device(device, budget)
    workload = make_workload(
        mode=mode,
        batch=batch,
        input_shape=input_shape,
        seq_len=seq_len,
        precision=precision,
        optimizer=optimizer,
        device=kind,
        checkpoint=checkpoint,
        freeze=freeze,
        lora=lora,
        quantize=quantize,
        optimizer_impl=optimizer_impl,
        grad_accum=grad_accum,
        offload_optimizer=offload_optimizer,
        dataset_size=dataset_size,
        sample_shape=sample_shape,
        dataset_bytes=dataset_bytes,
        num_workers=num_workers,
        prefetch_factor=prefetch_factor,
        pin_memory=pin_memory,
        **options,
    )
    _refuse_weights_file(model)
    spec = resolve(model, inputs=inputs, task=task, trust_remote_code=trust_remote_code)
    if workload.checkpoint == "auto":
        return _auto_checkpoint(spec, workload, target, loss)
    return estimate_spec(spec, workload, target, loss)


def estimate_spec(
    spec: ModelSpec,
    workload: Workload,
    target: Device | None,
    loss: Callable[..., torch.Tensor] | None = None,
) -> Estimate:
    """Trace ``spec`` for ``workload`` and summarise it for ``target``."""
    t0 = time.perf_counter()
    result = trace(
        spec, workload, loss=loss, cuda_workspace_bytes=_overheads(workload.device, target)[1]
    )
    return from_trace(result, spec.name, spec.source, workload, target, time.perf_counter() - t0)


def _auto_checkpoint(
    spec: ModelSpec,
    workload: Workload,
    target: Device | None,
    loss: Callable[..., torch.Tensor] | None,
) -> Estimate:
    """Checkpoint the fewest repeated blocks that make the step fit ``target``.

    Blocks are taken in decreasing order of the activations they keep for backward (in the
    trace without checkpointing); the count is found by bisection, one trace per probe
    (peak memory falls as blocks are added). The returned estimate's workload names the
    chosen blocks (``modules:...``), so that it can be measured as it is.
    """
    if target is None:
        raise WorkloadError(
            "checkpoint", "auto", "needs a device capacity: pass a catalog device or a budget"
        )
    t0 = time.perf_counter()
    plain = estimate_spec(spec, workload.with_(checkpoint="none"), target, loss)
    order = plain.strategies.get("blocks_by_activations", [])
    if plain.fits or not order:
        plain.seconds = time.perf_counter() - t0
        return plain

    def probe(k: int) -> Estimate:
        names = ",".join(order[:k])
        return estimate_spec(spec, workload.with_(checkpoint=f"modules:{names}"), target, loss)

    best = probe(len(order))
    if best.fits:
        lo, hi = 0, len(order)  # plain (0 blocks) does not fit, all of them do
        while hi - lo > 1:
            mid = (lo + hi) // 2
            candidate = probe(mid)
            if candidate.fits:
                hi, best = mid, candidate
            else:
                lo = mid
    best.seconds = time.perf_counter() - t0
    return best


def _refuse_weights_file(model: Any) -> None:
    """A weights file has no code to trace: say what to do instead."""
    from pathlib import Path

    from memlens.sources.checkpoint import is_checkpoint_path

    if not isinstance(model, str) or not is_checkpoint_path(model):
        return
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return  # a Hugging Face model folder: its config.json is the model
    raise ConfigError(
        f"{model} holds weights, not a model to trace: `memlens inspect {model}` gives its "
        "exact weight figures; give the model's name or config.json to estimate a step"
    )


def _overheads(kind: str, target: Device | None) -> tuple[int, int]:
    """(context bytes, BLAS workspace bytes) of the target; a generic GPU when none is named."""
    if kind != "cuda":
        return 0, 0
    device = target if target is not None else custom_device(1, "cuda")
    return device.context_bytes, device.workspace_bytes
