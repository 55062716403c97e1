"""Weight storage formats, one row each: what a weight costs and which quantisation
constants come with it. This module never imports torch.

:func:`memlens.size` sums the bytes of these layouts from parameter shapes; the quantised
layers of :mod:`memlens.strategies.quantize` allocate the same tensors, so a format's name
means one layout everywhere. For a tensor of ``n`` weights whose first dimension is ``rows``
(output channels or features; ``cols = n / rows``), block size ``B`` and group size ``G``:

=============  ==============  ==========================================================
format         payload         constants
=============  ==============  ==========================================================
fp32           4 B per weight  none
bf16, fp16     2 B             none
fp8            1 B (e4m3)      one fp32 scale per tensor (per-tensor scaling, as torchao's
                               Float8 training and Transformer Engine)
int8           1 B             LLM.int8 (bitsandbytes ``Linear8bitLt``): one fp32 absmax
                               per row (``SCB``)
int8-grouped   1 B             per group of ``G`` weights along a row
                               (``rows*ceil(cols/G)`` groups): an fp16 scale and an int8
                               zero point
int4           1/2 B           bitsandbytes ``Linear4bit``'s default (FP4, no double
                               quantisation): one fp32 absmax per block of 64 weights
                               (tensor flattened) and the 16-entry fp32 FP4 code per tensor
int4-grouped   1/2 B           per group of ``G``: an fp16 scale and a 4-bit zero point
                               (GPTQ and AWQ pack ``qzeros`` 8 to an int32)
nf4            1/2 B           QLoRA's ``Linear4bit`` (NF4, double quantisation): the
                               absmax of each block of 64 weights as uint8, one fp32
                               absmax per 256 blocks, one fp32 offset (their mean) and the
                               16-entry fp32 NF4 code per tensor; once per model, the
                               256-entry fp32 map of the nested 8-bit quantisation
=============  ==============  ==========================================================

Sources: ``bitsandbytes/functional.py`` (``quantize_4bit(blocksize=64)``,
``quantize_blockwise(absmax, blocksize=256)``, ``get_4bit_type``: 16 values,
``create_dynamic_map``: 256 values, cached once per device) and
``bitsandbytes/nn/modules.py`` (``Int8Params.SCB``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Bits of one element of each storage dtype.
DTYPE_BITS: dict[str, int] = {
    "fp32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    "uint8": 8,
    "int4": 4,
    "int32": 32,
}


@dataclass(frozen=True)
class Stored:
    """One tensor a format stores: its name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.ceil(math.prod(self.shape) * DTYPE_BITS[self.dtype] / 8)


@dataclass(frozen=True)
class Constant:
    """Quantisation constants of one kind: one ``dtype`` value per ``per`` of a tensor.

    ``per`` is ``"tensor"`` (a scalar), ``"row"``, ``"col"`` (one per input feature),
    ``"block"`` (``block`` weights, the tensor flattened), ``"nested-block"``
    (``nested_block`` blocks), ``"group"`` (``group_size`` weights along a row), ``"tile"``
    (``tile x tile`` weights of a 2-D tensor), or a number of entries per tensor (a code table).
    """

    name: str
    per: str | int
    dtype: str


@dataclass(frozen=True)
class WeightFormat:
    """A storage format (see the module docstring)."""

    name: str
    bits: int  # payload bits per weight
    payload_dtype: str  # dtype of the stored payload (``uint8`` holding two 4-bit values)
    constants: tuple[Constant, ...] = ()  # per tensor, in the order a layer registers them
    shared: tuple[Stored, ...] = ()  # once per model, whatever the number of tensors
    block: int | None = None  # weights per block
    nested_block: int | None = None  # blocks per block of the nested quantisation
    layer: str | None = None  # the bitsandbytes layer :mod:`~memlens.strategies.quantize` mimics
    tile: int | None = None  # edge of the 2-D tiles of per-tile constants

    def payload(self, shape: tuple[int, ...]) -> Stored:
        """The stored weights: ``shape`` itself, or packed into a column of bytes."""
        n = math.prod(shape)
        per_element = DTYPE_BITS[self.payload_dtype]
        if self.bits == per_element:
            return Stored("weight", tuple(shape), self.payload_dtype)
        return Stored("weight", (math.ceil(n * self.bits / per_element), 1), self.payload_dtype)

    def metadata(self, shape: tuple[int, ...], group_size: int | None = None) -> list[Stored]:
        """The quantisation constants of one tensor of ``shape`` (none for an empty one);
        ``group_size`` is needed by grouped formats only."""
        n = math.prod(shape)
        if n == 0:
            return []
        rows = shape[0] if len(shape) > 1 else 1
        return [
            Stored(c.name, self._count(c.per, n, rows, group_size), c.dtype) for c in self.constants
        ]

    def _count(self, per: str | int, n: int, rows: int, group_size: int | None) -> tuple[int, ...]:
        """Shape of the constants kept per ``per`` for ``n`` weights in ``rows`` rows."""
        blocks = math.ceil(n / self.block) if self.block else 0
        match per:
            case int():
                return (per,)
            case "tensor":
                return ()
            case "row":
                return (rows,)
            case "col":
                return (n // rows,)
            case "tile" if self.tile:
                return (math.ceil(rows / self.tile), math.ceil(n // rows / self.tile))
            case "block" if blocks:
                return (blocks,)
            case "nested-block" if blocks and self.nested_block:
                return (math.ceil(blocks / self.nested_block),)
            case "group" if group_size:
                return (rows * math.ceil(n // rows / group_size),)
        raise ValueError(f"{self.name}: no size for constants per {per!r}")


_BNB_CODE = Constant("code", 16, "fp32")  # the 16-entry FP4 / NF4 code of a tensor

#: Every format, in report order.
WEIGHT_FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat("fp32", 32, "fp32"),
        WeightFormat("bf16", 16, "bf16"),
        WeightFormat("fp16", 16, "fp16"),
        WeightFormat("fp8", 8, "fp8", (Constant("scale", "tensor", "fp32"),)),
        WeightFormat("int8", 8, "int8", (Constant("scb", "row", "fp32"),), layer="Linear8bitLt"),
        WeightFormat(
            "int8-grouped",
            8,
            "int8",
            (Constant("scales", "group", "fp16"), Constant("zeros", "group", "int8")),
        ),
        WeightFormat(
            "int4",
            4,
            "uint8",
            (_BNB_CODE, Constant("absmax", "block", "fp32")),
            block=64,
            layer="Linear4bit",
        ),
        WeightFormat(
            "int4-grouped",
            4,
            "uint8",
            (Constant("scales", "group", "fp16"), Constant("qzeros", "group", "int4")),
        ),
        WeightFormat(
            "nf4",
            4,
            "uint8",
            (
                _BNB_CODE,
                Constant("absmax", "block", "uint8"),
                Constant("nested_absmax", "nested-block", "fp32"),
                Constant("offset", "tensor", "fp32"),
            ),
            shared=(Stored("nested_code", (256,), "fp32"),),
            block=64,
            nested_block=256,
            layer="Linear4bit",
        ),
    )
}

#: Format names, in report order.
NAMES: tuple[str, ...] = tuple(WEIGHT_FORMATS)
#: Formats the quantised layers implement (the workload's ``quantize`` choices).
LAYER_FORMATS: tuple[str, ...] = tuple(n for n, f in WEIGHT_FORMATS.items() if f.layer)


#: Formats of quantised *checkpoints* served for inference, beyond :data:`WEIGHT_FORMATS`
#: (which ``memlens size`` tabulates and the quantised layers implement). A linear layer's
#: weight is ``[out, in]`` (``rows = out``); groups run along ``in``:
#:
#: - ``gptq-int4``: AutoGPTQ's ``QuantLinear`` and vLLM's ``GPTQLinearMethod.create_weights``
#:   (``vllm/model_executor/layers/quantization/gptq.py``): ``qweight`` int32
#:   ``[in / 8, out]``, ``qzeros`` int32 ``[in / G, out / 8]``, ``scales`` fp16
#:   ``[in / G, out]`` and ``g_idx`` int32 ``[in]`` (the group of each input feature,
#:   stored whatever ``desc_act``).
#: - ``awq-int4``: AutoAWQ's ``WQLinear_GEMM`` and vLLM's ``AWQLinearMethod.create_weights``
#:   (``awq.py``): ``qweight`` int32 ``[in, out / 8]``, ``qzeros`` int32 ``[in / G, out / 8]``,
#:   ``scales`` fp16 ``[in / G, out]``; no ``g_idx``.
#: - ``fp8-channel``: compressed-tensors / llm-compressor FP8 checkpoints as vLLM loads them
#:   (``CompressedTensorsW8A16Fp8`` / ``W8A8Fp8`` with the channel strategy): ``weight``
#:   e4m3 ``[out, in]`` and ``weight_scale`` fp32 ``[out, 1]``.
#: - ``fp8-block``: DeepSeek-V3's block-wise FP8 (``quantization_config.weight_block_size``
#:   ``[128, 128]``; vLLM ``Fp8LinearMethod`` with ``block_quant``): ``weight`` e4m3 and
#:   ``weight_scale_inv`` fp32 ``[ceil(out / 128), ceil(in / 128)]``.
#:
#: ``fp8`` (per tensor: one fp32 ``weight_scale``, vLLM ``Fp8LinearMethod``) and ``int8``
#: (one fp32 scale per output row: bitsandbytes' ``SCB``, and compressed-tensors' W8A8 int8
#: ``weight_scale [out, 1]``) are the rows of :data:`WEIGHT_FORMATS`.
INFERENCE_FORMATS: dict[str, WeightFormat] = {
    **WEIGHT_FORMATS,
    **{
        f.name: f
        for f in (
            WeightFormat(
                "gptq-int4",
                4,
                "int32",
                (
                    Constant("qzeros", "group", "int4"),
                    Constant("scales", "group", "fp16"),
                    Constant("g_idx", "col", "int32"),
                ),
            ),
            WeightFormat(
                "awq-int4",
                4,
                "int32",
                (Constant("qzeros", "group", "int4"), Constant("scales", "group", "fp16")),
            ),
            WeightFormat("fp8-channel", 8, "fp8", (Constant("weight_scale", "row", "fp32"),)),
            WeightFormat(
                "fp8-block", 8, "fp8", (Constant("weight_scale_inv", "tile", "fp32"),), tile=128
            ),
        )
    },
}
