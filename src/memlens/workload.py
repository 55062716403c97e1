"""The :class:`Workload`: what one step does, validated on construction."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from memlens._errors import ConfigError, WorkloadError
from memlens.units import parse_size

MODES = ("inference", "train")
PRECISIONS = ("fp32", "bf16", "fp16", "bf16-amp", "fp16-amp")
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "adafactor", "lion", "adam-8bit")
OPTIMIZER_IMPLS = ("auto", "foreach", "for-loop", "fused")
DEVICES = ("cpu", "cuda")
QUANTIZE = ("int8", "int4", "nf4")
#: ``every-k:K`` and ``modules:PATH,PATH`` take an argument; ``auto`` needs a device capacity.
CHECKPOINTS = ("none", "blocks", "every-k:K", "sqrt", "auto", "modules:PATH,...")

#: Workload fields beyond the basics that ``memlens.estimate``/``measure`` take as keywords.
STRATEGY_FIELDS = (
    "checkpoint",
    "freeze",
    "lora",
    "quantize",
    "optimizer_impl",
    "grad_accum",
    "offload_optimizer",
    "dataset_size",
    "sample_shape",
    "dataset_bytes",
    "num_workers",
    "prefetch_factor",
    "pin_memory",
)

#: Which optimizers PyTorch implements with each ``optimizer_impl`` (torch/optim/*.py).
_IMPLS_OF = {
    "sgd": ("auto", "foreach", "for-loop", "fused"),
    "sgd-momentum": ("auto", "foreach", "for-loop", "fused"),
    "adam": ("auto", "foreach", "for-loop", "fused"),
    "adamw": ("auto", "foreach", "for-loop", "fused"),
    "adafactor": ("auto", "foreach", "for-loop"),
    "lion": ("auto", "for-loop"),
    "adam-8bit": ("auto", "for-loop"),
}


def _choice(field_name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise WorkloadError(field_name, value, "allowed: " + ", ".join(allowed))
    return value.lower()


def _positive(field_name: str, value: object, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkloadError(field_name, value, "must be a positive integer")
    return value


def _shape(field_name: str, value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_shape(value, field_name)
    shape = tuple(value)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise WorkloadError(field_name, value, "must be positive integers, e.g. 3x224x224")
    return shape


def _checkpoint(value: object) -> str:
    """Normalise a checkpointing policy (see :data:`CHECKPOINTS`)."""
    allowed = "allowed: " + ", ".join(CHECKPOINTS)
    if not isinstance(value, str):
        raise WorkloadError("checkpoint", value, allowed)
    text = value.strip()
    low = text.lower()
    if low in ("none", "blocks", "sqrt", "auto"):
        return low
    if low.startswith("every-k:"):
        k = low.split(":", 1)[1]
        if not k.isdigit() or int(k) < 1:
            raise WorkloadError("checkpoint", value, "every-k:K needs a positive integer K")
        return f"every-k:{int(k)}"
    if low.startswith("modules:"):
        names = [n.strip() for n in text.split(":", 1)[1].split(",") if n.strip()]
        if not names:
            raise WorkloadError("checkpoint", value, "modules: needs module paths")
        return "modules:" + ",".join(names)
    raise WorkloadError("checkpoint", value, allowed)


def _freeze(value: object) -> tuple[str, ...]:
    """Parameter/module name globs, from ``"a.*,b"``, a list, or ``"all-but-head"``."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    try:
        patterns = tuple(str(p).strip() for p in items if str(p).strip())  # type: ignore[union-attr]
    except TypeError:
        raise WorkloadError(
            "freeze", value, "use globs separated by commas, or all-but-head"
        ) from None
    return patterns


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
        _positive("lora.r", self.r)
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
            fields: dict[str, Any] = dict(value)
        elif isinstance(value, str):
            fields, key = {}, None
            for item in (s.strip() for s in value.split(",")):
                if not item:
                    continue
                if "=" in item:
                    key, _, val = item.partition("=")
                    key = key.strip().lower()
                    fields[key] = [val.strip()] if key == "targets" else val.strip()
                elif key == "targets":
                    fields["targets"].append(item)
                else:
                    raise WorkloadError("lora", value, "use r=16,alpha=32,targets=q_proj,v_proj")
        else:
            raise WorkloadError("lora", value, "use r=16,alpha=32,targets=q_proj,v_proj")
        unknown = set(fields) - {"r", "alpha", "dropout", "targets"}
        if unknown:
            raise WorkloadError("lora", value, "keys: r, alpha, dropout, targets")
        try:
            r = int(fields.get("r", cls.r))
            alpha = float(fields.get("alpha", r))  # scaling 1 unless given
            dropout = float(fields.get("dropout", cls.dropout))
        except (TypeError, ValueError):
            raise WorkloadError(
                "lora", value, "r is an integer, alpha and dropout numbers"
            ) from None
        targets = fields.get("targets", ())
        if isinstance(targets, str):
            targets = [t for t in targets.split(",") if t.strip()]
        return cls(r=r, alpha=alpha, dropout=dropout, targets=tuple(targets))


@dataclass(frozen=True)
class Workload:
    """One step of a model: how it runs, on what, with which optimizer and strategies.

    ``input_shape`` is the shape of one sample (without the batch dimension), for example
    ``(3, 224, 224)``; ``seq_len`` is the token count for language models. Either may be
    ``None``, in which case the model's source picks its own default. ``batch`` is the
    micro-batch: with ``grad_accum=N`` a step runs ``N`` of them before the optimizer.

    Strategies (:mod:`memlens.strategies`): ``checkpoint`` (see :data:`CHECKPOINTS`),
    ``freeze`` (globs on parameter or module names, or ``all-but-head``), ``lora``,
    ``quantize`` (frozen linear weights in ``int8``/``int4``/``nf4``), ``optimizer_impl``,
    ``offload_optimizer`` (optimizer state and fp32 gradients in host memory; CUDA only).
    Data loading (host memory only, closed form; see :mod:`memlens.strategies.data`):
    ``dataset_size`` samples of ``sample_shape`` (or ``dataset_bytes`` in all),
    ``num_workers``, ``prefetch_factor``, ``pin_memory``.
    """

    mode: str = "train"
    batch: int = 1
    input_shape: tuple[int, ...] | None = None
    seq_len: int | None = None
    precision: str = "fp32"
    optimizer: str = "adam"
    device: str = "cuda"
    options: dict[str, Any] = field(default_factory=dict)  # source-specific extras
    checkpoint: str = "none"
    freeze: tuple[str, ...] = ()
    lora: LoraConfig | None = None
    quantize: str | None = None
    optimizer_impl: str = "auto"
    grad_accum: int = 1
    offload_optimizer: bool = False
    dataset_size: int | None = None
    sample_shape: tuple[int, ...] | None = None
    dataset_bytes: int | None = None
    num_workers: int = 0
    prefetch_factor: int | None = None
    pin_memory: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mode", _choice("mode", self.mode, MODES))
        set_(self, "precision", _choice("precision", self.precision, PRECISIONS))
        set_(self, "optimizer", _choice("optimizer", self.optimizer, OPTIMIZERS))
        set_(self, "device", _choice("device", self.device, DEVICES))
        _positive("batch", self.batch)
        _positive("seq_len", self.seq_len, optional=True)
        set_(self, "input_shape", _shape("input_shape", self.input_shape))
        set_(self, "checkpoint", _checkpoint(self.checkpoint))
        set_(self, "freeze", _freeze(self.freeze))
        if self.lora is not None:
            set_(self, "lora", LoraConfig.parse(self.lora))
        if self.quantize is not None:
            set_(self, "quantize", _choice("quantize", self.quantize, QUANTIZE))
        impls = _IMPLS_OF[self.optimizer]
        impl = _choice("optimizer_impl", self.optimizer_impl, OPTIMIZER_IMPLS)
        if impl not in impls:
            raise WorkloadError(
                "optimizer_impl", impl, f"{self.optimizer} allows: " + ", ".join(impls)
            )
        set_(self, "optimizer_impl", impl)
        _positive("grad_accum", self.grad_accum)
        for flag in ("offload_optimizer", "pin_memory"):
            if not isinstance(getattr(self, flag), bool):
                raise WorkloadError(flag, getattr(self, flag), "must be true or false")
        if not self.training:
            for name, idle in (
                ("checkpoint", "none"),
                ("grad_accum", 1),
                ("offload_optimizer", False),
            ):
                if getattr(self, name) != idle:
                    raise WorkloadError(name, getattr(self, name), "applies to training only")
        if self.offload_optimizer and self.device != "cuda":
            raise WorkloadError(
                "offload_optimizer", True, "moves state from a CUDA device to the host"
            )
        self._check_data()

    def _check_data(self) -> None:
        set_ = object.__setattr__
        _positive("dataset_size", self.dataset_size, optional=True)
        set_(self, "sample_shape", _shape("sample_shape", self.sample_shape))
        if self.dataset_bytes is not None:
            try:
                set_(self, "dataset_bytes", parse_size(self.dataset_bytes))
            except ConfigError:
                raise WorkloadError(
                    "dataset_bytes", self.dataset_bytes, "a size such as 20GiB or 5000000"
                ) from None
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int):
            raise WorkloadError("num_workers", self.num_workers, "must be an integer >= 0")
        if self.num_workers < 0:
            raise WorkloadError("num_workers", self.num_workers, "must be an integer >= 0")
        _positive("prefetch_factor", self.prefetch_factor, optional=True)
        if self.prefetch_factor is not None and self.num_workers == 0:
            # torch.utils.data.DataLoader refuses it too: there is no worker to prefetch.
            raise WorkloadError("prefetch_factor", self.prefetch_factor, "needs num_workers > 0")

    @property
    def training(self) -> bool:
        return self.mode == "train"

    @property
    def amp(self) -> bool:
        """Autocast with fp32 master weights (``bf16-amp``, ``fp16-amp``)."""
        return self.precision.endswith("-amp")

    @property
    def effective_batch(self) -> int:
        """Samples per optimizer step: ``batch * grad_accum``."""
        return self.batch * self.grad_accum

    def with_(self, **changes: Any) -> Workload:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("input_shape", "sample_shape", "freeze"):
            d[key] = list(d[key]) if d[key] else None
        if self.lora is not None:
            d["lora"]["targets"] = list(self.lora.targets)
        return d


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
