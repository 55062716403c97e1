"""Targets: a catalog device resolved to the traits the engine emulates it by."""

from __future__ import annotations

import subprocess
import sys

import pytest

import memlens
from memlens._errors import UnknownDeviceError, UnsupportedDeviceError
from memlens.categories import Category
from memlens.devices import get_device
from memlens.targets import resolve_target

from conftest import tiny_mlp

MiB, GiB = 2**20, 2**30


def test_cuda_traits_come_from_the_catalog() -> None:
    h100 = resolve_target("h100")
    assert (h100.kind, h100.allocator, h100.kernel_rules, h100.autocast) == (
        "cuda",
        "cuda-caching",
        "cuda",
        "cuda",
    )
    assert h100.optimizer_impl == "foreach"  # PyTorch's default for CUDA tensors
    assert h100.workspace_bytes == 32 * MiB  # sm90's cuBLAS workspace
    assert h100.stack is not None and h100.context_bytes == h100.stack.context_bytes
    assert h100.capacity_bytes == 81_559 * MiB and h100.name == "h100-80gb"
    assert not any("ROCm" in a for a in h100.assumptions)


def test_bf16_needs_ampere_or_later() -> None:
    assert resolve_target("a100").bf16
    assert not resolve_target("v100").bf16  # sm70
    assert not resolve_target("t4").bf16  # sm75


def test_generic_cuda_has_no_capacity_until_given_a_budget() -> None:
    generic = resolve_target("cuda")
    assert generic.device is None and generic.capacity_bytes is None and generic.name == "cuda"
    assert generic.workspace_bytes == 4096 * 1024 * 2 + 16 * 1024 * 8
    budget = resolve_target("cuda", budget="24GiB")
    assert budget.capacity_bytes == 24 * GiB and budget.context_bytes == generic.context_bytes
    # a budget keeps the device's kind, and applies to a resolved target too
    assert resolve_target("mi300x", budget="100GiB").assumptions
    assert resolve_target(resolve_target("h100"), budget="1GiB").capacity_bytes == GiB
    # a budget keeps the architecture: sm90's workspace and context row
    h100 = resolve_target("h100", budget="40GiB")
    assert (
        h100.workspace_bytes == 32 * MiB
        and h100.context_bytes == resolve_target("h100").context_bytes
    )


def test_cpu_traits() -> None:
    cpu = resolve_target("cpu")
    assert (cpu.kind, cpu.allocator, cpu.kernel_rules, cpu.autocast) == (
        "cpu",
        "exact",
        "cpu",
        "cpu",
    )
    assert (cpu.optimizer_impl, cpu.context_bytes, cpu.workspace_bytes) == ("for-loop", 0, 0)
    assert cpu.device == get_device("cpu")  # this machine's RAM
    assert resolve_target(get_device("cpu")) == cpu


def test_rocm_is_traced_as_cuda_with_every_assumption_listed() -> None:
    mi300x = resolve_target("mi300x")
    assert (mi300x.kind, mi300x.device_kind, mi300x.allocator) == ("cuda", "rocm", "cuda-caching")
    assert mi300x.workspace_bytes == 128 * MiB  # hipBLAS on gfx94x
    text = " ".join(mi300x.assumptions)
    for topic in ("allocator", "context", "workspace", "attention", "autocast"):
        assert topic in text, topic
    assert resolve_target("rocm").assumptions  # a generic ROCm device too


@pytest.mark.parametrize(
    ("device", "says"),
    [
        ("tpu-v5e", "XLA"),
        ("tpu", "XLA"),
        ("m3-max", "MPS allocator"),
        ("mps", "MPS allocator"),
    ],
)
def test_tpu_and_mps_are_refused_with_what_to_do(device: str, says: str) -> None:
    with pytest.raises(UnsupportedDeviceError) as info:
        resolve_target(device)
    message = str(info.value)
    assert says in message and "measure on the" in message and "device=" in message


def test_unknown_names_still_suggest() -> None:
    with pytest.raises(UnknownDeviceError, match="did you mean 'h100-80gb'"):
        resolve_target("h10")


def test_targets_never_import_torch() -> None:
    code = "import sys, memlens.targets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- targets driving the engine --------------------------------------------------------------


def _workspace_blocks(est: memlens.Estimate) -> list[int]:
    """Framework-overhead blocks: the workspace, carried over from the warm-up step."""
    overhead = Category.FRAMEWORK_OVERHEAD
    return [b.nbytes for b in est.timeline.blocks if b.category is overhead]


def test_the_cuda_rule_set_allocates_the_cublas_workspaces_once() -> None:
    kwargs = {"batch": 5, "input_shape": (4,), "grad_accum": 2}  # many matmuls, two steps
    h100 = memlens.estimate(tiny_mlp, device="h100", **kwargs)
    # one per (handle, stream): the forward thread's and autograd's backward thread's
    assert _workspace_blocks(h100) == [32 * MiB, 32 * MiB]
    assert h100.breakdown["framework_overhead"] == 2 * 32 * MiB
    assert h100.workspaces() == {
        "cuBLAS workspace": 32 * MiB,
        "cuBLAS workspace (autograd thread)": 32 * MiB,
    }
    a100 = memlens.estimate(tiny_mlp, device="a100", **kwargs)
    assert _workspace_blocks(a100) == [8_519_680] * 2
    inference = memlens.estimate(
        tiny_mlp, device="a100", batch=5, input_shape=(4,), mode="inference"
    )
    assert _workspace_blocks(inference) == [8_519_680]  # no backward, no autograd thread
    cpu = memlens.estimate(tiny_mlp, device="cpu", **kwargs)
    assert _workspace_blocks(cpu) == [] and "framework_overhead" not in cpu.breakdown


def test_rocm_is_estimated_with_its_own_overheads_and_its_assumptions_in_unknowns() -> None:
    kwargs = {"batch": 5, "input_shape": (4,)}
    mi300x = memlens.estimate(tiny_mlp, device="mi300x", **kwargs)
    h100 = memlens.estimate(tiny_mlp, device="h100", **kwargs)
    # the same CUDA caching-allocator replay; only hipBLAS's larger workspaces differ
    assert mi300x.peak_bytes - h100.peak_bytes == 2 * (128 - 32) * MiB
    assert mi300x.context_bytes == resolve_target("mi300x").context_bytes
    assert set(resolve_target("mi300x").assumptions) <= set(mi300x.unknowns)
    assert not any("ROCm" in u for u in h100.unknowns)


@pytest.mark.parametrize("device", ["tpu-v5e", "m2-max"])
def test_estimate_refuses_tpu_and_mps(device: str) -> None:
    with pytest.raises(UnsupportedDeviceError):
        memlens.estimate(tiny_mlp, device=device, batch=2, input_shape=(4,))


def test_bf16_on_a_gpu_without_it_is_an_unknown() -> None:
    kwargs = {"batch": 2, "input_shape": (4,), "precision": "bf16"}
    assert any(
        "bfloat16" in u for u in memlens.estimate(tiny_mlp, device="v100", **kwargs).unknowns
    )
    assert not any(
        "bfloat16" in u for u in memlens.estimate(tiny_mlp, device="a100", **kwargs).unknowns
    )
