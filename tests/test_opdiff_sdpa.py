"""CPU flash attention (memlens.engine.targets.cpu_sdpa): one real call's allocator peak
against the outputs plus what the rule says the kernel allocates inside, forward and
backward, with and without the incoming gradient's copy, at 1 and 2 threads."""

from __future__ import annotations

import pytest
import torch

from memlens.engine.rules import OpCall
from memlens.engine.targets.emulation import kernel_rules
from memlens.measurement.cpu import allocator_peak
from memlens.targets import resolve_target

aten = torch.ops.aten
CPU = resolve_target("cpu")
FWD = aten._scaled_dot_product_flash_attention_for_cpu.default
BWD = aten._scaled_dot_product_flash_attention_for_cpu_backward.default


def _predicted(func, args: tuple, out: tuple) -> int:
    outs = sum(t.untyped_storage().nbytes() for t in out)
    return max([outs, *kernel_rules(CPU)[func](OpCall(func, args, {}, out, "cpu", CPU))])


def _qkv(b: int, h: int, n: int, d: int, seq_first: bool, dtype: torch.dtype) -> torch.Tensor:
    if seq_first:  # nn.MultiheadAttention's (seq, batch, head, dim) layout
        return torch.randn(n, b, h, d, dtype=dtype).permute(1, 2, 0, 3)
    return torch.randn(b, h, n, d, dtype=dtype)


# (batch, heads, queries, keys, head dim, seq-first layout, causal, dtype)
CASES = [
    (8, 4, 32, 32, 32, True, False, torch.float32),  # the zoo's MoE attention
    (8, 4, 32, 32, 32, False, False, torch.float32),
    (2, 3, 200, 600, 16, True, False, torch.float32),  # 64-query blocks, 512-key blocks
    (1, 2, 800, 40, 8, True, True, torch.float32),  # 256-query blocks; batch 1: no copy
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("b", "h", "lq", "lk", "d", "seq_first", "causal", "dtype"), CASES)
def test_flash_attention_rules_match_the_allocator(
    b, h, lq, lk, d, seq_first, causal, dtype, threads
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q = _qkv(b, h, lq, d, seq_first, dtype)
        k, v = _qkv(b, h, lk, d, seq_first, dtype), _qkv(b, h, lk, d, seq_first, dtype)
        fwd = (q, k, v, 0.0, causal)
        out, lse = FWD(*fwd)
        assert _predicted(FWD, fwd, (out, lse)) == allocator_peak(lambda: FWD(*fwd))
        bwd = (_qkv(b, h, lq, d, seq_first, dtype), q, k, v, out, lse, 0.0, causal)
        grads = BWD(*bwd)
        assert _predicted(BWD, bwd, grads) == allocator_peak(lambda: BWD(*bwd))
    finally:
        torch.set_num_threads(before)


def test_bf16_forward_buffers() -> None:
    q, k, v = (_qkv(2, 3, 200, 16, True, torch.bfloat16) for _ in range(3))
    out = FWD(q, k, v)
    assert _predicted(FWD, (q, k, v), out) == allocator_peak(lambda: FWD(q, k, v))
