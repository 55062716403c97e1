"""A parallel layout applied to a model with PyTorch's own APIs, identically to the fake model
of a trace and to the real model of a measurement.

- **Tensor parallel**: ``torch.distributed.tensor.parallel.parallelize_module`` on the ``tp``
  mesh dimension, with a plan per family: a Hugging Face model's own ``base_model_tp_plan``
  (Llama, Mistral, Qwen2, Gemma...: ``"colwise"``/``"rowwise"`` map to
  :class:`ColwiseParallel`/:class:`RowwiseParallel`, as ``transformers/integrations/
  tensor_parallel.py`` does), and BERT's attention and MLP projections (Megatron's split:
  query/key/value and the intermediate dense colwise, the two output denses rowwise), with
  the heads per rank set as torchtitan's ``parallelize_llama`` does. Embeddings and the head
  stay replicated. GPT-2's fused ``c_attn`` (a ``Conv1D`` split into q, k, v by width) cannot
  be split by these plans and is refused.
- **FSDP2** (``fully_shard``): each repeated block, then the root, on the ``dp_shard`` (and,
  for HSDP, ``dp_replicate``) mesh dimensions; ``grad-op`` passes
  ``reshard_after_forward=False``; AMP precisions become a :class:`MixedPrecisionPolicy`
  (parameters gathered in the half type, gradients reduced in fp32), as torchtitan does.
- **DDP**: :class:`torch.nn.parallel.DistributedDataParallel` cannot run on fake tensors (its
  constructor reads parameter data to verify shapes across ranks), so its reducer is
  modelled: :class:`ReducerBuckets`.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from memlens._errors import WorkloadError
from memlens.workload import Layout, Workload

#: torch.nn.parallel.distributed: the first bucket is capped at 1 MiB
#: (``dist._DEFAULT_FIRST_BUCKET_BYTES``), the others at ``bucket_cap_mb``.
FIRST_BUCKET_BYTES = 1024 * 1024

#: BERT (``transformers/models/bert/modeling_bert.py``): Megatron's split of a layer.
_BERT_PLAN = {
    "*.attention.self.query": "colwise",
    "*.attention.self.key": "colwise",
    "*.attention.self.value": "colwise",
    "*.attention.output.dense": "rowwise",
    "*.intermediate.dense": "colwise",
    "*.output.dense": "rowwise",
}


def tp_plan(model: nn.Module) -> dict[str, str]:
    """Module path glob -> ``"colwise"``/``"rowwise"`` for ``model``'s family."""
    config = getattr(model, "config", None)
    plan = getattr(config, "base_model_tp_plan", None)
    model_type = getattr(config, "model_type", "")
    if model_type == "bert":
        return _BERT_PLAN
    if plan:
        prefix = getattr(model, "base_model_prefix", "")
        base = prefix if prefix and hasattr(model, prefix) else ""
        out = {}
        for pattern, style in plan.items():
            if style not in ("colwise", "rowwise"):
                raise WorkloadError(
                    "tp", None, f"{model_type}'s plan has a {style!r} layer memlens cannot split"
                )
            out[f"{base}.{pattern}" if base else pattern] = style
        return out
    what = f"{model_type or type(model).__name__}"
    if model_type == "gpt2":
        what += " (its fused c_attn Conv1D splits q, k, v by width)"
    raise WorkloadError("tp", None, f"no tensor-parallel plan for {what}")


def apply_tp(model: nn.Module, mesh: DeviceMesh) -> None:
    """Shard ``model``'s projections over ``mesh`` (1-D) with its family's plan."""
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    plan = tp_plan(model)
    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    concrete: dict[str, Any] = {}
    for name, module in model.named_modules():
        for pattern, style in plan.items():
            if fnmatch.fnmatchcase(name, pattern) and isinstance(module, nn.Linear):
                concrete[name] = styles[style]()
                break
    if not concrete:
        raise WorkloadError("tp", mesh.size(), "the model's tensor-parallel plan matched no layer")
    tp = mesh.size()
    for module in model.modules():
        _local_heads(module, tp)
    parallelize_module(model, mesh, concrete)


def _local_heads(module: nn.Module, tp: int) -> None:
    """Heads per rank on attention modules that reshape by their head count (BERT's
    ``num_attention_heads``/``all_head_size``), as torchtitan sets ``n_heads //= tp``."""
    heads = getattr(module, "num_attention_heads", None)
    if isinstance(heads, int) and hasattr(module, "all_head_size"):
        if heads % tp:
            raise WorkloadError("tp", tp, f"must divide the {heads} attention heads")
        module.num_attention_heads = heads // tp
        module.all_head_size = module.all_head_size // tp


def apply_fsdp(
    model: nn.Module, mesh: DeviceMesh, blocks: list[str], layout: Layout, workload: Workload
) -> None:
    """``fully_shard`` each block, then the root (``torch.distributed.fsdp``, FSDP2)."""
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": layout.fsdp != "grad-op"}
    if workload.amp:
        half = torch.bfloat16 if workload.precision.startswith("bf16") else torch.float16
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)
    modules = dict(model.named_modules())
    for name in blocks:
        fully_shard(modules[name], **kwargs)
    # the root keeps what no block holds (embeddings, final norm, head); FSDP2 does not
    # reshard the root after forward: backward needs it at once
    fully_shard(model, **{**kwargs, "reshard_after_forward": False})


class ReducerBuckets:
    """DDP's gradient buckets, as ``torch/csrc/distributed/c10d/reducer.cpp`` allocates them.

    ``Reducer::initialize_buckets`` gives each bucket one flat tensor of its parameters'
    gradients (``bucket.gradients = at::empty({offset}, options)``), kept for the life of
    the DDP module; ``compute_bucket_assignment_by_size`` fills buckets in reverse parameter
    order up to 1 MiB for the first and ``bucket_cap_mb`` for the others. When a gradient is
    ready (``Reducer::mark_variable_ready_dense``) it is copied into its bucket view; the
    bucket is all-reduced in place once full; ``copy_bucket_to_grad`` copies the result back
    into ``param.grad``. With ``gradient_as_bucket_view`` the gradient *becomes* the bucket
    view (the fresh gradient autograd made is dropped), so no second copy is kept.

    The buckets are created at the first backward (here, on the fake tensors inside the
    trace, so the engine sees them), as the real reducer's ``empty`` runs at construction:
    both live through every step.
    """

    def __init__(self, model: nn.Module, bucket_cap_mb: int, as_view: bool) -> None:
        params = [p for p in model.parameters() if p.requires_grad]
        self.as_view = as_view
        self.groups: list[list[nn.Parameter]] = []
        cap, size, group = FIRST_BUCKET_BYTES, 0, []
        for p in reversed(params):  # gradients become ready roughly in reverse order
            group.append(p)
            size += p.numel() * p.element_size()
            if size >= cap:
                self.groups.append(group)
                cap, size, group = bucket_cap_mb * 1024 * 1024, 0, []
        if group:
            self.groups.append(group)
        self.buckets: list[torch.Tensor | None] = [None] * len(self.groups)
        self._where = {
            id(p): (i, j) for i, group in enumerate(self.groups) for j, p in enumerate(group)
        }
        self._pending = [len(g) for g in self.groups]
        for p in params:
            p.register_post_accumulate_grad_hook(self._ready)

    def _view(self, bucket: int, index: int) -> torch.Tensor:
        group = self.groups[bucket]
        flat = self.buckets[bucket]
        if flat is None:
            numel = sum(p.numel() for p in group)
            flat = self.buckets[bucket] = torch.empty(numel, dtype=group[0].dtype)
        offset = sum(p.numel() for p in group[:index])
        p = group[index]
        return flat[offset : offset + p.numel()].view(p.shape)

    def _ready(self, p: nn.Parameter) -> None:
        import torch.distributed as dist

        bucket, index = self._where[id(p)]
        view = self._view(bucket, index)
        assert p.grad is not None
        if p.grad is not view:
            view.copy_(p.grad)
            if self.as_view:
                p.grad = view
        self._pending[bucket] -= 1
        if self._pending[bucket] == 0:
            self._pending[bucket] = len(self.groups[bucket])
            flat = self.buckets[bucket]
            assert flat is not None
            dist.all_reduce(flat)
            if not self.as_view:
                for j, q in enumerate(self.groups[bucket]):
                    if q.grad is not None:
                        q.grad.copy_(self._view(bucket, j))
