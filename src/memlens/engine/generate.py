"""Generation traced: a causal LM's own ``generate()`` with its own KV cache, on fake tensors.

The method. One iteration of Hugging Face's decoding loop (``GenerationMixin._sample`` /
``_beam_search`` in ``transformers/generation/utils.py``) is a function of the number of
tokens already in the cache and the number fed; everything else is the same at every step.
So instead of tracing ``N`` iterations, each traced step is a real ``model.generate(...,
max_new_tokens=1)`` call:

- **prefill**: ``generate(prompt)`` with an empty cache (chunked by transformers'
  ``_prefill_chunking`` under ``prefill_chunk_size``): the prompt's forward, the fp32 copy of
  the last logits row, the token choice, the kwargs update;
- **first decode**: ``generate(sequences, past_key_values=cache)`` right after it: the cache
  holds ``P`` tokens and generate's ``_get_initial_cache_position`` feeds only the new one;
- **last decode**: the cache is filled by a fake prefill of ``P + N - 3`` tokens and one
  decode step (traced, then discarded: ``Recorder.new_timeline`` carries what is alive into
  the next timeline's setup), then one decode step as above: the cache goes from
  ``P + N - 2`` to ``P + N - 1`` tokens (the ``N``-th token is chosen, never fed back).

A :class:`~transformers.StaticCache` is created with ``max_cache_len = P + N``, as generate's
``_prepare_cache_for_generation`` sizes it (``generation_config.max_length``); its occupied
length is read from the data (``StaticLayer.get_seq_length``), so the decode steps pass the
``cache_position`` that ``_get_initial_cache_position`` would compute. Every allocation of a
decode step is of a size affine in the cache length (``DynamicLayer.update``'s
``torch.cat``, the ``q x k`` scores and masks), so the decode peak is a maximum of affine
functions of the length: the chord between two traced lengths is exact where the same
allocation peaks at both, and otherwise an upper bound (it is convex). Sliding-window layers
stop growing at their window, where a third length is traced.

Storages held by the cache object at the end of a step are the ``kv_cache`` category; the
blocks made by ``generate()`` outside the model's modules (``input_ids`` growth, attention
mask, ``cache_position``, the fp32 logits row, the chosen tokens) stay ``temporaries``; the
rest of the forward is ``activations``. Blocks whose last two dimensions are (query tokens,
key tokens) of a forward, with more than one query token, are the attention's quadratic term
(scores, probabilities, masks); a forward's key count is the tokens seen so far (or a static
cache's length, or a sliding window).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memlens._errors import ConfigError, WorkloadError
from memlens.categories import Category, Phase
from memlens.engine.build import build_fake
from memlens.engine.protocol import Applied, StepStrategies
from memlens.engine.recorder import Recorder, RecordingMode
from memlens.engine.shadow import Reads
from memlens.engine.step import held_tensors
from memlens.engine.targets.emulation import emulated, kernel_rules
from memlens.sources.base import ModelSpec
from memlens.targets import Target
from memlens.timeline import Timeline
from memlens.workload import Workload


@dataclass
class StepTrace:
    """One traced ``generate()`` iteration."""

    name: str  # "prefill", "first decode", "last decode", "window decode"
    cached_tokens: int  # tokens in the cache before the step
    fed_tokens: int  # tokens the step's forward pass reads
    timeline: Timeline
    kv_cache_bytes: int  # bytes the cache holds after the step
    logits: set[int] = field(default_factory=set)  # block ids made by the output embeddings
    quadratic: set[int] = field(default_factory=set)  # block ids of (query x key) tensors
    outside: set[int] = field(default_factory=set)  # block ids made by generate(), not the model


@dataclass
class GenerationTrace:
    """What the engine found: the traced steps and the cache they used."""

    steps: list[StepTrace]
    num_params: int
    cache_class: str
    layer_classes: list[str]
    cache_dtype: str  # "fp32", "bf16", "fp16" (the names of the kv_dtype option)
    value_reads: list[str] = field(default_factory=list)
    applied: Applied = field(default_factory=Applied)
    flops: dict[str, int] = field(default_factory=dict)  # per step name
    routed: list[str] = field(default_factory=list)  # MoE routers routed by the policy


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class _GenerationRecorder(Recorder):
    """The engine's recorder, also noting which blocks ``generate()`` made outside the model,
    which the output embeddings made (logits), and which are (query x key) tensors."""

    def __init__(self, model: nn.Module, target: Target, head: str | None, reads: Reads) -> None:
        super().__init__(model, kernel_rules(target), target, reads)
        self.seen = 0  # tokens the cache has seen, before the current forward
        self.query = 0  # tokens the current forward reads
        self.key_lengths: set[int] = set()  # key counts of the current forward's attention
        self.fixed_keys: set[int] = set()  # a static cache's length, sliding windows
        self.windows: set[int] = set()
        self.outside: set[int] = set()
        self.logits: set[int] = set()
        self.quadratic: set[int] = set()
        self._head = head
        # the previous iteration's loop variables, each freed when generate() makes the
        # tensor that replaces it (same bytes and dtype, outside the model, after a forward)
        self.previous: list[torch.Tensor] = []
        self.forwarded = False
        self.rows = 1  # sequences a forward pass reads (batch x beams)
        self.heads: set[int] = set()  # attention heads and KV heads
        self.head_dim = 0

    def on_tokens(self, query: int) -> None:
        """A forward pass (or prefill chunk) starts reading ``query`` tokens."""
        past, self.query = self.seen, query
        self.forwarded = True
        self.seen += query
        self.key_lengths = {past + query, *self.fixed_keys}
        self.key_lengths |= {min(past, w - 1) + query for w in self.windows}

    def new_timeline(self) -> Timeline:
        self.outside, self.logits, self.quadratic = set(), set(), set()
        return super().new_timeline()

    def _is_quadratic(self, t: torch.Tensor) -> bool:
        """``(rows, heads or 1, query, key)`` (scores, probabilities, masks) or ``(rows x
        heads, query, key)`` (a batched matmul's scores). A 4-D tensor whose key count is
        the head dimension is also the shape of the query and key states: not counted."""
        shape = tuple(t.shape)
        if len(shape) < 3 or shape[-2] != self.query or shape[-1] not in self.key_lengths:
            return False
        if len(shape) == 3:
            return shape[0] in {self.rows * h for h in self.heads if h > 1}
        if len(shape) == 4:
            states = shape[-1] == self.head_dim and shape[1] in self.heads
            return shape[0] == self.rows and shape[1] in {1, *self.heads} and not states
        return False

    def _replace_previous(self, out: Any) -> None:
        for t in torch.utils._pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            size = t.untyped_storage().nbytes()
            for i, old in enumerate(self.previous):
                if old.dtype == t.dtype and old.untyped_storage().nbytes() == size:
                    del self.previous[i]  # the last reference: its free is recorded now
                    break

    def dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        first = len(self.timeline.blocks)
        out = super().dispatch(func, args, kwargs)
        made = range(first, len(self.timeline.blocks))
        if not made:
            return out
        current = self.modules.current
        if current == "":
            self.outside.update(made)
            if self.forwarded and self.previous:
                self._replace_previous(out)
        elif self._head is not None and current == self._head:
            self.logits.update(made)
        if self.query > 1:
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and self._is_quadratic(t):
                    key = self._key_of.get(t.untyped_storage())
                    block = self._block_of.get(key) if key is not None else None
                    if block is not None and block >= first:
                        self.quadratic.add(block)
        return out


def _check(model: nn.Module, name: str, workload: Workload) -> None:
    """Refuse what the method cannot trace, with the reason."""
    if not hasattr(model, "generate") or not getattr(model, "can_generate", lambda: False)():
        raise ConfigError(f"{name} cannot generate: --generate needs a Hugging Face causal LM")
    if getattr(model.config, "is_encoder_decoder", False):
        raise ConfigError(
            f"{name} is an encoder-decoder model: --generate traces decoder-only causal LMs"
        )


def _previous_iteration(
    workload: Workload, B: int, vocab: int, max_len: int, warped: bool
) -> tuple:
    """The decoding loop's variables of the previous iteration, alive through this step's
    forward pass until the loop rebinds them (in this order).

    ``_sample``: the fp32 row of logits (``next_token_logits``, which ``next_token_scores``
    is without logits processors), when sampling the processors' scores (``warped``) and
    ``probs`` (softmax), and the chosen tokens (``next_tokens``). ``_beam_search``:
    ``logits`` (fp32, ``batch x beams`` rows) and ``log_probs`` (``log_softmax`` plus the
    running scores, ``batch x (beams x vocab)``), and the top-``2 x beams`` continuations
    (``topk_log_probs``, ``topk_running_sequences`` of ``max_length`` tokens,
    ``topk_running_beam_indices``, ``next_token_hits_stopping_criteria``) and ``beam_idx``.
    """
    K = workload.num_beams
    if K == 1:
        rows = [torch.empty((B, vocab), dtype=torch.float32)]
        if workload.sample:
            if warped:  # next_token_scores: the processors' output, not the logits row
                rows.append(torch.empty((B, vocab), dtype=torch.float32))
            rows.append(torch.empty((B, vocab), dtype=torch.float32))  # probs (softmax)
        return (*rows, torch.empty((B,), dtype=torch.int64))
    keep = 2 * K  # beams_to_keep = max(2, 1 + len(eos)) * num_beams, without an eos token
    return (
        torch.empty((B * K, vocab), dtype=torch.float32),
        torch.empty((B, K * vocab), dtype=torch.float32),
        torch.empty((B, keep), dtype=torch.float32),
        torch.empty((B, keep, max_len), dtype=torch.int64),
        torch.empty((B, keep, workload.new_tokens), dtype=torch.int32),
        torch.empty((B, keep), dtype=torch.bool),
        torch.empty((B * K,), dtype=torch.int64),
    )


def _stop_after_one(model: nn.Module) -> Any:
    """``_beam_search_has_unfinished_sequences`` answering False after its computation: each
    traced call runs one iteration of the loop (the real test reads the beams' scores, which
    fake tensors do not have)."""
    real = model._beam_search_has_unfinished_sequences  # a static method in 4.57

    def stop(*args: Any, **kwargs: Any) -> torch.Tensor:
        real(*args, **kwargs)
        return torch.zeros((), dtype=torch.bool)  # a factory: its value is known (shadow)

    return stop


def _new_cache(model: nn.Module, workload: Workload, max_len: int) -> Any:
    """The cache generate() would create (``_prepare_cache_for_generation``): a
    ``DynamicCache(config=...)`` (sliding-window layers where the config has them) or a
    ``StaticCache`` of ``max_len`` tokens."""
    import transformers

    if workload.kv_cache == "static":
        return transformers.StaticCache(config=model.config, max_cache_len=max_len)
    return transformers.DynamicCache(config=model.config)


def _windows(config: Any) -> set[int]:
    text = config.get_text_config()
    window = getattr(text, "sliding_window", None)
    types = getattr(text, "layer_types", None) or ()
    sliding = isinstance(window, int) and (any("sliding" in t for t in types) or not types)
    return {window} if sliding else set()


def generation_config(
    model: nn.Module, workload: Workload, new_tokens: int, prefill: bool, *, real: bool = False
) -> Any:
    """The ``GenerationConfig`` of one traced step (and, with ``new_tokens = N``, of the real
    run): greedy or beam search, no end-of-sequence token (every sequence runs ``N`` tokens,
    the worst case and the only one a trace can know), the workload's prefill chunking. The
    real run (``real``) names the cache class; the trace passes its own cache object.

    ``generate()`` fills the values a config leaves at their defaults from the model's own
    ``generation_config`` (``_prepare_generation_config``), so the model's special tokens are
    cleared there too."""
    import transformers

    own = model.generation_config
    own.eos_token_id = own.pad_token_id = own.bos_token_id = None
    own.use_cache = True
    model.config.use_cache = True  # the source builds models for a step, without a cache
    return transformers.GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=workload.sample,
        num_beams=workload.num_beams,
        eos_token_id=None,
        pad_token_id=None,
        bos_token_id=None,
        use_cache=True,
        prefill_chunk_size=workload.prefill_chunk if prefill else None,
        cache_implementation=workload.kv_cache if real else None,
    )


def prompt_len(spec: ModelSpec, workload: Workload) -> int:
    """The prompt length: ``prompt_len``, else ``seq_len``, else the source's default."""
    return workload.prompt_len or workload.seq_len or int(spec.metadata.get("seq_len", 512))


@contextmanager
def _token_hook(model: nn.Module, on_tokens: Any) -> Iterator[None]:
    """Calls ``on_tokens(query)`` as each forward pass, or prefill chunk, embeds its tokens
    (chunks run ``self.forward``, which root hooks do not see; the embeddings' hook does)."""
    embeddings = model.get_input_embeddings()

    def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = args[0] if args else kwargs.get("input")
        on_tokens(int(ids.shape[-1]))

    handle = embeddings.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def trace_generation(
    spec: ModelSpec, workload: Workload, target: Target, strategies: StepStrategies
) -> GenerationTrace:
    """Trace the prefill, the first and the last decode step of ``workload``'s generation of
    ``spec``'s model on ``target`` (see the module docstring)."""
    built = build_fake(spec, workload)
    model, mode = built.model, built.mode
    _check(model, spec.name, workload)
    with mode:
        applied = strategies.prepare(model, built.inputs)
    del built
    P, N = prompt_len(spec, workload), workload.new_tokens
    text = model.config.get_text_config()
    limit = getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", None)
    if isinstance(limit, int) and limit < P + N and not workload.allow_long_context:
        raise WorkloadError(
            "new_tokens",
            N,
            f"prompt + new tokens ({P + N}) pass the model's {limit} positions; "
            "--allow-long-context for a model that extrapolates",
        )
    B = workload.batch
    vocab = model.config.get_text_config().vocab_size
    head = model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    # data_dependent=fail refuses a read; otherwise it is answered neutrally and listed (the
    # reads of generate() that a trace meets do not change its allocations)
    reads = Reads("fail" if workload.data_dependent == "fail" else "neutral")
    recorder = _GenerationRecorder(model, target, names.get(id(head)) if head else None, reads)
    recorder.windows = _windows(model.config)
    recorder.rows = B * workload.num_beams
    heads = getattr(text, "num_attention_heads", None) or getattr(text, "n_head", 1)
    recorder.heads = {heads, getattr(text, "num_key_value_heads", None) or heads}
    hidden = getattr(text, "hidden_size", None) or getattr(text, "n_embd", 0)
    recorder.head_dim = getattr(text, "head_dim", None) or hidden // heads
    recorder.routing = workload.moe_routing  # MoE experts chosen by the policy
    if workload.kv_cache == "static":
        recorder.fixed_keys = {P + N}
    for p in model.parameters():
        recorder.track(p, Category.PARAMETERS, "parameter")
    for b in model.buffers():
        recorder.track(b, Category.BUFFERS, "buffer")
    own = model.generation_config  # what generate() fills a config's defaults from
    warped = workload.sample and (
        bool(own.top_k) or (own.top_p or 1.0) < 1.0 or (own.temperature or 1.0) != 1.0
    )
    steps: list[StepTrace] = []
    flops: dict[str, int] = {}
    classes: dict[str, Any] = {}

    def run(name: str, ids: torch.Tensor, cache: Any, cached: int, keep: bool) -> torch.Tensor:
        """One generate() call of one new token over ``ids`` with ``cached`` tokens cached."""
        recorder.seen = cached
        recorder.set_phase(Phase.FORWARD)
        extra: dict[str, Any] = {}
        if cached and workload.kv_cache == "static":
            positions = torch.ones(ids.shape[-1], dtype=torch.int64).cumsum(0) - 1
            extra["cache_position"] = positions[cached:]
        recorder.previous = (
            list(_previous_iteration(workload, B, vocab, P + N, warped)) if cached else []
        )
        recorder.forwarded = False
        if workload.num_beams > 1:
            # the real run's max_length (the beams' state is sized by it); one iteration
            new = P + N - ids.shape[-1]
            model._beam_search_has_unfinished_sequences = _stop_after_one(model)
        else:
            new = 1
        config = generation_config(model, workload, new, name == "prefill")
        try:
            out = model.generate(ids, generation_config=config, past_key_values=cache, **extra)
        finally:
            vars(model).pop("_beam_search_has_unfinished_sequences", None)
        recorder.previous = []
        if workload.num_beams > 1:
            # beam search returns the best beams, cut at a length it reads from the beams'
            # indices; the next call's input is the sequences so far, one token longer
            del out
            out = torch.randint(0, vocab, (B, ids.shape[-1] + 1))
        storages = {}
        for t in held_tensors(cache):
            recorder.set_category(t, Category.KV_CACHE)
            storages[id(t.untyped_storage())] = t.untyped_storage().nbytes()
        kv = sum(storages.values())
        classes["cache"] = type(cache).__name__
        classes["layers"] = sorted({type(layer).__name__ for layer in cache.layers})
        dtypes = {t.dtype for t in held_tensors(cache) if t.is_floating_point()}
        classes["dtype"] = ",".join(sorted(_DTYPE_NAMES.get(d, str(d)) for d in dtypes))
        logits, quadratic, outside = recorder.logits, recorder.quadratic, recorder.outside
        flops[name] = recorder.flops
        timeline = recorder.new_timeline()
        if keep:
            fed = ids.shape[-1] - cached
            steps.append(StepTrace(name, cached, fed, timeline, kv, logits, quadratic, outside))
        return out

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with (
            mode,
            RecordingMode(recorder),
            emulated(target, amp=workload.amp, attention=workload.attention),
            recorder.modules,
            _token_hook(model, recorder.on_tokens),
            torch.no_grad(),
        ):
            recorder.new_timeline()
            prompt = torch.randint(0, vocab, (B, P))
            recorder.track(prompt, Category.INPUTS, "input")
            cache = _new_cache(model, workload, P + N)
            seq = run("prefill", prompt, cache, 0, True)
            del prompt
            if N >= 2:
                seq = run("first decode", seq, cache, P, True)
            del seq, cache
            # the last decode step, and a sliding window's knee between the two
            lengths = [P + N - 2] if N >= 3 else []
            lengths += sorted(w - 1 for w in recorder.windows if P < w - 1 < P + N - 2)
            for length in lengths:
                recorder.new_timeline()
                # a prefill of length - 1 tokens and one decode step: the cache's storages
                # are then what decode steps leave (a sliding window's prefill keeps a view
                # of its whole prompt, a decode step only the window)
                filled = torch.randint(0, vocab, (B, length - 1))
                recorder.track(filled, Category.INPUTS, "input")
                cache = _new_cache(model, workload, P + N)
                seq = run("fill", filled, cache, 0, False)
                del filled
                seq = run("fill", seq, cache, length - 1, False)
                last = length == P + N - 2
                seq = run("last decode" if last else "window decode", seq, cache, length, True)
                del seq, cache
        recorder.close()
    finally:
        if gc_was_enabled:
            gc.enable()
    for step in steps:
        _label(step)
    return GenerationTrace(
        steps=sorted(steps, key=lambda s: s.cached_tokens),
        num_params=strategies.param_count(model),
        cache_class=classes["cache"],
        layer_classes=classes["layers"],
        cache_dtype=classes["dtype"],
        value_reads=[f"{r.site} ({r.module or '<root>'}): {r.answer}" for r in recorder.reads.log],
        applied=applied,
        flops=flops,
        routed=sorted(set(recorder.routed)),
    )


def _label(step: StepTrace) -> None:
    """What the model's forward made is an activation (no backward to save for); what
    ``generate()`` made around it stays a temporary; the cache was labelled when it ended."""
    for block in step.timeline.blocks:
        made_by_model = block.id not in step.outside and block.phase is Phase.FORWARD
        if (
            made_by_model
            and block.category is Category.TEMPORARIES
            and not block.op.endswith(":workspace")
        ):
            block.category = Category.ACTIVATIONS
