"""CUDA kernel rules: buffers CUDA kernels allocate inside themselves, against hand
computations from the kernel sources each rule cites."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import memlens
from memlens.categories import Phase
from memlens.engine.rules import OpCall, Persistent
from memlens.engine.targets.cuda_cublas_layout import batch_copy_bytes, matrix_copy_bytes
from memlens.engine.targets.cuda_sdpa import flash_backward_scratch
from memlens.engine.targets.emulation import RULE_SETS
from memlens.targets import resolve_target

aten = torch.ops.aten
GPU = "h100-80gb"
N, D, V = 8, 64, 1000  # tokens, hidden, vocabulary


def _workspaces(est, op: str) -> list[int]:
    return [
        b.nbytes
        for b in est.timeline.blocks
        if b.op == f"{op}:workspace" and b.phase is Phase.BACKWARD
    ]


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(D, D)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_stride0_sum_gradient_is_cloned_by_each_backward_mm():
    """``(x @ W.T).sum().backward()``: the [N, V] gradient is ``expand``ed (strides 0, 0),
    so grad_input = grad @ W and grad_weight = grad^T @ h each clone N*V fp32 elements,
    next to their own output (N*D and V*D)."""
    est = memlens.estimate(
        _Head(), input_shape=(D,), batch=N, device=GPU, loss=lambda out: out.sum()
    )
    clone = N * V * 4
    assert sorted(_workspaces(est, "aten.mm")) == sorted([clone + N * D * 4, clone + V * D * 4])


def test_mean_gradient_is_dense_and_not_copied():
    est = memlens.estimate(
        _Head(), input_shape=(D,), batch=N, device=GPU, loss=lambda out: out.mean()
    )
    assert _workspaces(est, "aten.mm") == []


def test_cpu_target_has_no_cublas_copies():
    est = memlens.estimate(
        _Head(), input_shape=(D,), batch=N, device="cpu", loss=lambda out: out.sum()
    )
    assert _workspaces(est, "aten.mm") == []


def test_operand_layouts():
    with FakeTensorMode():
        a = torch.empty(6, 5)
        assert matrix_copy_bytes(a) == matrix_copy_bytes(a.t()) == 0  # row/column-major
        assert matrix_copy_bytes(torch.empty(1).expand(6, 5)) == 6 * 5 * 4
        assert matrix_copy_bytes(torch.empty(6, 10)[:, ::2]) == 6 * 5 * 4  # stride (10, 2)
        assert matrix_copy_bytes(torch.empty(6, 10)[:, :5]) == 0  # leading dim 10 >= 5
        b = torch.empty(1, 6, 5)
        assert batch_copy_bytes(b.expand(3, 6, 5)) == 0  # the batch stride is not checked
        assert batch_copy_bytes(torch.empty(1).expand(3, 6, 5)) == 3 * 6 * 5 * 4
        assert batch_copy_bytes(torch.empty(3, 5, 6).transpose(1, 2)) == 0


def test_one_op_gets_the_workspace_and_the_copies():
    target = resolve_target(GPU)
    with FakeTensorMode():
        g = torch.empty(1).expand(N, V)
        w = torch.empty(V, D)
        out = torch.mm(g, w)
    buffers = list(
        RULE_SETS["cuda"][aten.mm.default](OpCall(aten.mm.default, (g, w), {}, out, "cuda", target))
    )
    assert any(isinstance(b, Persistent) for b in buffers)
    assert N * V * 4 + N * D * 4 in buffers


class _Attend(nn.Module):
    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return o.transpose(1, 2).reshape(b, s, d)


@pytest.mark.parametrize("head_dim", [64, 160])
def test_flash_backward_scratch(head_dim):
    """``mha_bwd``: dq, dk, dv (fp16, B*S*H*D each), ``softmax_d`` fp32 B*H*round(S, 128)
    and ``dq_accum`` fp32 B*round(S, 128)*H*round(D, 32 or 64); the incoming gradient is a
    [B, S, H, D]-contiguous view, so nothing is made contiguous."""
    b, s, h = 2, 100, 2
    est = memlens.estimate(
        _Attend(h, h * head_dim),
        input_shape=(s, h * head_dim),
        batch=b,
        device=GPU,
        precision="fp16",
        attention="flash",
    )
    grads = 3 * b * s * h * head_dim * 2
    softmax_d = b * h * 128 * 4
    rounded = 64 if head_dim == 64 else 192
    dq_accum = b * 128 * h * rounded * 4
    assert flash_backward_scratch(b, h, s, head_dim) == softmax_d + dq_accum
    op = "aten._scaled_dot_product_flash_attention_backward"
    assert _workspaces(est, op) == [grads + softmax_d + dq_accum]


def test_mem_efficient_backward_delta():
    """Half precision: the kernel computes ``delta`` into fp32 [B, H, S]."""
    b, s, h, hd = 2, 100, 2, 64
    est = memlens.estimate(
        _Attend(h, h * hd),
        input_shape=(s, h * hd),
        batch=b,
        device=GPU,
        precision="fp16",
        attention="mem-efficient",
    )
    op = "aten._scaled_dot_product_efficient_attention_backward"
    assert _workspaces(est, op) == [3 * b * s * h * hd * 2 + b * h * s * 4]


class _SoftmaxUp(nn.Module):
    """OPT's eager pattern: fp16 scores, softmax into fp32, back to fp16."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.proj(x)
        return F.softmax(s, dim=-1, dtype=torch.float32).to(torch.float16)


@pytest.mark.parametrize("device", [GPU, "cpu"])
def test_fp16_to_fp32_softmax_is_fused_on_cuda(device):
    """CUDA: ``_softmax(x, dim, half_to_float=True)``, no fp32 copy of the input and an fp16
    gradient; the CPU makes both (SoftMax.cpp ``softmax(input, dim, dtype)``)."""
    est = memlens.estimate(_SoftmaxUp(), input_shape=(D,), batch=N, device=device, precision="fp16")
    fp32 = N * D * 4
    copies = [
        b
        for b in est.timeline.blocks
        if b.op == "aten._to_copy" and b.nbytes == fp32 and b.phase is Phase.FORWARD
    ]
    grads = [b for b in est.timeline.blocks if b.op == "aten._softmax_backward_data"]
    if device == GPU:
        assert copies == [] and [g.nbytes for g in grads] == [N * D * 2]
    else:
        assert len(copies) == 1 and [g.nbytes for g in grads] == [fp32]


class _Lookup(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x.long())


@pytest.mark.parametrize(("tokens", "sorted_path"), [(3072, False), (4000, True)])
def test_embedding_backward_sorts_above_3072_indices(tokens, sorted_path):
    """Embedding.cu: direct accumulation up to 3072 indices; above, sorted and orig indices,
    segment offsets (N each), 2 x min(N, V) partial counts, N/10 + min(N, V) partial offsets
    (int64) and as many fp32 partial rows of D, next to the V x D output."""
    vocab, dim = 500, 16
    est = memlens.estimate(_Lookup(vocab, dim), input_shape=(tokens,), batch=1, device=GPU)
    got = _workspaces(est, "aten.embedding_dense_backward")
    if not sorted_path:
        assert got == []
        return
    segments = min(tokens, vocab)
    partial = tokens // 10 + segments
    expected = vocab * dim * 4 + 8 * (3 * tokens + 2 * segments + partial) + partial * dim * 4
    assert got == [expected + 16]


def test_cudnn_workspace_is_an_unknown_of_cuda_convolutions():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    gpu = memlens.estimate(net, input_shape=(3, 8, 8), batch=1, device=GPU)
    assert any("cuDNN convolution workspaces" in u for u in gpu.unknowns)
    cpu = memlens.estimate(net, input_shape=(3, 8, 8), batch=1, device="cpu")
    assert not any("cuDNN" in u for u in cpu.unknowns)


class _SoftmaxAmp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(D, V)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.proj(x), dim=-1)  # fp16 under autocast, fp32 out


def test_fp16_softmax_under_autocast_is_fused_on_cuda():
    """CUDA's autocast passes ``dtype=float32`` (``fp32_set_opt_dtype``), which SoftMax.cpp
    fuses for fp16 input: no [N, V] fp32 copy, an fp16 gradient."""
    est = memlens.estimate(
        _SoftmaxAmp(), input_shape=(D,), batch=N, device=GPU, precision="fp16-amp"
    )
    forward = [b for b in est.timeline.blocks if b.phase is Phase.FORWARD]
    assert not [b for b in forward if b.op == "aten._to_copy" and b.nbytes == N * V * 4]
    assert [b.nbytes for b in forward if b.op == "aten._softmax"] == [N * V * 4]
    grads = [b.nbytes for b in est.timeline.blocks if b.op == "aten._softmax_backward_data"]
    assert grads == [N * V * 2]


def test_cuda_dropout_keeps_a_bool_mask_where_cpu_keeps_the_input_dtype() -> None:
    """Training dropout of fp16 activations keeps 1 byte per element on CUDA (the fused
    ``native_dropout``), 2 on CPU (unfused noise of the input's dtype)."""
    model = nn.Sequential(nn.Linear(256, 1024), nn.Dropout(0.1), nn.Linear(1024, 256))
    masks = {}
    for device in ("h100-80gb", "cpu"):
        est = memlens.estimate(
            model, device=device, batch=64, input_shape=(256,), precision="fp16", optimizer="sgd"
        )
        masks[device] = sorted(
            (b.tensor, b.op)
            for b in est.timeline.blocks
            if b.module == "1" and b.phase == Phase.FORWARD and b.tensor.endswith("[64, 1024]")
        )
    assert ("bool[64, 1024]", "aten.native_dropout") in masks["h100-80gb"]
    assert not any(op == "aten.empty_like" for _, op in masks["h100-80gb"])
    assert ("float16[64, 1024]", "aten.empty_like") in masks["cpu"]


def test_device_specific_layer_families_are_stated_for_cuda():
    """Recurrent layers (cuDNN's RNN on CUDA) and PyTorch's fused transformer layers in eval
    are traced as the CPU runs them: a CUDA estimate says so, a CPU one does not."""
    from torch import nn

    import memlens

    def gru():
        return nn.GRU(16, 32, num_layers=2, batch_first=True)

    def encoder():
        return nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)

    rnn_cuda = memlens.estimate(gru, input_shape=(8, 16), batch=2, device="h100-80gb")
    assert any("cuDNN's RNN" in n for n in rnn_cuda.unknowns)
    rnn_cpu = memlens.estimate(gru, input_shape=(8, 16), batch=2, device="cpu")
    assert not any("cuDNN's RNN" in n for n in rnn_cpu.unknowns)
    fused = memlens.estimate(
        encoder, input_shape=(8, 32), batch=2, device="h100-80gb", mode="inference"
    )
    assert any("fused kernels" in n for n in fused.unknowns)
    trained = memlens.estimate(encoder, input_shape=(8, 32), batch=2, device="h100-80gb")
    assert not any("fused kernels" in n for n in trained.unknowns)
