"""The engine: exact bytes for a hand-computed step, views, categories, data-dependent ops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import memlens
from memlens.categories import Category

from conftest import tiny_mlp

# Hand-computed sizes of tiny_mlp at batch 5, fp32:
PARAMS = (4 * 3 + 3 + 3 * 2 + 2) * 4  # 92 bytes
INPUTS = 5 * 4 * 4  # 80 bytes
# Alive at the end of forward: ReLU's output (saved by threshold_backward and by the second
# Linear), the model output and the previous step's output and scalar loss (the loop's
# variables, rebound only once the new ones exist). The first Linear's output dies at ReLU.
ACTIVATIONS = 5 * 3 * 4 + 2 * 5 * 2 * 4 + 4  # 144 bytes


def _estimate(optimizer: str) -> memlens.Estimate:
    return memlens.estimate(tiny_mlp, batch=5, input_shape=(4,), optimizer=optimizer, device="cpu")


def test_mlp_step_every_category_sgd_momentum():
    est = _estimate("sgd-momentum")
    peaks = {c.value: n for c, n in est.timeline.category_peaks().items()}
    assert peaks["parameters"] == PARAMS
    assert peaks["inputs"] == INPUTS
    assert peaks["optimizer_state"] == PARAMS  # one momentum buffer per parameter
    assert peaks["gradients"] == PARAMS  # all four .grad tensors exist before the step
    assert peaks["activations"] == ACTIVATIONS
    assert est.num_params == 23 and est.trainable_params == 23
    # The peak is in backward, inside ReLU, once the second Linear's grads (24 + 8 B) exist.
    assert est.peak_phase == "backward" and est.peak_module == "1"
    assert est.breakdown["gradients"] == 3 * 2 * 4 + 2 * 4
    assert sum(est.breakdown.values()) == est.peak_bytes == 524


def test_mlp_step_adam_state_and_first_step():
    est = _estimate("adam")
    peaks = {c.value: n for c, n in est.timeline.category_peaks().items()}
    # exp_avg + exp_avg_sq per parameter, and a float32 `step` scalar per parameter on CPU.
    assert peaks["optimizer_state"] == 2 * PARAMS + 4 * 4
    assert est.peak_bytes == 524 - PARAMS + 2 * PARAMS + 16
    # The first step's peak is in its optimizer step: Adam's _init_group makes the state of
    # every parameter (two moments, a 4 B step each) before updating the first, whose
    # update holds two temporaries of its size (exp_avg_sq.sqrt() and its division); the
    # ReLU output died in backward, the model output (40 B) and the loss are still held.
    state = 2 * PARAMS + 4 * 4
    first_update = 2 * 4 * 3 * 4  # the first weight is 4 x 3
    alive = PARAMS + INPUTS + 5 * 2 * 4 + 4 + PARAMS  # parameters, inputs, output, loss, grads
    assert est.first_step_peak_bytes == alive + state + first_update


def test_mlp_inference_has_no_gradients():
    est = memlens.estimate(tiny_mlp, batch=5, input_shape=(4,), mode="inference", device="cpu")
    assert "gradients" not in est.breakdown and "optimizer_state" not in est.breakdown
    # Both Linear outputs (60 + 40 B) are alive while the ReLU output (60 B) is made? No:
    # ReLU frees nothing in no_grad until the next op; peak = first out + relu out.
    assert est.breakdown["activations"] == 5 * 3 * 4 * 2
    assert est.peak_bytes == PARAMS + INPUTS + 120


class _Views(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2  # the one new storage
        a = y.view(-1)
        b = y.t()
        c = y[1:, :2]
        d = y.transpose(0, 1).unsqueeze(0)
        y.add_(1)  # in place: same storage
        return torch.stack([a.sum(), b.sum(), c.sum(), d.sum()])


def test_views_and_in_place_are_not_counted_twice():
    est = memlens.estimate(_Views, batch=6, input_shape=(8,), mode="inference", device="cpu")
    forward = [b for b in est.timeline.blocks if b.phase.value == "forward"]
    mul = [b for b in forward if b.op == "aten.mul"]
    assert len(mul) == 1 and mul[0].nbytes == 6 * 8 * 4
    assert not any(b.op in ("aten.view", "aten.t", "aten.slice", "aten.add_") for b in forward)


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x > -100).all():  # a value read: `.item()` under the hood
            x = self.proj(x)
        idx = torch.nonzero(x > 0)  # data-dependent size: upper bound
        return x.sum() + idx.sum()


def test_data_dependent_ops_trace_and_are_reported():
    est = memlens.estimate(_DataDependent, batch=4, input_shape=(8,), device="cpu")
    assert any("data-dependent read" in u for u in est.unknowns)
    # Adam's update of the 8 x 8 weight peaks: parameters, inputs, state (two moments and a
    # 4 B step per parameter), gradients, output and loss scalars, sqrt and div temporaries
    params, weight = (8 * 8 + 8) * 4, 8 * 8 * 4
    assert est.peak_bytes == params + 4 * 8 * 4 + 2 * params + 2 * 4 + params + 4 + 4 + 2 * weight
    nonzero = [b for b in est.timeline.blocks if b.op == "aten.nonzero"]
    assert nonzero and nonzero[0].nbytes == 4 * 8 * 2 * 8  # every element selected, int64


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = (x[:, 0] > 0).long() + 1
        return torch.repeat_interleave(self.inner(x), counts, dim=0)


def test_untraceable_model_names_op_and_module():
    with pytest.raises(memlens.TraceError) as info:
        memlens.estimate(_Untraceable, batch=3, input_shape=(4,), mode="inference", device="cpu")
    assert "repeat_interleave" in str(info.value)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(64, 3 * 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 4, 16).permute(2, 0, 3, 1, 4)
        # Dropout in training: the CPU picks the math path (its flash kernel has no dropout).
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, is_causal=True)


def test_cuda_target_keeps_no_score_matrix():
    kwargs = {"batch": 2, "input_shape": (512, 64), "optimizer": "sgd"}
    scores = 2 * 4 * 512 * 512 * 4  # batch x heads x seq x seq fp32
    cpu = memlens.estimate(_Attention, device="cpu", **kwargs)
    cuda = memlens.estimate(_Attention, device="cuda", **kwargs)
    big_cpu = [b for b in cpu.timeline.blocks if b.nbytes >= scores]
    big_cuda = [
        b
        for b in cuda.timeline.blocks
        if b.nbytes >= scores and b.category is not Category.FRAMEWORK_OVERHEAD  # cuBLAS workspace
    ]
    assert big_cpu, "the CPU math path materialises the score matrix"
    assert not big_cuda, "CUDA's memory-efficient kernel keeps only a log-sum-exp"


class _MultiheadAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(64, 4, dropout=0.1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, need_weights=False)[0]


def test_cuda_target_routes_multihead_attention_to_fused_kernels():
    # nn.MultiheadAttention calls SDPA from inside F.multi_head_attention_forward.
    kwargs = {"batch": 2, "input_shape": (512, 64), "optimizer": "sgd"}
    scores = 2 * 4 * 512 * 512 * 4
    cuda = memlens.estimate(_MultiheadAttention, device="cuda", **kwargs)
    ops = {b.op for b in cuda.timeline.blocks}
    assert "aten._scaled_dot_product_efficient_attention" in ops
    assert not [
        b
        for b in cuda.timeline.blocks
        if b.nbytes >= scores and b.category is not Category.FRAMEWORK_OVERHEAD
    ]


def test_gradients_relabelled_and_sum_identity():
    est = _estimate("sgd")
    assert sum(est.breakdown.values()) == est.peak_bytes
    assert sum(n for _, n in est.budget()) == est.total_bytes
    grads = [b for b in est.timeline.blocks if b.category is Category.GRADIENTS]
    assert sum(b.nbytes for b in grads) == PARAMS


class _LayerDrop(nn.Module):
    """Hugging Face-style layer drop: a random draw decides whether a layer runs."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i and self.training and torch.rand([]) < self.p:  # read of a small real value
                continue
            x = torch.relu(layer(x))
        return x


@pytest.mark.parametrize(("p", "layers_run"), [(0.0, 4), (1.0, 1)])
def test_small_tensors_carry_real_values(p, layers_run):
    est = memlens.estimate(lambda: _LayerDrop(p), batch=8, input_shape=(64,), device="cpu")
    forward = [b for b in est.timeline.blocks if b.phase.value == "forward"]
    assert sum(b.op == "aten.addmm" for b in forward) == layers_run
    assert not est.unknowns  # every read had a real value


def test_phases_repeat_with_gradient_accumulation():
    est = memlens.estimate(tiny_mlp, batch=5, input_shape=(4,), grad_accum=2, device="cpu")
    marks = [phase.value for _, phase in est.timeline.phase_marks]
    assert marks.count("forward") == 2 and marks.count("backward") == 2
    second_forward = [i for i, p in est.timeline.phase_marks if p.value == "forward"][1]
    assert est.timeline.phase_at(second_forward).value == "forward"
    assert est.timeline.phase_at(second_forward - 1).value == "backward"


def test_a_factory_that_converts_its_model_builds_and_matches_the_real_run():
    """``model.double()`` / ``.to(dtype)`` swaps fake parameters (``nn.Module._apply``), which
    fake tensors' weak references refuse: the build falls back to ``param.data = new``."""

    def model():
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).double()

    kw = dict(inputs=torch.randn(4, 16, dtype=torch.float64), device="cpu")
    est = memlens.estimate(model, **kw)
    real = memlens.measure(model, **kw)
    assert est.breakdown["parameters"] == (16 * 32 + 32 + 32 * 4 + 4) * 8
    assert abs(est.peak_bytes - real.peak_bytes) <= 0.01 * real.peak_bytes
    # float inputs: the real matmul refuses mixed dtypes, and so does the trace
    with pytest.raises(memlens.TraceError, match="dtypes"):
        memlens.estimate(model, input_shape=(16,), batch=4, device="cpu")


def test_a_model_built_in_bf16_says_what_onednn_keeps_unmodelled():
    """A bf16 model under an fp32 workload still runs bf16 matmuls: where oneDNN computes
    them natively, its scratchpads are stated unknown, as for a bf16 workload."""

    def model():
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8)).to(torch.bfloat16)

    x = torch.randn(4, 64, dtype=torch.bfloat16)
    est = memlens.estimate(model, inputs=x, device="cpu", mode="inference")
    noted = any("oneDNN" in n for n in est.unknowns)
    assert noted == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class _Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(64, 512)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.proj(x)
        return y[y > 0 if mask is None else mask].pow(2).sum()


def test_boolean_mask_indexing_is_traced_through_its_nonzero():
    """``y[mask]`` (and its backward's ``index_put``) index with the mask's nonzero
    positions: a mask whose values are known (a real input) gives the real step exactly; one
    computed from fake values is a read, bounded by selecting every element."""
    x, mask = torch.randn(32, 64), torch.rand(32) > 0.5
    kw = dict(device="cpu", loss=lambda out: out)
    est = memlens.estimate(_Masked, inputs=(x, mask), **kw)
    real = memlens.measure(_Masked, inputs=(x, mask), **kw)
    assert abs(est.peak_bytes - real.peak_bytes) <= 0.01 * real.peak_bytes
    bounded = memlens.estimate(_Masked, inputs=(x,), **kw)
    assert any("data-dependent" in n for n in bounded.unknowns)
    assert bounded.peak_bytes >= memlens.measure(_Masked, inputs=(x,), **kw).peak_bytes
