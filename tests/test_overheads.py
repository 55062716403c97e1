"""Device memory outside the step's tensors: the CUDA context from the stack, the cuBLAS and
cuBLASLt workspaces, their overrides, and how estimates report them."""

from __future__ import annotations

import json
from typing import Any

import pytest

import memlens
from memlens import cuda_stack as stack_module
from memlens._errors import WorkloadError
from memlens.cuda_stack import context_row, context_rows, cuda_stack, installed_torch
from memlens.report.json import to_json
from memlens.targets import resolve_target

from conftest import cli_exit_code, tiny_mlp

MiB = 2**20
DEFAULT_WS = 4096 * 1024 * 2 + 16 * 1024 * 8  # ':4096:2:16:8'
#: Environment variables the stack reads; tests start from none of them set.
STACK_ENV = (
    "CUDA_MODULE_LOADING",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUBLASLT_WORKSPACE_SIZE",
    "DISABLE_ADDMM_CUDA_LT",
    "TORCH_CUBLASLT_UNIFIED_WORKSPACE",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STACK_ENV:
        monkeypatch.delenv(name, raising=False)


def _torch(monkeypatch: pytest.MonkeyPatch, version: str, cuda: tuple[int, int] | None) -> None:
    """Pretend the installed torch is ``version`` with CUDA ``cuda``."""
    monkeypatch.setattr(stack_module, "installed_torch", lambda: (version, cuda))


# -- the context table --------------------------------------------------------------------------


def test_rows_are_the_published_measurements_less_their_probe() -> None:
    rows = {r.id: r for r in context_rows()}
    # pytorch/pytorch PR #86509, minus the probe's 20 MiB segment (6.4 MB tensor)
    assert rows["pytorch-86509-lazy"].context_bytes == 287_047_680 - 20 * MiB
    assert rows["pytorch-86509-eager"].context_bytes == 666_632_192 - 20 * MiB
    # V100, CUDA 11.2: 1343 MiB NVML used, minus torch.ones((1, 1))'s 2 MiB segment
    assert rows["hf-perf-train-gpu-one-v100"].context_bytes == 1341 * MiB
    # RTX 6000 Ada, torch 2.10+cu130: 426 MiB, no tensor
    assert rows["unsloth-zoo-1053-rtx6000ada"].context_bytes == 426 * MiB
    assert all(r.source and r.loading in ("lazy", "eager") for r in rows.values())


@pytest.mark.parametrize(
    ("arch", "cuda", "eager", "row"),
    [
        ("sm70", "11.2", None, "hf-perf-train-gpu-one-v100"),  # before 11.7: eager only
        ("sm70", "11.2", False, "hf-perf-train-gpu-one-v100"),  # lazy asked, not available
        ("sm89", "13.0", None, "unsloth-zoo-1053-rtx6000ada"),
        ("", "11.7", None, "pytorch-86509-lazy"),
        ("", "11.7", True, "pytorch-86509-eager"),
        ("sm80", "11.8", True, "pytorch-86509-eager"),  # nearest CUDA; no sm80 row
        ("sm70", "12.4", True, "hf-perf-train-gpu-one-v100"),  # same architecture first
        ("sm90", "12.8", None, "unsloth-zoo-1053-rtx6000ada"),  # 12.8 is nearer 13.0
        ("sm80", "12.1", None, "pytorch-86509-lazy"),  # 12.1 is nearer 11.7
    ],
)
def test_context_of_each_stack_comes_from_its_row(
    arch: str, cuda: str, eager: bool | None, row: str
) -> None:
    stack = cuda_stack(arch, cuda_version=cuda, eager_module_loading=eager, env={})
    rows = {r.id: r for r in context_rows()}
    assert stack.context_row == row
    assert stack.context_bytes == rows[row].context_bytes


def test_an_exact_row_is_no_assumption_and_a_nearest_row_is_listed() -> None:
    exact = cuda_stack("sm70", cuda_version="11.2", env={})
    assert not any("CUDA context" in a for a in exact.assumptions)
    nearest = cuda_stack("sm90", cuda_version="12.4", env={})
    (note,) = [a for a in nearest.assumptions if "no measurement" in a]
    assert "sm90, CUDA 12.4" in note and "426.00 MiB" in note and "--context" in note
    # lazy loading grows the context in the first step: said, not modelled
    assert any("first use" in a for a in nearest.assumptions)


def test_context_row_rule_prefers_the_loading_mode_then_the_architecture() -> None:
    assert context_row("eager", (13, 0), "sm70").id == "hf-perf-train-gpu-one-v100"
    assert context_row("eager", (13, 0), "sm90").id == "pytorch-86509-eager"
    assert context_row("lazy", (11, 7), "sm89").id == "unsloth-zoo-1053-rtx6000ada"


# -- module loading ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cuda", "loading"),
    [
        (None, "12.4", "lazy"),  # PyTorch sets LAZY (PR #86509), the driver default from 12.2
        ("EAGER", "12.4", "eager"),
        ("LAZY", "12.4", "lazy"),
        ("DEFAULT", "12.1", "eager"),  # DEFAULT meant eager before CUDA 12.2
        ("DEFAULT", "12.2", "lazy"),
        ("lazy", "11.6", "eager"),  # lazy loading came with CUDA 11.7
        (None, "11.2", "eager"),
    ],
)
def test_module_loading_follows_cuda_module_loading(
    value: str | None, cuda: str, loading: str
) -> None:
    env = {} if value is None else {"CUDA_MODULE_LOADING": value}
    assert cuda_stack("sm80", cuda_version=cuda, env=env).module_loading == loading


def test_eager_module_loading_overrides_the_environment() -> None:
    env = {"CUDA_MODULE_LOADING": "LAZY"}
    stack = cuda_stack("sm80", cuda_version="12.4", eager_module_loading=True, env=env)
    assert stack.module_loading == "eager"
    assert (
        cuda_stack("sm80", cuda_version="12.4", eager_module_loading=False, env={}).module_loading
        == "lazy"
    )


def test_an_unknown_cuda_module_loading_value_is_said() -> None:
    stack = cuda_stack("sm80", cuda_version="12.4", env={"CUDA_MODULE_LOADING": "SOMETIMES"})
    assert stack.module_loading == "lazy"
    assert any("SOMETIMES" in a for a in stack.assumptions)


# -- defaults from the installed torch --------------------------------------------------------


def test_defaults_follow_the_installed_torch() -> None:
    version, cuda = installed_torch()
    import torch

    assert version == torch.__version__.split("+")[0]
    expected = torch.version.cuda
    assert (f"{cuda[0]}.{cuda[1]}" if cuda else None) == (
        ".".join(expected.split(".")[:2]) if expected else None
    )
    if cuda is not None:
        assert cuda_stack("sm80", env={}).cuda_version == f"{cuda[0]}.{cuda[1]}"


def test_a_torch_without_cuda_assumes_the_newest_row_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _torch(monkeypatch, "2.14.1", None)
    stack = cuda_stack("sm80", env={})
    assert stack.cuda_version == "13.0"
    assert any("no CUDA runtime" in a and "--cuda-version" in a for a in stack.assumptions)


# -- library workspaces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "nbytes"),
    [
        (None, DEFAULT_WS),
        (":4096:8:16:8", 4096 * 1024 * 8 + 16 * 1024 * 8),  # 33,685,504
        (":4096:8", 32 * MiB),
        (":16:8", 131_072),
        (":0:0", 0),
        ("garbage", DEFAULT_WS),  # PyTorch warns and keeps the default
    ],
)
def test_cublas_workspace_config_is_parsed_as_pytorch_does(config: str | None, nbytes: int) -> None:
    env = {} if config is None else {"CUBLAS_WORKSPACE_CONFIG": config}
    stack = cuda_stack("sm80", cuda_version="12.4", env=env)
    assert stack.cublas_workspace_bytes == nbytes
    assert (config == "garbage") == any("CUBLAS_WORKSPACE_CONFIG" in a for a in stack.assumptions)


def test_cublas_workspace_config_reaches_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8:16:8")
    assert resolve_target("h100").workspace_bytes == 33_685_504
    assert resolve_target("a100").workspace_bytes == 33_685_504
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    assert resolve_target("h100").workspace_bytes == 32 * MiB  # sm90's default
    assert resolve_target("a100").workspace_bytes == DEFAULT_WS


@pytest.mark.parametrize(
    ("torch_version", "env", "mode", "nbytes"),
    [
        ("2.4.0", {}, "per-call", MiB),  # gemm_and_bias allocates and frees it
        ("2.8.0", {}, "persistent", MiB),  # PR #156495: one per (handle, stream)
        ("2.8.0", {"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "1"}, "shared", MiB),
        ("2.14.1", {}, "shared", MiB),  # the cuBLAS workspace itself
        ("2.14.1", {"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "0"}, "persistent", MiB),
        ("2.4.0", {"CUBLASLT_WORKSPACE_SIZE": "4096"}, "per-call", 4 * MiB),  # KiB
        ("2.4.0", {"DISABLE_ADDMM_CUDA_LT": "1"}, "off", MiB),
    ],
)
def test_cublaslt_workspace_by_torch_version(
    monkeypatch: pytest.MonkeyPatch, torch_version: str, env: dict, mode: str, nbytes: int
) -> None:
    _torch(monkeypatch, torch_version, (12, 4))
    stack = cuda_stack("sm80", env=env)
    assert (stack.cublaslt_workspace, stack.cublaslt_workspace_bytes) == (mode, nbytes)


def _lt_estimate(monkeypatch: pytest.MonkeyPatch, torch_version: str, **kw: Any) -> Any:
    _torch(monkeypatch, torch_version, (12, 4))
    return memlens.estimate(tiny_mlp, device="a100", batch=5, input_shape=(4,), **kw)


def test_the_lt_workspace_of_a_biased_linear_follows_the_torch_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = _lt_estimate(monkeypatch, "2.14.1")
    assert set(shared.workspaces()) == {"cuBLAS workspace", "cuBLAS workspace (autograd thread)"}
    kept = _lt_estimate(monkeypatch, "2.8.0")
    # forward's addmm on the main thread; backward has no addmm (mm only)
    assert kept.workspaces()["cuBLASLt workspace"] == MiB
    per_call = _lt_estimate(monkeypatch, "2.4.0")
    assert "cuBLASLt workspace" not in per_call.workspaces()
    lt = [b for b in per_call.timeline.blocks if b.op == "aten.addmm:workspace"]
    assert lt and all(b.nbytes == MiB and b.free_at is not None for b in lt)


# -- overrides ----------------------------------------------------------------------------------


def test_overrides_through_the_api() -> None:
    est = memlens.estimate(
        tiny_mlp, device="a100", batch=2, input_shape=(4,), context="500MiB", cuda_version="12.4"
    )
    assert est.context_bytes == 500 * MiB
    assert not any("no measurement" in u for u in est.unknowns)  # the user gave it
    v100 = resolve_target("v100", cuda_version="12.4", eager_module_loading=True)
    assert v100.context_bytes == 1341 * MiB and v100.stack is not None
    assert v100.stack.module_loading == "eager"
    assert resolve_target("h100", context=123).context_bytes == 123
    mi300x = resolve_target("mi300x", context="1GiB")  # ROCm takes the context only
    assert mi300x.context_bytes == 2**30
    assert not any("HIP context" in a for a in mi300x.assumptions)
    assert any("HIP context" in a for a in resolve_target("mi300x").assumptions)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"cuda_version": "twelve"}, "cuda_version"),
        ({"context": "lots"}, "context"),
        ({"context": -1}, "context"),
    ],
)
def test_bad_values_name_the_keyword(kwargs: dict, name: str) -> None:
    with pytest.raises(WorkloadError) as info:
        resolve_target("a100", **kwargs)
    assert info.value.field == name


@pytest.mark.parametrize(
    ("device", "kwargs", "name"),
    [
        ("cpu", {"context": "1GiB"}, "context"),
        ("cpu", {"cuda_version": "12.4"}, "cuda_version"),
        ("mi300x", {"eager_module_loading": True}, "eager_module_loading"),
    ],
)
def test_stack_keywords_a_kind_has_no_use_for_are_refused(
    device: str, kwargs: dict, name: str
) -> None:
    with pytest.raises(WorkloadError) as info:
        resolve_target(device, **kwargs)
    assert info.value.field == name


def test_a_resolved_target_takes_overrides_too() -> None:
    base = resolve_target("h100")
    assert resolve_target(base) is base
    assert resolve_target(base, context=7).context_bytes == 7


# -- reports ----------------------------------------------------------------------------------


def test_framework_overhead_is_explained_line_by_line() -> None:
    est = memlens.estimate(tiny_mlp, device="h100", batch=5, input_shape=(4,), context="400MiB")
    rows = dict(est.overheads())
    assert rows == {
        "CUDA context": 400 * MiB,
        "cuBLAS workspace": 32 * MiB,
        "cuBLAS workspace (autograd thread)": 32 * MiB,
    }
    budget = dict((c.value, n) for c, n in est.budget())
    assert budget["framework_overhead"] == sum(rows.values())
    assert est.total_bytes == est.reserved_peak_bytes + est.context_bytes
    assert est.total_bytes == sum(budget.values())


def test_json_has_the_overhead_lines() -> None:
    est = memlens.estimate(tiny_mlp, device="h100", batch=5, input_shape=(4,), context="400MiB")
    data = json.loads(json.dumps(to_json(est)))
    assert data["overhead"] == {
        "context_bytes": 400 * MiB,
        "context": "CUDA context",
        "workspaces": {
            "cuBLAS workspace": 32 * MiB,
            "cuBLAS workspace (autograd thread)": 32 * MiB,
        },
        "allocator_slack_bytes": est.slack_bytes,
        "nccl": {},  # one GPU: no communicator
    }
    assert data["total_bytes"] == est.reserved_peak_bytes + 400 * MiB


def test_unknowns_list_the_stack_assumptions() -> None:
    est = memlens.estimate(tiny_mlp, device="h100", batch=2, input_shape=(4,), cuda_version="12.4")
    target = resolve_target("h100", cuda_version="12.4")
    assert set(target.assumptions) <= set(est.unknowns)
    assert any("no measurement for sm90, CUDA 12.4" in u for u in est.unknowns)
    assert any("autograd's device thread" in u for u in est.unknowns)
    cpu = memlens.estimate(tiny_mlp, device="cpu", batch=2, input_shape=(4,))
    assert not any("CUDA context" in u for u in cpu.unknowns)


# -- the command line ---------------------------------------------------------------------------


def test_cli_stack_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("estimate", "resnet18", "--gpu", "v100", "--json")
    assert cli_exit_code(*args, "--cuda-version", "11.2") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overhead"]["context_bytes"] == 1341 * MiB  # the measured V100 row
    assert cli_exit_code(*args, "--cuda-version", "12.4", "--eager-module-loading") == 0
    assert json.loads(capsys.readouterr().out)["overhead"]["context_bytes"] == 1341 * MiB
    assert cli_exit_code(*args, "--context", "500MiB") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["overhead"]["context_bytes"] == 500 * MiB
    assert data["total_bytes"] == data["reserved_peak_bytes"] + 500 * MiB


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--gpu", "a100", "--cuda-version", "x"), "invalid --cuda-version 'x': a CUDA version"),
        (("--gpu", "a100", "--context", "lots"), "invalid --context 'lots'"),
        (("--device", "cpu", "--context", "1GiB"), "invalid --context '1GiB': applies to CUDA"),
        (("--device", "cpu", "--lazy-module-loading"), "invalid --eager-module-loading"),
    ],
)
def test_cli_stack_errors_name_the_flag(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], says: str
) -> None:
    assert cli_exit_code("estimate", "resnet18", *args) == 2
    assert says in capsys.readouterr().err
