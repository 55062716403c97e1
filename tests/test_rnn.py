"""Recurrent layers against real CPU runs: LSTM (oneDNN's workspace and scratchpads,
engine/targets/cpu_rnn.py), GRU and vanilla RNN (PyTorch's own cells, run as RNN.cpp runs them:
engine/targets/cpu_rnn_native.py), uni- and bidirectional, one to three layers, batch-first,
with embeddings and packed sequences."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import memlens
from memlens.measurement.cpu import allocator_peak

VOCAB, EMBED, HIDDEN, BATCH, SEQ = 500, 24, 32, 4, 12


class Tagger(nn.Module):
    """Embedding, a recurrent stack and a per-token classifier over ``(seq, batch)`` tokens;
    ``packed``: sequences of decreasing lengths (given as a list) go through
    ``pack_padded_sequence`` and come back padded to ``SEQ``."""

    def __init__(
        self, cell: str, layers: int, bidirectional: bool, packed: bool, batch_first: bool = False
    ) -> None:
        super().__init__()
        self.packed, self.batch_first = packed, batch_first
        self.embed = nn.Embedding(VOCAB, EMBED)
        rnn = getattr(nn, cell)
        self.rnn = rnn(
            EMBED, HIDDEN, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first
        )
        self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens.t() if self.batch_first else tokens)
        if not self.packed:
            return self.head(self.rnn(x)[0])
        lengths = [SEQ - SEQ * i // BATCH for i in range(BATCH)]  # 12, 9, 6, 3
        y, _ = self.rnn(pack_padded_sequence(x, lengths, batch_first=self.batch_first))
        return self.head(pad_packed_sequence(y, self.batch_first, total_length=SEQ)[0])


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, VOCAB, (SEQ, BATCH)),)


CASES = [
    ("LSTM", 1, False, False, False),
    ("LSTM", 2, True, False, False),
    ("LSTM", 3, False, False, False),
    ("GRU", 1, True, False, True),  # batch_first: the input projection adds its bias in place
    ("GRU", 3, False, False, False),
    ("RNN", 2, False, False, True),
    ("LSTM", 1, True, True, True),  # packed: RNN.cpp's packed layers, not oneDNN
    ("GRU", 2, False, True, False),
]


def _close(model, **kwargs) -> None:
    est = memlens.estimate(model, device="cpu", **kwargs)
    real = memlens.measure(model, device="cpu", **kwargs)
    assert abs(est.peak_bytes - real.peak_bytes) <= 0.01 * real.peak_bytes, (
        est.peak_bytes,
        real.peak_bytes,
    )


@pytest.mark.parametrize(("cell", "layers", "bi", "packed", "batch_first"), CASES)
@pytest.mark.parametrize("mode", ["inference", "train"])
def test_recurrent_models_match_real_cpu_runs(cell, layers, bi, packed, batch_first, mode) -> None:
    def build() -> nn.Module:
        return Tagger(cell, layers, bi, packed, batch_first)

    kwargs = {"mode": mode, "batch": BATCH, "inputs": _tokens}
    if mode == "train":
        kwargs["optimizer"] = "adam"
    _close(build, **kwargs)


class _Unsorted(nn.Module):
    """Lengths read from the padding of real tokens, unsorted (``enforce_sorted=False``)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(300, EMBED, padding_idx=0)
        self.rnn = nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != 0).sum(1)
        packed = pack_padded_sequence(self.embed(tokens), lengths, True, enforce_sorted=False)
        out = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=14)[0]
        return self.head(out)


def test_packed_lengths_from_real_inputs_match_a_real_cpu_run() -> None:
    """Lengths the trace reads from the real tokens; sorting, packing (its backward: one
    zero-filled gradient, a copy per step) and padding as PackedSequence.cpp runs them."""
    lengths = (7, 12, 3, 10, 7)
    tokens = torch.randint(1, 300, (len(lengths), 14))
    for row, length in enumerate(lengths):
        tokens[row, length:] = 0
    _close(_Unsorted, mode="train", optimizer="sgd-momentum", batch=5, inputs=(tokens,))


def test_packed_lengths_without_values_are_refused_in_one_line() -> None:
    """Token values the trace does not have (inputs made on fake tensors): no lengths."""
    with pytest.raises(memlens.TraceError, match="lengths depend on input values"):
        memlens.estimate(
            _Unsorted,
            device="cpu",
            mode="inference",
            batch=BATCH,
            inputs=lambda: (torch.randint(0, VOCAB, (BATCH, SEQ)),),
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


def test_layers_and_activations_run_packed_sequences() -> None:
    """``memlens.layers`` observes under its own dispatch mode: packed layers run there too."""

    def build() -> nn.Module:
        return Tagger("LSTM", 1, True, True, True)

    report = memlens.layers(build, batch=BATCH, inputs=_tokens)
    rnn = next(row for row in report.rows if row.path == "rnn")
    packed_rows = sum(SEQ - SEQ * i // BATCH for i in range(BATCH))  # 12 + 9 + 6 + 3
    assert rnn.output_shapes[:2] == [(packed_rows, 2 * HIDDEN), (SEQ,)]  # data, batch_sizes
    act = memlens.activations(build, device="cpu", batch=BATCH, inputs=_tokens)
    est = memlens.estimate(build, device="cpu", mode="inference", batch=BATCH, inputs=_tokens)
    assert act.peak_bytes == est.peak_bytes
