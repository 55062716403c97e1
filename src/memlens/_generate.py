"""Generation estimates: the traced steps of ``generate()`` (:mod:`memlens.engine.generate`)
replayed under the target's allocator, and :func:`generate_estimate`, the API twin of
``memlens estimate --generate``.

The result is a :class:`GenerationEstimate`: an :class:`~memlens.Estimate` of the step with
the highest peak (the budget table, with the KV cache as a real row), plus
:class:`Generation`: each traced step's peak and what is alive at it, and the peak over the
generated tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from memlens._errors import ConfigError, MeasureError, WorkloadError
from memlens._results import Estimate
from memlens._setup import model_spec, prepare, resolve_model
from memlens.allocator import replay
from memlens.devices import Device
from memlens.engine.generate import GenerationTrace, StepTrace, prompt_len, trace_generation
from memlens.engine.targets.emulation import kernel_unknowns
from memlens.measurement.generation import GenerationMeasurement, measure_generation_cpu
from memlens.sources.base import ModelSpec
from memlens.strategies.apply import WorkloadStrategies
from memlens.targets import Target, resolve_target
from memlens.workload import Workload

#: Token points of the timeline over the generated tokens (traced ones are always included).
TIMELINE_POINTS = 9

METHOD = (
    "each traced step is a real model.generate(max_new_tokens=1) call on fake tensors: the "
    "prefill with an empty cache, the first decode step after it, and the last one with the "
    "cache filled to prompt + new tokens - 2 by a fake prefill and a decode step; decode "
    "peaks between traced cache lengths are interpolated (every decode allocation is affine "
    "in the cache length)"
)


@dataclass
class GenerationStep:
    """One traced ``generate()`` iteration at its peak."""

    name: str
    cached_tokens: int  # in the cache before the step
    fed_tokens: int  # read by the step's forward pass
    peak_bytes: int
    breakdown: dict[str, int]  # by category at the peak, summing to peak_bytes
    kv_cache_bytes: int  # what the cache holds after the step
    logits_bytes: int  # output-embedding outputs alive at the peak (CPU: exact sizes)
    generate_bytes: int  # generate()'s own tensors alive at the peak (fp32 logits rows...)
    quadratic_bytes: int  # (query x key) tensors alive at the peak: scores, masks
    peak_module: str
    peak_op: str


@dataclass
class TokenPoint:
    """The peak of the step that produces generated token ``token``."""

    token: int
    cached_tokens: int
    peak_bytes: int
    kv_cache_bytes: int
    traced: bool  # False: interpolated between the traced steps around it


@dataclass
class Generation:
    """What generation needs: the traced steps and the peak over the tokens."""

    prompt_len: int
    new_tokens: int
    batch: int
    cache_class: str
    cache_layers: list[str]
    cache_dtype: str
    kv_growth_per_token: int  # cache bytes added per generated token and sequence (0: static)
    steps: list[GenerationStep]
    tokens: list[TokenPoint]
    interpolation: str  # "exact" or "upper bound" (see METHOD)
    method: str = METHOD


@dataclass
class GenerationEstimate(Estimate):
    """An :class:`~memlens.Estimate` of generation's highest step, with :attr:`generation`."""

    generation: Generation | None = None


def _step(trace: StepTrace, target: Target) -> tuple[GenerationStep, Any]:
    timeline = trace.timeline
    alloc = replay(timeline, target.allocator)
    index = alloc.peak_index
    live = timeline.live_at(index) if index >= 0 else []
    sizes = alloc.sizes

    def alive(ids: set[int]) -> int:
        return sum(sizes.get(b.id, b.nbytes) for b in live if b.id in ids)

    block = timeline.blocks[timeline.events[index][0]] if index >= 0 else None
    breakdown = {c.value: n for c, n in timeline.breakdown_at(index, sizes).items()} if live else {}
    step = GenerationStep(
        name=trace.name,
        cached_tokens=trace.cached_tokens,
        fed_tokens=trace.fed_tokens,
        peak_bytes=alloc.peak_allocated,
        breakdown=breakdown,
        kv_cache_bytes=trace.kv_cache_bytes,
        logits_bytes=alive(trace.logits),
        generate_bytes=alive(trace.outside),
        quadratic_bytes=alive(trace.quadratic),
        peak_module=block.module if block is not None else "",
        peak_op=block.op if block is not None else "",
    )
    return step, alloc


def _tokens(steps: list[GenerationStep], new_tokens: int) -> tuple[list[TokenPoint], str]:
    """The peak and cache at generated tokens 1..N: traced where a step was traced, linear
    between the traced decode steps around a token otherwise."""
    decodes = [s for s in steps if s.name != "prefill"]
    prefill = steps[0]
    traced = {1: prefill} | {s.cached_tokens - prefill.fed_tokens + 2: s for s in decodes}
    wanted = {1, new_tokens, *traced}
    if new_tokens > 2:
        wanted |= {
            2 + round(i * (new_tokens - 2) / (TIMELINE_POINTS - 2))
            for i in range(TIMELINE_POINTS - 1)
        }
    exact = all(
        (a.peak_op, a.peak_module) == (b.peak_op, b.peak_module)
        for a, b in zip(decodes, decodes[1:], strict=False)
    )
    points = []
    for token in sorted(t for t in wanted if 1 <= t <= new_tokens):
        cached = 0 if token == 1 else prefill.fed_tokens + token - 2
        if token in traced:
            s = traced[token]
            points.append(TokenPoint(token, cached, s.peak_bytes, s.kv_cache_bytes, True))
            continue
        lo = max((s for s in decodes if s.cached_tokens <= cached), key=lambda s: s.cached_tokens)
        hi = min((s for s in decodes if s.cached_tokens >= cached), key=lambda s: s.cached_tokens)
        span = hi.cached_tokens - lo.cached_tokens
        at = cached - lo.cached_tokens

        def lerp(a: int, b: int, at: int = at, span: int = span) -> int:
            return a + (b - a) * at // span

        points.append(
            TokenPoint(
                token,
                cached,
                lerp(lo.peak_bytes, hi.peak_bytes),
                lerp(lo.kv_cache_bytes, hi.kv_cache_bytes),
                False,
            )
        )
    return points, "exact" if exact else "upper bound"


def _refuse(workload: Workload) -> None:
    """What generation is not traced with: a closed form, a parallel layout, a KV dtype
    transformers' generate() does not store."""
    if workload.analytic or workload.deepspeed is not None or workload.sequence_parallel:
        raise WorkloadError(
            "generate", True, "is traced; memlens serve-plan answers serving in closed form"
        )
    if workload.layout.distributed:
        raise WorkloadError(
            "generate", True, "traces one device; memlens serve-plan --tp plans tensor parallelism"
        )
    if workload.kv_dtype in ("fp8", "int8", "int4"):
        raise ConfigError(
            f"kv_dtype={workload.kv_dtype}: transformers' quantised caches need optimum-quanto "
            "or hqq (not installed with memlens), fp8 is vLLM's; memlens serve-plan models them"
        )


def estimate_generation(spec: ModelSpec, workload: Workload, target: Target) -> GenerationEstimate:
    """Trace ``workload``'s generation of ``spec`` on ``target`` and summarise it."""
    t0 = time.perf_counter()
    _refuse(workload)
    result: GenerationTrace = trace_generation(
        spec, workload, target, WorkloadStrategies(workload, target)
    )
    if workload.kv_dtype not in ("auto", result.cache_dtype):
        raise ConfigError(
            f"kv_dtype={workload.kv_dtype}: transformers' generate() caches keys and values in "
            f"the compute dtype ({result.cache_dtype} here; set --precision)"
        )
    steps, allocs = zip(*(_step(s, target) for s in result.steps), strict=True)
    top = max(range(len(steps)), key=lambda i: steps[i].peak_bytes)
    peak, alloc, timeline = steps[top], allocs[top], result.steps[top].timeline
    tokens, interpolation = _tokens(list(steps), workload.new_tokens)
    P, B = prompt_len(spec, workload), workload.batch
    first, last = steps[min(1, len(steps) - 1)], steps[-1]
    grown = last.cached_tokens - first.cached_tokens
    per_token = (last.kv_cache_bytes - first.kv_cache_bytes) // grown // B if grown else 0
    generation = Generation(
        prompt_len=P,
        new_tokens=workload.new_tokens,
        batch=B,
        cache_class=result.cache_class,
        cache_layers=result.layer_classes,
        cache_dtype=result.cache_dtype,
        kv_growth_per_token=per_token,
        steps=list(steps),
        tokens=tokens,
        interpolation=interpolation,
    )
    unknowns = [f"data-dependent read answered: {r}" for r in result.value_reads]
    unknowns += [
        f"generation: {'sampling' if workload.sample else 'greedy'}"
        f"{' beam search' if workload.num_beams > 1 else ''}, no end-of-sequence token "
        f"(every sequence runs {workload.new_tokens} tokens)"
    ]
    if result.routed:
        unknowns.append(
            f"MoE routing: {workload.moe_routing} (memlens.routing) at {len(result.routed)} "
            "router(s)"
        )
    if workload.num_beams > 1:
        unknowns.append(
            "beam search: each traced call stops after its one iteration (the real stop test "
            "reads the beams' scores); its final cut of the returned sequences reads the beams' "
            "indices (the reads above): the trace discards those sequences"
        )
    unknowns += target.assumptions
    unknowns += kernel_unknowns(target, {b.op for b in timeline.blocks})
    return GenerationEstimate(
        model=spec.name,
        source=spec.source,
        workload=workload,
        device=target.device,
        num_params=result.num_params,
        trainable_params=0,
        peak_bytes=alloc.peak_allocated,
        reserved_peak_bytes=alloc.peak_reserved,
        breakdown=peak.breakdown,
        peak_phase=peak.name,
        peak_module=peak.peak_module,
        peak_op=peak.peak_op,
        context_bytes=target.context_bytes,
        timeline=timeline,
        allocator=alloc,
        first_step_peak_bytes=None,
        seconds=time.perf_counter() - t0,
        unknowns=unknowns,
        step_flops=result.flops.get(peak.name, 0),
        generation=generation,
    )


def generate_estimate(
    model: Any,
    workload: Workload | None = None,
    *,
    prompt_len: int | None = None,
    new_tokens: int = 128,
    device: str | Device = "cuda",
    budget: int | str | None = None,
    **fields: Any,
) -> GenerationEstimate:
    """Peak memory of generating ``new_tokens`` tokens after a prompt of ``prompt_len``
    (default: ``seq_len``, else the model's) with the model's own ``generate()`` and KV cache;
    the same as :func:`memlens.estimate` with ``generate=True``. Other keywords are
    :class:`~memlens.Workload` fields (``batch``, ``precision``, ``attention``,
    ``prefill_chunk``, ``kv_cache="static"``).

    Example usage::

        est = memlens.generate_estimate("llama-3-8b", prompt_len=4096, new_tokens=256,
                                        precision="bf16", device="a100-80gb")
        for step in est.generation.steps:
            print(step.name, step.peak_bytes, step.kv_cache_bytes)
    """
    fields.update(generate=True, prompt_len=prompt_len, new_tokens=new_tokens)
    work, target = prepare(workload, fields, "estimate", device=device, budget=budget)
    spec, work = resolve_model(model, work, fields, workload)
    return estimate_generation(spec, work, target)


def measure_generation(model: Any, est: GenerationEstimate) -> GenerationMeasurement:
    """Run ``est``'s generation for real and measure its prefill and last step (``memlens
    estimate --generate --compare``): on the CPU, from the allocator's records
    (:mod:`memlens.measurement.generation`)."""
    kind = est.device.kind if est.device is not None else None
    if kind != "cpu":
        raise MeasureError("--compare with --generate runs generate() on the CPU: use --device cpu")
    spec = model_spec(model, est.workload)
    target = resolve_target("cpu", None)
    return measure_generation_cpu(spec, est.workload, WorkloadStrategies(est.workload, target))
