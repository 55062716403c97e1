"""CUDA's autocast policy, applied to the engine's CPU fake tensors.

The engine traces on CPU fake tensors, where ``torch.autocast("cpu")`` applies the CPU op
lists; CUDA's lists differ (CUDA runs ``softmax``, ``log_softmax``, ``layer_norm``,
``group_norm``, ``exp``, ``pow``, ``sum`` and the losses in fp32; ``mv``, ``einsum`` and
the RNN cells in half precision; CPU autocasts ``cat``, ``stack``, pooling and padding ops
that CUDA leaves alone). For a CUDA target, :func:`cuda_autocast_policy` registers, for the
duration of the trace, Python kernels at the ``AutocastCPU`` dispatch key that implement
CUDA's policy for every op whose policy differs, exactly where the real autocast kernels
run: above autograd, so that what backward keeps is the cast tensor.

The tables mirror ``aten/src/ATen/autocast_mode.cpp`` (``TORCH_LIBRARY_IMPL(aten, Autocast,
m)`` and the ``AT_FORALL_*`` lists of ``autocast_mode.h``); which ops hold CUDA and CPU
autocast kernels in the running PyTorch is read from its dispatcher, so an op only one
device lists is never missed. Policies (``CastPolicy`` in ``autocast_mode.h``):
``lower`` casts floating-point inputs to the autocast dtype, ``fp32`` to float32,
``fp32_set_opt_dtype`` passes ``dtype=float32`` when none is given, ``fp32_append_dtype``
redispatches to the overload that takes one, ``promote`` casts to the widest input type.

Known limitations: autocast caches the half-precision copy of each fp32 weight for the
region; the C++ kernels of ops both devices cast to half precision (``linear``, ``matmul``,
convolutions, ``bmm``...) keep that cache, but the Python kernels here (``mv``, ``einsum``,
RNN cells...) cast a weight again at each use. The registration is process-wide while the
trace runs (it is undone in ``finally``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from memlens.engine.targets.cuda_softmax import half_to_float

_LOWER = (
    "_convolution",
    "_convolution.deprecated",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_tbc",
    "conv_transpose1d",
    "conv_transpose2d.input",
    "conv_transpose3d.input",
    "convolution",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
    "prelu",
    "addmm",
    "addmv",
    "addr",
    "matmul",
    "einsum",
    "mm",
    "mv",
    "linalg_vecdot",
    "linear",
    "addbmm",
    "baddbmm",
    "bmm",
    "chain_matmul",
    "linalg_multi_dot",
    "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell",
    "lstm_cell",
    "gru_cell",
    "rnn_tanh_cell",
    "rnn_relu_cell",
    "_scaled_dot_product_flash_attention",
    "scaled_dot_product_attention",
)
_FP32 = (
    "acos",
    "asin",
    "cosh",
    "erfinv",
    "exp",
    "expm1",
    "log",
    "log10",
    "log2",
    "log1p",
    "reciprocal",
    "rsqrt",
    "sinh",
    "tan",
    "pow.Tensor_Scalar",
    "pow.Tensor_Tensor",
    "pow.Scalar",
    "softplus",
    "layer_norm",
    "native_layer_norm",
    "group_norm",
    "rms_norm",
    "frobenius_norm.dim",
    "nuclear_norm",
    "nuclear_norm.dim",
    "cosine_similarity",
    "poisson_nll_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "nll_loss2d",
    "hinge_embedding_loss",
    "kl_div",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "mse_loss",
    "margin_ranking_loss",
    "multilabel_margin_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "multi_margin_loss",
    "binary_cross_entropy_with_logits",
    "dist",
    "pdist",
    "cdist",
    "renorm",
    "logsumexp",
    "linalg_matrix_sqrth",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
    "upsample_linear1d",
    "upsample_bilinear2d",
    "_upsample_bilinear2d_aa",
    "upsample_trilinear3d",
    "upsample_bicubic2d",
    "_upsample_bicubic2d_aa",
)
_FP32_SET_OPT_DTYPE = (
    "prod",
    "prod.dim_int",
    "softmax.int",
    "log_softmax.int",
    "cumprod",
    "cumsum",
    "linalg_vector_norm",
    "linalg_matrix_norm",
    "linalg_matrix_norm.str_ord",
    "sum",
    "sum.dim_IntList",
)
_FP32_APPEND_DTYPE = {"norm.Scalar": "ScalarOpt_dtype", "norm.ScalarOpt_dim": "ScalarOpt_dim_dtype"}
_PROMOTE = (
    "addcdiv",
    "addcmul",
    "atan2",
    "bilinear",
    "cross",
    "dot",
    "vdot",
    "grid_sampler",
    "index_put",
    "tensordot",
    "scatter_add",
)

_KEY = torch._C.DispatchKey.AutocastCPU
_BELOW = torch._C._dispatch_keyset_full_after(_KEY)


def _policies() -> dict[str, str]:
    """CUDA's policy of each op whose autocast behaviour on CPU differs."""
    table = {name: "lower" for name in _LOWER}
    table |= {name: "fp32" for name in _FP32}
    table |= {name: "fp32_set_opt_dtype" for name in _FP32_SET_OPT_DTYPE}
    table |= {name: "fp32_append_dtype" for name in _FP32_APPEND_DTYPE}
    table |= {name: "promote" for name in _PROMOTE}
    names = torch._C._dispatch_get_all_op_names()
    on_cuda = {n.removeprefix("aten::") for n in names if _has(n, "AutocastCUDA")}
    on_cpu = {n.removeprefix("aten::") for n in names if _has(n, "AutocastCPU")}
    out = {n: table[n] for n in on_cuda if n in table and (n not in on_cpu or table[n] != "lower")}
    out |= {n: "none" for n in on_cpu - on_cuda}  # CUDA leaves them to their inputs' types
    return out


def _has(name: str, key: str) -> bool:
    return name.startswith("aten::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, key)


def _op(name: str) -> torch._ops.OpOverload:
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _eligible(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def _cast(obj: Any, dtype: torch.dtype) -> Any:
    def cast(t: Any) -> Any:
        return t.to(dtype) if _eligible(t) and t.dtype != dtype else t

    return torch.utils._pytree.tree_map(cast, obj)


def _kernel(op: torch._ops.OpOverload, policy: str, name: str) -> Any:
    schema = op._schema

    def kernel(keyset: torch._C.DispatchKeySet, *args: Any, **kwargs: Any) -> Any:
        if policy == "none":  # a fallthrough: run below autocast with autocast still on
            return op.redispatch(keyset & _BELOW, *args, **kwargs)
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(_KEY)):
            if policy == "lower":
                dtype = torch.get_autocast_dtype("cpu")
                return op(*_cast(args, dtype), **_cast(kwargs, dtype))
            if policy == "fp32":
                return op(*_cast(args, torch.float32), **_cast(kwargs, torch.float32))
            if policy == "promote":
                floats = [
                    t.dtype for t in torch.utils._pytree.tree_leaves((args, kwargs)) if _eligible(t)
                ]
                widest = (
                    torch.float32 if torch.float32 in floats else torch.get_autocast_dtype("cpu")
                )
                return op(*_cast(args, widest), **_cast(kwargs, widest))
            first = args[0] if args else None
            if not _eligible(first):
                return op(*args, **kwargs)
            if policy == "fp32_append_dtype":
                packet = getattr(torch.ops.aten, name.partition(".")[0])
                return getattr(packet, _FP32_APPEND_DTYPE[name])(*args, dtype=torch.float32)
            # fp32_set_opt_dtype: an explicit dtype is respected, else float32
            position = next(i for i, a in enumerate(schema.arguments) if a.name == "dtype")
            if len(args) > position:
                if args[position] is None:
                    args = (*args[:position], torch.float32, *args[position + 1 :])
            elif kwargs.get("dtype") is None:
                kwargs = {**kwargs, "dtype": torch.float32}
            fused = half_to_float(name, args, kwargs)  # CUDA's fp16 -> fp32 softmax kernel
            return fused if fused is not None else op(*args, **kwargs)

    return kernel


@contextlib.contextmanager
def cuda_autocast_policy() -> Iterator[None]:
    """While active, CPU autocast follows CUDA's op lists (see the module docstring)."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with _quiet_override():
            for name, policy in _policies().items():
                lib.impl(name, _kernel(_op(name), policy, name), "AutocastCPU", with_keyset=True)
        yield
    finally:
        lib._destroy()


@contextlib.contextmanager
def _quiet_override() -> Iterator[None]:
    """Overriding a registered kernel warns once per op; here it is the point."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
