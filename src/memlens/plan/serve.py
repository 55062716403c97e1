"""Serving capacity: how many KV cache blocks, tokens and requests a vLLM server gets per GPU.

:func:`serve_plan` follows, term by term, what vLLM does at startup (V1 engine):

1. ``Worker.init_device`` (``vllm/v1/worker/gpu_worker.py``) creates the CUDA context and the
   distributed environment (NCCL for ``tp > 1``), *then* takes the memory snapshot and sets
   ``requested_memory = total_memory * gpu_memory_utilization``; it refuses to start when the
   free memory is below that. So the context and NCCL are outside the requested memory: they
   must fit in ``total * (1 - gpu_memory_utilization)`` (the startup check below).
2. ``Worker.determine_available_memory`` loads the weights (``model_memory_usage``), runs
   ``GPUModelRunner.profile_run`` (one forward of ``max_num_batched_tokens`` tokens without a
   KV cache, then a dummy sampler run over ``min(max_num_seqs, max_num_batched_tokens)``
   rows) under ``memory_profiling`` (``vllm/utils/mem_utils.py``), and sets
   ``available_kv_cache_memory = requested_memory - (weights + torch peak increase +
   non-torch increase)``.
3. ``get_kv_cache_config`` (``vllm/v1/core/kv_cache_utils.py``) divides it into blocks:
   ``num_blocks = available // page_size // num_layers`` (one KV type;
   ``AttentionSpec.page_size_bytes = 2 * block_size * num_kv_heads * head_size * dtype_size``,
   MLA without the 2); hybrid sliding/full models group layers
   (``_get_kv_cache_groups_uniform_page_size``: groups of the smallest per-type layer count,
   or of the largest when it is below 1.5 times the smallest, the last group of a type
   padded; the pool shared), divide by the group size
   (``get_kv_cache_config_from_groups``) and report ``num_blocks // groups * block_size``
   tokens.
4. ``get_max_concurrency_for_kv_cache_config`` reports the concurrency for requests of
   ``max_model_len`` tokens: the pool over one request's ``max_memory_usage_bytes``
   (``FullAttentionSpec``: ``cdiv(len, block_size)`` pages; ``SlidingWindowSpec``:
   ``cdiv(min(sliding_window - 1 + max_num_batched_tokens, len), block_size) + 1``); and
   ``estimate_max_model_len`` the longest single request that fits.

The weights are exact for the storage scheme (:mod:`memlens.analytic.weights`; the tensors
from the config in closed form for Llama-family and GPT-2 configs, else from a fake build).
The activation peak is a closed form of vLLM's decoder layer (tensors alive between ops, see
:func:`activation_terms`): not a trace of vLLM's own code, which is not installed; the
attention kernels' workspaces, CUDA graphs (captured after the KV cache) and custom
all-reduce buffers are listed in ``unknowns``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memlens._errors import ConfigError, WorkloadError
from memlens.analytic.kv_cache import KVCache, config_dtype, kv_cache
from memlens.analytic.weights import (
    SCHEMES,
    InferenceWeights,
    Scheme,
    header_weights,
    inference_weights,
    scheme,
    scheme_from_config,
)

#: vLLM's defaults (``vllm/config/cache.py`` ``CacheConfig``: ``block_size`` 16 on CUDA,
#: ``gpu_memory_utilization`` 0.9).
BLOCK_SIZE = 16
GPU_MEMORY_UTILIZATION = 0.9
#: Bytes per element of the sampler's fp32 copies in the dummy sampler run
#: (``vllm/v1/sample/sampler.py``: ``logits.to(torch.float32)``, ``probs = softmax``,
#: ``q = torch.empty_like(probs).exponential_()``; ``probs.div_(q)`` is in place).
_SAMPLER_FP32_COPIES = 3
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Term:
    """One line of the computation: a name, its bytes, and how it was obtained."""

    name: str
    bytes: int
    note: str = ""


@dataclass
class ServePlan:
    """What one GPU of a vLLM server holds, and the KV cache capacity left (see the module
    docstring for the method)."""

    model: str
    device: str
    arch: str
    tp: int
    total_bytes: int  # the GPU's memory
    gpu_memory_utilization: float
    requested_bytes: int  # total * gpu_memory_utilization
    scheme: str
    scheme_source: str
    weights: InferenceWeights
    buffers: list[Term]  # tensors loaded with the weights that are not parameters
    activation_terms: list[Term]  # the profile run's peak, term by term
    activation_bytes: int
    activation_method: str
    outside_budget: list[Term]  # created before vLLM's snapshot (context, NCCL)
    kv_available_bytes: int
    kv_dtype: str
    block_size: int
    page_bytes: int  # one block of every layer (of one group for hybrid models)
    kv_layers: int
    kv_groups: int
    num_blocks: int
    cached_tokens: int
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    request_blocks: int  # blocks one max_model_len request needs
    concurrency: float  # requests of max_model_len at once
    avg_len: int | None
    concurrency_avg: float | None
    largest_context: int  # longest single request that fits
    startup_ok: bool
    min_tp: int | None = None  # smallest tp reaching ``target_concurrency``
    target_concurrency: int | None = None
    unknowns: list[str] = field(default_factory=list)

    @property
    def non_kv_bytes(self) -> int:
        """Weights, buffers and activation peak (vLLM's ``non_kv_cache_memory``)."""
        return self.weights.total_bytes + self.buffer_bytes + self.activation_bytes

    @property
    def buffer_bytes(self) -> int:
        return sum(t.bytes for t in self.buffers)

    @property
    def fits(self) -> bool:
        """One request of ``max_model_len`` fits and the server starts."""
        return self.startup_ok and self.num_blocks >= self.request_blocks > 0

    def _repr_html_(self) -> str:
        """The memory split and KV cache capacity as an HTML table (Jupyter)."""
        from memlens.report.markdown import to_html_fragment

        return to_html_fragment(self)


def serve_plan(
    model: str | Mapping[str, Any],
    *,
    gpu: str = "h100-80gb",
    tp: int = 1,
    quantize: str = "auto",
    kv_dtype: str = "auto",
    max_model_len: int | None = None,
    block_size: int = BLOCK_SIZE,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    avg_len: int | None = None,
    concurrency: int | None = None,
    cuda_version: str | None = None,
    context: int | str | None = None,
    weights: str | None = None,
) -> ServePlan:
    """How a vLLM server of ``model`` on ``tp`` GPUs of ``gpu`` uses each GPU's memory.

    ``model`` is a bundled LLM name, a ``config.json`` path or a config dict. ``quantize`` is a
    scheme of :data:`memlens.analytic.weights.SCHEMES` (``auto``: the config's
    ``quantization_config``, else its dtype); ``kv_dtype`` ``auto`` (the model dtype) or
    ``fp8``. ``avg_len`` adds the concurrency at that request length; ``concurrency`` the
    smallest tp that serves that many requests at once (of ``avg_len`` tokens if given, else
    of ``max_model_len``). ``weights``: a safetensors checkpoint (file, index or folder) whose
    header gives the stored bytes and the scheme, instead of the config.

    Example usage::

        plan = memlens.serve_plan("llama-3-70b", gpu="h100-80gb", tp=4, kv_dtype="fp8")
        plan.num_blocks, plan.cached_tokens, plan.concurrency
    """
    name, config = _config(model)
    if config.get("is_encoder_decoder"):
        raise ConfigError(
            f"{name}: an encoder-decoder model's serving (cross-attention blocks) is not "
            "modelled; its cache is in memlens.analytic.kv_cache"
        )
    _check(
        tp=tp,
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        avg_len=avg_len,
        concurrency=concurrency,
        max_model_len=max_model_len,
    )
    if isinstance(gpu_memory_utilization, bool) or not 0 < gpu_memory_utilization <= 1:
        raise WorkloadError(
            "gpu_memory_utilization", gpu_memory_utilization, "a fraction in (0, 1]"
        )
    if quantize not in SCHEMES:
        raise WorkloadError("quantize", quantize, "allowed: " + ", ".join(SCHEMES))
    from memlens.cuda_stack import cuda_stack
    from memlens.devices import get_device

    device = get_device(gpu)
    if device.kind != "cuda":
        raise WorkloadError("gpu", gpu, "serve-plan models vLLM on CUDA GPUs")
    stack = cuda_stack(
        device.arch,
        cuda_version=cuda_version,
        context=context,
        default_workspace_bytes=device.workspace_bytes,
    )
    dtype, dtype_note = _dtype(config, device.arch)
    sch = scheme_from_config(config, dtype) if quantize == "auto" else None
    if sch is None:
        sch = scheme(dtype if quantize == "auto" else quantize, dtype)
        if quantize == "auto":
            sch = Scheme(sch.name, sch.format, None, dtype, dtype_note)
    kv_cache(config, kv_dtype=kv_dtype, dtype=dtype, runtime="vllm")  # refuse before building
    header = _header(weights, quantize) if weights is not None else None
    tensors, method = ([], "safetensors header") if header else _tensors(name, config)
    positions = _positions(config)
    mml = max_model_len or positions
    unknowns = [f"dtype: {dtype_note}"]
    batched, seqs, note = batch_defaults(device, max_num_batched_tokens, max_num_seqs)
    if note:
        unknowns.append(note)
    if max_model_len is None:
        unknowns.append(f"max_model_len {positions:,}: the config's positions (vLLM's default)")
    elif max_model_len > positions:
        raise WorkloadError(
            "max_model_len", max_model_len, f"the model has {positions:,} positions"
        )
    common = {
        "name": name,
        "config": config,
        "device": device,
        "stack": stack,
        "sch": sch,
        "tensors": tensors,
        "method": method,
        "kv_dtype": kv_dtype,
        "mml": mml,
        "block_size": block_size,
        "util": gpu_memory_utilization,
        "batched": batched,
        "seqs": seqs,
        "avg_len": avg_len,
        "header": header,
    }
    plan = _plan(tp=tp, **common)
    plan.unknowns[:0] = unknowns
    if concurrency is not None:
        plan.target_concurrency = concurrency
        plan.min_tp = _min_tp(concurrency, config, common)
    return plan


def batch_defaults(device: Any, batched: int | None, seqs: int | None) -> tuple[int, int, str]:
    """``vllm serve``'s ``max_num_batched_tokens`` and ``max_num_seqs`` where not given
    (``vllm/engine/arg_utils.py`` ``EngineArgs.get_batch_defaults``, OpenAI server context:
    8192 and 1024 on GPUs of at least 70 GiB whose name has no "a100", else 2048 and 256;
    ``max_num_seqs`` at most ``max_num_batched_tokens``), with a note of what was defaulted."""
    large = device.capacity_bytes >= 70 * 2**30 and "a100" not in device.name.lower()
    default_batched, default_seqs = (8192, 1024) if large else (2048, 256)
    note = ""
    if batched is None or seqs is None:
        note = (
            f"max_num_batched_tokens {batched or default_batched}, max_num_seqs "
            f"{seqs or min(default_seqs, batched or default_batched)}: vllm serve's defaults "
            f"for {device.name} (EngineArgs.get_batch_defaults)"
        )
    batched = batched or default_batched
    return batched, seqs or min(default_seqs, batched), note


def _plan(
    *,
    name: str,
    config: Mapping[str, Any],
    device: Any,
    stack: Any,
    sch: Scheme,
    tensors: list[Any],
    method: str,
    kv_dtype: str,
    mml: int,
    block_size: int,
    util: float,
    batched: int,
    seqs: int,
    avg_len: int | None,
    tp: int,
    header: Any = None,
) -> ServePlan:
    heads = _heads(config)
    if heads % tp:
        raise WorkloadError("tp", tp, f"{heads} attention heads do not split over {tp} GPUs")
    cache = kv_cache(config, kv_dtype=kv_dtype, dtype=sch.compute_dtype, runtime="vllm", tp=tp)
    kv_heads = _first_int(config, "num_key_value_heads") or heads
    if not config.get("kv_lora_rank") and kv_heads % tp and tp % kv_heads:
        # QKVParallelLinear: KV heads split over tp, or each replicated tp // kv times
        raise WorkloadError("tp", tp, f"{kv_heads} KV heads neither split over nor divide {tp}")
    weights = (
        header_weights(header, sch.compute_dtype, tp=tp)
        if header
        else inference_weights(
            tensors,
            sch,
            tp=tp,
            kv_heads=kv_heads,
            vocab=_first_int(config, "vocab_size"),
            method=method,
        )
    )
    sch = weights.scheme  # the header's, when a checkpoint was given
    total = device.capacity_bytes
    requested = int(total * util)
    terms, activation = activation_terms(config, sch.compute_dtype, tp, batched, seqs)
    dequant, kernel = weights.dequant_bytes(batched, device.arch)
    if dequant:
        terms.append(Term("dequantisation temporary", dequant, kernel))
        activation += dequant
    workspace = stack.cublas_workspace_bytes
    if stack.cublaslt_workspace in ("persistent", "per-call"):
        workspace += stack.cublaslt_workspace_bytes
    terms.append(Term("cuBLAS workspaces", workspace, "through the caching allocator"))
    activation += workspace
    outside = [Term("CUDA context", stack.context_bytes, stack.context_row or "given")]
    outside += _communication(tp)
    unknowns = [
        "activation peak: closed form of vLLM's decoder layer and of the v1 sampler's dummy "
        "run (sampler code differs across vLLM versions); attention-backend workspaces "
        "(FlashAttention/FlashInfer) not modelled",
        "CUDA graphs: captured after the KV cache is allocated, outside this budget (vLLM "
        "estimates them only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS)",
        "non-torch increase after vLLM's snapshot (lazily loaded kernel modules, cuBLAS "
        "handles): not modelled",
        *(a for a in stack.assumptions if a.startswith("CUDA context")),
        *cache.notes,
        *weights.notes,
    ]
    if tp > 1:
        from memlens.distributed.nccl import ASSUMPTION

        unknowns.append(ASSUMPTION)
    if sch.format not in ("bf16", "fp16", "fp32"):
        unknowns.append(f"weights: {sch.name} from {sch.source}; {kernel}")
    buffers = rope_cache(config, sch.compute_dtype)
    available = requested - weights.total_bytes - sum(t.bytes for t in buffers) - activation
    layers, groups, group_size, page, per_request = _blocks(cache, block_size, batched)
    num_blocks = max(0, available) // (page * group_size) if page else 0
    request_blocks = per_request(mml)
    cached = num_blocks // groups * block_size
    conc = num_blocks / request_blocks if request_blocks else 0.0
    conc_avg = num_blocks / per_request(avg_len) if avg_len else None
    startup_ok = total - sum(t.bytes for t in outside) >= requested
    return ServePlan(
        model=name,
        device=device.name,
        arch=device.arch,
        tp=tp,
        total_bytes=total,
        gpu_memory_utilization=util,
        requested_bytes=requested,
        scheme=sch.name,
        scheme_source=sch.source,
        weights=weights,
        buffers=buffers,
        activation_terms=terms,
        activation_bytes=activation,
        activation_method="closed form (vLLM decoder layer)",
        outside_budget=outside,
        kv_available_bytes=available,
        kv_dtype=cache.kv_dtype,
        block_size=block_size,
        page_bytes=page,
        kv_layers=layers,
        kv_groups=groups,
        num_blocks=num_blocks,
        cached_tokens=cached,
        max_model_len=mml,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        request_blocks=request_blocks,
        concurrency=conc,
        avg_len=avg_len,
        concurrency_avg=conc_avg,
        largest_context=_largest(num_blocks, per_request, _positions(config)),
        startup_ok=startup_ok,
        unknowns=unknowns,
    )


def rope_cache(config: Mapping[str, Any], dtype: str) -> list[Term]:
    """vLLM's rotary position table, loaded with the weights: ``RotaryEmbedding``
    (``vllm/model_executor/layers/rotary_embedding``) registers ``cos_sin_cache`` of
    ``[max_position, rotary_dim]`` (cos and sin halves) in the model dtype, one per distinct
    rope configuration (``get_rope`` caches instances): so once per model. Models with learned
    positions (GPT-2, OPT) have none."""
    cfg = config.get("text_config") or config
    if config.get("model_type") in ("gpt2", "opt", "bloom", "gpt_bigcode"):
        return []
    positions = _first_int(cfg, "max_position_embeddings")
    if positions is None:
        return []
    if cfg.get("kv_lora_rank"):
        rotary = _req(cfg, "qk_rope_head_dim")
    else:
        heads = _heads(cfg)
        head_dim = cfg.get("head_dim") or _req(cfg, "hidden_size") // heads
        rotary = int(head_dim * float(cfg.get("partial_rotary_factor", 1.0)))
    n = positions * rotary * _BYTES[dtype]
    note = f"{positions:,} positions x {rotary}, {dtype}"
    out = [Term("rotary cos/sin cache", n, note)]
    if cfg.get("rope_local_base_freq"):  # Gemma-3: a second rope for its sliding layers
        out.append(Term("rotary cos/sin cache (local layers)", n, note))
    return out


def _communication(tp: int) -> list[Term]:
    """Device memory of tensor parallelism created before vLLM's snapshot: the NCCL
    communicator of the tp group (``PyNcclCommunicator`` of the group's ``CudaCommunicator``,
    ``vllm/distributed/device_communicators/cuda_communicator.py``; its connection buffers as
    :mod:`memlens.distributed.nccl` sizes them) and, for 2, 4, 6 or 8 GPUs, the custom
    all-reduce (``custom_all_reduce.py`` ``CustomAllreduce``, ``max_size = 8 MiB``: an IPC
    buffer and a signal buffer of that size by ``create_shared_buffer``, and ``rank_data``,
    8 MiB; the signal's small metadata not counted)."""
    if tp == 1:
        return []
    from memlens.distributed.nccl import CHANNELS, LL128_BYTES, LL_BYTES, SIMPLE_BYTES

    nccl = CHANNELS * (SIMPLE_BYTES + LL_BYTES + LL128_BYTES)
    out = [Term(f"NCCL tp communicator ({tp} ranks)", nccl, f"{CHANNELS} channels assumed")]
    if tp in (2, 4, 6, 8):
        out.append(Term("custom all-reduce buffers", 3 * 8 * 2**20, "3 x 8 MiB (vLLM)"))
    return out


def activation_terms(
    config: Mapping[str, Any], dtype: str, tp: int, tokens: int, max_num_seqs: int
) -> tuple[list[Term], int]:
    """The profile run's activation peak on one GPU, term by term.

    vLLM's decoder layer (``vllm/model_executor/models/llama.py``: ``LlamaDecoderLayer``,
    ``LlamaAttention``, ``LlamaMLP``; the fused add-norm works in place) keeps, inside a layer
    of ``T`` tokens, the residual stream and the layer's input (``2 T h``) and produces:
    attention: ``qkv`` (``T (q + 2 kv) d / tp``), the attention output (``T q d / tp``) and
    ``o_proj``'s output (``T h``); dense MLP: ``gate_up`` (``2 T I / tp``), the activation
    (``T I / tp``) and ``down_proj``'s output (``T h``); MoE (``fused_moe.py``
    ``fused_experts_impl``): ``intermediate_cache1/2/3`` (``T k 2 I_e / tp``, ``T k I_e / tp``,
    ``T k h``) and the router logits (``T E``). The forward's peak is the larger block; the
    dummy sampler run keeps the logits of ``min(max_num_seqs, T)`` rows in the model dtype and
    :data:`_SAMPLER_FP32_COPIES` fp32 copies. The peak is the larger of the two.
    """
    b = _BYTES[dtype]
    cfg = config.get("text_config") or config
    h = _req(cfg, "hidden_size", "n_embd", "d_model")
    heads = _heads(cfg)
    d = cfg.get("head_dim") or h // heads
    kv = _first_int(cfg, "num_key_value_heads") or heads
    if cfg.get("kv_lora_rank"):  # MLA: decompressed per-head q/k and values in the prefill
        q_dim = heads * (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"])
        qkv = tokens * (2 * q_dim + heads * cfg["v_head_dim"]) // tp
        attn_out = tokens * heads * cfg["v_head_dim"] // tp
    else:
        kv_tp = max(1, kv // tp) * d
        qkv = tokens * (heads * d // tp + 2 * kv_tp)
        attn_out = tokens * heads * d // tp
    base = 3 * tokens * h  # residual, the layer's input, the block's output
    attention = base + qkv + attn_out
    experts = _first_int(cfg, "num_local_experts", "n_routed_experts", "num_experts")
    if experts:
        k = _req(cfg, "num_experts_per_tok")
        inter = _req(cfg, "moe_intermediate_size", "intermediate_size")
        mlp = base + tokens * k * (3 * inter // tp + h) + tokens * experts
        mlp_note = f"fused MoE caches, top-{k} of {experts} experts"
    else:
        inter = (
            _req(cfg, "intermediate_size", "n_inner", "ffn_dim")
            if not cfg.get("n_embd")
            else (cfg.get("n_inner") or 4 * h)
        )
        mlp = base + 3 * tokens * inter // tp
        mlp_note = "gate_up, activation, down_proj output"
    vocab = _req(cfg, "vocab_size")
    rows = min(max_num_seqs, tokens)
    sampler = rows * vocab * (b + 4 * _SAMPLER_FP32_COPIES)
    forward = max(attention, mlp) * b
    terms = [
        Term(
            f"forward, attention block ({tokens:,} tokens)", attention * b, "qkv, attention output"
        ),
        Term(f"forward, MLP block ({tokens:,} tokens)", mlp * b, mlp_note),
        Term(f"sampler ({rows} rows x {vocab:,} vocabulary)", sampler, "logits + 3 fp32 copies"),
    ]
    return terms, max(forward, sampler)


def _blocks(cache: KVCache, block_size: int, batched: int) -> tuple[int, int, int, int, Any]:
    """(layers, groups, layers per group, page bytes per layer, blocks of one request of a
    given length) of vLLM's KV cache config."""
    layers = cache.self_layers
    page = cache.layer_bytes(layers[0], block_size)
    if any(cache.layer_bytes(la, block_size) != page for la in layers):
        raise ConfigError("layers with different page sizes are not modelled")
    by_kind: dict[str, int] = {}
    for la in layers:
        by_kind[la.kind] = by_kind.get(la.kind, 0) + 1
    window = next((la.window for la in layers if la.kind == "sliding"), None)
    if len(by_kind) == 1:
        group_size, groups = len(layers), {next(iter(by_kind)): 1}
    else:  # max(counts) when below 1.5 x min(counts), else min(counts); the last padded
        group_size = min(by_kind.values())
        if max(by_kind.values()) < 1.5 * group_size:
            group_size = max(by_kind.values())
        groups = {k: -(-n // group_size) for k, n in by_kind.items()}

    def per_request(length: int) -> int:
        total = 0
        for kind, n in groups.items():
            if kind == "sliding" and window is not None:
                blocks = -(-min(window - 1 + batched, length) // block_size) + 1
            else:
                blocks = -(-length // block_size)
            total += n * blocks
        return total

    return len(layers), sum(groups.values()), group_size, page, per_request


def _largest(num_blocks: int, per_request: Any, positions: int) -> int:
    """The longest request whose blocks fit in the pool (``estimate_max_model_len``'s
    binary search), at most the model's positions."""
    lo, hi = 0, positions
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if per_request(mid) <= num_blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _min_tp(target: int, config: Mapping[str, Any], common: dict[str, Any]) -> int | None:
    """The smallest power-of-two tp (up to 64) whose plan serves ``target`` requests at once,
    of ``avg_len`` tokens if given, else of ``max_model_len``."""
    heads = _heads(config)
    for tp in (2**i for i in range(7)):
        if heads % tp:
            continue
        try:
            plan = _plan(tp=tp, **common)
        except (ConfigError, WorkloadError):  # heads or a dimension that do not split
            continue
        reached = plan.concurrency_avg if plan.concurrency_avg is not None else plan.concurrency
        if plan.startup_ok and reached >= target:
            return tp
    return None


# -- the model's config -----------------------------------------------------------------------


def _config(model: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(model, Mapping):
        return str(model.get("_name_or_path", "config")), dict(model)
    path = Path(model)
    if path.suffix == ".json":
        try:
            return path.stem, json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {model}: {exc}") from None
    from memlens.sources import bundled, registry

    name = registry._canonical(bundled, model)
    if name is None:
        raise ConfigError(
            f"{model!r}: serve-plan needs a config (a bundled LLM name, see `memlens models`, "
            "or a config.json path)"
        )
    return name, bundled.config(name)


def _header(path: str, quantize: str) -> Any:
    """A safetensors checkpoint's header summary (the weights are the header's)."""
    from memlens.sources.checkpoint import summarize
    from memlens.sources.weights import WeightsSummary

    if quantize != "auto":
        raise WorkloadError("quantize", quantize, "the checkpoint's header gives the scheme")
    summary = summarize(path)
    if not isinstance(summary, WeightsSummary) or summary.format != "safetensors":
        raise ConfigError(f"{path}: serve-plan reads safetensors checkpoints")
    return summary


def _tensors(name: str, config: Mapping[str, Any]) -> tuple[list[Any], str]:
    """The model's unique parameters with roles: in closed form for the families
    :mod:`memlens.analytic.transformer` covers, else from a fake build."""
    from memlens._size import ParamTensor
    from memlens.analytic.transformer import GPT2_TYPES, LLAMA_TYPES, TransformerShape

    if config.get("model_type") in LLAMA_TYPES + GPT2_TYPES:
        shape = TransformerShape.from_config(dict(config), name)
        out = []
        for tname, dims, _ in shape.embedding_tensors():
            out.append(ParamTensor(tname, dims, "embeddings"))
        for i in range(shape.layers):
            for tname, dims, _ in shape.layer_tensors():
                if shape.family == "gpt2" and len(dims) == 2:
                    dims = dims[::-1]  # Conv1D is [in, out]; vLLM's linears are [out, in]
                out.append(ParamTensor(f"layers.{i}.{tname}", dims, _role(tname)))
        head = shape.head_tensors()
        for tname, dims, _ in head[:-1] if shape.tied else head:
            out.append(ParamTensor(tname, dims, _role(tname)))
        return out, "closed form from the config"
    from memlens._size import _model_tensors
    from memlens.sources.huggingface import spec_from_config

    spec = spec_from_config(dict(config), name=name, source="config", where=name)
    return _model_tensors(spec)[0], "fake build"


def _role(name: str) -> str:
    if "norm" in name or name.startswith("ln_"):
        return "norms"
    if name.startswith("lm_head"):
        return "head"
    return "biases" if name.endswith(".bias") else "weights"


def _dtype(config: Mapping[str, Any], arch: str) -> tuple[str, str]:
    """vLLM's ``dtype="auto"`` (``vllm/config/model.py`` ``_get_and_verify_dtype``): the
    config's ``torch_dtype``; a float32 checkpoint (or none named, read as float32) is served
    in half precision: float16 before vLLM 0.10.1, since then the platform's first supported
    dtype, bf16 on sm80 and later (fp16 before); with the reason."""
    found = config_dtype(config) or config_dtype(config.get("text_config") or {})
    if found not in (None, "fp32"):
        return found, f"{found} from the config's torch_dtype"
    sm = int(arch[2:]) if arch.startswith("sm") and arch[2:].isdigit() else 0
    half = "bf16" if sm >= 80 else "fp16"
    what = "an fp32 checkpoint" if found else "no torch_dtype in the config (read as fp32)"
    return half, f"{what}: served in {half} (vLLM >= 0.10.1 dtype=auto; fp16 before)"


def _positions(config: Mapping[str, Any]) -> int:
    cfg = config.get("text_config") or config
    return _req(cfg, "max_position_embeddings", "n_positions", "max_target_positions")


def _heads(config: Mapping[str, Any]) -> int:
    cfg = config.get("text_config") or config
    return _req(cfg, "num_attention_heads", "n_head", "decoder_attention_heads", "num_heads")


def _first_int(cfg: Mapping[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _req(cfg: Mapping[str, Any], *keys: str) -> int:
    v = _first_int(cfg, *keys)
    if v is None:
        raise ConfigError(f"config has no {' / '.join(keys)}")
    return v


def _check(**values: int | None) -> None:
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise WorkloadError(name, v, "must be a positive integer")
