"""PyTorch's "fast path" transformer kernels on CPU, as the real step takes them.

In eval mode without gradients, ``nn.TransformerEncoderLayer.forward``
(torch/nn/modules/transformer.py) runs the whole layer as one op,
``torch._transformer_encoder_layer_fwd``, and ``nn.MultiheadAttention.forward``
(torch/nn/modules/activation.py) self-attention as ``torch._native_multi_head_attention``,
unless ``torch.overrides.has_torch_function`` of their tensors is true. While any
``TorchFunctionMode`` is active that answer is true, so the trace (run under the engine's own
modes: :mod:`.linear`, :mod:`.cpu_rnn_native`, attention routing) took the unfused path,
whose buffers differ from the kernels' (nn.Transformer inference was +3.1%).
:func:`fast_path` answers those two callers as an unobserved run would, ignoring the
engine's own modes (a user's mode still counts).

The fused ops' buffers are then rules, following the CPU kernels
(aten/src/ATen/native/transformers/attention.cpp ``native_multi_head_attention_cpu``,
transformer.cpp ``transformer_encoder_layer_forward``):

- ``qkv_projection``: self-attention (query, key and value the same tensor) is one
  ``gemm_nt`` of ``[B*T, 3D]``; otherwise ``q``, ``k``, ``v`` (or ``q`` and ``kv``) are
  projected apart and concatenated (``at::cat``), the parts alive until it returns.
- ``transform_bias_rescale_qkv_cpu``: ``q_k_v = empty({3, B, H, T, D/H})`` while ``qkv`` is
  alive, then ``qkv`` is released.
- ``bmm_nt``: the scores ``[B*H, T, T]``; ``masked_softmax`` without a mask runs in place
  (``_softmax_out(qkt, qkt)``); with one, the mask is converted to bool (``to(kBool)``)
  unless it is, made contiguous (``masked_softmax_cpu``) and the softmax gets a new output.
- ``bmm_nn`` writes the context into ``q``'s storage (``bmm_out``); the scores are released
  unless weights are returned (``need_weights``: averaged over heads, a ``[B, T, T]`` sum).
- ``transform0213_gemm_nt_bias``: the context permuted to ``[B, T, D]`` (a contiguous copy)
  and the output projection (``addmm``); ``q_k_v`` is released on return.
- The encoder layer: ``layer_norm`` (output, and mean and rstd of the weight's dtype, freed
  at once), the attention above, its result added in place, ``ffn`` (``_addmm_activation``
  of ``[B*T, F]``, then ``addmm``, the hidden state freed), added in place, normalised.

Exact to the byte in fp32 against the CPU allocator (``tests/test_cpu_transformer.py``).
In bf16/fp16 the kernels' matmuls run through oneDNN, which allocates buffers of its own
(about one more output per ``mm``), not modelled here as for ``aten.mm`` anywhere else.
Nested-tensor inputs, CUDA's kernels (on a CUDA target the unfused path is traced, as
before) and ``_transformer_decoder_only_layer_fwd`` are not modelled.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten

#: The modules whose fast-path checks ask ``torch.overrides.has_torch_function``.
_FAST_PATH_CALLERS = frozenset({"torch.nn.modules.transformer", "torch.nn.modules.activation"})


@contextlib.contextmanager
def fast_path() -> Iterator[None]:
    """While active, the fast-path checks of ``nn.TransformerEncoderLayer`` and
    ``nn.MultiheadAttention`` do not count memlens's own function modes."""
    original = torch.overrides.has_torch_function

    def has_torch_function(args: Any) -> bool:
        if sys._getframe(1).f_globals.get("__name__") not in _FAST_PATH_CALLERS:
            return original(args)
        modes = torch.overrides._get_current_function_mode_stack()
        if any(not type(m).__module__.startswith("memlens.") for m in modes):
            return original(args)
        with contextlib.ExitStack() as popped:
            for _ in modes:
                popped.enter_context(torch.overrides._pop_mode_temporarily())
            return original(args)

    torch.overrides.has_torch_function = has_torch_function
    try:
        yield
    finally:
        torch.overrides.has_torch_function = original


class _Live:
    """Bytes a kernel holds, and their peak, as it allocates and releases."""

    def __init__(self) -> None:
        self.now = self.peak = 0

    def alloc(self, nbytes: int) -> None:
        self.now += nbytes
        self.peak = max(self.peak, self.now)

    def free(self, nbytes: int) -> None:
        self.now -= nbytes


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _contiguous_copy(t: torch.Tensor) -> int:
    """Bytes ``expect_contiguous`` / ``reshape`` copy ``t`` into (0 when contiguous)."""
    return 0 if t.is_contiguous() else _nbytes(t)


def _attention(
    live: _Live,
    query: torch.Tensor,
    copies: list[int],
    num_head: int,
    mask: torch.Tensor | None,
    need_weights: bool,
    average: bool,
) -> int:
    """Run ``native_multi_head_attention_cpu``'s allocations on ``live``. ``copies`` has one
    entry per distinct tensor among query, key and value (one for self-attention, two when
    key is value): the bytes ``matmul`` copies it into to fold it (0 when contiguous).
    Returns the bytes of its outputs left alive (the projection, and the weights when
    returned)."""
    b, t, d = query.shape
    es = query.element_size()
    btd = b * t * d * es
    scores = b * num_head * t * t * es
    # qkv_projection: one gemm_nt per distinct input, concatenated unless there is one
    parts = {1: [3 * btd], 2: [btd, 2 * btd], 3: [btd, btd, btd]}[len(copies)]
    for part, copy in zip(parts, copies, strict=True):
        live.alloc(copy)
        live.alloc(part)
        live.free(copy)
    if len(parts) > 1:
        live.alloc(3 * btd)  # at::cat
        live.free(sum(parts))
    live.alloc(3 * btd)  # _transform_bias_rescale_qkv: q_k_v
    live.free(3 * btd)  # qkv
    live.alloc(scores)  # bmm_nt
    if mask is not None:
        converted = 0 if mask.dtype == torch.bool else mask.numel()  # to(kBool)
        live.alloc(converted)
        contiguous = 0 if converted or mask.is_contiguous() else mask.numel()
        live.alloc(contiguous)  # masked_softmax_cpu: mask_.contiguous()
        live.alloc(scores)  # its output
        live.free(contiguous)
        live.free(scores)  # the raw scores
        live.free(converted)
    # bmm_nn writes into q's storage; the scores go unless they are returned
    if not need_weights:
        live.free(scores)
    live.alloc(btd)  # transform_0213: permute(0, 2, 1, 3).contiguous()
    live.alloc(btd)  # linear: addmm
    live.free(btd)
    weights = 0
    if need_weights:
        weights = scores
        if average:
            weights = scores // num_head
            live.alloc(weights)  # qkt.sum(1), divided in place
            live.free(scores)
    live.free(3 * btd)  # q_k_v
    return btd + weights


def _copies(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> list[int]:
    """``qkv_projection``'s cases (``key.is_same(value)``, then ``query.is_same(key)``): the
    contiguous copies of the distinct inputs."""
    distinct = [query, key, value]
    if key is value:
        distinct = distinct[:1] if query is key else distinct[:2]
    return [_contiguous_copy(x) for x in distinct]


@register_rule(aten._native_multi_head_attention.default)
def native_multi_head_attention(call: OpCall) -> list[int]:
    """The peak inside ``native_multi_head_attention_cpu`` (dense inputs)."""
    query, key, value, _, num_head = call.args[:5]
    if call.device != "cpu" or query.is_nested or query.dim() != 3:
        return []
    options = dict(
        zip(
            ("mask", "need_weights", "average_attn_weights", "mask_type"),
            call.args[9:],
            strict=False,
        )
    )
    options.update(call.kwargs)
    live = _Live()
    _attention(
        live,
        query,
        _copies(query, key, value),
        num_head,
        options.get("mask"),
        options.get("need_weights", True),
        options.get("average_attn_weights", True),
    )
    return [live.peak]


def _layer_norm(live: _Live, src: torch.Tensor, weight: torch.Tensor | None, copy: int) -> None:
    """``layer_norm_cpu`` of a tensor shaped as ``src``: its contiguous copy (``copy``
    bytes), the output, and mean and rstd (one per row, of the weight's dtype: the input's,
    or fp32 for mixed types) that ``at::layer_norm`` drops at once."""
    stats = (
        2 * (src.numel() // src.shape[-1]) * (weight if weight is not None else src).element_size()
    )
    live.alloc(copy)
    live.alloc(_nbytes(src))
    live.alloc(stats)
    live.free(stats)
    live.free(copy)


@register_rule(aten._transformer_encoder_layer_fwd.default)
def transformer_encoder_layer(call: OpCall) -> list[int]:
    """The peak inside ``transformer_encoder_layer_forward`` (dense inputs)."""
    src, _, num_heads = call.args[:3]
    if call.device != "cpu" or src.is_nested or src.numel() == 0:
        return []
    norm_first, w1 = call.args[8], call.args[10]
    w2, ffn_w1 = call.args[12], call.args[14]
    mask = call.args[18] if len(call.args) > 18 else call.kwargs.get("mask")
    btd = _nbytes(src)
    hidden = src.numel() // src.shape[-1] * ffn_w1.shape[0] * src.element_size()
    live = _Live()
    if norm_first:
        _layer_norm(live, src, w1, _contiguous_copy(src))
        _attention(live, src, [0], num_heads, mask, False, True)  # of the normalised input
        live.free(btd)  # the normalised input
        _layer_norm(live, src, w2, 0)  # pre_ffn_res (the attention's output) stays
    else:
        attn = _attention(live, src, [_contiguous_copy(src)], num_heads, mask, False, True)
        _layer_norm(live, src, w1, 0)  # after the in-place residual add
        live.free(attn)
    live.alloc(hidden)  # ffn: _addmm_activation
    live.alloc(btd)  # addmm
    live.free(hidden)
    if norm_first:
        live.free(btd)  # norm2's output, the ffn's input
    else:
        _layer_norm(live, src, w2, 0)
        live.free(btd)  # the ffn output
    return [live.peak]
