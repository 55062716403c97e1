"""Recurrent layers against real CPU runs: LSTM (oneDNN's workspace and scratchpads,
engine/targets/cpu_rnn.py), GRU and vanilla RNN (PyTorch's own cells), uni- and
bidirectional, one to three layers, with embeddings and packed sequences."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import memlens
from memlens.measurement.cpu import allocator_peak

VOCAB, EMBED, HIDDEN, BATCH, SEQ = 500, 24, 32, 4, 12


class Tagger(nn.Module):
    """Embedding, a recurrent stack and a per-token classifier; ``packed``: sequences of
    decreasing lengths go through ``pack_padded_sequence``."""

    def __init__(self, cell: str, layers: int, bidirectional: bool, packed: bool) -> None:
        super().__init__()
        self.packed = packed
        self.embed = nn.Embedding(VOCAB, EMBED)
        rnn = getattr(nn, cell)
        self.rnn = rnn(EMBED, HIDDEN, num_layers=layers, bidirectional=bidirectional)
        self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (seq, batch, embed)
        if not self.packed:
            return self.head(self.rnn(x)[0])
        lengths = torch.arange(SEQ, SEQ - BATCH, -1)  # decreasing, as enforce_sorted wants
        y, _ = self.rnn(pack_padded_sequence(x, lengths))
        return self.head(pad_packed_sequence(y)[0])


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, VOCAB, (SEQ, BATCH)),)


CASES = [
    ("LSTM", 1, False, False),
    ("LSTM", 2, True, False),
    ("LSTM", 3, False, False),
    ("GRU", 1, True, False),
    ("GRU", 3, False, False),
]


@pytest.mark.parametrize(("cell", "layers", "bi", "packed"), CASES)
@pytest.mark.parametrize("mode", ["inference", "train"])
def test_recurrent_models_match_real_cpu_runs(cell, layers, bi, packed, mode) -> None:
    def build() -> nn.Module:
        return Tagger(cell, layers, bi, packed)

    kwargs = {"mode": mode, "batch": BATCH, "inputs": _tokens}
    if mode == "train":
        kwargs["optimizer"] = "adam"
    est = memlens.estimate(build, device="cpu", **kwargs)
    real = memlens.measure(build, device="cpu", **kwargs)
    assert abs(est.peak_bytes - real.peak_bytes) <= 0.01 * real.peak_bytes, (
        est.peak_bytes,
        real.peak_bytes,
    )


@pytest.mark.parametrize(
    ("steps", "batch", "inputs", "hidden"),
    [(12, 4, 24, 32), (9, 130, 40, 60), (20, 1, 300, 256), (6, 8, 256, 128)],
)
def test_onednn_lstm_layer_rules_match_the_allocator(steps, batch, inputs, hidden) -> None:
    """One ``mkldnn_rnn_layer`` call and its backward: workspace size and peak, to the byte."""
    from memlens.engine.rules import OpCall, OutputBytes
    from memlens.engine.targets.emulation import kernel_rules
    from memlens.targets import resolve_target

    aten = torch.ops.aten
    cpu = resolve_target("cpu")
    rules = kernel_rules(cpu)
    x = torch.randn(steps, batch, inputs)
    w = (torch.randn(4 * hidden, inputs), torch.randn(4 * hidden, hidden))
    b = (torch.randn(4 * hidden), torch.randn(4 * hidden))
    h = (torch.zeros(batch, hidden), torch.zeros(batch, hidden))
    args = (x, *w, *b, *h, False, [], 2, hidden, 1, True, False, False, True)

    def predicted(func, args, out) -> tuple[int, dict[int, int]]:
        bufs = list(rules[func](OpCall(func, args, {}, out, "cpu", cpu)))
        sizes = {b.index: b.nbytes for b in bufs if isinstance(b, OutputBytes)}
        outs = sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))
        return max([outs, *(b for b in bufs if isinstance(b, int))]), sizes

    fwd = aten.mkldnn_rnn_layer.default
    with torch.no_grad():
        out = fwd(*args)
        assert predicted(fwd, args, out)[0] == allocator_peak(lambda: fwd(*args))
    out = fwd(*args)
    peak, sizes = predicted(fwd, args, out)
    assert sizes == {3: out[3].numel()}
    assert peak == allocator_peak(lambda: fwd(*args))
    bwd = aten.mkldnn_rnn_layer_backward.default
    grad = torch.randn_like(out[0])
    bargs = (x, *w, *b, *h, *out[:3], grad, None, None, False, 2, hidden, 1, True, True, False)
    bargs = (*bargs, [], False, out[3])
    grads = bwd(*bargs)
    assert predicted(bwd, bargs, grads)[0] == allocator_peak(lambda: bwd(*bargs))


def test_cuda_target_lists_the_cudnn_reserve_space() -> None:
    est = memlens.estimate(
        lambda: Tagger("LSTM", 1, False, False), device="cuda", batch=BATCH, inputs=_tokens
    )
    assert any("cudnnGetRNNTempSpaceSizes" in u for u in est.unknowns)
