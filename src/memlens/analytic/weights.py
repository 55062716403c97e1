"""Weights for inference: a model's parameters stored in a serving format, per GPU (torch-free).

A :class:`Scheme` names how the linear layers' weights are stored (:data:`SCHEMES`); the
layout of each is a row of :data:`memlens.formats.INFERENCE_FORMATS` (payload, scales, zero
points, ``g_idx``, block/tile scales, with their sources). Embeddings, norms, biases and the
LM head stay in the compute dtype, as GPTQ, AWQ, bitsandbytes and FP8 checkpoints keep them
(their ``modules_to_not_convert`` / ``lm_head`` unquantised by default); MoE routers too.

The scheme comes from the ``--quantize`` option, else the config's ``quantization_config``
(:func:`scheme_from_config`), else a safetensors header's tensor names and dtypes
(:func:`scheme_from_header`); with a header the bytes are the header's own
(:func:`header_weights`).

Tensor parallelism follows vLLM's layers (``vllm/model_executor/layers/linear.py``,
``vocab_parallel_embedding.py``): column-parallel linears split their output rows, row-
parallel ones (``o_proj``, ``down_proj``, ``dense_4h_to_h``, ``c_proj``, ``out_proj``,
``w2``) their input columns; K and V projections with fewer KV heads than GPUs keep one whole
head per GPU (``QKVParallelLinear``: ``num_kv_head_replicas``); embeddings and the LM head are
split by vocabulary rows padded to a multiple of 64 (``DEFAULT_VOCAB_PADDING_SIZE``); norms
are replicated, and so are MoE routers and MLA's latent projections (``ReplicatedLinear``);
MoE experts split their intermediate dimension (``FusedMoE``).

Dequantisation temporaries (:meth:`InferenceWeights.dequant_bytes`) are what a kernel
allocates besides the stored weight, for the largest quantised linear:

- GPTQ/AWQ int4 on sm80+: vLLM's Marlin kernels (``gptq_marlin.py``, ``awq_marlin.py``;
  symmetric GPTQ, AWQ with zero points, groups of 32, 64, 128 or a whole row) dequantise in
  registers: none. Otherwise, or before sm80, the ExLlama GPTQ kernel rebuilds an fp16 weight
  for more than 50 rows (``MAX_Q_GEMM_ROWS`` in ``q_gemm.cu``) and AWQ dequantises it for 256
  tokens or more (``AWQLinearMethod.apply``: ``FP16_MATMUL_HEURISTIC_CONDITION``).
- bitsandbytes 4-bit: ``matmul_4bit`` runs ``gemv_4bit`` for one token, otherwise
  ``MatMul4Bit.forward`` dequantises the whole weight to the compute dtype
  (``bitsandbytes/autograd/_functions.py``).
- bitsandbytes int8 (LLM.int8): ``MatMul8bitLt.forward`` quantises the input to int8 with a
  fp32 scale per row and multiplies into an int32 output before dequantising it.
- fp8 and int8 (W8A8) on sm89+: the input is quantised per token to one byte with an fp32
  scale per token (``scaled_fp8_quant``); on sm80 vLLM runs fp8 weights through Marlin
  (weight-only, in registers): none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from memlens._errors import ConfigError, WorkloadError
from memlens.formats import DTYPE_BITS, INFERENCE_FORMATS

if TYPE_CHECKING:
    from memlens._size import ParamTensor
    from memlens.sources.weights import WeightsSummary

#: ``--quantize`` choices of inference. ``int4`` is GPTQ int4 (group 128); ``auto`` the
#: checkpoint's own (config ``quantization_config``), else the compute dtype.
SCHEMES = (
    "auto",
    "bf16",
    "fp16",
    "fp32",
    "int8",
    "fp8",
    "fp8-channel",
    "fp8-block",
    "int4",
    "gptq-int4",
    "awq-int4",
    "bnb-nf4",
    "bnb-fp4",
    "bnb-int8",
)
#: Scheme -> its storage format (a key of :data:`INFERENCE_FORMATS`).
_FORMAT = {
    "bf16": "bf16",
    "fp16": "fp16",
    "fp32": "fp32",
    "int8": "int8",
    "fp8": "fp8",
    "fp8-channel": "fp8-channel",
    "fp8-block": "fp8-block",
    "gptq-int4": "gptq-int4",
    "awq-int4": "awq-int4",
    "bnb-nf4": "nf4",  # NF4 with double quantisation (QLoRA's)
    "bnb-fp4": "int4",  # 4-bit without double quantisation: fp32 absmax per 64 (NF4 or FP4)
    "bnb-int8": "int8",
}
DEFAULT_GROUP_SIZE = 128
_ROW_PARALLEL = re.compile(r"(o_proj|down_proj|dense_4h_to_h|c_proj|out_proj|\.w2|\.fc2)\b")
_KV_PROJ = re.compile(r"\b(k_proj|v_proj)\.")
_ROUTER = re.compile(r"(\.gate\.weight$|router|shared_expert_gate)")
#: Linears vLLM keeps whole on every GPU (``ReplicatedLinear``): MoE routers and MLA's
#: latent down-projections (``vllm/model_executor/models/deepseek_v2.py``).
_REPLICATED = re.compile(r"(\.gate\.weight$|router|shared_expert_gate|kv_a_proj|q_a_proj)")
_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class Scheme:
    """How the linear weights are stored: a scheme of :data:`SCHEMES`, its format, group
    size (grouped formats), the compute dtype, and where the choice came from."""

    name: str
    format: str
    group_size: int | None
    compute_dtype: str
    source: str
    marlin: bool = True  # GPTQ/AWQ: vLLM's Marlin kernel takes it on sm80+


def scheme(
    name: str, compute_dtype: str, *, group_size: int | None = None, source: str = "option"
) -> Scheme:
    """The :class:`Scheme` of ``name`` (not ``auto``); ``int4`` is GPTQ int4, group 128."""
    if name not in SCHEMES or name == "auto":
        raise WorkloadError("quantize", name, "allowed: " + ", ".join(SCHEMES))
    if compute_dtype not in _BYTES:
        raise WorkloadError("dtype", compute_dtype, "allowed: fp32, bf16, fp16")
    if name == "int4":
        name = "gptq-int4"
    if name in ("bf16", "fp16", "fp32"):
        compute_dtype = name
    grouped = name in ("gptq-int4", "awq-int4")
    if grouped and group_size is None:
        group_size = DEFAULT_GROUP_SIZE
    if group_size is not None and (not grouped or group_size < 1):
        raise WorkloadError("group_size", group_size, "a positive integer, for gptq-int4/awq-int4")
    return Scheme(name, _FORMAT[name], group_size, compute_dtype, source)


def scheme_from_config(config: Mapping[str, Any], compute_dtype: str) -> Scheme | None:
    """The scheme a config's ``quantization_config`` names (None when it has none).

    Read as transformers' quantizer configs spell them (``utils/quantization_config.py``):
    ``gptq``/``awq`` (``bits``, ``group_size``: ``-1`` is one group per row), ``bitsandbytes``
    (``load_in_4bit``, ``bnb_4bit_quant_type``, ``bnb_4bit_use_double_quant``,
    ``load_in_8bit``), ``fp8`` (``weight_block_size``) and ``compressed-tensors`` float8
    weights (strategy ``tensor``/``channel``/``block``). Others are refused by name.
    """
    qc = config.get("quantization_config")
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).lower()
    src = f"config quantization_config ({method})"
    if method in ("gptq", "awq"):
        bits = qc.get("bits", qc.get("w_bit", 4))
        if bits != 4:
            raise ConfigError(f"{method} with {bits} bits: only 4-bit layouts are modelled")
        group = qc.get("group_size", qc.get("q_group_size", DEFAULT_GROUP_SIZE))
        group = None if group in (-1, None) else int(group)
        out = scheme(f"{method}-int4", "fp16", source=src, group_size=group or DEFAULT_GROUP_SIZE)
        # gptq_marlin.py / awq_marlin.py: symmetric GPTQ, AWQ with zero points, these groups
        marlin = (qc.get("sym", True) if method == "gptq" else qc.get("zero_point", True)) and (
            group in (None, 32, 64, 128)
        )
        out = replace(out, marlin=bool(marlin))
        return out if group else _one_group(out)
    if method == "bitsandbytes":
        if qc.get("load_in_8bit"):
            return scheme("bnb-int8", compute_dtype, source=src)
        if qc.get("load_in_4bit"):
            dq = qc.get("bnb_4bit_use_double_quant")
            dtype = str(qc.get("bnb_4bit_compute_dtype", "float32")).removeprefix("torch.")
            cdt = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, "fp32")
            return scheme("bnb-nf4" if dq else "bnb-fp4", cdt, source=src)
    if method == "fp8":
        block = qc.get("weight_block_size")
        return scheme("fp8-block" if block else "fp8", compute_dtype, source=src)
    if method == "compressed-tensors":
        for group in (qc.get("config_groups") or {}).values():
            w = group.get("weights") or {}
            if w.get("type") == "float" and w.get("num_bits") == 8:
                strategy = w.get("strategy", "tensor")
                name = {"tensor": "fp8", "channel": "fp8-channel", "block": "fp8-block"}.get(
                    strategy
                )
                if name:
                    return scheme(name, compute_dtype, source=src)
            if w.get("type") == "int" and w.get("num_bits") == 8 and w.get("strategy") == "channel":
                return scheme("int8", compute_dtype, source=src)
    raise ConfigError(
        f"quantization_config {method or '?'}: layout not modelled; give --quantize or the "
        "checkpoint's safetensors header"
    )


def _one_group(s: Scheme) -> Scheme:
    """GPTQ/AWQ ``group_size=-1``: one group spanning each row (set per tensor)."""
    return replace(s, group_size=None, source=s.source + ", one group per row")


def scheme_from_header(
    names: Sequence[str], dtypes: Sequence[str], compute_dtype: str
) -> Scheme | None:
    """The scheme a checkpoint's tensor names and dtypes reveal (None: unquantised)."""
    joined = " ".join(names)
    src = "safetensors header"
    if ".qweight" in joined:
        return scheme("gptq-int4" if ".g_idx" in joined else "awq-int4", "fp16", source=src)
    if "weight_scale_inv" in joined:
        return scheme("fp8-block", compute_dtype, source=src)
    if ".SCB" in joined:
        return scheme("bnb-int8", compute_dtype, source=src)
    if "nested_absmax" in joined:
        return scheme("bnb-nf4", compute_dtype, source=src)
    if ".absmax" in joined or "quant_map" in joined:
        return scheme("bnb-fp4", compute_dtype, source=src)
    if ".weight_scale" in joined and any(d.upper().startswith("F8") for d in dtypes):
        return scheme("fp8", compute_dtype, source=src)
    return None


@dataclass(frozen=True)
class InferenceWeights:
    """The weights on one GPU: quantised payload and constants, what stays in the compute
    dtype, and the largest quantised linear (``(out, in)`` on this GPU) for temporaries."""

    scheme: Scheme
    tp: int
    quantized_params: int
    kept_params: int
    payload_bytes: int
    metadata_bytes: int
    kept_bytes: int
    largest_linear: tuple[int, int] | None
    method: str  # "fake build" | "safetensors header" | "parameter count"
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.payload_bytes + self.metadata_bytes + self.kept_bytes

    def dequant_bytes(self, tokens: int, arch: str) -> tuple[int, str]:
        """Temporaries of the largest quantised linear for ``tokens`` rows on ``arch``
        (``"sm90"``), with the kernel named (see the module docstring)."""
        if self.largest_linear is None or self.scheme.format in ("bf16", "fp16", "fp32"):
            return 0, "none (unquantised)"
        out, inn = self.largest_linear
        cbytes = _BYTES[self.scheme.compute_dtype]
        sm = int(arch[2:]) if arch.startswith("sm") and arch[2:].isdigit() else 0
        name = self.scheme.name
        if name in ("gptq-int4", "awq-int4"):
            if sm >= 80 and self.scheme.marlin:
                return 0, "Marlin (dequantised in registers)"
            limit = 50 if name == "gptq-int4" else 255
            if tokens > limit:
                return out * inn * 2, f"fp16 weight rebuilt above {limit} tokens"
            return 0, "fused int4 GEMM"
        if name in ("bnb-nf4", "bnb-fp4"):
            if tokens == 1:
                return 0, "gemv_4bit (one token)"
            return out * inn * cbytes, "dequantize_4bit of the whole weight"
        if name == "bnb-int8":
            return tokens * inn + 4 * tokens + 4 * tokens * out, "int8 input, int32 output"
        if sm >= 89:
            return tokens * inn + 4 * tokens, "input quantised per token"
        return 0, "Marlin weight-only (dequantised in registers)"


def inference_weights(
    tensors: Sequence[ParamTensor],
    sch: Scheme,
    *,
    tp: int = 1,
    kv_heads: int | None = None,
    vocab: int | None = None,
    method: str = "fake build",
) -> InferenceWeights:
    """The weights of ``tensors`` (unique parameters with roles, :mod:`memlens._size`) in
    ``sch`` on one of ``tp`` GPUs (vLLM's sharding, see the module docstring)."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise WorkloadError("tp", tp, "must be a positive integer")
    fmt = INFERENCE_FORMATS[sch.format]
    keep_bits = DTYPE_BITS[sch.compute_dtype]
    q_params = k_params = payload = meta = kept = 0
    largest: tuple[int, int] | None = None
    notes: list[str] = []
    for t in tensors:
        shape = _shard(t.name, t.shape, t.role, tp, kv_heads, vocab, notes)
        n = math.prod(shape)
        quantized = (
            t.role == "weights"
            and len(shape) >= 2
            and not _ROUTER.search(t.name)
            and sch.format not in ("bf16", "fp16", "fp32")
        )
        if not quantized:
            k_params += n
            kept += math.ceil(n * keep_bits / 8)
            continue
        experts = math.prod(shape[:-2]) if len(shape) > 2 else 1
        rows_cols = shape[-2:]
        group = sch.group_size or rows_cols[1]
        q_params += n
        payload += experts * fmt.payload(rows_cols).nbytes
        meta += experts * sum(c.nbytes for c in fmt.metadata(rows_cols, group))
        if largest is None or math.prod(rows_cols) > math.prod(largest):
            largest = (rows_cols[0], rows_cols[1])
    if q_params and fmt.shared:
        meta += sum(s.nbytes for s in fmt.shared)
    return InferenceWeights(
        sch,
        tp,
        q_params,
        k_params,
        payload,
        meta,
        kept,
        largest,
        method,
        tuple(dict.fromkeys(notes)),
    )


def _shard(
    name: str,
    shape: tuple[int, ...],
    role: str,
    tp: int,
    kv_heads: int | None,
    vocab: int | None,
    notes: list[str],
) -> tuple[int, ...]:
    """The shape of one GPU's shard of a parameter under vLLM's tensor parallelism."""
    if tp == 1 or role == "norms" or not shape or _REPLICATED.search(name):
        return shape
    if vocab and shape[0] == vocab and role in ("embeddings", "head"):
        padded = -(-vocab // 64) * 64
        return (padded // tp, *shape[1:])
    if role in ("embeddings", "head"):
        return shape  # position tables are replicated
    if len(shape) == 1:
        return (_split(shape[0], tp, name),)
    if _KV_PROJ.search(name) and kv_heads and kv_heads < tp:
        notes.append(f"{kv_heads} KV heads on {tp} GPUs: each GPU keeps one whole K/V head")
        return (shape[0] // kv_heads, *shape[1:])
    if _ROW_PARALLEL.search(name):
        return (*shape[:-1], _split(shape[-1], tp, name))
    return (*shape[:-2], _split(shape[-2], tp, name), shape[-1])


def _split(n: int, tp: int, name: str) -> int:
    if n % tp:
        raise ConfigError(f"{name}: dimension {n} does not split over tp={tp} GPUs")
    return n // tp


def header_weights(summary: WeightsSummary, compute_dtype: str, *, tp: int = 1) -> InferenceWeights:
    """The weights of a checkpoint as its header stores them: every tensor's own bytes, its
    scheme from the names (:func:`scheme_from_header`), split evenly over ``tp`` GPUs."""
    names = [t.name for t in summary.tensors]
    sch = scheme_from_header(names, [t.dtype for t in summary.tensors], compute_dtype)
    if sch is None:
        dtypes = {t.dtype.upper() for t in summary.tensors}
        key = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}.get(next(iter(dtypes)), "")
        if len(dtypes) != 1 or not key:
            raise ConfigError(f"header dtypes {sorted(dtypes)}: no inference scheme recognised")
        sch = scheme(key, key, source="safetensors header")
    total = summary.weight_bytes
    notes = (
        ("bytes from the header; split evenly over the GPUs (not per tensor)",) if tp > 1 else ()
    )
    return InferenceWeights(
        sch, tp, summary.n_params, 0, -(-total // tp), 0, 0, None, "safetensors header", notes
    )
