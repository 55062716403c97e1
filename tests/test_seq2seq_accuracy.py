"""Encoder-decoder training against real CPU steps: the engine's backward module hooks keep
no gradient alive (``engine/modules.py`` ``_after_grads``), so a model whose outputs get
their gradients at different times (logits early, the encoder output after the whole decoder
backward) is exact; gradients that meet are summed in place where the autograd engine sums
them in place (``engine/recorder.py`` ``RecordingMode``: a tied embedding's three
gradients), out of place where it does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

import memlens
from memlens.categories import Phase

VOCAB = 2000


class TwoOutputs(nn.Module):
    """An encoder and a decoder reading it, returning (logits, encoder output): the default
    loss is the mean of both, so the logits' gradient exists long before the encoder's."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 64)
        self.encoder = nn.Linear(64, 64)
        self.decoder = nn.Linear(64, 64)
        self.head = nn.Linear(64, VOCAB)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.encoder(self.embed(tokens))
        return self.head(self.decoder(memory) * memory), memory


class ThreeBranches(nn.Module):
    """``h`` feeds three scaled sums: the autograd engine sums their gradients in place, into
    the first, which only its input buffer holds (two ``h``-sized gradients alive, not
    three)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return (h * 2).sum() + (h * 3).sum() + (h * 5).sum()


class SharedGradient(nn.Module):
    """``h1 + h2`` hands one gradient to both input buffers: ``h2``'s other gradient is
    summed out of place (the first is held by ``h1``'s buffer too: three alive), ``h1``'s
    then in place."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(16, 1024), nn.Linear(16, 1024)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1, h2 = self.lin1(x), self.lin2(x)
        first = (h1 * 5).sum() + (h2 * 7).sum()  # made before h1 + h2: runs after it
        return ((h1 + h2) * 3).sum() + first


def _bart() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BartConfig(
        vocab_size=VOCAB,
        d_model=128,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=64,
        use_cache=False,
        dropout=0.0,
    )
    return transformers.BartForConditionalGeneration(config)


def _t5() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=64,
        d_kv=32,
        d_ff=128,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        use_cache=False,
        dropout_rate=0.0,
    )
    return transformers.T5ForConditionalGeneration(config)


def _seq2seq_inputs() -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.randint(0, VOCAB, (2, 16)),
        "decoder_input_ids": torch.randint(0, VOCAB, (2, 8)),
    }


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, VOCAB, (4, 16)),)


def _features() -> tuple[torch.Tensor]:
    return (torch.randn(1024, 16),)


@pytest.mark.parametrize(
    ("model", "inputs", "optimizer"),
    [
        (TwoOutputs, _tokens, "sgd-momentum"),
        (ThreeBranches, _features, "sgd"),
        (_bart, _seq2seq_inputs, "sgd-momentum"),
        (_t5, _seq2seq_inputs, "adam"),
    ],
    ids=["two-outputs", "three-branches", "bart", "t5"],
)
def test_training_matches_the_cpu_allocator(model, inputs, optimizer) -> None:
    kwargs = {"device": "cpu", "inputs": inputs, "mode": "train", "optimizer": optimizer}
    est = memlens.estimate(model, **kwargs)
    real = memlens.measure(model, **kwargs)
    assert est.peak_bytes == pytest.approx(real.peak_bytes, rel=0.01)


def _real_out_of_place_sums(model: nn.Module, x: torch.Tensor) -> int:
    """``aten::add`` calls the autograd engine itself makes (an input buffer's sum) in a real
    backward; in-place sums are ``aten::add_``."""
    loss = model(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss.backward()
    return sum(
        1
        for e in prof.events()
        if e.name == "aten::add"
        and e.cpu_parent is not None
        and e.cpu_parent.name.startswith("autograd::engine::evaluate_function")
    )


@pytest.mark.parametrize(("model", "sums"), [(ThreeBranches, 0), (SharedGradient, 1)])
def test_gradient_sums_out_of_place_as_in_the_real_backward(model, sums) -> None:
    est = memlens.estimate(model, device="cpu", inputs=_features, mode="train", optimizer="sgd")
    h = 1024 * 1024 * 4  # one gradient of h
    backward = est.timeline.phase_starts[Phase.BACKWARD]
    engine = [
        b
        for b in est.timeline.blocks
        if b.op == "aten.add" and b.nbytes == h and b.alloc_at >= backward
    ]
    assert len(engine) == _real_out_of_place_sums(model(), *_features()) == sums
