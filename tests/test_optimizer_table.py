"""The optimizer table against the optimizers themselves: each row's state layout is what the
real optimizer allocates after a step, with each implementation the row lists."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memlens.optimizer_table import OPTIMIZERS, implementations
from memlens.strategies.optimizers import make_optimizer
from memlens.workload import Workload


def stepped_state(name: str, impl: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The optimizer state after one real CPU step, by ``param.state_key``."""
    optimizer = make_optimizer(name, list(model.parameters()), impl=impl)
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()
    names = {p: n for n, p in model.named_parameters()}
    return {
        f"{names[p]}.{key}": value
        for p, state in optimizer.state.items()
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
    }


def model() -> nn.Module:
    """A weight over bitsandbytes' 8-bit threshold (5120 elements), small ones, a 1-D norm."""
    return nn.Sequential(nn.Linear(64, 80), nn.LayerNorm(80), nn.Linear(80, 3))


@pytest.mark.parametrize(
    ("name", "impl"), [(n, i) for n, row in OPTIMIZERS.items() for i in row.impls]
)
def test_state_layout_is_what_the_optimizer_allocates(name: str, impl: str) -> None:
    row = OPTIMIZERS[name]
    net = model()
    state = stepped_state(name, impl, net)
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state.values()
    }
    expected = sum(row.state_bytes(tuple(p.shape), p.element_size()) for p in net.parameters())
    shared = row.shared_state_bytes if any(p.numel() >= 4096 for p in net.parameters()) else 0
    assert sum(storages.values()) == expected + shared
    keys = {k.rpartition(".")[2] for k in state}
    assert keys - {"step", "qmap1", "qmap2"} <= set(row.state)


def test_adam_8bit_keeps_small_parameters_in_fp32() -> None:
    row = OPTIMIZERS["adam-8bit"]
    assert row.state_bytes((4095,), 2) == 2 * 4 * 4095
    assert row.state_bytes((4096,), 2) == 2 * 4096 + 2 * 4 * 2  # two 2048-element blocks


def test_adafactor_factors_matrices() -> None:
    assert OPTIMIZERS["adafactor"].state_bytes((300, 200), 4) == (300 + 200) * 4 + 4
    assert OPTIMIZERS["adafactor"].state_bytes((300,), 4) == 300 * 4 + 4


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_workload_allows_the_table_s_implementations(name: str) -> None:
    for impl in ("auto", "foreach", "for-loop", "fused"):
        if impl in implementations(name):
            assert Workload(optimizer=name, optimizer_impl=impl).optimizer_impl == impl
        else:
            with pytest.raises(ValueError, match=f"{name} allows"):
                Workload(optimizer=name, optimizer_impl=impl)
