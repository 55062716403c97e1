"""Planning: the largest batch (exact, checked by real CPU runs), ranked strategies, sweeps."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import memlens
from memlens.cli import app
from memlens.plan import Choice, Cost
from memlens.plan.strategies import AS_GIVEN, _covers, _rank
from memlens.plan.tracer import Tracer

from conftest import small_cnn

MiB = 2**20
#: small_cnn at 3x256x256 with SGD-momentum on CPU: about 17.75 MiB per sample, so batch 11
#: needs about 195 MiB and batch 12 about 213 MiB: the budget sits 5 and 13 MiB from the two,
#: far more than the estimate's error against the CPU allocator (under 0.1 MiB here).
CNN = {"input_shape": (3, 256, 256), "optimizer": "sgd-momentum", "device": "cpu"}
BUDGET = 200 * MiB


def test_max_batch_is_confirmed_by_real_cpu_steps():
    result = memlens.fit(small_cnn, budget=BUDGET, strategies=False, **CNN)
    n = result.max_batch
    assert n > 1 and result.search.bounded
    assert result.search.traces <= 4
    fits = memlens.measure(small_cnn, batch=n, **CNN)
    over = memlens.measure(small_cnn, batch=n + 1, **CNN)
    assert fits.peak_bytes <= BUDGET < over.peak_bytes


@pytest.mark.parametrize("budget_mib", [40, 123, 500, 2000])
def test_answer_fits_and_the_batch_above_does_not(budget_mib):
    budget = budget_mib * MiB
    result = memlens.fit(small_cnn, budget=budget, strategies=False, **CNN)
    n = result.max_batch
    assert memlens.estimate(small_cnn, batch=n, budget=budget, **CNN).fits
    assert not memlens.estimate(small_cnn, batch=n + 1, budget=budget, **CNN).fits
    assert result.at_max.workload.batch == n and result.above.workload.batch == n + 1
    assert result.search.traces <= 5
    assert result.traces == result.search.traces


def test_nothing_fits_says_how_far_short():
    result = memlens.fit(small_cnn, budget=10 * MiB, strategies=False, **CNN)
    assert result.max_batch == 0 and result.search.traces == 1
    assert result.shortfall_bytes == result.at_max.total_bytes - 10 * MiB > 0
    assert result.above is None


def test_search_stops_at_its_cap():
    result = memlens.fit(small_cnn, budget="8GiB", max_batch=16, strategies=False, **CNN)
    assert result.max_batch == 16 and not result.search.bounded
    assert result.above is None


def test_fit_needs_a_capacity():
    with pytest.raises(memlens.ConfigError, match="capacity"):
        memlens.fit(small_cnn, device="cuda", input_shape=(3, 32, 32))


def test_tracer_accepts_only_what_the_schema_takes():
    fields = {k: v for k, v in CNN.items() if k != "device"}
    tracer = Tracer(small_cnn, device="cpu", fields=fields)
    assert tracer.accepts(precision="bf16-amp")
    assert not tracer.accepts(optimizer="no-such-optimizer")
    assert not tracer.accepts(no_such_option=True)
    assert not tracer.accepts(offload_optimizer=True)  # a CUDA target's
    assert tracer.count == 0


def test_fit_and_sweep_take_strategies():
    kw = {**CNN, "budget": BUDGET}
    plain = memlens.sweep(small_cnn, batches=[4], **kw).estimates[0]
    swept = memlens.sweep(small_cnn, batches=[4], freeze="0.*", **kw).estimates[0]
    assert swept.workload.freeze == ("0.*",)
    assert plain.trainable_params - swept.trainable_params == 3 * 16 * 9 + 16  # the first conv
    result = memlens.fit(small_cnn, batch=16, grad_accum=2, **kw)
    assert result.at_max.workload.grad_accum == 2
    labels = {c.label for o in result.strategies.fitting for c in o.choices}
    assert not any(label.startswith("grad-accum") for label in labels)  # already turned
    with pytest.raises(memlens.WorkloadError, match="does not apply to sweep"):
        memlens.sweep(small_cnn, batch=4, **kw)


def test_ranking_puts_cheap_and_safe_first_and_subsets_before_supersets():
    amp = Choice("amp", (("precision", "bf16-amp"),), risk=Cost.LOW)
    ckpt = Choice("ckpt", (("checkpoint", "blocks"),), overhead=Cost.SOME, extra_forwards=1)
    accum = [
        Choice(f"accum {k}", (("grad_accum", k),), overhead=Cost.LOW, micro_steps=k) for k in (2, 4)
    ]
    axes = [[AS_GIVEN, amp], [AS_GIVEN, ckpt], [AS_GIVEN, *accum]]
    combos = sorted(
        [(a, c, g) for a in range(2) for c in range(2) for g in range(3)],
        key=lambda combo: _rank(axes, combo),
    )
    assert combos[:4] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (1, 0, 0)]  # no risk before low risk
    assert combos[-1] == (1, 1, 2)
    for i, a in enumerate(combos):
        assert not any(_covers(a, b) and a != b for b in combos[i + 1 :])


def test_strategies_fit_at_the_target_and_none_dominates_another():
    result = memlens.fit(small_cnn, budget=BUDGET, batch=16, **CNN)
    search = result.strategies
    assert search is not None and search.target_batch == 16
    assert search.baseline is not None and not search.baseline.fits
    assert "offload optimizer" in search.unavailable  # CUDA only
    assert search.fitting, "a batch split at least fits: micro-batch 8 is below the max"
    for option in search.fitting:
        assert option.total_bytes <= BUDGET and option.fits
        assert option.micro_batch * option.micro_steps == 16
    labels = [set(o.choices) for o in search.fitting]
    assert not any(a < b for a in labels for b in labels)  # no listed option contains another
    assert result.traces == result.search.traces + search.traces


def test_sweep_rows_and_plot(tmp_path):
    from memlens.report.plan import plot_sweep

    result = memlens.sweep(small_cnn, batches=[4, 1, 2], budget=BUDGET, **CNN)
    assert result.batches == [1, 2, 4]
    assert all(e.total_bytes == sum(n for _, n in e.budget()) for e in result.estimates)
    out = plot_sweep(result, tmp_path / "sweep.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_fit_and_sweep_json():
    runner = CliRunner()
    args = ["--input-shape", "3x256x256", "--optimizer", "sgd-momentum", "--device", "cpu"]
    model = "tests/conftest.py:small_cnn"
    fit = runner.invoke(app, ["fit", model, *args, "--budget", "200MiB", "--json"])
    assert fit.exit_code == 0, fit.output
    data = json.loads(fit.output)
    assert data["max_batch"] >= 1 and data["search"]["traces"] <= 4
    assert data["strategies"]["target_batch"] == 1 << data["max_batch"].bit_length()
    sweep = runner.invoke(app, ["sweep", model, *args, "--batch", "1,2"])
    assert sweep.exit_code == 0, sweep.output
    assert "allocated peak" in sweep.output
