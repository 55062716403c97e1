"""The step itself: the loop switches (``zero_grad``, ``release_output``), the loop presets
(``pytorch``, ``hf-trainer``, ``lightning``) and the user's own step function, each traced
and checked against the same step run for real on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import memlens
from memlens import Workload, WorkloadError
from memlens.categories import Category, Phase
from memlens.report.json import to_json

KW = {"input_shape": (64,), "batch": 32, "device": "cpu"}


def _model() -> nn.Module:
    # a wide head: its output (the "logits") is large next to everything else
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 2000))


def _pair(**fields):
    est = memlens.estimate(_model, **KW, **fields)
    real = memlens.measure(_model, **KW, **fields)
    return est, real


def _close(est, real, tol=0.01):
    assert abs(est.peak_bytes - real.peak_bytes) <= tol * real.peak_bytes, (
        est.peak_bytes,
        real.peak_bytes,
    )


# -- switches -------------------------------------------------------------------------------


def test_release_output_lowers_the_peak_by_the_output_and_matches_a_real_run():
    held, held_real = _pair()
    released, released_real = _pair(release_output=True)
    _close(held, held_real)
    _close(released, released_real)
    logits = 32 * 2000 * 4
    assert held.peak_bytes - released.peak_bytes == logits


def test_the_loops_output_lives_through_the_next_forward_until_rebound():
    """``pred = model(X)`` rebinds ``pred`` only when the forward returns: the previous
    step's logits are alive through this step's forward (and the real run holds them)."""
    est, real = _pair()
    _close(est, real)
    logits = 32 * 2000 * 4
    forward = est.timeline.phase_starts[Phase.FORWARD]
    carried = [b for b in est.timeline.live_at(forward) if b.op == "carried"]
    assert logits in [b.nbytes for b in carried]
    # freed once the new output is bound: none of the previous step's is alive in backward
    backward = est.timeline.phase_starts[Phase.BACKWARD]
    assert logits not in [b.nbytes for b in est.timeline.live_at(backward) if b.op == "carried"]
    # the first step has no previous output; the real first step agrees
    assert abs(est.first_step_peak_bytes - real.first_step_peak_bytes) <= 0.01 * real.peak_bytes


def returning_step(model, batch, optimizer):
    """Returns its output, which the caller's loop holds until the next call returns."""
    out = model(batch)
    out.float().pow(2).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    return out


def test_a_user_steps_return_value_is_held_through_the_next_call():
    held, held_real = _pair(step=returning_step)
    _close(held, held_real)
    released = memlens.estimate(_model, step=release_step, **KW)
    # the previous call's output is alive through the whole next call
    assert held.peak_bytes - released.peak_bytes >= 32 * 2000 * 4


def test_zero_grad_zeros_keeps_gradients_alive_across_steps():
    est, real = _pair(zero_grad="zeros")
    _close(est, real)
    # the gradients are alive before the step begins
    grads = sum(p.numel() for p in _model().parameters()) * 4
    start = est.timeline.live_at(est.timeline.phase_starts[Phase.FORWARD] - 1)
    assert sum(b.nbytes for b in start if b.category is Category.GRADIENTS) == grads


def test_lightning_holds_last_steps_gradients_through_the_forward_pass():
    est, real = _pair(loop="lightning")
    _close(est, real)
    assert est.workload.loop_implied["zero_grad_at"] == "before backward"


def test_hf_trainer_preset_releases_output_clips_and_says_what_it_implied():
    est, real = _pair(loop="hf-trainer")
    _close(est, real)
    implied = to_json(est)["strategies"]["loop_implied"]
    assert implied["release_output"] is True and implied["clip_grad_norm"] == 1.0
    # an explicit field wins over the preset
    kept, kept_real = _pair(loop="hf-trainer", release_output=False)
    _close(kept, kept_real)
    assert kept.peak_bytes > est.peak_bytes
    assert "release_output" not in kept.workload.loop_implied


def test_bnb_compute_dtype_defaults_to_fp32_like_bitsandbytes():
    assert Workload().bnb_compute_dtype == "fp32"

    def model():  # the head stays unquantised: the first layer is the 4-bit one
        return nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 16))

    kw = {**KW, "input_shape": (512,), "precision": "bf16", "quantize": "nf4"}
    peaks = {}
    for dtype in ("fp32", "bf16"):
        est = memlens.estimate(model, bnb_compute_dtype=dtype, **kw)
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            # oneDNN computes bf16 on this host: its matmul scratchpads are not modelled, and
            # the estimate says so instead of comparing with the real run
            assert any("oneDNN" in note for note in est.unknowns)
        else:
            _close(est, memlens.measure(model, bnb_compute_dtype=dtype, **kw))
        peaks[dtype] = est.peak_bytes
    # fp32 compute dequantises the 2048x512 weight to fp32 (bf16 then .to(fp32))
    assert peaks["fp32"] - peaks["bf16"] >= 2048 * 512 * 2
    with pytest.raises(WorkloadError):
        Workload(bnb_compute_dtype="int8")


# -- the user's own step -------------------------------------------------------------------


def release_step(model, batch, optimizer):
    """Releases the output before backward: only the loss survives the forward pass."""
    loss = model(batch).float().pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def two_forwards_step(model, batch, optimizer):
    """Two forward passes (as a consistency loss does), one backward, zero_grad first."""
    optimizer.zero_grad(set_to_none=True)
    a = model(batch)
    b = model(batch * 2)
    loss = F.mse_loss(a, b.detach()) + a.mean()
    loss.backward()
    optimizer.step()


def manual_accumulation_step(model, batch, optimizer):
    for half in batch.chunk(2):
        out = model(half)
        (out.mean() / 2).backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("fn", [release_step, two_forwards_step, manual_accumulation_step])
def test_user_step_matches_the_real_cpu_run(fn):
    est, real = _pair(step=fn)
    _close(est, real)
    b = est.breakdown
    params = sum(p.numel() for p in _model().parameters()) * 4
    assert b["parameters"] == params
    assert b.get("optimizer_state", 0) >= 2 * params  # adam's moments, labelled as state


def test_user_step_that_releases_its_output_equals_the_release_switch():
    user = memlens.estimate(_model, step=release_step, **KW)
    assert user.timeline.phase_starts  # phases were inferred
    assert to_json(user)["strategies"]["step"].endswith("release_step")


def test_user_step_phases_are_inferred():
    est = memlens.estimate(_model, step=two_forwards_step, **KW)
    phases = {p.value for p in est.timeline.phase_starts}
    assert {"forward", "backward", "optimizer"} <= phases
    assert est.breakdown.get("activations", 0) > 0


def test_user_step_from_a_module_spec():
    w = Workload(step="tests.test_step:release_step")
    assert w.step.fn.__name__ == "release_step"
    with pytest.raises(WorkloadError):
        Workload(step="no-colon")


def test_switches_that_a_user_step_makes_meaningless_are_refused():
    for name, value in (("loop", "hf-trainer"), ("zero_grad", "zeros"), ("grad_accum", 2)):
        with pytest.raises(WorkloadError) as info:
            Workload(step=release_step, **{name: value})
        assert info.value.field == name


def test_cli_step_from_a_file(tmp_path, capsys):
    import json

    from typer.testing import CliRunner

    from memlens.cli import app

    models = tmp_path / "mine.py"
    models.write_text(
        "import torch\n"
        "from torch import nn\n\n"
        "def model():\n"
        "    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 2000))\n\n"
        "def step(model, batch, optimizer):\n"
        "    loss = model(batch).float().pow(2).mean()\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    optimizer.zero_grad()\n"
    )
    args = ["estimate", f"{models}:model", "--input-shape", "64", "-b", "32", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--step", f"{models}:step", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["strategies"]["step"] == f"{models}:step"
    api = memlens.estimate(_model, step=release_step, **KW)
    assert out["peak_bytes"] == api.peak_bytes  # the same step, from the command line


@pytest.mark.parametrize(
    "fields",
    [
        {"loop": "lightning", "grad_accum": 2},  # zero_grad on the first micro-batch only
        {"loop": "hf-trainer", "precision": "fp16-amp"},  # unscale before clipping
        {"loop": "hf-trainer", "zero_grad": "zeros", "optimizer": "sgd"},
    ],
)
def test_presets_with_other_fields_match_real_runs(fields):
    est, real = _pair(**fields)
    _close(est, real)


def test_user_step_in_inference():
    def infer(model, batch, optimizer):
        assert optimizer is None
        with torch.no_grad():
            return model(batch).softmax(-1).argmax(-1)

    est, real = _pair(step=infer, mode="inference")
    _close(est, real)


def test_hf_trainer_releases_a_language_models_logits(tmp_path):
    """A causal LM with a large vocabulary: the Trainer's step drops ``outputs`` (the logits)
    before backward, the canonical loop keeps them; both match real CPU runs."""
    pytest.importorskip("transformers")
    import json

    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "vocab_size": 16000,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    kw = {"batch": 2, "seq_len": 64, "device": "cpu", "optimizer_impl": "for-loop"}
    peaks = {}
    for loop in ("pytorch", "hf-trainer"):
        est = memlens.estimate(str(path), loop=loop, **kw)
        _close(est, memlens.measure(str(path), loop=loop, **kw))
        peaks[loop] = est.peak_bytes
    logits = 2 * 64 * 16000 * 4
    assert peaks["pytorch"] - peaks["hf-trainer"] >= logits // 2


def canonical_step(model, batch, optimizer):
    """The built-in loop's step, written by hand."""
    output = model(batch)
    loss = output.mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_user_step_written_like_the_built_in_loop_gives_the_same_breakdown():
    builtin = memlens.estimate(_model, **KW)
    user = memlens.estimate(_model, step=canonical_step, **KW)
    assert user.peak_bytes == builtin.peak_bytes
    assert user.breakdown == builtin.breakdown
    assert user.peak_phase == builtin.peak_phase


def _autocast_step(device_type):
    def step(model, batch, optimizer):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = model(batch)
        loss = out.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def test_a_cuda_autocast_region_of_a_user_step_autocasts_the_trace_for_a_cuda_target():
    kw = {**KW, "device": "a100-80gb", "precision": "bf16-amp", "batch": 1024}
    cuda = memlens.estimate(_model, step=_autocast_step("cuda"), **kw)
    cpu = memlens.estimate(_model, step=_autocast_step("cpu"), **kw)
    plain = memlens.estimate(_model, step=canonical_step, **kw)
    assert cuda.peak_bytes == cpu.peak_bytes != plain.peak_bytes
    assert cuda.breakdown == cpu.breakdown


def test_cli_output_switch(tmp_path):
    import json

    from typer.testing import CliRunner

    from memlens.cli import app

    models = tmp_path / "net.py"
    models.write_text(
        "from torch import nn\n\n"
        "def model():\n"
        "    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 2000))\n"
    )
    args = ["estimate", f"{models}:model", "--input-shape", "64", "-b", "32", "--device", "cpu"]
    peaks = {}
    for switch in ("--release-output", "--keep-output"):
        result = CliRunner().invoke(app, [*args, "--loop", "hf-trainer", switch, "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["workload"]["release_output"] is (switch == "--release-output")
        peaks[switch] = out["peak_bytes"]
    assert peaks["--keep-output"] - peaks["--release-output"] == 32 * 2000 * 4


class _WithAux(nn.Module):
    """A trunk and an auxiliary head whose output the loss does not use (GoogLeNet's)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 16))
        self.aux = nn.Sequential(nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 16))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.trunk(x), self.aux(x)


def test_an_output_outside_the_loss_frees_its_graph_when_released():
    """No backward runs through the auxiliary head: its saved activations live exactly as
    long as its output, as in the real run (the engine's module hooks hold no graph node)."""
    kw = {**KW, "loss": lambda out: out[0].sum()}
    for release in (True, False):
        est = memlens.estimate(_WithAux, release_output=release, **kw)
        _close(est, memlens.measure(_WithAux, release_output=release, **kw))
    released = memlens.estimate(_WithAux, release_output=True, **kw)
    held = memlens.estimate(_WithAux, release_output=False, **kw)
    assert held.peak_bytes - released.peak_bytes >= 32 * 4096 * 4  # the aux ReLU's output
