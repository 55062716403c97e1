"""The :class:`Workload`: every option of one step, defined once.

Each field of :class:`Workload` carries its option's metadata (:class:`OptionMeta`): help
text, allowed values, command-line flag, group, and the API functions and commands it applies
to. The API functions take the fields as keywords (:meth:`Workload.from_fields` refuses an
unknown one with the closest valid name) and :mod:`memlens.commands._options` derives every
command's options from the same fields, so the API and the CLI cannot drift. Values may
arrive as strings from the command line: each field's parser reads ``"3x224x224"``,
``"20GiB"``, ``"a,b"`` or ``"r=16,alpha=32"`` as well as the native value.

Adding an option is one field here (plus its use in the engine): every command it applies to
gets its flag, every API function its keyword.

This module never imports torch.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from functools import cache
from typing import Any

from memlens._errors import ConfigError, WorkloadError
from memlens.analytic.kv_cache import KV_DTYPES
from memlens.analytic.zero import ZeroConfig
from memlens.formats import LAYER_FORMATS as QUANTIZE
from memlens.optimizer_table import IMPL_CHOICES as OPTIMIZER_IMPLS
from memlens.optimizer_table import NAMES as OPTIMIZERS
from memlens.optimizer_table import implementations
from memlens.routing import parse_routing
from memlens.units import parse_size

MODES = ("inference", "train")
PRECISIONS = ("fp32", "bf16", "fp16", "bf16-amp", "fp16-amp")
#: ``every-k:K`` and ``modules:PATH,PATH`` take an argument; ``auto`` needs a device capacity.
#: ``selective`` (Korthikanti et al. 2022: only the attention core is recomputed) is modelled in
#: closed form only (``analytic``).
CHECKPOINTS = ("none", "blocks", "every-k:K", "sqrt", "auto", "selective", "modules:PATH,...")
#: Hugging Face heads (see :mod:`memlens.sources.huggingface`).
#: Attention kernels (see :mod:`memlens.engine.targets.cuda_attention`): ``auto`` is what the
#: model's code picks on the target.
ATTENTIONS = ("auto", "eager", "sdpa", "flash", "mem-efficient")
#: KV cache classes of generation (transformers' ``DynamicCache``, ``StaticCache``).
KV_CACHES = ("dynamic", "static")
TASKS = ("causal-lm", "masked-lm", "seq2seq", "seq-cls", "image-cls", "base")
#: Training loops whose step memlens reproduces (:class:`LoopPreset`).
LOOPS = ("pytorch", "hf-trainer", "lightning")
#: What ``zero_grad`` does: ``free`` (``set_to_none=True``, PyTorch >= 2.0) or ``zeros``.
ZERO_GRADS = ("free", "zeros")
#: Reads of values computed from the inputs (see :mod:`memlens.engine.shadow`): ``explore``
#: traces each read site's other answer, ``neutral`` answers True/1, ``fail`` refuses.
DATA_DEPENDENT = ("explore", "neutral", "fail")
#: FSDP sharding (see :mod:`memlens.distributed`): ``full`` is FSDP2's ``fully_shard`` (ZeRO-3),
#: ``grad-op`` keeps the parameters gathered after forward (``reshard_after_forward=False``,
#: ZeRO-2-like), ``hybrid`` shards within a group and replicates across groups (HSDP).
FSDP = ("none", "full", "grad-op", "hybrid")
#: Pipeline schedules (``torch.distributed.pipelining``: ScheduleGPipe, Schedule1F1B,
#: ScheduleInterleaved1F1B).
PP_SCHEDULES = ("gpipe", "1f1b", "interleaved")
#: bitsandbytes 4-bit compute dtypes (``bnb_4bit_compute_dtype``).
BNB_COMPUTE_DTYPES = ("fp32", "fp16", "bf16")

#: The API functions, each the twin of the command of the same name (``activations`` is the
#: API only: ``memlens layers --peak`` calls it).
USES = ("estimate", "measure", "fit", "sweep", "layers", "activations")
_ALL = frozenset(USES)
#: Those that run a training step (``layers`` observes one forward pass, ``activations`` one
#: inference pass).
_STEPS = frozenset({"estimate", "measure", "fit", "sweep"})
#: Those that build the model with the strategies applied.
_BUILDS = _STEPS | {"layers"}
#: Those whose step has a data pipeline to size (host memory; ``measure`` runs no DataLoader).
_DATA = frozenset({"estimate", "measure"})
#: Those that take a parallel layout (a step on many devices; ``measure`` runs on one).
_PARALLEL = frozenset({"estimate", "fit", "sweep"})
#: A fixed batch: ``fit`` searches it (its ``batch`` is the target of the options table) and
#: ``sweep`` takes several.
_ONE_BATCH = _ALL - {"fit", "sweep"}
#: Those that trace generation (``generate=True``).
_GENERATE = frozenset({"estimate"})
#: The generation options: at their defaults unless ``generate`` is set.
GENERATION_FIELDS = ("prompt_len", "new_tokens", "num_beams", "sample", "prefill_chunk", "kv_cache")

Parser = Callable[[str, Any], Any]


@dataclass(frozen=True)
class OptionMeta:
    """What the API and the CLI need to know about one :class:`Workload` field.

    ``parse(name, value)`` returns the normalised value or raises :class:`WorkloadError`.
    ``flag`` is the CLI flag (``--optimizer-impl``; ``--on/--off`` for a ``switch``, whose two
    values map to the field's ``switch`` pair). ``uses`` are the API functions, and commands
    of the same name, that take it; ``training_only`` fields must stay at their default in
    inference.
    """

    help: str
    group: str
    parse: Parser
    uses: frozenset[str] = _ALL
    choices: tuple[str, ...] = ()
    flag: str = ""
    short: str = ""
    metavar: str = ""
    switch: tuple[str, str] | None = None  # values of the --on/--off pair
    training_only: bool = False


# -- parsers: (field name, value) -> normalised value ----------------------------------------


def _choice(allowed: tuple[str, ...], *, optional: bool = False) -> Parser:
    def parse(name: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or value.lower() not in allowed:
            raise WorkloadError(name, value, "allowed: " + ", ".join(allowed))
        return value.lower()

    return parse


def _integer(minimum: int, *, optional: bool = False) -> Parser:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(name: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise WorkloadError(name, value, f"must be {what}")
        return value

    return parse


def _fraction(name: str, value: Any) -> float:
    """A share in ``[0, 0.9]``: ``0.05``, ``"0.05"`` or ``"5%"``."""
    text = str(value).strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        share = -1.0
    if isinstance(value, bool) or not 0 <= share <= 0.9:
        raise WorkloadError(
            name, value, "must be a share of the device from 0 to 0.9, e.g. 0.05 or 5%"
        )
    return share


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise WorkloadError(name, value, "must be true or false")
    return value


def _optional_flag(name: str, value: Any) -> bool | None:
    return None if value is None else _flag(name, value)


def _step(name: str, value: Any) -> UserStep | None:
    if value is None or value == "":
        return None
    if isinstance(value, UserStep):
        return value
    if isinstance(value, str):
        if ":" not in value:
            raise WorkloadError(name, value, "use module:function or path/file.py:function")
        return UserStep(value)
    if callable(value):
        name = getattr(value, "__qualname__", type(value).__qualname__)
        return UserStep(f"{getattr(value, '__module__', '')}:{name}", value)
    raise WorkloadError(name, value, "a function step(model, batch, optimizer) or module:function")


def _routing(name: str, value: Any) -> str:
    try:
        return parse_routing(value)
    except ValueError as e:
        raise WorkloadError(name, value, str(e)) from None


def _optional_text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise WorkloadError(name, value, "must be a string")
    return value or None


def parse_shape(text: str, field_name: str = "input_shape") -> tuple[int, ...]:
    """Parse ``"3x224x224"`` (or ``"3,224,224"``) into a shape tuple."""
    parts = re.split(r"[x,]", text.lower())
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise WorkloadError(
            field_name, text, "use integers separated by 'x', e.g. 3x224x224"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise WorkloadError(field_name, text, "must be positive integers, e.g. 3x224x224")
    return shape


def _shape(name: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_shape(value, name)
    try:
        shape = tuple(value)
    except TypeError:
        raise WorkloadError(name, value, "must be positive integers, e.g. 3x224x224") from None
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise WorkloadError(name, value, "must be positive integers, e.g. 3x224x224")
    return shape


def _size(name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ConfigError as e:
        raise WorkloadError(name, value, str(e)) from None
    except TypeError:
        raise WorkloadError(name, value, "a size with its unit, such as 20GiB or 512MB") from None


def _checkpoint(name: str, value: Any) -> str:
    """Normalise a checkpointing policy (see :data:`CHECKPOINTS`)."""
    allowed = "allowed: " + ", ".join(CHECKPOINTS)
    if not isinstance(value, str):
        raise WorkloadError(name, value, allowed)
    text = value.strip()
    low = text.lower()
    if low in ("none", "blocks", "sqrt", "auto", "selective"):
        return low
    if low.startswith("every-k:"):
        k = low.split(":", 1)[1]
        if not k.isdigit() or int(k) < 1:
            raise WorkloadError(name, value, "every-k:K needs a positive integer K")
        return f"every-k:{int(k)}"
    if low.startswith("modules:"):
        names = [n.strip() for n in text.split(":", 1)[1].split(",") if n.strip()]
        if not names:
            raise WorkloadError(name, value, "modules: needs module paths")
        return "modules:" + ",".join(names)
    raise WorkloadError(name, value, allowed)


def _globs(name: str, value: Any) -> tuple[str, ...]:
    """Name globs, from ``"a.*,b"``, a list, or ``"all-but-head"``."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(str(p).strip() for p in items if str(p).strip())
    except TypeError:
        raise WorkloadError(name, value, "use globs separated by commas, or all-but-head") from None


def _lora(name: str, value: Any) -> LoraConfig | None:
    return None if value is None else LoraConfig.parse(value)


def parse_batches(value: str | Iterable[int]) -> tuple[int, ...]:
    """Batch sizes from ``"1,2,4,8"`` or a sequence: sorted, each once."""
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        batches = [_integer(1)("batches", b.strip() if isinstance(b, str) else b) for b in items]
    except (TypeError, WorkloadError):
        raise WorkloadError("batches", value, "use positive integers separated by commas") from None
    if not batches:
        raise WorkloadError("batches", value, "give at least one batch size")
    return tuple(sorted(set(batches)))


def _deepspeed(name: str, value: Any) -> ZeroConfig | None:
    return None if value is None or value == "" else ZeroConfig.parse(value)


def option(default: Any, **meta: Any) -> Any:
    """A :class:`Workload` field with its :class:`OptionMeta`."""
    return field(default=default, metadata={"option": OptionMeta(**meta)})


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on linear layers: ``W x + (alpha / r) B A dropout(x)``.

    ``targets`` are module names (last path component, or globs on the full path); ``()``
    picks the model family's usual attention projections (see :mod:`memlens.strategies.lora`).
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _integer(1)("lora.r", self.r)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise WorkloadError("lora.alpha", self.alpha, "must be a number")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise WorkloadError("lora.dropout", self.dropout, "must be in [0, 1)")
        object.__setattr__(self, "targets", tuple(self.targets))

    @classmethod
    def parse(cls, value: object) -> LoraConfig:
        """From ``"r=16,alpha=32,targets=q_proj,v_proj"``, a dict, or a :class:`LoraConfig`.

        A comma-separated item without ``=`` continues the list of the key before it.
        """
        if isinstance(value, LoraConfig):
            return value
        if isinstance(value, dict):
            items: dict[str, Any] = dict(value)
        elif isinstance(value, str):
            items, key = {}, None
            for item in (s.strip() for s in value.split(",")):
                if not item:
                    continue
                if "=" in item:
                    key, _, val = item.partition("=")
                    key = key.strip().lower()
                    items[key] = [val.strip()] if key == "targets" else val.strip()
                elif key == "targets":
                    items["targets"].append(item)
                else:
                    raise WorkloadError("lora", value, "use r=16,alpha=32,targets=q_proj,v_proj")
        else:
            raise WorkloadError("lora", value, "use r=16,alpha=32,targets=q_proj,v_proj")
        if set(items) - {"r", "alpha", "dropout", "targets"}:
            raise WorkloadError("lora", value, "keys: r, alpha, dropout, targets")
        try:
            r = int(items.get("r", cls.r))
            alpha = float(items.get("alpha", r))  # scaling 1 unless given
            dropout = float(items.get("dropout", cls.dropout))
        except (TypeError, ValueError):
            raise WorkloadError(
                "lora", value, "r is an integer, alpha and dropout numbers"
            ) from None
        targets = items.get("targets", ())
        if isinstance(targets, str):
            targets = [t for t in targets.split(",") if t.strip()]
        return cls(r=r, alpha=alpha, dropout=dropout, targets=tuple(targets))


class UserStep(str):
    """The user's own step function ``fn(model, batch, optimizer)``, traced as written.

    Built from a callable, or from ``module:function`` / ``path/file.py:function`` (imported
    when first called, as a factory spec is). It is the string of its name (so JSON and the
    tables write it as such) and calls its function.
    """

    _fn: Callable[..., Any] | None

    def __new__(cls, name: str, fn: Callable[..., Any] | None = None) -> UserStep:
        self = super().__new__(cls, name)
        self._fn = fn
        return self

    @property
    def fn(self) -> Callable[..., Any]:
        if self._fn is None:
            from memlens._loader import load_factory

            self._fn = load_factory(str(self))
        return self._fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


@dataclass(frozen=True)
class LoopPreset:
    """What a training loop does in its step, and the defaults it implies.

    - ``pytorch``: the canonical loop of PyTorch's tutorials (``pred = model(X);
      loss = loss_fn(pred, y); loss.backward(); optimizer.step(); optimizer.zero_grad()``):
      the output is a loop variable, alive through backward and through the next step's
      forward until ``pred`` is rebound; ``zero_grad`` frees (``set_to_none`` default since
      PyTorch 2.0, ``torch/optim/optimizer.py`` ``Optimizer.zero_grad``).
    - ``hf-trainer``: transformers' ``Trainer.training_step`` (``transformers/trainer.py``):
      ``compute_loss`` runs ``outputs = model(**inputs)`` and returns only ``outputs["loss"]``
      (the logits are released before ``accelerator.backward(loss)``); ``del inputs`` drops
      only the step's name (the loop's batch variable keeps the tensors alive); gradients are
      clipped with ``max_grad_norm=1.0`` (``training_args.py``) through
      ``torch.nn.utils.clip_grad_norm_`` (AMP fp16: unscaled first); then
      ``optimizer.step()`` and ``model.zero_grad()`` (frees). Its default optimizer is
      ``adamw_torch_fused`` on torch >= 2.8 (transformers PR #37358), else ``adamw_torch``
      (the foreach default): Adam and AdamW with HF's ``weight_decay=0`` hold the same memory.
    - ``lightning``: Lightning's automatic optimization
      (``lightning/pytorch/loops/optimization/automatic.py``, ``Closure.closure`` and
      ``_AutomaticOptimization._make_zero_grad_fn``): ``optimizer.step(closure)`` runs the
      closure, which calls ``training_step`` (returning the loss: the output is a local of
      ``training_step``, released before backward), then ``optimizer.zero_grad()`` (on the
      first micro-batch of an accumulation window), then backward. So the previous step's
      gradients are alive through the forward pass and freed just before backward. No
      clipping by default (``gradient_clip_val=None``).
    """

    name: str
    release_output: bool
    zero_grad: str
    clip_grad_norm: float | None = None
    zero_grad_before_backward: bool = False
    fused_optimizer: bool = False


def _torch_at_least(major: int, minor: int) -> bool:
    """The installed torch's version, read without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        parts = re.findall(r"\d+", version("torch"))[:2]
    except PackageNotFoundError:
        return False
    return tuple(int(p) for p in parts) >= (major, minor)


def loop_preset(name: str) -> LoopPreset:
    """The :class:`LoopPreset` of ``name`` (see :data:`LOOPS`)."""
    if name == "hf-trainer":
        return LoopPreset(
            name,
            release_output=True,
            zero_grad="free",
            clip_grad_norm=1.0,
            fused_optimizer=_torch_at_least(2, 8),
        )
    if name == "lightning":
        return LoopPreset(
            name, release_output=True, zero_grad="free", zero_grad_before_backward=True
        )
    return LoopPreset(name, release_output=False, zero_grad="free")


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One step of a model: how it runs, with which optimizer, strategies and data pipeline.

    ``input_shape`` is the shape of one sample (without the batch dimension), ``seq_len`` the
    token count for language models; ``None`` lets the model's source pick. ``batch`` is the
    micro-batch: with ``grad_accum=N`` a step runs ``N`` of them before the optimizer. Each
    field's help text is its option's (``memlens estimate --help``).
    """

    # the step
    mode: str = option(
        "train",
        help="Training step or inference.",
        group="step",
        parse=_choice(MODES),
        uses=_BUILDS,
        choices=MODES,
        flag="--train/--inference",
        switch=("train", "inference"),
    )
    batch: int = option(
        1,
        help="Batch size (the micro-batch with --grad-accum).",
        group="step",
        parse=_integer(1),
        uses=_ONE_BATCH,
        short="-b",
    )
    input_shape: tuple[int, ...] | None = option(
        None,
        help="Shape of one input sample, e.g. 3x224x224 (default: the model's).",
        group="step",
        parse=_shape,
        metavar="SHAPE",
    )
    seq_len: int | None = option(
        None,
        help="Sequence length of language models (default: the model's).",
        group="step",
        parse=_integer(1, optional=True),
    )
    headroom: float = option(
        0.05,
        help="Share of the device to keep free: a step that fits with less is called tight "
        "(allocator fragmentation, other processes, and what the estimate cannot see).",
        group="step",
        parse=_fraction,
        uses=frozenset({"estimate", "fit", "sweep"}),
        metavar="SHARE",
    )
    attention: str = option(
        "auto",
        help="Attention: eager (scores kept), sdpa, flash, mem-efficient, or auto (the model's "
        "choice on the target; a Hugging Face config's attn_implementation is honoured).",
        group="step",
        parse=_choice(ATTENTIONS),
        choices=ATTENTIONS,
    )
    # generation (memlens.engine.generate)
    generate: bool = option(
        False,
        help="Trace generation instead of one step: the prefill and decode steps of the "
        "model's own generate() with its KV cache (implies --inference).",
        group="generation",
        parse=_flag,
        uses=_GENERATE,
    )
    prompt_len: int | None = option(
        None,
        help="Prompt tokens of --generate (default: --seq-len, else the model's).",
        group="generation",
        parse=_integer(1, optional=True),
        uses=_GENERATE,
    )
    new_tokens: int = option(
        128,
        help="Tokens --generate produces (no end-of-sequence token stops it earlier).",
        group="generation",
        parse=_integer(1),
        uses=_GENERATE,
    )
    num_beams: int = option(
        1,
        help="Beams of --generate: 1 is greedy decoding, more is beam search.",
        group="generation",
        parse=_integer(1),
        uses=_GENERATE,
    )
    sample: bool = option(
        False,
        help="Sample each token (do_sample, with the model's generation config: top-k 50 by "
        "default) instead of choosing the most likely one.",
        group="generation",
        parse=_flag,
        uses=_GENERATE,
    )
    prefill_chunk: int | None = option(
        None,
        help="Prefill the prompt in chunks of this many tokens (transformers' "
        "prefill_chunk_size): bounds the prefill activations.",
        group="generation",
        parse=_integer(1, optional=True),
        uses=_GENERATE,
        metavar="T",
    )
    kv_cache: str = option(
        "dynamic",
        help="Cache class of --generate: dynamic (DynamicCache, grows with each token) or "
        "static (StaticCache, allocated for prompt + new tokens); sliding-window layers as "
        "the config says.",
        group="generation",
        parse=_choice(KV_CACHES),
        uses=_GENERATE,
        choices=KV_CACHES,
    )
    # precision
    precision: str = option(
        "fp32",
        help="Number format of weights and compute; -amp autocasts with fp32 weights "
        "(inference of a checkpoint: its config's torch_dtype unless given).",
        group="precision",
        parse=_choice(PRECISIONS),
        choices=PRECISIONS,
    )
    kv_dtype: str = option(
        "auto",
        help="KV cache dtype of generation: auto (the model's dtype), bf16, fp16, fp32, fp8 "
        "(vLLM), or int8/int4 (transformers' quantised cache, with its scales and zero points).",
        group="precision",
        parse=_choice(KV_DTYPES),
        uses=frozenset({"estimate"}),
        choices=KV_DTYPES,
    )
    # the optimizer
    optimizer: str = option(
        "adam",
        help="Optimizer of the training step.",
        group="optimizer",
        parse=_choice(OPTIMIZERS),
        uses=_STEPS,
        choices=OPTIMIZERS,
    )
    optimizer_impl: str = option(
        "auto",
        help="Optimizer implementation: auto is foreach on CUDA, for-loop on CPU.",
        group="optimizer",
        parse=_choice(OPTIMIZER_IMPLS),
        uses=_STEPS,
        choices=OPTIMIZER_IMPLS,
    )
    # the training loop
    loop: str = option(
        "pytorch",
        help="Training loop whose step to reproduce; sets the defaults of --zero-grad, "
        "--release-output and --optimizer-impl.",
        group="loop",
        parse=_choice(LOOPS),
        uses=_STEPS,
        choices=LOOPS,
    )
    zero_grad: str | None = option(
        None,
        help="zero_grad frees the gradients (set_to_none, PyTorch >= 2.0) or zeroes them, "
        "which keeps them allocated across steps (default: the loop's).",
        group="loop",
        parse=_choice(ZERO_GRADS, optional=True),
        uses=_STEPS,
        choices=ZERO_GRADS,
        training_only=True,
    )
    release_output: bool | None = option(
        None,
        help="The model output is released before backward, as the HF Trainer does, or kept "
        "alive through backward and into the next step's forward, as the loop variable of "
        "out = model(x); loss = f(out) is (default: the loop's).",
        group="loop",
        parse=_optional_flag,
        flag="--release-output/--keep-output",
        uses=_STEPS,
        training_only=True,
    )
    use_cache: bool | None = option(
        None,
        help="A Hugging Face model returns its key/value cache (past_key_values) from a "
        "forward pass, held as long as the output is (default: the config's use_cache, "
        "transformers' default on).",
        group="loop",
        parse=_optional_flag,
        flag="--use-cache/--no-cache",
        uses=_BUILDS,
    )
    step: UserStep | None = option(
        None,
        help="Your own step function fn(model, batch, optimizer), traced as written: "
        "module:function or path/file.py:function.",
        group="loop",
        parse=_step,
        uses=_STEPS,
        metavar="SPEC",
    )
    # strategies
    checkpoint: str = option(
        "none",
        help="Activation checkpointing: auto checkpoints the fewest blocks that fit the device.",
        group="strategies",
        parse=_checkpoint,
        uses=_STEPS,
        choices=CHECKPOINTS,
        metavar="POLICY",
        training_only=True,
    )
    freeze: tuple[str, ...] = option(
        (),
        help="Parameters to freeze: globs on names, comma-separated, or all-but-head.",
        group="strategies",
        parse=_globs,
        uses=_BUILDS,
        metavar="GLOBS",
    )
    lora: LoraConfig | None = option(
        None,
        help="LoRA adapters on linear layers, e.g. r=16,alpha=32,targets=q_proj,v_proj.",
        group="strategies",
        parse=_lora,
        uses=_BUILDS,
        metavar="SPEC",
    )
    quantize: str | None = option(
        None,
        help="Linear weights quantised (frozen) to this format.",
        group="strategies",
        parse=_choice(QUANTIZE, optional=True),
        choices=QUANTIZE,
    )
    bnb_compute_dtype: str = option(
        "fp32",
        help="Compute dtype of bitsandbytes 4-bit layers (bnb_4bit_compute_dtype; its "
        "default is fp32).",
        group="strategies",
        parse=_choice(BNB_COMPUTE_DTYPES),
        choices=BNB_COMPUTE_DTYPES,
    )
    grad_accum: int = option(
        1,
        help="Micro-batches of --batch per optimizer step (gradient accumulation).",
        group="strategies",
        parse=_integer(1),
        uses=_STEPS,
        training_only=True,
    )
    offload_optimizer: bool = option(
        False,
        help="Keep optimizer state, fp32 master weights and gradients in host memory (CUDA).",
        group="strategies",
        parse=_flag,
        uses=_STEPS,
        training_only=True,
    )
    # parallel layout: the step on world_size devices (see memlens.distributed)
    dp: int | None = option(
        None,
        help="Data-parallel degree (default: world size / (tp x pp x cp)).",
        group="parallel",
        parse=_integer(1, optional=True),
        uses=_PARALLEL,
    )
    fsdp: str = option(
        "none",
        help="FSDP sharding over the data-parallel ranks: full (ZeRO-3), grad-op "
        "(parameters kept gathered after forward, ZeRO-2-like), hybrid (HSDP), or none (DDP "
        "when dp > 1).",
        group="parallel",
        parse=_choice(FSDP),
        uses=_PARALLEL,
        choices=FSDP,
    )
    fsdp_shard: int | None = option(
        None,
        help="Ranks per shard group under --fsdp hybrid (default: 8, one node of 8 GPUs).",
        group="parallel",
        parse=_integer(1, optional=True),
        uses=_PARALLEL,
    )
    tp: int = option(
        1,
        help="Tensor-parallel degree.",
        group="parallel",
        parse=_integer(1),
        uses=_PARALLEL,
    )
    pp: int = option(
        1,
        help="Pipeline-parallel degree (stages).",
        group="parallel",
        parse=_integer(1),
        uses=_PARALLEL,
    )
    microbatches: int | None = option(
        None,
        help="Pipeline micro-batches of --batch per step (default: pp).",
        group="parallel",
        parse=_integer(1, optional=True),
        uses=_PARALLEL,
    )
    pp_schedule: str = option(
        "1f1b",
        help="Pipeline schedule: gpipe (all micro-batches in flight), 1f1b (pp - stage), "
        "interleaved (1F1B over virtual stages).",
        group="parallel",
        parse=_choice(PP_SCHEDULES),
        uses=_PARALLEL,
        choices=PP_SCHEDULES,
    )
    cp: int = option(
        1,
        help="Context-parallel degree (the sequence split across ranks).",
        group="parallel",
        parse=_integer(1),
        uses=_PARALLEL,
    )
    world_size: int | None = option(
        None,
        help="Devices in all: dp x tp x pp x cp (default: that product).",
        group="parallel",
        parse=_integer(1, optional=True),
        uses=_PARALLEL,
    )
    bucket_cap_mb: int = option(
        25,
        help="DDP gradient bucket size in MiB (DistributedDataParallel's bucket_cap_mb).",
        group="parallel",
        parse=_integer(1),
        uses=_PARALLEL,
        training_only=True,
    )
    gradient_as_bucket_view: bool = option(
        False,
        help="DDP gradients are views into its buckets (no second copy).",
        group="parallel",
        parse=_flag,
        uses=_PARALLEL,
        training_only=True,
    )
    deepspeed: ZeroConfig | None = option(
        None,
        help="DeepSpeed ZeRO over the data-parallel ranks instead of DDP/FSDP: stage=1|2|3 and "
        "zero_optimization keys (offload_optimizer=cpu, offload_param=cpu, "
        "reduce_bucket_size=5e8, stage3_max_live_parameters=1e9, ...) or a ds_config.json "
        "(closed form: implies --analytic).",
        group="parallel",
        parse=_deepspeed,
        uses=_PARALLEL,
        metavar="SPEC",
        training_only=True,
    )
    sequence_parallel: bool = option(
        False,
        help="Megatron sequence parallelism with --tp: norm and dropout activations split "
        "across the tensor-parallel ranks (closed form: implies --analytic).",
        group="parallel",
        parse=_flag,
        uses=_PARALLEL,
    )
    analytic: bool | None = option(
        None,
        help="Answer in closed form (memlens.analytic: the layer code's saved tensors or "
        "Korthikanti et al., ZeRO and DeepSpeed model states) instead of tracing: instant at "
        "any scale. Default: closed form for a parallel layout of a model above 20B "
        "parameters (minutes to trace), else traced.",
        group="parallel",
        parse=_optional_flag,
        flag="--analytic/--traced",
        uses=_PARALLEL,
    )
    # data loading: host memory only (see memlens.strategies.data)
    dataset_size: int | None = option(
        None,
        help="Samples of the data set held in host memory.",
        group="data",
        parse=_integer(1, optional=True),
        uses=_DATA,
    )
    sample_shape: tuple[int, ...] | None = option(
        None,
        help="Shape of one float32 sample in the data set, e.g. 3x224x224.",
        group="data",
        parse=_shape,
        uses=_DATA,
        metavar="SHAPE",
    )
    dataset_bytes: int | None = option(
        None,
        help="Size of the in-memory data set, e.g. 20GiB (instead of --dataset-size).",
        group="data",
        parse=_size,
        uses=_DATA,
        metavar="SIZE",
    )
    num_workers: int = option(
        0,
        help="DataLoader worker processes.",
        group="data",
        parse=_integer(0),
        uses=_DATA,
    )
    prefetch_factor: int | None = option(
        None,
        help="Batches each worker prefetches (DataLoader's default: 2).",
        group="data",
        parse=_integer(1, optional=True),
        uses=_DATA,
    )
    pin_memory: bool = option(
        False,
        help="DataLoader copies batches into pinned memory.",
        group="data",
        parse=_flag,
        uses=_DATA,
    )
    # the model's source
    task: str | None = option(
        None,
        help="Hugging Face head (default: the config's architecture).",
        group="model source",
        parse=_choice(TASKS, optional=True),
        choices=TASKS,
    )
    trust_remote_code: bool = option(
        False,
        help="Let a Hub config run its repository's own code.",
        group="model source",
        parse=_flag,
    )
    allow_long_context: bool = option(
        False,
        help="Allow a --seq-len past the model's positions (max_position_embeddings), for "
        "models that extrapolate (RoPE scaling).",
        group="model source",
        parse=_flag,
    )
    # what the trace cannot know from fake tensors
    data_dependent: str = option(
        "explore",
        help="Reads of values computed from the inputs (.item(), if t.sum() < 0): explore "
        "traces each read site's other answer and reports the largest peak; neutral answers "
        "True/1; fail refuses, naming the site.",
        group="tracing",
        parse=_choice(DATA_DEPENDENT),
        uses=_ALL - {"measure"},
        choices=DATA_DEPENDENT,
    )
    moe_routing: str = option(
        "balanced",
        help="Mixture-of-experts routing: balanced (tokens x top_k / experts each), worst "
        "(every token to the same top_k experts), or capacity:F (the busiest experts get F "
        "times their share).",
        group="tracing",
        parse=_routing,
        uses=_ALL - {"measure"},
        metavar="POLICY",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, meta(f).parse(f.name, value))
        if self.generate:
            object.__setattr__(self, "mode", "inference")  # generation is inference
        else:
            for f in fields(self):
                if f.name in GENERATION_FIELDS and getattr(self, f.name) != f.default:
                    raise WorkloadError(f.name, getattr(self, f.name), "needs --generate")
        impls = implementations(self.optimizer)
        if self.optimizer_impl not in impls:
            raise WorkloadError(
                "optimizer_impl",
                self.optimizer_impl,
                f"{self.optimizer} allows: " + ", ".join(impls),
            )
        if not self.training:
            for f in fields(self):
                if meta(f).training_only and getattr(self, f.name) != f.default:
                    raise WorkloadError(f.name, getattr(self, f.name), "applies to training only")
        if self.step is not None:
            # the function is the whole step: the loop's switches have nothing to act on
            for name, value in (
                ("loop", self.loop != "pytorch"),
                ("zero_grad", self.zero_grad is not None),
                ("release_output", self.release_output is not None),
                ("grad_accum", self.grad_accum != 1),
            ):
                if value:
                    raise WorkloadError(
                        name, getattr(self, name), "does not apply to a user's step function"
                    )
        self.layout  # noqa: B018 -- validates the parallel fields together
        if self.deepspeed is not None and self.fsdp != "none":
            raise WorkloadError("deepspeed", self.deepspeed.stage, "replaces --fsdp: give one")
        if self.sequence_parallel and self.tp == 1:
            raise WorkloadError("sequence_parallel", True, "needs --tp > 1")
        if self.checkpoint == "selective" and not self.closed_form:
            raise WorkloadError(
                "checkpoint",
                "selective",
                "selective recompute is modelled in closed form: add --analytic",
            )
        if self.prefetch_factor is not None and self.num_workers == 0:
            # torch.utils.data.DataLoader refuses it too: there is no worker to prefetch.
            raise WorkloadError("prefetch_factor", self.prefetch_factor, "needs num_workers > 0")

    @classmethod
    def from_fields(
        cls, values: Mapping[str, Any], *, base: Workload | None = None, use: str | None = None
    ) -> Workload:
        """``base`` (or the defaults) with ``values`` set, validated.

        An unknown name raises :class:`WorkloadError` naming the closest field; with ``use``
        (an API function, see :data:`USES`), so does a field that does not apply to it.
        """
        known = {f.name: f for f in fields(cls)}
        for name, value in values.items():
            f = known.get(name)
            if f is None:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise WorkloadError(name, value, "no such option" + hint)
            if use is not None and use not in meta(f).uses:
                raise WorkloadError(name, value, f"does not apply to {use}")
        return replace(base, **values) if base is not None else cls(**values)

    @property
    def training(self) -> bool:
        return self.mode == "train"

    @property
    def amp(self) -> bool:
        """Autocast with fp32 master weights (``bf16-amp``, ``fp16-amp``)."""
        return self.precision.endswith("-amp")

    @property
    def preset(self) -> LoopPreset:
        """The loop preset, with the fields the user set explicitly applied over it."""
        base = loop_preset(self.loop)
        return replace(
            base,
            zero_grad=self.zero_grad if self.zero_grad is not None else base.zero_grad,
            release_output=(
                self.release_output if self.release_output is not None else base.release_output
            ),
        )

    @property
    def loop_implied(self) -> dict[str, Any]:
        """What the loop preset set that the user left unset (for reports)."""
        base = loop_preset(self.loop)
        out: dict[str, Any] = {}
        if self.zero_grad is None:
            out["zero_grad"] = base.zero_grad
        if self.release_output is None:
            out["release_output"] = base.release_output
        if base.clip_grad_norm is not None:
            out["clip_grad_norm"] = base.clip_grad_norm
        if base.zero_grad_before_backward:
            out["zero_grad_at"] = "before backward"
        if self.uses_fused_default:
            out["optimizer_impl"] = "fused"
        return out

    @property
    def uses_fused_default(self) -> bool:
        """Whether the loop's fused default applies: ``auto`` and an optimizer with a fused
        implementation."""
        return (
            self.optimizer_impl == "auto"
            and loop_preset(self.loop).fused_optimizer
            and "fused" in implementations(self.optimizer)
        )

    @property
    def closed_form(self) -> bool:
        """Whether the step is answered by :mod:`memlens.analytic` (asked for, or a DeepSpeed
        or sequence-parallel layout, which only the closed form models)."""
        return bool(self.analytic) or self.deepspeed is not None or self.sequence_parallel

    @property
    def layout(self) -> Layout:
        """The parallel layout, with ``dp`` and ``world_size`` resolved (validated)."""
        return Layout.of(self)

    @property
    def effective_batch(self) -> int:
        """Samples per optimizer step: ``batch * grad_accum``."""
        return self.batch * self.grad_accum

    def with_(self, **changes: Any) -> Workload:
        """A copy with some fields changed (validated again)."""
        return Workload.from_fields(changes, base=self)


@dataclass(frozen=True)
class Layout:
    """A workload's parallel layout with every degree resolved: ``world_size = dp x tp x pp
    x cp``; ``shard`` is the FSDP shard group size (``dp`` under ``full``/``grad-op``, the
    hybrid group under ``hybrid``, 1 without FSDP)."""

    dp: int
    tp: int
    pp: int
    cp: int
    world_size: int
    fsdp: str
    shard: int
    microbatches: int
    pp_schedule: str

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def ddp(self) -> bool:
        """Data parallelism by replication (DistributedDataParallel)."""
        return self.dp > 1 and self.fsdp == "none"

    @classmethod
    def of(cls, w: Workload) -> Layout:
        """Resolve and check ``w``'s parallel fields; an impossible layout raises
        :class:`WorkloadError` naming the fields."""
        model = w.tp * w.pp * w.cp
        if w.dp is None:
            if w.world_size is None:
                dp = 1
            elif w.world_size % model:
                raise WorkloadError(
                    "world_size",
                    w.world_size,
                    f"must be a multiple of tp x pp x cp = {w.tp} x {w.pp} x {w.cp} = {model}",
                )
            else:
                dp = w.world_size // model
        else:
            dp = w.dp
        world = dp * model
        if w.world_size is not None and w.world_size != world:
            raise WorkloadError(
                "world_size",
                w.world_size,
                f"must equal dp x tp x pp x cp = {dp} x {w.tp} x {w.pp} x {w.cp} = {world}",
            )
        shard = 1
        if w.fsdp in ("full", "grad-op"):
            shard = dp
        elif w.fsdp == "hybrid":
            shard = w.fsdp_shard if w.fsdp_shard is not None else min(dp, 8)
            if dp % shard or dp == shard:
                raise WorkloadError(
                    "fsdp_shard",
                    shard,
                    f"--fsdp hybrid needs dp = {dp} to be a multiple (> 1) of the shard group",
                )
        if w.fsdp_shard is not None and w.fsdp != "hybrid":
            raise WorkloadError("fsdp_shard", w.fsdp_shard, "applies to --fsdp hybrid only")
        if w.pp == 1:
            for name, value, unset in (
                ("microbatches", w.microbatches, None),
                ("pp_schedule", w.pp_schedule, "1f1b"),
            ):
                if value != unset:
                    raise WorkloadError(name, value, "applies with pp > 1 only")
        microbatches = w.microbatches if w.microbatches is not None else w.pp
        if w.pp_schedule == "interleaved" and microbatches % w.pp:
            # ScheduleInterleaved1F1B: n_microbatches must be a multiple of the pp group size
            raise WorkloadError(
                "microbatches", microbatches, f"interleaved needs a multiple of pp = {w.pp}"
            )
        if (w.bucket_cap_mb != 25 or w.gradient_as_bucket_view) and not (
            dp > 1 and w.fsdp == "none"
        ):
            name = "bucket_cap_mb" if w.bucket_cap_mb != 25 else "gradient_as_bucket_view"
            raise WorkloadError(name, getattr(w, name), "applies to DDP only (dp > 1, --fsdp none)")
        return cls(dp, w.tp, w.pp, w.cp, world, w.fsdp, shard, microbatches, w.pp_schedule)


def meta(f: Field[Any]) -> OptionMeta:
    """The option metadata of a :class:`Workload` field."""
    return f.metadata["option"]


def options(use: str | None = None) -> Iterator[tuple[Field[Any], OptionMeta, type]]:
    """(field, metadata, value type) of every option, or of those ``use`` takes, in order.

    The value type is the field's type without ``None``: ``bool``, ``int``, ``str``, a tuple,
    :class:`LoraConfig`.
    """
    for f in fields(Workload):
        m = meta(f)
        if use is None or use in m.uses:
            yield f, m, _types()[f.name]


@cache
def _types() -> dict[str, Any]:
    """Field name -> value type (``X | None`` read as ``X``)."""
    out = {}
    for name, hint in typing.get_type_hints(Workload).items():
        if isinstance(hint, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        out[name] = hint
    return out


def default(f: Field[Any]) -> Any:
    """The default value of a :class:`Workload` field."""
    return f.default if f.default is not MISSING else None


def flag(name: str) -> str:
    """The command-line flag of a field: ``optimizer_impl`` -> ``--optimizer-impl``."""
    known = {f.name: f for f in fields(Workload)}
    f = known.get(name.split(".")[0])
    if f is None:
        return name
    return meta(f).flag or "--" + f.name.replace("_", "-")
