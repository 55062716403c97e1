"""Published GPU runs: memlens against memory figures others measured on real GPUs.

    python benchmarks/published.py [--only ID] [--out DIR]

Each row of ``/work/shared/reference/published-gpu.md`` (copied into :data:`ROWS` with its
source) is reproduced as faithfully as memlens can express it, on CPU fake tensors, and
compared with the published figure. Writes ``benchmarks/results/published.md`` and ``.json``.

How a row is expressed:

- ``options``: :class:`memlens.Workload` fields that memlens has long had (batch, precision,
  optimizer, checkpointing...);
- ``needs``: options the row also needs that may not exist yet (the attention kernel, the
  Trainer's loop, the CUDA stack of the run, a user step). Each is used when it exists at run
  time (a :class:`memlens.Workload` field, a keyword of :func:`memlens.estimate`, or a target
  keyword of :func:`memlens.targets.resolve_target`); otherwise the row runs without it and is
  marked ``approximate: missing <option>``, never silently;
- ``assumptions``: what the published setup leaves open, or where memlens's step differs
  from the one measured; printed with the row;
- ``metric``: which memlens figure matches what was measured: ``total`` (NVML ``used``: the
  reserved peak plus the CUDA context, :attr:`memlens.Estimate.total_bytes`), ``peak``
  (``torch.cuda.max_memory_allocated``: :attr:`memlens.Estimate.peak_bytes`), ``context``
  (the CUDA context plus the caching-allocator segment of the probe tensor), ``weights``
  (the context plus what the allocator reserves for the model's weights: the figure after
  ``model.to("cuda")``).

Rows memlens cannot express at all are listed with the reason (:data:`NOT_EXPRESSED`).
A context row whose figure is itself an entry of memlens's CUDA context table
(``memlens/data/cuda_context.json``) checks a lookup, not a prediction: it is reported but
left out of the summary. No constant is fitted to any row here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

import memlens

HERE = Path(__file__).resolve().parent
REFERENCE = "/work/shared/reference/published-gpu.md"
MiB = 2**20
COMMAND = "python benchmarks/published.py"

#: Source A: Hugging Face Transformers docs, "Efficient Training on a Single GPU" (Jan 2022).
SOURCE_A = (
    "huggingface/transformers docs/source/en/perf_train_gpu_one.mdx (January 2022): Tesla "
    "V100-SXM2 16 GB, driver 460.91.03, CUDA 11.2, PyTorch ~1.10, transformers ~4.15/4.16; NVML "
    "used after trainer.train()"
)
#: Source B: Hugging Face OPT model docs, "Using Scaled Dot Product Attention (SDPA)" (2024).
SOURCE_B = (
    "huggingface.co/docs/transformers/v4.50.0/model_doc/opt: L40S, PyTorch 2.4.0, float16 "
    "facebook/opt-350m; torch.cuda.max_memory_allocated() x 1e-6 after repeated steps"
)


@dataclass(frozen=True)
class Row:
    """One published figure and how memlens expresses its setup (see the module docstring)."""

    id: str
    group: str  # "A", "B" or "C" as in published-gpu.md
    label: str  # the setup, in the source's words
    published: float  # in ``unit``
    unit: str  # "MiB" (2^20 B) or "MB" (10^6 B)
    metric: str  # "total", "peak", "context", "weights"
    model: str | None = None
    device: str = "cuda"
    options: dict[str, Any] = field(default_factory=dict)
    needs: dict[str, Any] = field(default_factory=dict)  # option -> value
    why: dict[str, str] = field(default_factory=dict)  # option -> why the row needs it
    assumptions: tuple[str, ...] = ()
    inputs: tuple[int, int] | None = None  # (batch, seq): OPT's ids and all-ones mask
    loss: Callable[[Any], torch.Tensor] | None = None  # the step's loss of the model output
    probe_bytes: int | None = None  # the probe tensor of a context row (None: no tensor)
    share_of: str | None = None  # a row whose estimate this one reads (``weights``)
    model_code: str | None = None  # the measured run's model code, where it differs in memory

    @property
    def published_bytes(self) -> int:
        return round(self.published * (MiB if self.unit == "MiB" else 10**6))


# -- rows [A]: BERT-large, the Hugging Face Trainer, V100 16 GB, CUDA 11.2 -------------------

_A_STACK = {"cuda_version": "11.2", "eager_module_loading": True}
_A_STACK_WHY = {
    "cuda_version": "CUDA 11.2: its context size (before lazy loading, CUDA < 11.7)",
    "eager_module_loading": "CUDA 11.2 can only load modules eagerly (lazy loading came in 11.7)",
}
_A_NEEDS = {
    **_A_STACK,
    "attention": "eager",
    "loop": "hf-trainer",
    "zero_grad": "zeros",
}
_A_WHY = {
    **_A_STACK_WHY,
    "attention": "BERT in transformers 4.16 had eager attention only (scores kept for backward)",
    "loop": "the Trainer's step: loss inside the model, outputs dropped before backward, "
    "gradient clipping (max_grad_norm 1.0)",
    "zero_grad": "model.zero_grad() of torch 1.10 zeroes gradients and keeps them "
    "(set_to_none=False); they are alive through the next forward",
}
_A_BASE = {"task": "seq-cls", "seq_len": 512}
_ADAMW_HF = {"optimizer": "adamw", "optimizer_impl": "for-loop"}
_A_ASSUME = (
    "model: AutoModelForSequenceClassification of the bundled bert-large-uncased config "
    "(2 labels: 335,143,938 parameters, as published), built by the installed transformers, "
    "not 4.16's code",
    "inputs: 512 random token ids, labels of the task, no attention_mask (the Trainer's "
    "dataset has none; BERT builds an all-ones one)",
    "the compared figure is what the device holds at memlens's peak (reserved peak + CUDA "
    "context); NVML read after trainer.train() also holds every library the step loaded",
    "the CUDA context of this stack (CUDA 11.2, eager, sm70) comes from memlens's measured "
    "context table; where that entry is A0's own figure (A0 marked calibration), these rows "
    "check everything but the context",
    "the traced PyTorch is the installed one, not 1.10: e.g. its cuBLAS workspaces come "
    "from the caching allocator (PyTorch >= 2.0), 1.10's cuBLAS kept its own",
)
_A_ADAMW = (
    "optimizer: transformers.AdamW (Trainer's optim='adamw_hf' then), a per-parameter loop: "
    "torch.optim.AdamW's for-loop stands in (same state: exp_avg, exp_avg_sq; its "
    "denominator makes one more temporary of the parameter's size)",
)
_A_ADAFACTOR = (
    "optimizer: transformers' Adafactor (Trainer optim='adafactor': scale_parameter=False, "
    "relative_step=False, beta1=None): torch.optim.Adafactor's for-loop stands in (same "
    "factored second moment; transformers' per-parameter temporaries differ)",
)
_A_ADAM8 = (
    "optimizer: bnb.optim.Adam8bit passed to the Trainer: memlens's Adam8bit layout "
    "(uint8 moments, blockwise fp32 absmax per 2048, fp32 state under 4096 elements)",
)
_A_SOFTMAX = (
    "softmax as PyTorch 1.10 differentiated it: its backward was _softmax_backward_data(grad, "
    "result, dim, self), so autograd kept softmax's input (BERT's fp32 attention scores "
    "[B,H,S,S], under AMP the fp32 copy autocast made) beside its output in every layer; "
    "PyTorch 1.11 replaced `Tensor self` by `ScalarType input_dtype` (tools/autograd/"
    "derivatives.yaml, aten/src/ATen/native/native_functions.yaml); swapped in for "
    "torch.nn.functional.softmax",
)
_A_FP16 = ("fp16=True: the Trainer's native AMP (autocast + GradScaler) with fp32 weights",)
_A_CKPT = (
    "gradient_checkpointing=True: transformers 4.16 checkpoints each BertLayer with "
    "torch.utils.checkpoint (reentrant); memlens checkpoints each block",
)


def _a(rid: str, label: str, published: int, **kw: Any) -> Row:
    assume: tuple[str, ...] = kw.pop("assume")
    opts = {**_A_BASE, **kw}
    return Row(
        id=rid,
        group="A",
        label=label,
        published=published,
        unit="MiB",
        metric="total",
        model="bert-large-uncased",
        device="v100-16gb",
        options=opts,
        needs=dict(_A_NEEDS),
        why=dict(_A_WHY),
        model_code="pt1.10-softmax",
        assumptions=_A_ASSUME + assume + _A_SOFTMAX,
    )


ROWS_A: list[Row] = [
    Row(
        id="A0",
        group="A",
        label="CUDA context: torch.ones((1, 1)).to('cuda')",
        published=1343,
        unit="MiB",
        metric="context",
        device="v100-16gb",
        needs=dict(_A_STACK),
        why=dict(_A_STACK_WHY),
        probe_bytes=4,
        assumptions=("the probe tensor (4 B) takes one 2 MiB small-pool segment",),
    ),
    Row(
        id="A0w",
        group="A",
        label="after loading the model to the GPU (fp32 weights)",
        published=2631,
        unit="MiB",
        metric="weights",
        model="bert-large-uncased",
        device="v100-16gb",
        needs=dict(_A_STACK),
        why=dict(_A_STACK_WHY),
        share_of="A1",
        assumptions=(
            "the context plus what memlens's caching-allocator replay reserves once the "
            "step's weights and buffers exist (read from row A1's timeline); the probe "
            "tensor of A0 still alive adds its 2 MiB segment",
        ),
    ),
    _a("A1", "per_device_train_batch_size=4", 14949, batch=4, **_ADAMW_HF, assume=_A_ADAMW),
    _a(
        "A2",
        "per_device_train_batch_size=1, gradient_accumulation_steps=4",
        8681,
        batch=1,
        grad_accum=4,
        **_ADAMW_HF,
        assume=_A_ADAMW,
    ),
    _a(
        "A3",
        "batch 1, accumulation 4, gradient_checkpointing=True",
        6775,
        batch=1,
        grad_accum=4,
        checkpoint="blocks",
        **_ADAMW_HF,
        assume=_A_ADAMW + _A_CKPT,
    ),
    _a(
        "A4",
        "per_device_train_batch_size=4, fp16=True",
        13939,
        batch=4,
        precision="fp16-amp",
        **_ADAMW_HF,
        assume=_A_ADAMW + _A_FP16,
    ),
    _a(
        "A5",
        "batch 1, accumulation 4, checkpointing, fp16",
        7275,
        batch=1,
        grad_accum=4,
        checkpoint="blocks",
        precision="fp16-amp",
        **_ADAMW_HF,
        assume=_A_ADAMW + _A_CKPT + _A_FP16,
    ),
    _a(
        "A6",
        "batch 4, optim='adafactor'",
        12295,
        batch=4,
        optimizer="adafactor",
        optimizer_impl="for-loop",
        assume=_A_ADAFACTOR,
    ),
    _a(
        "A7",
        "batch 1, accumulation 4, checkpointing, fp16, adafactor",
        4847,
        batch=1,
        grad_accum=4,
        checkpoint="blocks",
        precision="fp16-amp",
        optimizer="adafactor",
        optimizer_impl="for-loop",
        assume=_A_ADAFACTOR + _A_CKPT + _A_FP16,
    ),
    _a("A8", "batch 4, bnb.optim.Adam8bit", 13085, batch=4, optimizer="adam-8bit", assume=_A_ADAM8),
    _a(
        "A9",
        "batch 1, accumulation 4, checkpointing, fp16, Adam8bit",
        5363,
        batch=1,
        grad_accum=4,
        checkpoint="blocks",
        precision="fp16-amp",
        optimizer="adam-8bit",
        assume=_A_ADAM8 + _A_CKPT + _A_FP16,
    ),
]

# -- rows [B]: OPT-350m fp16 on an L40S, SDPA against eager ----------------------------------

_B_ASSUME = (
    "model: OPTForCausalLM of the bundled facebook/opt-350m config (331,196,416 parameters), "
    "fp16 weights, built by the installed transformers (the measured run used ~4.46; "
    "where their memory differs, the row says so)",
    "inputs: input_ids (batch, seq) and an all-ones attention_mask, no labels; the "
    "benchmark's loop: model.zero_grad(); outputs = model(**inputs); loss = "
    "outputs.logits.sum(); loss.backward(); no optimizer",
    "memlens's pytorch loop with loss = outputs.logits.sum() and a stateless SGD (its update "
    "in place) stands in for it: its output is a loop variable, as the benchmark's outputs "
    "is, alive through the next step's forward until rebound; with the config's use_cache "
    "on, that is the logits and every layer's keys and values (past_key_values)",
    "training mode (dropout 0.1 on): from_pretrained returns eval mode and the source does "
    "not say whether the script called model.train()",
    "the traced PyTorch is the installed one, not 2.4: e.g. the cuBLASLt workspace is one "
    "persistent buffer (PyTorch >= ~2.8), where 2.4 allocated it per call",
)
_B_WHY = {
    "attention": "the row compares attn_implementation='sdpa' with 'eager'",
}
_B_EAGER = (
    "eager attention as transformers 4.46.3 ran it (OPTAttention.forward: bmm, + mask, "
    "torch.max clamp to finfo.min, fp32 softmax, bmm), swapped in for the installed "
    "eager_attention_forward: its clamp keeps the masked fp16 scores [B,H,S,S] for backward "
    "in every layer, which today's code does not",
)
_B_SDPA = (
    "SDPA with an all-ones mask: transformers drops the mask and calls is_causal=True, "
    "which on sm89 fp16 head_dim 64 runs the flash kernel",
    "SDPA attention as transformers 4.46.3 ran it (OPTSdpaAttention.forward: _shape's "
    "contiguous [B,H,S,D] query, key and value; the flash output then comes back "
    "[B,H,S,D]-contiguous and transpose(1, 2).contiguous() copies it), swapped in for the "
    "installed sdpa_attention_forward",
)


def _logits_sum(output: Any) -> torch.Tensor:
    return output.logits.sum()


def opt_eager_attention_tf446(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The eager attention of OPT as the published run executed it: transformers 4.46.3
    ``models/opt/modeling_opt.py`` ``OPTAttention.forward`` (eager branch), on the installed
    code's [B, H, S, D] projections (which 4.46 made contiguous in ``_shape``).

    Its ``torch.max(attn_weights, torch.tensor(finfo.min))`` clamp is ``aten.maximum``, whose
    backward keeps both inputs: the masked fp16 scores [B, H, S, S] stay saved in every
    layer. Today's ``eager_attention_forward`` has no clamp. The caller's query is already
    scaled (``scaling`` is 1.0, as in 4.46, which scaled ``q_proj``'s output).
    """
    bsz, heads, tgt_len, head_dim = query.shape
    q = query.contiguous().view(bsz * heads, tgt_len, head_dim)
    k = key.contiguous().view(bsz * heads, -1, head_dim)
    v = value.contiguous().view(bsz * heads, -1, head_dim)
    src_len = k.size(1)
    weights = torch.bmm(q, k.transpose(1, 2))
    if attention_mask is not None:
        mask = attention_mask[:, :, :, :src_len]
        weights = weights.view(bsz, heads, tgt_len, src_len) + mask
        weights = torch.max(
            weights, torch.tensor(torch.finfo(weights.dtype).min, device=weights.device)
        )
        weights = weights.view(bsz * heads, tgt_len, src_len)
    if weights.dtype == torch.float16:
        weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(
            torch.float16
        )
    else:
        weights = torch.nn.functional.softmax(weights, dim=-1)
    probs = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.bmm(probs, v).view(bsz, heads, tgt_len, head_dim).transpose(1, 2)
    return out, None


def opt_sdpa_attention_tf446(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The SDPA attention of OPT as the published run executed it: transformers 4.46.3
    ``models/opt/modeling_opt.py`` ``OPTSdpaAttention.forward``.

    Its ``_shape`` made the [B, H, S, D] query, key and value contiguous copies (today's code
    passes transposed views of the projections' outputs, so no copies). On CUDA the flash
    kernel's output is ``empty_like`` of the transposed query (aten/src/ATen/native/
    transformers/cuda/flash_attn/flash_api.cpp ``mha_fwd``), so with contiguous [B, H, S, D]
    inputs it comes back [B, H, S, D]-contiguous and ``attn_output.transpose(1, 2)
    .contiguous()`` copies it: both the kernel's output (saved for its backward) and the copy
    (saved by ``out_proj``) stay alive. The engine's flash rule gives the output that layout.
    """
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    mask = None if attention_mask is None else attention_mask[:, :, :, : k.shape[-2]]
    out = torch.nn.functional.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=dropout,
        is_causal=mask is None and q.shape[2] > 1,
        scale=1.0,
    )
    return out.transpose(1, 2).contiguous(), None


class _SoftmaxKeepingInput(torch.autograd.Function):
    """``_softmax`` with PyTorch 1.10's autograd formula, which saved ``self`` as well."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        y = torch.softmax(x, dim)
        ctx.save_for_backward(x, y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, y = ctx.saved_tensors
        return torch._softmax_backward_data(grad, y, ctx.dim, x.dtype), None


def softmax_pt110(
    input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None
) -> torch.Tensor:
    """``F.softmax`` as PyTorch 1.10 ran it in a training step: the input kept for backward
    (see :data:`_A_SOFTMAX`). Under autocast, 1.10's CUDA policy for ``softmax`` was ``fp32``
    (aten/src/ATen/autocast_mode.cpp): the fp32 copy is what the kernel saw and kept."""
    if dtype is not None:
        input = input.to(dtype)
    elif torch.is_autocast_enabled("cpu") and input.dtype != torch.float32:
        input = input.float()
    with torch.autocast("cpu", enabled=False):
        return _SoftmaxKeepingInput.apply(input, -1 if dim is None else dim)


@contextlib.contextmanager
def measured_model_code(row: Row):
    """Run ``row`` with the model code of the measured run where it differs from the installed
    transformers in memory (see :func:`opt_eager_attention_tf446` and
    :func:`opt_sdpa_attention_tf446`)."""
    if row.model_code == "pt1.10-softmax":
        saved_softmax = torch.nn.functional.softmax
        torch.nn.functional.softmax = softmax_pt110
        try:
            yield
        finally:
            torch.nn.functional.softmax = saved_softmax
        return
    if row.model_code != "opt-tf4.46":
        yield
        return
    from transformers.models.opt import modeling_opt

    saved = modeling_opt.eager_attention_forward
    modeling_opt.eager_attention_forward = opt_eager_attention_tf446
    modeling_opt.ALL_ATTENTION_FUNCTIONS["sdpa"] = opt_sdpa_attention_tf446
    try:
        yield
    finally:
        modeling_opt.eager_attention_forward = saved
        del modeling_opt.ALL_ATTENTION_FUNCTIONS["sdpa"]


def _b(rid: str, attention: str, batch: int, seq: int, published: float) -> Row:
    return Row(
        id=rid,
        group="B",
        label=f"{attention}, batch {batch}, seq {seq}",
        published=published,
        unit="MB",
        metric="peak",
        model="opt-350m",
        device="l40s",
        # sgd: no state, its update in place: nothing beyond the benchmark's own step
        # the shapes come from inputs= (opt_inputs(batch, seq)): seq_len is refused beside them
        options={"precision": "fp16", "batch": batch, "optimizer": "sgd"},
        loss=_logits_sum,
        needs={"attention": attention},
        why=dict(_B_WHY),
        inputs=(batch, seq),
        model_code="opt-tf4.46",
        assumptions=_B_ASSUME + (_B_EAGER if attention == "eager" else _B_SDPA),
    )


ROWS_B: list[Row] = [
    _b("B1", "sdpa", 1, 128, 1474.32),
    _b("B2", "sdpa", 1, 2048, 2715.75),
    _b("B3", "sdpa", 4, 1024, 4750.55),
    _b("B4", "sdpa", 8, 512, 4750.55),
    _b("B5", "sdpa", 8, 1024, 8821.18),
    _b("B6", "eager", 1, 128, 1474.611),
    _b("B7", "eager", 1, 1024, 4867.113),
    _b("B8", "eager", 1, 2048, 15662.224),
    _b("B9", "eager", 4, 512, 5833.180),
    _b("B10", "eager", 8, 512, 10985.391),
    _b("B11", "eager", 8, 1024, 34175.763),
]

# -- rows [C]: CUDA context sizes -------------------------------------------------------------

ROWS_C: list[Row] = [
    Row(
        id="C1",
        group="C",
        label="pytorch PR #86509, CUDA >= 11.7, lazy: cudaMemGetInfo total - free",
        published=287_047_680 / MiB,
        unit="MiB",
        metric="context",
        device="cuda",
        needs={"cuda_version": "11.7", "eager_module_loading": False},
        why={
            "cuda_version": "CUDA >= 11.7 (lazy loading's first release)",
            "eager_module_loading": "CUDA_MODULE_LOADING=LAZY, set by torch 1.13",
        },
        probe_bytes=20 * 16 * 50 * 100 * 4,
        assumptions=(
            "GPU not stated: memlens's generic CUDA device (no architecture)",
            "probe torch.randn(20, 16, 50, 100).cuda(): 6.4 MB, one 20 MiB large segment",
        ),
    ),
    Row(
        id="C2",
        group="C",
        label="pytorch PR #86509, CUDA_MODULE_LOADING=DEFAULT (eager)",
        published=666_632_192 / MiB,
        unit="MiB",
        metric="context",
        device="cuda",
        needs={"cuda_version": "11.7", "eager_module_loading": True},
        why={
            "cuda_version": "CUDA >= 11.7",
            "eager_module_loading": "DEFAULT meant eager before CUDA 12.2",
        },
        probe_bytes=20 * 16 * 50 * 100 * 4,
        assumptions=(
            "GPU not stated: memlens's generic CUDA device (no architecture)",
            "probe torch.randn(20, 16, 50, 100).cuda(): 6.4 MB, one 20 MiB large segment",
        ),
    ),
    Row(
        id="C3",
        group="C",
        label="unsloth-zoo PR #1053, PyTorch 2.10.0+cu130, RTX 6000 Ada, after mem_get_info",
        published=426,
        unit="MiB",
        metric="context",
        device="l40s",
        needs={"cuda_version": "13.0", "eager_module_loading": False},
        why={
            "cuda_version": "cu130 build",
            "eager_module_loading": "lazy: the default since CUDA 12.2",
        },
        probe_bytes=None,
        assumptions=(
            "the RTX 6000 Ada is not in memlens's catalog: the L40S stands in (the same "
            "AD102 chip, sm89); the context does not depend on the capacity",
            "no tensor: mem_get_info only creates the context",
        ),
    ),
]

ROWS: list[Row] = ROWS_A + ROWS_B + ROWS_C

#: Published figures memlens does not compare against, and why.
NOT_EXPRESSED: list[dict[str, str]] = [
    {
        "row": "[C] pytorch issues #107667, #109888 (maintainer comments)",
        "figure": "'~300MB', 'around 400MB' (lazy, CUDA >= 11.7); '>1000MB' before 11.7",
        "why": "round figures and a bound, no GPU, probe or CUDA version stated: nothing to "
        "set memlens's target to, and no exact figure to compare with",
    },
]


# -- options: which exist, and running a row --------------------------------------------------


def available_options() -> dict[str, tuple[str, ...] | None]:
    """Option name -> its allowed values (``None``: any value), for every option memlens takes
    now: :class:`memlens.Workload` fields, :func:`memlens.estimate` keywords and the target
    keywords of :func:`memlens.targets.resolve_target`."""
    from memlens.workload import Workload, meta

    out: dict[str, tuple[str, ...] | None] = {}
    for f in dataclasses.fields(Workload):
        choices = meta(f).choices
        out[f.name] = tuple(choices) if choices else None
    for fn in (memlens.estimate, _resolve_target()):
        if fn is None:
            continue
        for name, p in inspect.signature(fn).parameters.items():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in out:
                out[name] = None
    return out


def _resolve_target() -> Any:
    try:
        from memlens.targets import resolve_target
    except ImportError:
        return None
    return resolve_target


def _allowed(value: Any, choices: tuple[str, ...] | None) -> bool:
    return choices is None or not isinstance(value, str) or value in choices


def plan(row: Row, available: dict[str, tuple[str, ...] | None]) -> tuple[dict[str, Any], list]:
    """The keywords of ``row``'s estimate (options, and the needs that exist) and the needs
    that are missing, as ``[(option, value, why)]``."""
    kwargs = dict(row.options)
    missing = []
    for name, value in row.needs.items():
        if name in available and _allowed(value, available[name]):
            kwargs[name] = value
        else:
            missing.append((name, value, row.why.get(name, "")))
    return kwargs, missing


def opt_inputs(batch: int, seq: int):
    """The OPT benchmark's inputs: ids and an all-ones mask (made under the trace's mode)."""

    def make() -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.randint(100, 30000, (batch, seq)),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
        }

    return make


def probe_reserved_bytes(nbytes: int | None) -> int:
    """What PyTorch's caching allocator reserves for one tensor of ``nbytes`` (memlens's
    allocator model replaying a one-block timeline)."""
    if not nbytes:
        return 0
    from memlens.allocator import replay
    from memlens.categories import Category, Phase
    from memlens.timeline import Timeline

    t = Timeline()
    t.alloc(nbytes, Category.INPUTS, Phase.SETUP, "", "probe")
    return replay(t, "cuda-caching").peak_reserved


def weights_reserved_bytes(est: Any) -> int:
    """Reserved bytes once the step's weights and buffers exist: the allocator replay of
    ``est``'s timeline just before the first block that is neither."""
    from memlens.categories import Category

    weights = {Category.PARAMETERS, Category.BUFFERS}
    first_other = min(
        (b.alloc_at for b in est.timeline.blocks if b.category not in weights), default=None
    )
    if first_other is None or first_other == 0:
        return est.allocator.peak_reserved
    return est.allocator.reserved[first_other - 1]


def _context_bytes(row: Row, kwargs: dict[str, Any]) -> tuple[int, list[str]]:
    resolve = _resolve_target()
    accepted = inspect.signature(resolve).parameters
    stack = {k: v for k, v in kwargs.items() if k in accepted and k not in ("device", "budget")}
    target = resolve(row.device, **stack)
    return target.context_bytes, list(getattr(target, "assumptions", ()) or ())


def context_table_ids() -> dict[int, str]:
    """Measured bytes -> id of the rows of memlens's CUDA context table, if it has one."""
    try:
        text = (resources.files("memlens") / "data" / "cuda_context.json").read_text()
    except (FileNotFoundError, OSError):
        return {}
    return {r["measured_bytes"]: r["id"] for r in json.loads(text).get("rows", [])}


def run_row(row: Row, available: dict, cache: dict[str, Any]) -> dict[str, Any]:
    kwargs, missing = plan(row, available)
    out: dict[str, Any] = {
        "id": row.id,
        "group": row.group,
        "label": row.label,
        "model": row.model,
        "device": row.device,
        "metric": row.metric,
        "unit": row.unit,
        "published": row.published,
        "published_bytes": row.published_bytes,
        "assumptions": list(row.assumptions),
        "missing": [{"option": n, "value": _show(v), "why": w} for n, v, w in missing],
        "refused": [],
    }
    t0 = time.perf_counter()
    if row.metric == "context":
        context, target_notes = _context_bytes(row, kwargs)
        probe = probe_reserved_bytes(row.probe_bytes)
        out.update(memlens_bytes=context + probe, context_bytes=context, probe_bytes=probe)
        out["memlens_notes"] = target_notes
    elif row.metric == "weights":
        est = cache[row.share_of]
        if est is None:
            raise RuntimeError(f"row {row.share_of} failed")
        probe = probe_reserved_bytes(4)
        reserved = weights_reserved_bytes(est)
        out.update(
            memlens_bytes=est.context_bytes + reserved + probe,
            context_bytes=est.context_bytes,
            weights_reserved_bytes=reserved,
            probe_bytes=probe,
        )
        out["options"] = {"as row": row.share_of}
    else:
        call = dict(kwargs)
        if row.inputs is not None:
            call["inputs"] = opt_inputs(*row.inputs)
        if row.loss is not None:
            call["loss"] = row.loss
        with measured_model_code(row):
            est = _estimate(row, call, out)
        cache[row.id] = est
        got = est.total_bytes if row.metric == "total" else est.peak_bytes
        out.update(
            memlens_bytes=got,
            peak_bytes=est.peak_bytes,
            reserved_peak_bytes=est.reserved_peak_bytes,
            context_bytes=est.context_bytes,
            peak_phase=est.peak_phase,
            peak_op=est.peak_op,
            budget={c.value: n for c, n in est.budget()},
            memlens_notes=list(est.unknowns),
        )
        out["options"] = {k: _show(v) for k, v in call.items()}
    out["seconds"] = time.perf_counter() - t0
    out["error"] = (out["memlens_bytes"] - row.published_bytes) / row.published_bytes
    return out


def _show(value: Any) -> Any:
    """A JSON-ready option value (a function by its name)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return getattr(value, "__name__", str(value))


def _estimate(row: Row, call: dict[str, Any], out: dict[str, Any]) -> Any:
    """``memlens.estimate`` for ``row``; an option memlens refuses is dropped and recorded as
    missing (with memlens's message), so the row still runs, marked approximate."""
    while True:
        try:
            return memlens.estimate(row.model, device=row.device, **call)
        except memlens.WorkloadError as e:
            name = next((n for n in row.needs if n in call and n in str(e)), None)
            if name is None:
                raise
            out["refused"].append({"option": name, "value": call.pop(name), "message": str(e)})
            out["missing"].append(
                {"option": name, "value": _show(row.needs[name]), "why": row.why.get(name, "")}
            )


# -- summary and report ---------------------------------------------------------------------


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in results if "error" in r]
    compared = [r for r in done if not r.get("calibration")]
    exact = [r for r in compared if not r["missing"]]

    def stats(sel: list[dict[str, Any]]) -> dict[str, Any]:
        if not sel:
            return {"n": 0}
        errs = [r["error"] for r in sel]
        return {
            "n": len(sel),
            "median_abs": statistics.median(abs(e) for e in errs),
            "max_abs": max(abs(e) for e in errs),
            "median": statistics.median(errs),
            "low_over_5pct": [r["id"] for r in sel if r["error"] < -0.05],
        }

    return {
        "compared": stats(compared),
        "fully_expressed": stats(exact),
        "calibration_rows": [r["id"] for r in done if r.get("calibration")],
        "approximate_rows": [r["id"] for r in compared if r["missing"]],
        "failed": [f"{r['id']}: {r['failure']}" for r in results if "failure" in r],
        "targets": "median |error| <= 3%, max <= 8%, no row more than 5% low",
    }


def _fmt(r: dict[str, Any], value: int) -> str:
    return f"{value / (MiB if r['unit'] == 'MiB' else 1e6):,.1f}"


def _status(r: dict[str, Any]) -> str:
    if "failure" in r:
        return "failed"
    if r.get("calibration"):
        return f"calibration ({r['calibration']})"
    if r["missing"]:
        return "approximate: missing " + ", ".join(m["option"] for m in r["missing"])
    return "expressed"


def markdown(results: list[dict[str, Any]], summary: dict[str, Any], header: dict) -> str:
    def stat_line(name: str, s: dict[str, Any]) -> str:
        if not s["n"]:
            return f"| {name} | - | - | - | 0 | - |"
        low = ", ".join(s["low_over_5pct"]) or "none"
        return (
            f"| {name} | {100 * s['median_abs']:.1f}% | {100 * s['max_abs']:.1f}% | "
            f"{100 * s['median']:+.1f}% | {s['n']} | {low} |"
        )

    lines = [
        "# memlens against published GPU measurements",
        "",
        f"Reproduce: `{header['command']}` (memlens {header['memlens']}, torch "
        f"{header['torch']}, transformers {header['transformers']}, {header['machine']}; "
        f"{header['seconds']:.0f} s) at commit {header['commit']}"
        + (
            f" with uncommitted changes in {len(header['uncommitted_src'])} src files"
            if header["uncommitted_src"]
            else ""
        )
        + ". Rows and sources: published-gpu.md "
        "(`/work/shared/reference/`). Error = (memlens - published) / published. [A] and [C] "
        "in MiB (2^20 B), [B] in MB (10^6 B) as published.",
        "",
        f"Targets: {summary['targets']}.",
        "",
        "| rows | median abs error | max abs error | median error | rows | more than 5% low |",
        "|---|---|---|---|---|---|",
        stat_line("compared (all expressed rows, approximate included)", summary["compared"]),
        stat_line("fully expressed (no missing option)", summary["fully_expressed"]),
        "",
        "Context rows whose figure is an entry of memlens's own CUDA context table check a "
        "lookup, not a prediction; they are listed but left out of the summary: "
        + (", ".join(summary["calibration_rows"]) or "none")
        + ".",
        "",
        "| row | setup | device | measured as | published | memlens | error | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    measured = {
        "total": "NVML used",
        "peak": "max_memory_allocated",
        "context": "context + probe",
        "weights": "context + weights",
    }
    for r in results:
        if "failure" in r:
            lines.append(
                f"| {r['id']} | {r['label']} | {r['device']} | {measured[r['metric']]} | "
                f"{r['published']:,} {r['unit']} | failed: {r['failure']} | | |"
            )
            continue
        lines.append(
            f"| {r['id']} | {r['label']} | {r['device']} | {measured[r['metric']]} | "
            f"{r['published']:,.1f} {r['unit']} | {_fmt(r, r['memlens_bytes'])} | "
            f"{100 * r['error']:+.1f}% | {_status(r)} |"
        )
    lines += ["", "## Options each row needs and memlens lacked", ""]
    any_missing = False
    for r in results:
        for m in r.get("missing", ()):
            any_missing = True
            lines.append(f"- {r['id']}: `{m['option']}={m['value']!r}` ({m['why']})")
        for ref in r.get("refused", ()):
            lines.append(f"  - refused by memlens: {ref['message']}")
    if not any_missing:
        lines.append("- none")
    lines += ["", "## Not expressed", ""]
    for n in NOT_EXPRESSED:
        lines.append(f"- {n['row']}: {n['figure']}. Why: {n['why']}")
    lines += ["", "## Assumptions, per row", ""]
    seen: dict[tuple[str, ...], str] = {}
    for r in results:
        key = tuple(r["assumptions"])
        if key in seen:
            lines.append(f"- {r['id']}: as {seen[key]}")
            continue
        seen[key] = r["id"]
        lines.append(f"- {r['id']}:")
        lines += [f"  - {a}" for a in r["assumptions"]]
    lines += ["", "## memlens's breakdown at the peak (MiB)", ""]
    cats = sorted({c for r in results for c in r.get("budget", {})}, key=_CATEGORY_ORDER)
    if cats:
        lines.append("| row | " + " | ".join(cats) + " | peak phase | peak op | s |")
        lines.append("|---|" + "---|" * (len(cats) + 3))
        for r in results:
            if "budget" not in r:
                continue
            cells = " | ".join(f"{r['budget'].get(c, 0) / MiB:,.0f}" for c in cats)
            lines.append(
                f"| {r['id']} | {cells} | {r['peak_phase']} | {r['peak_op']} | {r['seconds']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def _CATEGORY_ORDER(name: str) -> int:  # noqa: N802
    order = [c.value for c in memlens.Category]
    return order.index(name) if name in order else len(order)


def _revision() -> dict[str, Any]:
    """The commit the rows ran at, and the files under src/ that differed from it."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_src": [line[3:] for line in changed.splitlines()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="only these row ids (e.g. A1, B5)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    import transformers

    t_start = time.perf_counter()
    available = available_options()
    calibration = context_table_ids()
    rows = [r for r in ROWS if not args.only or r.id in args.only]
    needed = {r.share_of for r in rows if r.share_of}
    rows = [r for r in ROWS if r in rows or r.id in needed]
    cache: dict[str, Any] = {}
    results = []
    # a row that reads another's estimate runs after it; results keep the table's order
    for row in sorted(rows, key=lambda r: r.share_of is not None):
        try:
            res = run_row(row, available, cache)
            if row.metric == "context" and row.published_bytes in calibration:
                res["calibration"] = calibration[row.published_bytes]
        except Exception as e:  # a failure is a result too
            cache.setdefault(row.id, None)
            res = {
                "id": row.id,
                "group": row.group,
                "label": row.label,
                "device": row.device,
                "metric": row.metric,
                "unit": row.unit,
                "published": row.published,
                "assumptions": list(row.assumptions),
                "missing": [],
                "failure": f"{type(e).__name__}: {e}",
            }
        results.append(res)
        if "failure" in res:
            print(f"{row.id:4s} FAILED {res['failure']}", flush=True)
        else:
            print(
                f"{row.id:4s} {row.label[:58]:58s} published {row.published:10,.1f} {row.unit}"
                f"  memlens {_fmt(res, res['memlens_bytes']):>10s}  {100 * res['error']:+6.1f}%"
                f"  {res['seconds']:5.1f}s  {_status(res)}",
                flush=True,
            )
    order = {r.id: i for i, r in enumerate(ROWS)}
    results.sort(key=lambda r: order[r["id"]])
    summary = summarize(results)
    only = "".join(f" --only {i}" for i in args.only or ())
    header = {
        "command": COMMAND + only,
        **_revision(),
        "memlens": memlens.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "seconds": time.perf_counter() - t_start,
        "available_options": sorted(available),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "published.json").write_text(
        json.dumps(
            {**header, "summary": summary, "rows": results, "not_expressed": NOT_EXPRESSED},
            indent=2,
            default=str,
        )
    )
    (out / "published.md").write_text(markdown(results, summary, header))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
