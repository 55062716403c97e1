"""Reads of values computed from the inputs: recorded with their site, explored (both
answers traced, the largest peak kept), answered neutrally, or refused; real input tensors
given by the user answer their own reads. Estimates are checked against real CPU runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import memlens
from memlens.engine import shadow
from memlens.engine.explore import MAX_BRANCHES

KW = {"device": "cpu"}


class _NeverNegative(nn.Module):
    """``y.abs().sum() < 0`` is never true: a real run always takes the wide path, which the
    neutral answer (True) skips."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.wide = nn.Linear(64, 2048)
        self.out = nn.Linear(2048, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.abs().sum() < 0:
            return y
        return self.out(torch.relu(self.wide(y)))


def _inputs():
    return (torch.randn(32, 64),)


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_explore_finds_the_branch_a_real_run_takes(mode):
    est = memlens.estimate(_NeverNegative, inputs=_inputs, mode=mode, **KW)
    real = memlens.measure(_NeverNegative, inputs=_inputs, mode=mode, **KW)
    assert abs(est.peak_bytes - real.peak_bytes) <= 0.02 * real.peak_bytes
    found = est.strategies["data_dependent"]
    (site,) = found["sites"]
    assert site["site"].endswith(f"test_data_dependent.py:{_line('y.abs().sum() < 0')}")
    assert site["kind"] == "bool" and site["answer"] == "True"
    assert found["chosen"] == f"{site['site']} -> False"
    lo, hi = found["peak_range"]
    assert lo < hi == est.peak_bytes
    assert any("explored 1 other answer" in u and "largest" in u for u in est.unknowns)


def test_neutral_takes_the_neutral_branch_and_says_so():
    est = memlens.estimate(_NeverNegative, inputs=_inputs, data_dependent="neutral", **KW)
    explored = memlens.estimate(_NeverNegative, inputs=_inputs, **KW)
    assert est.peak_bytes < explored.peak_bytes
    assert any("data_dependent=neutral" in u for u in est.unknowns)


def test_fail_names_the_site():
    with pytest.raises(memlens.TraceError, match=r"test_data_dependent\.py:\d+.*data_dependent"):
        memlens.estimate(_NeverNegative, inputs=_inputs, data_dependent="fail", **KW)


class _SignGate(nn.Module):
    """Reads its input directly: with real inputs the read has a true answer."""

    def __init__(self) -> None:
        super().__init__()
        self.small = nn.Linear(64, 64)
        self.wide = nn.Linear(64, 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() < 0:
            return self.wide(x).sum(dim=1, keepdim=True)
        return self.small(x)


def test_real_input_tensors_answer_their_own_reads():
    negative, positive = -torch.ones(16, 64), torch.ones(16, 64)
    est = {
        sign: memlens.estimate(_SignGate, inputs=x, mode="inference", **KW)
        for sign, x in (("-", negative), ("+", positive))
    }
    for sign, x in (("-", negative), ("+", positive)):
        assert "data_dependent" not in est[sign].strategies  # no read left unanswered
        real = memlens.measure(_SignGate, inputs=x, mode="inference", **KW)
        assert abs(est[sign].peak_bytes - real.peak_bytes) <= 0.02 * real.peak_bytes
    assert est["-"].peak_bytes > est["+"].peak_bytes


class _Selects(nn.Module):
    """``nonzero``'s output size is data-dependent: all (the neutral bound) or none."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y.sum() + torch.nonzero(y > 0).sum()


def test_data_dependent_sizes_are_reads_too():
    est = memlens.estimate(_Selects, inputs=lambda: (torch.randn(64, 32),), mode="inference")
    (site,) = est.strategies["data_dependent"]["sites"]
    assert site["kind"] == "size" and site["answer"] == "all"
    assert est.strategies["data_dependent"]["chosen"] == "neutral"  # every element: the bound


def _many_sites(n: int) -> type[nn.Module]:
    """A model reading ``n`` values at ``n`` source lines (a file compiled for the test)."""
    body = "".join(f"        if y[{i}].sum() > 0:\n            y = y + 1\n" for i in range(n))
    source = (
        "import torch\nfrom torch import nn\n"
        "class Many(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.p = nn.Linear(8, 8)\n"
        f"    def forward(self, x):\n        y = self.p(x)\n{body}        return y\n"
    )
    scope: dict = {}
    exec(compile(source, "many_sites.py", "exec"), scope)
    return scope["Many"]


def test_exploration_is_bounded():
    model = _many_sites(MAX_BRANCHES + 2)
    est = memlens.estimate(model, inputs=lambda: (torch.randn(20, 8),), mode="inference")
    found = est.strategies["data_dependent"]
    assert found["explored"] == MAX_BRANCHES
    assert len(found["unexplored"]) == 2
    assert any("not explored" in u for u in est.unknowns)


def _line(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line and "if " in line)


class _Halving(nn.Module):
    """``while`` on an input-dependent value: the neutral answer (True) never ends it."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        while y.abs().max() > 1:
            y = y / 2
        return y


def test_a_loop_on_input_values_ends_with_the_other_answer_and_says_so(monkeypatch):
    monkeypatch.setattr(shadow, "LOOP_LIMIT", 50)  # the mechanism, not the default's time
    inputs = {"inputs": lambda: (torch.randn(8, 16),), "mode": "inference"}
    est = memlens.estimate(_Halving, **inputs)
    found = est.strategies["data_dependent"]
    assert found["branches"][0]["branch"].startswith("neutral (the loop at ")
    assert found["branches"][0]["error"]
    assert any("its real iteration count" in u for u in est.unknowns)
    with pytest.raises(memlens.TraceError, match="loop whose condition depends"):
        memlens.estimate(_Halving, data_dependent="neutral", **inputs)
