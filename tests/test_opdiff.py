"""The op-level differential harness (memlens.measurement.opdiff) on a fixed sample of calls:
a small model with the kernels the CPU rules model (oneDNN convolution and LSTM, MKL FFT)
and plain ones (LayerNorm, GELU, pooling, embedding bags, index_add); every distinct call of
its inference and training traces is replayed alone on real tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memlens.engine.targets import emulation
from memlens.measurement.opdiff import Calls, collect, replay


class _Sample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 7, padding=3, groups=32)
        self.norm = nn.LayerNorm(32)
        self.bags = nn.EmbeddingBag(1000, 32, mode="sum")
        self.lstm = nn.LSTM(32, 64, batch_first=True, bidirectional=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(self.dw(F.gelu(self.conv(x))), 2)  # (8, 32, 16, 16)
        y = torch.fft.irfft2(torch.fft.rfft2(y), s=y.shape[-2:])
        y = self.norm(y.permute(0, 2, 3, 1)).flatten(1, 2)  # (8, 256, 32)
        y = y + self.bags(ids, offsets)[:, None, :]
        y = torch.zeros_like(y).index_add_(1, torch.arange(256) // 2, y)
        return self.head(self.lstm(y)[0])


def _inputs() -> tuple[torch.Tensor, ...]:
    return torch.randn(8, 16, 32, 32), torch.randint(0, 1000, (160,)), torch.arange(0, 160, 20)


def _diff() -> Calls:
    calls = Calls()
    for mode in ({"mode": "inference"}, {"mode": "train", "optimizer": "adam"}):
        collect(calls, mode["mode"], _Sample, inputs=_inputs, batch=8, **mode)
    for call in calls.calls.values():
        replay(call)
    return calls


def test_no_call_differs_from_the_real_kernel() -> None:
    calls = _diff()
    names = {c.name for c in calls.calls.values()}
    assert {"mkldnn_rnn_layer.default", "_fft_c2r.default", "convolution_backward.default"} <= names
    assert [c.skipped for c in calls.calls.values() if c.skipped] == []
    assert "_embedding_bag_backward.default" in {c.name for c in calls.calls.values()}
    assert [c.signature for c in calls.calls.values() if c.reported] == []


def test_a_missing_rule_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(emulation.RULE_SETS, "cpu", {})
    reported = {c.name for c in _diff().calls.values() if c.reported}
    assert {
        "mkldnn_rnn_layer.default",
        "_fft_c2r.default",
        "index_select.default",
        "max_pool2d_with_indices_backward.default",
    } <= reported


class _Bags(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.bags = nn.EmbeddingBag(2000, 32, mode=mode)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.bags(ids, offsets)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_embedding_bag_backward_is_replayed_on_its_forward_structure(mode: str) -> None:
    calls = Calls()
    inputs = lambda: (torch.randint(0, 2000, (640,)), torch.arange(0, 640, 10))  # noqa: E731
    collect(calls, "bags", lambda: _Bags(mode), inputs=inputs, batch=64, mode="train")
    (call,) = [c for c in calls.calls.values() if c.name == "_embedding_bag_backward.default"]
    replay(call)
    assert call.skipped is None
    assert (call.real_peak, call.real_kept) == (call.engine_peak, call.engine_kept)


def test_a_cuda_targets_calls_carry_the_cuda_rules() -> None:
    """The harness is fed from a CUDA target's trace (run with ``--device cuda`` where a GPU
    is lent): the stride-0 gradient of ``logits.sum()`` reaches ``mm``, whose CUDA rule
    (cuBLAS's dense copy of the operand) is in the engine's peak for that call."""

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 512))

    cuda, cpu = Calls(), Calls()
    for calls, device in ((cuda, "h100-80gb"), (cpu, "cpu")):
        collect(
            calls,
            "mlp",
            model,
            device=device,
            input_shape=(64,),
            batch=32,
            mode="train",
            loss=lambda out: out.sum(),
        )

    def input_grad(calls: Calls) -> int:  # mm(stride-0 gradient, weight)
        (call,) = [c for c in calls.calls.values() if c.signature.startswith(_STRIDE0)]
        return call.engine_peak

    assert input_grad(cuda) - input_grad(cpu) == 32 * 512 * 4  # cuBLAS's dense copy


_STRIDE0 = "mm.default(float32[32, 512]@[0, 0]"


def test_the_benchmark_refuses_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    script = Path(__file__).parents[1] / "benchmarks" / "opdiff.py"
    run = subprocess.run(
        [sys.executable, str(script), "--device", "cuda", "--only", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "needs a CUDA GPU" in run.stderr
    assert "Traceback" not in run.stderr
