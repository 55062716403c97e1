"""The :class:`Workload`: what one step does, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from memlens._errors import WorkloadError

MODES = ("inference", "train")
PRECISIONS = ("fp32", "bf16", "fp16", "bf16-amp", "fp16-amp")
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")
DEVICES = ("cpu", "cuda")


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


@dataclass(frozen=True)
class Workload:
    """One step of a model: how it runs, on what, with which optimizer.

    ``input_shape`` is the shape of one sample (without the batch dimension), for example
    ``(3, 224, 224)``; ``seq_len`` is the token count for language models. Either may be
    ``None``, in which case the model's source picks its own default.
    """

    mode: str = "train"
    batch: int = 1
    input_shape: tuple[int, ...] | None = None
    seq_len: int | None = None
    precision: str = "fp32"
    optimizer: str = "adam"
    device: str = "cuda"
    options: dict[str, Any] = field(default_factory=dict)  # source-specific extras

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "mode", _choice("mode", self.mode, MODES))
        set_(self, "precision", _choice("precision", self.precision, PRECISIONS))
        set_(self, "optimizer", _choice("optimizer", self.optimizer, OPTIMIZERS))
        set_(self, "device", _choice("device", self.device, DEVICES))
        _positive("batch", self.batch)
        _positive("seq_len", self.seq_len, optional=True)
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if not shape or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
            ):
                raise WorkloadError(
                    "input_shape", self.input_shape, "must be positive integers, e.g. 3x224x224"
                )
            set_(self, "input_shape", shape)

    @property
    def training(self) -> bool:
        return self.mode == "train"

    def with_(self, **changes: Any) -> Workload:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        return d


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"3x224x224"`` (or ``"3,224,224"``) into a shape tuple."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise WorkloadError(
            "input_shape", text, "use integers separated by 'x', e.g. 3x224x224"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise WorkloadError("input_shape", text, "must be positive integers, e.g. 3x224x224")
    return shape
