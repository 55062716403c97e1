"""Per-GPU memory of transformer training under any DP x TP x PP x CP x ZeRO layout, in
closed form: instant for thousands of GPUs.

For each pipeline stage (the ranks of a stage hold the same budget) the model states come
from the stage's parameters (:mod:`memlens.analytic.transformer`: layers split evenly, the
first stages taking the remainder; the embedding on the first stage, the final norm and head
on the last; a tied head is a second copy on the last stage when pp > 1, as Megatron's
``shared_embedding`` keeps it), split by tensor parallelism (norms replicated) and sharded
over the data-parallel ranks as the strategy does it:

- plain DDP (``torch/csrc/distributed/c10d/reducer.cpp``, ``Reducer::initialize_buckets``):
  each bucket's flat gradient buffer holds a copy of its parameters' gradients, so the
  buckets add one gradient copy unless ``gradient_as_bucket_view``;
- FSDP2 (``torch/distributed/fsdp/_fully_shard``): parameters, gradients and optimizer state
  sharded (``full``; ``grad-op`` keeps every block's unsharded parameters from forward to its
  backward, ``reshard_after_forward=False``), one fully sharded group per repeated block and
  the root group for the rest, which FSDP2 does not reshard after forward
  (``_fsdp_state.py``, ``_lazy_init``); the all-gather output of the block being computed,
  and in backward the block's unsharded gradients plus the reduce-scatter input
  (``_fsdp_collectives.py``, ``foreach_reduce``);
- DeepSpeed ZeRO 1/2/3 with its buckets and offload
  (:func:`memlens.analytic.zero.deepspeed_states`).

Activations per micro-batch come from :mod:`memlens.analytic.activations` (the Llama code's
saved tensors for Llama-family configs, Korthikanti et al. for GPT), with the local sequence
``seq / cp``; a stage holds the activations of the micro-batches in flight: GPipe all ``M``,
1F1B ``min(pp - stage, M)`` (``torch.distributed.pipelining.Schedule1F1B``: stage ``i`` runs
``pp - i`` warm-up forwards), interleaved 1F1B Megatron's
``1 + (pp - 1) / (pp v)`` times ``pp`` (``theoretical_memory_usage.py``).

The peak is the largest of three moments of the steady-state step, each an exact sum:
backward's start (all saved activations, the loss's gradient temporaries), backward's end
(all gradients, the reduction buffers) and the optimizer step (its temporaries: the foreach
Adam's ``_foreach_sqrt`` output, one tensor per stepped parameter). Gradients exist
through forward when they accumulate (pipeline micro-batches, ``grad_accum``) or are zeroed
instead of freed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from memlens._errors import ConfigError
from memlens.analytic import activations as act
from memlens.analytic.transformer import TransformerShape
from memlens.analytic.zero import deepspeed_states
from memlens.devices import Device, FitsDevice
from memlens.optimizer_table import OPTIMIZERS
from memlens.workload import Layout, Workload

#: Virtual stages per rank assumed for the interleaved schedule (not a workload option yet).
VIRTUAL_STAGES = 2
#: The first projections of a layer, whose gradients come last in its backward.
_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
#: ... and, while its MLP's backward runs, the rest but the down projection.
_MLP_EARLY = ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "input_layernorm", "post_")
CATEGORIES = (
    "parameters",
    "buffers",
    "inputs",
    "activations",
    "gradients",
    "optimizer_state",
    "temporaries",
    "collectives",
    "framework_overhead",
)


@dataclass
class StageBudget:
    """One pipeline stage's ranks (all alike): their peak and what it is made of."""

    stage: int
    ranks_alike: int
    layers: int
    in_flight: int  # micro-batches whose activations the stage holds at once
    params: int  # parameters per rank (after tensor parallelism, before sharding)
    peak_bytes: int  # allocated, at the peak
    peak_phase: str
    breakdown: dict[str, int]  # at the peak; sums to peak_bytes
    host_bytes: int  # host memory per rank (offload)
    moments: dict[str, int]  # allocated bytes at each moment considered


@dataclass
class Communication:
    """Bytes each GPU sends per optimizer step, by collective, and the pipeline bubble.

    Ring algorithms: an all-reduce of ``n`` bytes over ``k`` ranks sends ``2n(k-1)/k``, an
    all-gather or reduce-scatter ``n(k-1)/k``. ``bubble`` is the share of a step a GPU idles
    in the pipeline's fill and drain, ``(pp - 1)/(v M + pp - 1)`` (Narayanan et al. 2021,
    Section 2.2: bubble time ``(pp - 1)/(v M)`` of the ideal time; ``v`` virtual stages).
    """

    data_parallel: int
    tensor_parallel: int
    pipeline: int
    context_parallel: int
    bubble: float

    @property
    def total_bytes(self) -> int:
        return self.data_parallel + self.tensor_parallel + self.pipeline + self.context_parallel


@dataclass
class LayoutEstimate(FitsDevice):
    """Per-GPU memory of one training step under a parallel layout, in closed form."""

    model: str
    method: str  # how the answer was reached, said in every output
    workload: Workload
    layout: Layout
    device: Device | None
    num_params: int
    stages: list[StageBudget]
    context_bytes: int  # CUDA context and library workspaces, outside the allocator
    nccl: list[tuple[str, int]]  # NCCL's buffers of the worst rank, outside the allocator
    communication: Communication
    unknowns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def worst(self) -> StageBudget:
        return max(self.stages, key=lambda s: (s.peak_bytes, -s.stage))

    @property
    def peak_bytes(self) -> int:
        return self.worst.peak_bytes

    @property
    def total_bytes(self) -> int:
        """What the worst GPU holds: its peak plus the context and NCCL's buffers."""
        return self.peak_bytes + self.context_bytes + sum(n for _, n in self.nccl)


@dataclass(frozen=True)
class _Bytes:
    """Element sizes of one precision policy."""

    weight: int
    grad: int
    state: int  # optimizer state element
    act: int  # activations (compute dtype)
    masters: int  # fp32 master copy per element (DeepSpeed's bit16 modes)


def _precision(w: Workload) -> _Bytes:
    if w.precision == "fp32":
        return _Bytes(4, 4, 4, 4, 0)
    if w.amp:
        return _Bytes(4, 4, 4, 2, 0)
    return _Bytes(2, 2, 2, 2, 0)


def stage_layers(layers: int, pp: int) -> list[int]:
    """Layers per stage: even, the first ``layers % pp`` stages one more."""
    if pp > layers:
        raise ConfigError(f"pp = {pp} stages for {layers} layers: at most one stage per layer")
    base, extra = divmod(layers, pp)
    return [base + (i < extra) for i in range(pp)]


def _local(tensors: list[tuple[str, tuple[int, ...], bool]], tp: int) -> list[tuple[int, ...]]:
    """Each tensor's shape on one tensor-parallel rank (split along its first dimension)."""
    return [((-(-s[0] // tp),) + s[1:]) if split and tp > 1 else s for _, s, split in tensors]


def _in_flight(layout: Layout, stage: int) -> int:
    m, p = layout.microbatches, layout.pp
    if p == 1:
        return 1
    if layout.pp_schedule == "gpipe":
        return m
    if layout.pp_schedule == "interleaved":
        return min(
            m * VIRTUAL_STAGES, math.ceil((1 + (p - 1) / (p * VIRTUAL_STAGES)) * (p - stage))
        )
    return min(p - stage, m)


def _optimizer_temporaries(
    w: Workload, target_kind: str, elements: int, largest: int, esize: int
) -> int:
    """The step's temporaries: foreach Adam's ``_foreach_sqrt`` output for every stepped
    element (``torch/optim/adam.py``, ``_multi_tensor_adam``), or one tensor's for the
    per-tensor loop; fused kernels and SGD's in-place updates allocate none."""
    impl = w.optimizer_impl
    if impl == "auto":
        impl = (
            "fused"
            if w.uses_fused_default
            else ("foreach" if target_kind == "cuda" else "for-loop")
        )
    if impl == "fused" or w.optimizer in ("sgd", "sgd-momentum"):
        return 0
    if impl == "foreach":
        return elements * esize
    return largest * esize


def estimate_layout(
    shape: TransformerShape,
    w: Workload,
    *,
    device: Device | None = None,
    target_kind: str = "cuda",
    context_bytes: int = 0,
    workspace_bytes: int = 0,
    method: str = "closed form (--analytic)",
) -> LayoutEstimate:
    """The per-GPU budget of ``w``'s training step of ``shape`` (see the module docstring).

    ``workspace_bytes``: library workspaces allocated through the allocator (the cuBLAS
    workspace of the forward and of autograd's backward thread on CUDA, as the trace has
    them); ``context_bytes``: memory outside it (the CUDA context)."""
    t0 = time.perf_counter()
    if not w.training:
        raise ConfigError("the analytic layout model covers training steps (use --train)")
    if w.seq_len is None:
        raise ConfigError("the analytic model needs --seq-len")
    lay = w.layout
    if w.seq_len % lay.cp:
        raise ConfigError(f"seq_len {w.seq_len} is not divisible by cp = {lay.cp}")
    for name, n in (("heads", shape.heads), ("key/value heads", shape.kv_heads)):
        if n % lay.tp:
            raise ConfigError(f"tp = {lay.tp} does not divide the {n} {name} of {shape.name}")
    sizes = _precision(w)
    # FSDP2 under AMP: a MixedPrecisionPolicy (param_dtype half, reduce_dtype fp32, as
    # torchtitan and the traced path set it) gathers half-precision parameters, so the step
    # computes in half precision throughout, without autocast's casts
    autocast = w.amp and w.fsdp == "none"
    gathered = sizes.act if w.amp else sizes.weight  # bytes of a gathered parameter
    row = OPTIMIZERS[w.optimizer]
    unknowns: list[str] = []
    recipe = "hf-llama" if shape.family == "llama" else "korthikanti"
    # Megatron splits the vocabulary (VocabParallelEmbedding, a vocabulary-parallel loss);
    # transformers' tensor-parallel plan for Llama (``base_model_tp_plan``), which the traced
    # path applies, leaves the embedding and head whole and computes the loss on every rank
    vocab_parallel = recipe == "korthikanti"
    seq, b = w.seq_len // lay.cp, w.batch
    sp = w.sequence_parallel
    attention = "eager" if w.attention == "eager" else "flash"
    # checkpointed blocks run without the cache (transformers' GradientCheckpointingLayer;
    # memlens's checkpointing strategy likewise)
    cached = (shape.use_cache if w.use_cache is None else w.use_cache) and w.checkpoint != "blocks"
    if recipe == "hf-llama" and cached:
        unknowns.append(
            "use_cache on: the key/value cache a forward returns (past_key_values) is not "
            "in the closed form (transformers' cache classes copy or alias the keys and "
            "values by version); the traced estimate has it, or pass use_cache=False"
        )
    if recipe == "hf-llama" and lay.pp > 1 and not w.preset.release_output:
        unknowns.append(
            "pipeline stages: the previous step's output held by the loop is not modelled "
            "across a pipeline schedule"
        )
    if recipe == "hf-llama":
        terms = act.hf_llama_terms(shape, seq, b, sizes.act, attention, autocast)
        if attention == "flash" and shape.kv_heads != shape.heads:
            unknowns.append(
                "GQA under SDPA: keys and values not repeated (enable_gqa, torch >= 2.5, no "
                "padding mask: transformers' use_gqa_in_sdpa)"
            )
    else:
        terms = act.korthikanti_terms(shape, seq, b, sizes.act)
        unknowns.append(
            f"{shape.name}: activations from Korthikanti et al. 2022 Section 4.1 (Megatron's "
            "GPT layer: dropout masks, no flash attention), not traced from this model's code"
        )
    if autocast:
        linear = [s for _, s, split in shape.layer_tensors() if len(s) == 2]
        cast = sum(math.prod(s) for s in _local([("", s, True) for s in linear], lay.tp))
        terms.append(
            act.Term("autocast weight copies (saved for backward)", 2 * cast * lay.tp, "tp")
        )
    checkpoint = w.checkpoint
    if checkpoint not in ("none", "blocks", "selective"):
        raise ConfigError(
            f"checkpoint {checkpoint!r}: the analytic model covers none, blocks (full "
            "recompute) and selective"
        )
    per_layer_full = sum(t.share(lay.tp, sp) for t in terms)
    if checkpoint == "selective":
        per_layer = sum(t.share(lay.tp, sp) for t in terms if t.split != "core")
    elif checkpoint == "blocks":
        per_layer = act.Term(
            "layer input", act.layer_input_bytes(shape, seq, b, sizes.act), "sp"
        ).share(lay.tp, sp)
    else:
        per_layer = per_layer_full
    recompute_peak = per_layer_full if checkpoint == "blocks" else 0
    ckpt_args = 0
    # (moment, the layer's saved bytes still alive, transient bytes, parameters whose
    # gradients are not yet made) inside the backward of a stage's first layer
    inside: list[tuple[str, int, int, tuple[str, ...]]] = []
    if recipe == "hf-llama":
        for where, (left, transient) in act.hf_llama_layer_backward(
            shape, seq, b, sizes.act, attention, autocast
        ).items():
            inside.append(
                (
                    where,
                    sum(t.share(lay.tp, sp) for t in left),
                    sum(t.share(lay.tp, sp) for t in transient),
                    _QKV + (() if where == "attention" else _MLP_EARLY),
                )
            )
        if checkpoint == "blocks":  # the checkpointed layers' other arguments, saved once
            ckpt_args = 8 * seq  # position ids
            if attention == "eager":  # the causal mask eager attention is given
                ckpt_args += sizes.act * b * seq * seq

    layers = stage_layers(shape.layers, lay.pp)
    shard_n, stage_kind = _sharding(w, lay)
    ds = w.deepspeed
    stages = []
    dp_bytes = 0
    for i, n_layers in enumerate(layers):
        first, last = i == 0, i == lay.pp - 1
        tensors = shape.layer_tensors() * n_layers
        if first:
            tensors = tensors + _vocab(shape.embedding_tensors(), vocab_parallel)
        if last:
            head = _vocab(shape.head_tensors(), vocab_parallel)
            if shape.tied and lay.pp == 1:
                head = head[:-1]
            tensors = tensors + head
        local = _local(tensors, lay.tp)
        params = sum(math.prod(s) for s in local)
        largest = max(math.prod(s) for s in local)
        opt_full = sum(
            row.state_bytes(s, sizes.state) - (4 if row.step_counter else 0) for s in local
        )
        layer_local = sum(math.prod(s) for s in _local(shape.layer_tensors(), lay.tp))
        block = max(layer_local, largest)
        inflight = _in_flight(lay, i)
        device_cats = dict.fromkeys(CATEGORIES, 0)
        host = 0
        accumulate = lay.pp > 1 or w.grad_accum > 1 or w.preset.zero_grad == "zeros"
        extra_fwd = extra_bwd = 0  # collective buffers at backward's start / in backward
        root_unsharded = 0  # FSDP's root group, gathered from forward to backward's end
        held_fwd = 0  # grad-op: the other blocks, gathered from their forward to their backward
        if ds is not None:
            bit16 = w.precision != "fp32"
            states = deepspeed_states(
                params,
                largest,
                shard_n,
                ds,
                bit16=bit16,
                optimizer_bytes=row.state_bytes((1,), 4) - (4 if row.step_counter else 0),
                live_params=min(
                    ds.stage3_max_live_parameters, block + ds.stage3_prefetch_bucket_size
                ),
                persistent_params=sum(
                    n
                    for n in (math.prod(x) for x in local)
                    if n < ds.stage3_param_persistence_threshold
                )
                if ds.stage == 3
                else 0,
            )
            for k, v in states.device.items():
                device_cats[k] += v
            host = states.host_bytes
            grads_resident = True  # DeepSpeed's gradient buffers are allocated for the run
            grad_bytes = 0
            step_temp = 0  # DeepSpeed's FusedAdam / DeepSpeedCPUAdam: no temporaries
        else:
            weights = sizes.weight * params
            grads = sizes.grad * params
            opt = opt_full
            if stage_kind >= 1:
                opt = -(-opt // shard_n)
            if stage_kind >= 2:
                grads = -(-grads // shard_n)
            if stage_kind >= 3 or w.fsdp != "none":  # FSDP shards parameters in every mode
                weights = -(-weights // shard_n)
            device_cats["parameters"] = weights
            device_cats["optimizer_state"] = opt
            grad_bytes = grads
            grads_resident = accumulate
            if lay.ddp and not w.gradient_as_bucket_view:
                device_cats["collectives"] += sizes.grad * params  # reducer bucket buffers
            if w.fsdp != "none":
                # the root group (embedding, final norm, head) is not resharded after forward
                root_unsharded = gathered * (params - n_layers * layer_local)
                # a block's unsharded gradients and the reduce-scatter input (reduce dtype)
                extra_bwd += layer_local * (gathered + sizes.grad)
            if w.fsdp in ("full", "hybrid"):  # one block gathered, the next prefetched
                extra_fwd += gathered * layer_local
                extra_bwd += gathered * layer_local
            elif w.fsdp == "grad-op":  # every block stays unsharded until its backward
                held_fwd = gathered * (n_layers - 1) * layer_local
                root_unsharded += gathered * layer_local
            if w.offload_optimizer:  # memlens.strategies.offload: fp32 masters, grads, state
                host += opt_full * 4 // sizes.state + 4 * params + 4 * params
                device_cats["optimizer_state"] = 0
                step_temp = 0
            stepped = params if stage_kind < 1 else -(-params // shard_n)
            if not w.offload_optimizer:
                step_temp = _optimizer_temporaries(w, target_kind, stepped, largest, sizes.state)
        if grads_resident:
            device_cats["gradients"] += grad_bytes
        mb_acts = n_layers * per_layer  # one micro-batch's saved tensors on this stage
        inputs = 0
        if first:
            if recipe == "korthikanti":
                mb_acts += sum(
                    t.share(lay.tp, sp) for t in act.korthikanti_embedding(shape, seq, b)
                )
            else:
                inputs += inflight * 8 * seq * b  # input ids (int64; the labels when pp = 1)
        moments: dict[str, dict[str, int]] = {}
        head_acts = loss_temp = kept = carried = loss_fwd = 0
        if last:
            head_terms = (
                act.hf_llama_head(shape, seq, b, sizes.act, not w.preset.release_output, autocast)
                if recipe == "hf-llama"
                else act.korthikanti_head(shape, seq, b)
            )
            head_acts = sum(_share(t, lay.tp, sp, vocab_parallel) for t in head_terms)
            loss_temp = act.loss_backward_temporaries(shape, seq, b)
            loss_temp = -(-loss_temp // lay.tp) if vocab_parallel else loss_temp
            if recipe == "hf-llama" and lay.pp > 1:
                inputs += 8 * seq * b  # labels
            if recipe == "hf-llama" and not w.preset.release_output:
                kept = _share(act.logits_term(shape, seq, b, sizes.act), lay.tp, sp, False)
            if recipe == "hf-llama" and lay.pp == 1 and kept:
                # the previous step's logits, alive until this forward returns; the loss
                # inside it (labels given) upcasts the logits (``logits.float()``) and, under
                # autocast, the final norm's fp32 output is alive until the model returns
                carried = kept
                loss_fwd = 4 * seq * b * shape.vocab if sizes.act != 4 else 0
                loss_fwd += 4 * seq * b * shape.hidden if autocast else 0
        if recipe == "hf-llama":
            device_cats["buffers"] = 4 * (shape.head_dim // 2)  # rotary inv_freq (fp32)
            rotary = act.hf_llama_rotary(shape, seq, 4 if autocast else sizes.act)
            mb_acts += rotary.share(lay.tp, sp) + ckpt_args
        device_cats["framework_overhead"] = workspace_bytes
        base = dict(device_cats)
        base["inputs"] = inputs
        all_grads = base["gradients"] + (0 if grads_resident else grad_bytes)
        if carried:  # the loss inside the model's forward (labels given)
            loss_at = dict(
                base, activations=inflight * mb_acts + head_acts + carried, temporaries=loss_fwd
            )
            loss_at["collectives"] += extra_fwd
            loss_at["parameters"] += root_unsharded + held_fwd
            moments["forward (loss)"] = loss_at
        start = dict(base, activations=inflight * mb_acts + head_acts, temporaries=loss_temp)
        start["collectives"] += extra_fwd
        start["parameters"] += root_unsharded + held_fwd
        moments["backward"] = start
        for where, left, transient, early_names in inside:
            # inside the backward of the stage's first layer (the last one backward reaches)
            later = all_grads
            if not grads_resident:
                early = [t for t in shape.layer_tensors() if t[0].startswith(early_names)]
                if first:
                    early += _vocab(shape.embedding_tensors(), vocab_parallel)
                done = sizes.grad * sum(math.prod(x) for x in _local(early, lay.tp))
                later = all_grads - (done if stage_kind < 2 else -(-done // shard_n))
            layer = dict(base, gradients=later)
            rest = (inflight - 1) * mb_acts + kept + rotary.share(lay.tp, sp)
            if checkpoint == "blocks":
                layer["activations"] = rest + per_layer + ckpt_args
                layer["temporaries"] = left + transient
            else:
                layer["activations"] = rest + left
                layer["temporaries"] = transient
            layer["collectives"] += extra_bwd
            layer["parameters"] += root_unsharded
            moments[f"backward ({where})"] = layer
        if not inside:
            end = dict(base, gradients=all_grads, temporaries=recompute_peak)
            end["collectives"] += extra_bwd
            end["parameters"] += root_unsharded
            moments["backward (end)"] = end
        moments["optimizer"] = dict(
            base, gradients=all_grads, temporaries=step_temp, activations=kept
        )
        phase, peak = max(moments.items(), key=lambda kv: sum(kv[1].values()))
        stages.append(
            StageBudget(
                stage=i,
                ranks_alike=lay.world_size // lay.pp,
                layers=n_layers,
                in_flight=inflight,
                params=params,
                peak_bytes=sum(peak.values()),
                peak_phase=phase,
                breakdown={k: v for k, v in peak.items() if v},
                host_bytes=host,
                moments={k: sum(v.values()) for k, v in moments.items()},
            )
        )
        dp_bytes = max(dp_bytes, _dp_traffic(w, lay, stage_kind, shard_n, params, sizes))
    if lay.pp_schedule == "interleaved" and lay.pp > 1:
        unknowns.append(f"interleaved 1F1B: {VIRTUAL_STAGES} virtual stages per rank assumed")
    if lay.cp > 1:
        unknowns.append(
            "context parallelism: activations of seq/cp tokens per rank; the ring's key/value "
            "chunks in flight are not counted"
        )
    return LayoutEstimate(
        model=shape.name,
        method=method,
        workload=w,
        layout=lay,
        device=device,
        num_params=shape.num_params,
        stages=stages,
        context_bytes=context_bytes,
        nccl=[],
        communication=_communication(shape, w, lay, layers, sizes, seq, b, dp_bytes),
        unknowns=unknowns,
        seconds=time.perf_counter() - t0,
    )


def _vocab(
    tensors: list[tuple[str, tuple[int, ...], bool]], split: bool
) -> list[tuple[str, tuple[int, ...], bool]]:
    """The embedding or head tensors, whole on every tensor-parallel rank unless ``split``."""
    return tensors if split else [(n, s, False) for n, s, _ in tensors]


def _share(term: act.Term, tp: int, sp: bool, vocab_parallel: bool) -> int:
    """A head term's bytes per rank: vocabulary-wide terms split only when the vocabulary is."""
    if term.split == "tp" and not vocab_parallel:
        return term.nbytes
    return term.share(tp, sp)


def _sharding(w: Workload, lay: Layout) -> tuple[int, int]:
    """(ranks the model states are sharded over, ZeRO stage equivalent)."""
    if w.deepspeed is not None:
        return lay.dp, w.deepspeed.stage
    if w.fsdp in ("full", "hybrid"):
        return lay.shard, 3
    if w.fsdp == "grad-op":
        return lay.shard, 2
    return 1, 0


def _dp_traffic(w: Workload, lay: Layout, stage: int, n: int, params: int, sizes: _Bytes) -> int:
    """Bytes one rank sends per step for its data-parallel group (ring collectives)."""
    grads, weights = sizes.grad * params, sizes.act * params
    if lay.dp == 1:
        return 0
    if stage == 0:
        return 2 * grads * (lay.dp - 1) // lay.dp
    out = grads * (n - 1) // n  # reduce-scatter of the gradients
    gathers = 2 if stage == 3 else 1  # ZeRO-3 / FSDP gathers in forward and in backward
    out += gathers * weights * (n - 1) // n
    replicas = lay.dp // n
    if replicas > 1:  # HSDP: the shards' gradients all-reduced across replicas
        out += 2 * (grads // n) * (replicas - 1) // replicas
    return out


def _communication(
    shape: TransformerShape,
    w: Workload,
    lay: Layout,
    layers: list[int],
    sizes: _Bytes,
    seq: int,
    b: int,
    dp_bytes: int,
) -> Communication:
    m = lay.microbatches if lay.pp > 1 else w.grad_accum
    hidden = sizes.act * seq * b * shape.hidden
    worst_layers = max(layers)
    tp = 0
    if lay.tp > 1:  # 2 all-reduces forward, 2 backward per layer (or their AG + RS with SP)
        tp = 4 * 2 * hidden * (lay.tp - 1) // lay.tp * worst_layers * m
    pp = 0
    if lay.pp > 1:  # activations forward, their gradients backward, per micro-batch
        boundary = hidden // lay.tp if w.sequence_parallel else hidden
        pp = 2 * boundary * m
    cp = 0
    if lay.cp > 1:  # the ring passes k and v chunks forward, and their gradients backward
        kv = 2 * sizes.act * seq * b * shape.kv_width // lay.tp
        cp = 3 * kv * (lay.cp - 1) * worst_layers * m
    v = VIRTUAL_STAGES if lay.pp_schedule == "interleaved" else 1
    bubble = (lay.pp - 1) / (v * lay.microbatches + lay.pp - 1) if lay.pp > 1 else 0.0
    return Communication(dp_bytes, tp, pp, cp, bubble)
