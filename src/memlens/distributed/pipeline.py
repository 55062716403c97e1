"""Pipeline parallelism traced stage by stage: the model cut into ``pp`` stages as
``torch.distributed.pipelining`` runs them, and each stage's step run with its schedule's
micro-batches in flight.

- **Stages**: the repeated blocks split evenly (the first stages take the remainder, as
  torchtitan's ``pipeline_module_split`` does); the first stage keeps the embeddings, the last
  the final norm and the head; a Hugging Face decoder whose config has a
  ``base_model_pp_plan`` (``embed_tokens``, ``layers``, ``norm``) is cut there (the norm and
  head of an earlier stage become identities, so it returns its hidden states), and a later
  stage runs its blocks on ``inputs_embeds``.
- **Buffers**: a ``PipelineStage`` allocates, for every micro-batch of the step, a receive
  buffer for its input activations (stages after the first) and one for the gradient of its
  output (stages before the last), kept for the schedule's life
  (``torch/distributed/pipelining/stage.py``: ``_prepare_forward_infra`` /
  ``_create_act_recv_info`` and ``_setup_backward_recv_info`` / ``_create_grad_recv_info``,
  one ``_RecvInfo`` buffer per chunk); they are filled by ``recv`` (the ``collectives``
  category).
- **In flight** (``schedules.py``): GPipe runs every micro-batch's forward before any backward
  (``M`` activations alive); 1F1B's warm-up runs ``pp - stage - 1`` forwards before its first
  backward, so a stage holds at most ``min(pp - stage, M)``. Forward of that many micro-batches
  then their backwards reaches the same peak; the other micro-batches add no memory (their
  gradients accumulate in place). Interleaved 1F1B is refused (its virtual stages are not cut
  here).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from memlens._errors import WorkloadError
from memlens.workload import Layout


def in_flight(layout: Layout, stage: int) -> int:
    """Micro-batches whose activations a stage holds at its peak under the schedule."""
    if layout.pp_schedule == "gpipe":
        return layout.microbatches
    if layout.pp_schedule == "1f1b":
        return min(layout.pp - stage, layout.microbatches)
    raise WorkloadError(
        "pp_schedule", layout.pp_schedule, "interleaved stages are not traced (gpipe, 1f1b)"
    )


def stage_blocks(blocks: int, pp: int, stage: int) -> range:
    """The blocks of ``stage``: an even split, the first stages taking the remainder."""
    if blocks < pp:
        raise WorkloadError("pp", pp, f"more stages than the model's {blocks} blocks")
    base, extra = divmod(blocks, pp)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (stage < extra))


def cut(model: nn.Module, pp: int, stage: int) -> None:
    """Keep only ``stage``'s part of a Hugging Face decoder, in place."""
    config = getattr(model, "config", None)
    plan = getattr(config, "base_model_pp_plan", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not plan or base is None or not hasattr(model, "lm_head"):
        raise WorkloadError(
            "pp",
            pp,
            "pipeline stages are cut from a Hugging Face decoder with a base_model_pp_plan "
            "(Llama, Mistral, Qwen2...); this model has none",
        )
    names = list(plan)  # embed_tokens, layers, norm
    layers = getattr(base, names[1])
    keep = stage_blocks(len(layers), pp, stage)
    setattr(base, names[1], nn.ModuleList(layers[i] for i in keep))
    if stage > 0:
        setattr(base, names[0], None)
    if stage < pp - 1:  # the stage's output is its last block's hidden states
        setattr(base, names[-1], nn.Identity())
        model.lm_head = nn.Identity()


class StageStep:
    """One stage's step under its schedule: receive, forward and send each micro-batch in
    flight, then receive each output gradient and run its backward, then the optimizer."""

    def __init__(self, layout: Layout, stage: int, rank: int, autocast: Callable[[], Any]):
        self.layout, self.stage, self.rank = layout, stage, rank
        self.autocast = autocast
        self.group = layout.world_size // layout.pp  # ranks per stage: the pp peer is this far
        self.act_buffers: list[torch.Tensor] = []
        self.grad_buffers: list[torch.Tensor] = []

    def _buffers(self, shape: torch.Size, dtype: torch.dtype) -> None:
        """The stage's receive buffers, one per micro-batch, made once (stage.py)."""
        if self.act_buffers or self.grad_buffers:
            return
        m = self.layout.microbatches
        if self.stage > 0:
            self.act_buffers = [torch.empty(shape, dtype=dtype) for _ in range(m)]
        if self.stage < self.layout.pp - 1:
            self.grad_buffers = [torch.empty(shape, dtype=dtype) for _ in range(m)]
        # a step receives into every one of them (all M micro-batches pass); the trace runs
        # only those in flight, so each buffer is received into once here
        for buffer in self.act_buffers:
            dist.recv(buffer, src=self.rank - self.group)
        for buffer in self.grad_buffers:
            dist.recv(buffer, src=self.rank + self.group)

    def __call__(self, model: nn.Module, batch: Any, optimizer: Any) -> None:
        if optimizer is None:
            raise WorkloadError("pp", self.layout.pp, "pipeline stages are traced for training")
        ids = batch["input_ids"]
        first, last = self.stage == 0, self.stage == self.layout.pp - 1
        hidden = model.config.hidden_size
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        self._buffers(torch.Size((*ids.shape, hidden)), dtype)
        k = in_flight(self.layout, self.stage)
        flight = []
        for mb in range(k):
            with self.autocast(), warnings.catch_warnings():
                # an earlier stage returns its hidden states through identities: a view
                warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
                # the whole (cut) model is called, so that FSDP's root hooks run
                if first:
                    x = None
                    out = model(input_ids=ids).logits
                else:
                    dist.recv(self.act_buffers[mb], src=self.rank - self.group)
                    x = self.act_buffers[mb].detach().requires_grad_()
                    out = model(inputs_embeds=x).logits
                if last:
                    out = F.cross_entropy(
                        out[:, :-1].reshape(-1, out.shape[-1]).float(), ids[:, 1:].reshape(-1)
                    )
            if not last:
                dist.send(out.detach(), dst=self.rank + self.group)
            flight.append((x, out))
        for mb, (x, out) in enumerate(flight):
            if last:
                torch.autograd.backward(out)
            else:
                dist.recv(self.grad_buffers[mb], src=self.rank + self.group)
                torch.autograd.backward(out, self.grad_buffers[mb])
            if x is not None:
                dist.send(x.grad, dst=self.rank - self.group)
            flight[mb] = (None, None)
            del x, out
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
