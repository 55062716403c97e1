"""A fast start: commands that need no model never import torch, and naming a model imports
only the libraries that model needs. Each check runs in a fresh interpreter, the only place
where ``sys.modules`` says what a command imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries that cost seconds to import; none is needed to print help or tables.
HEAVY = ("torch", "torchvision", "timm", "transformers", "matplotlib")

#: Runs each argv (a JSON list of lists) through the console script's ``main()`` in this one
#: interpreter, then writes the exit codes and the heavy modules imported to the file argv[1].
_RUN = """
import json, sys
from memlens.cli import main

out, argvs = sys.argv[1], json.loads(sys.argv[2])
codes = []
for argv in argvs:
    sys.argv[1:] = argv
    try:
        main()
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code or 0)
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
with open(out, "w") as f:
    json.dump({{"codes": codes, "heavy": heavy}}, f)
"""


def _run(tmp_path: Path, *argvs: list[str]) -> dict:
    out = tmp_path / "result.json"
    script = _RUN.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def test_help_of_every_command_imports_no_torch(tmp_path: Path) -> None:
    from memlens.cli import COMMAND_MODULES

    argvs = [["--help"]] + [[name.replace("_", "-"), "--help"] for name in COMMAND_MODULES]
    got = _run(tmp_path, *argvs)
    assert got == {"codes": [0] * len(argvs), "heavy": []}


@pytest.mark.parametrize(
    "argv",
    [["devices"], ["size", "70B"], ["size", "7B", "--json"], ["models", "--source", "bundled"]],
)
def test_commands_without_a_model_import_no_torch(tmp_path: Path, argv: list[str]) -> None:
    assert _run(tmp_path, argv) == {"codes": [0], "heavy": []}


def test_inspecting_a_checkpoint_imports_no_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({"w": torch.zeros(4, 2)}, str(path))
    assert _run(tmp_path, ["inspect", str(path), "--json"]) == {"codes": [0], "heavy": []}


def test_package_root_and_registry_import_no_torch() -> None:
    code = (
        "import sys, memlens, memlens.report.json\n"
        "from memlens.sources import catalog, registry\n"
        "memlens.Workload, memlens.MemlensError, memlens.Category\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture
def no_vision_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's and timm's providers fail if asked for their names."""
    from memlens.sources import timm_models, torchvision_models

    def refuse(*args: object) -> None:
        raise AssertionError("a bundled LLM name asked a vision provider")

    monkeypatch.setattr(torchvision_models, "names", refuse)
    monkeypatch.setattr(timm_models, "_timm", refuse)


@pytest.mark.parametrize(
    "name", ["llama-3-8b", "Llama 3 8B", "LLAMA_3_8B", "meta-llama/Meta-Llama-3-8B"]
)
def test_bundled_names_ask_no_vision_provider(no_vision_libraries: None, name: str) -> None:
    from memlens.sources import registry

    spec = registry.resolve(name)
    assert (spec.name, spec.source) == ("llama-3-8b", "bundled")


def test_timm_is_asked_only_about_its_own_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from memlens.sources import registry, timm_models

    def refuse() -> None:
        raise AssertionError("timm was imported for a torchvision name")

    monkeypatch.setattr(timm_models, "_timm", refuse)
    assert registry.resolve("ResNet-18").name == "resnet18"


def test_listing_one_source_asks_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    from memlens.sources import catalog, timm_models

    def refuse() -> None:
        raise AssertionError("timm was imported to list torchvision's models")

    monkeypatch.setattr(timm_models, "_timm", refuse)
    rows = catalog.list_models(source="torchvision")
    assert {r["source"] for r in rows} == {"torchvision"}
    assert {"resnet50", "vit_b_16"} <= {r["name"] for r in rows}
