"""A real CPU ``model.generate()``, measured at its prefill and at its last decode step.

The CPU allocator's running total is read from the profiler's allocation records, as
:mod:`memlens.measurement.cpu` does for a step. A forward pre-hook on the input embeddings
(which runs once per forward pass and per prefill chunk) allocates and frees a marker of
:data:`~memlens.measurement.cpu._MARK_BYTES` bytes, splitting the records into forward
passes (a marker's allocation opens a pass wherever its free lands, and its bytes are not
counted): the prefill is everything before the first decode forward (the prompt's forward or
chunks, the first token's choice), the last step everything from the last forward to the
end of ``generate()``. A step's peak is the bytes alive before ``generate()`` (weights,
buffers, the prompt) plus the largest rise of the running total within it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from memlens._errors import MeasureError
from memlens.engine.build import skip_init
from memlens.engine.generate import generation_config, prompt_len
from memlens.engine.protocol import StepStrategies
from memlens.measurement.cpu import _MARK_BYTES, _native_stderr_silenced, allocations
from memlens.sources.base import Inputs, ModelSpec, building
from memlens.workload import Workload


@dataclass
class GenerationMeasurement:
    """Peaks of a real CPU generation: at the prefill and at the last decode step."""

    prefill_peak_bytes: int
    last_step_peak_bytes: int
    baseline_bytes: int  # weights, buffers and the prompt, alive before generate()
    forwards: int  # forward passes run (prefill chunks count one each)
    seconds: float


def _live(model: nn.Module, prompt: torch.Tensor) -> int:
    storages = {}
    for t in (*model.parameters(), *model.buffers(), prompt):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def measure_generation_cpu(
    spec: ModelSpec, workload: Workload, strategies: StepStrategies
) -> GenerationMeasurement:
    """Build ``spec``'s model on the CPU (random weights, not the model's initialisation),
    apply the workload's strategies, and measure ``generate()`` of ``workload.new_tokens``
    tokens after a prompt of ``prompt_len`` random tokens."""
    with skip_init(), building(workload):
        model = spec.build()
    P, N = prompt_len(spec, workload), workload.new_tokens
    vocab = model.config.get_text_config().vocab_size
    prompt = torch.randint(0, vocab, (workload.batch, P))
    strategies.prepare(model, Inputs(kwargs={"input_ids": prompt}))
    with torch.no_grad():  # finite weights: beam search stops on its scores (NaN stops it)
        for p in model.parameters():
            if p.is_floating_point():
                p.normal_(0.0, 0.02)
    config = generation_config(model, workload, N, True, real=True)

    def marker(module: nn.Module, args: tuple) -> None:
        mark = torch.empty(_MARK_BYTES, dtype=torch.uint8)
        del mark

    baseline = _live(model, prompt)
    handle = model.get_input_embeddings().register_forward_pre_hook(marker)
    t0 = time.perf_counter()
    try:
        with (
            torch.no_grad(),
            _native_stderr_silenced(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            out = model.generate(prompt, generation_config=config)
            del out
    finally:
        handle.remove()
    seconds = time.perf_counter() - t0
    records = allocations(prof)
    if not records:
        raise MeasureError("the profiler recorded no allocation during generate()")
    start = records[0][2] - records[0][1]  # running total before the first record
    # each record's total without a live marker (another thread's allocation may land
    # between a marker's allocation and its free), and the forward pass it belongs to
    totals, forward, live = [], [], 0
    for _, size, total in records:
        if abs(size) == _MARK_BYTES:
            live += 1 if size > 0 else -1
            if size > 0:
                forward.append(len(totals))
            continue
        totals.append(total - start - live * _MARK_BYTES)
    decode_forwards = N - 1
    if len(forward) <= decode_forwards:
        raise MeasureError(
            f"the profiler recorded {len(forward)} forward passes, not more than {N - 1}"
        )
    first_decode = forward[len(forward) - decode_forwards] if decode_forwards else len(totals)
    prefill = totals[:first_decode]
    last = totals[forward[-1] :] if decode_forwards else prefill
    return GenerationMeasurement(
        prefill_peak_bytes=baseline + max(0, *prefill),
        last_step_peak_bytes=baseline + max(0, *last),
        baseline_bytes=baseline,
        forwards=len(forward),
        seconds=seconds,
    )
