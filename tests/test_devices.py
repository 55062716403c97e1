"""The device catalog: lookups, suggestions, budgets and the data behind them."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from memlens._errors import ConfigError, MemlensError, UnknownDeviceError
from memlens.devices import _key, custom_device, get_device, list_devices

MiB, GiB = 2**20, 2**30
DATA = json.loads((files("memlens") / "data" / "devices.json").read_text("utf-8"))


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("H100", "h100-80gb"),
        ("h100-80gb", "h100-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100-80gb"),
        ("v100", "v100-16gb"),
        ("V100_32GB", "v100-32gb"),
        ("a100", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("AMD Instinct MI300X", "mi300x"),
        ("TPU v5e", "tpu-v5e"),
        ("Apple M3 Max", "m3-max"),
        ("CPU", "cpu"),
    ],
)
def test_lookup_by_name_alias_and_vendor_name(name: str, canonical: str) -> None:
    assert get_device(name).name == canonical


@pytest.mark.parametrize(("typo", "expected"), [("h10", "h100-80gb"), ("v1OO", "v100-16gb")])
def test_unknown_names_suggest_close_ones(typo: str, expected: str) -> None:
    with pytest.raises(UnknownDeviceError) as info:
        get_device(typo)
    assert info.value.suggestions[0] == expected
    assert isinstance(info.value, LookupError)
    assert f"did you mean '{expected}'" in str(info.value)


def test_reported_capacities_are_the_drivers_figures() -> None:
    assert get_device("v100-16gb").capacity_bytes == 16160 * MiB
    assert get_device("a100-40gb").capacity_bytes == 42_405_855_232
    assert get_device("h100").capacity_bytes == 81_559 * MiB
    assert get_device("h200").capacity_bytes == 143_771 * MiB
    assert all(get_device(n).capacity_reported for n in ("v100", "a100", "h100", "h200"))
    assert not get_device("a100-80gb").capacity_reported


def test_hopper_gets_the_larger_cublas_workspace() -> None:
    assert get_device("h100").workspace_bytes == get_device("h200").workspace_bytes == 32 * MiB
    assert get_device("a100").workspace_bytes == 4096 * 1024 * 2 + 16 * 1024 * 8
    assert get_device("mi300x").workspace_bytes == 128 * MiB
    assert get_device("tpu-v4").workspace_bytes == 0


def test_every_entry_is_complete_and_names_are_unique() -> None:
    devices = list_devices()
    assert len(devices) == 18
    keys = [_key(n) for d in devices for n in (d.name, *d.aliases)]
    assert len(keys) == len(set(keys)), "an alias that adds no key, or names two devices"
    for d in devices:
        assert d.capacity_bytes > 0, d.name
        assert d.kind in {"cuda", "rocm", "tpu", "mps", "cpu"}
        assert (d.context_bytes is None) == (d.kind == "cuda")  # CUDA's: from the stack
        assert (d.context_bytes or 0) >= 0 and d.workspace_bytes >= 0
        assert d.note
    for entry in DATA["devices"]:
        assert entry["capacity_basis"] in {"reported", "nominal_binary", "nominal_decimal", "host"}


def test_the_cuda_context_is_no_catalog_figure() -> None:
    # modelled per target from the stack (memlens.cuda_stack, data/cuda_context.json)
    assert "context_bytes" not in DATA["overheads"]["cuda"]
    assert get_device("t4").context_bytes is None
    assert get_device("mi300x").context_bytes == DATA["overheads"]["rocm"]["context_bytes"]


def test_cpu_capacity_is_this_machines_ram() -> None:
    cpu = get_device("cpu")
    assert cpu.capacity_reported and cpu.bandwidth_bytes_per_s is None
    try:
        with open("/proc/meminfo") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except OSError:
        pytest.skip("no /proc/meminfo")
    assert cpu.capacity_bytes == total


def test_custom_budgets() -> None:
    d = custom_device("24GiB")
    assert (d.capacity_bytes, d.kind, d.capacity_reported) == (24 * GiB, "cuda", True)
    assert d.context_bytes == get_device("a100").context_bytes
    assert custom_device(10**9, kind="cpu").context_bytes == 0
    with pytest.raises(ConfigError, match="kind"):
        custom_device(10**9, kind="npu")
    with pytest.raises(MemlensError):
        custom_device(0)
