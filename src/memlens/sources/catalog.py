"""Every model memlens can name, as table rows for ``memlens models``.

Listing is fast by default: a row's ``params`` is filled only where it is known without
building the model (bundled configs cache theirs; torchvision's come from its weights'
metadata, which is what torchvision publishes). ``with_params=True`` builds each remaining
model on fake tensors to count it: about 0.1 s a model, minutes for all of timm, so pair it
with ``source=``.
"""

from __future__ import annotations

from typing import Any

from memlens._errors import MemlensError
from memlens.sources import registry


def list_models(*, source: str | None = None, with_params: bool = False) -> list[dict[str, Any]]:
    """Rows ``{name, family, source, params}`` sorted by source then name; ``params`` is an
    int, or None where unknown without building (see the module docstring)."""
    rows = []
    for provider in registry.providers():
        if source is not None and getattr(provider, "SOURCE", source) != source:
            continue  # its names are not asked for (timm's and torchvision's take seconds)
        for name, meta in provider.names().items():
            if source is not None and meta.get("source") != source:
                continue
            params = meta.get("params")
            if params is None and meta.get("source") == "torchvision":
                params = _torchvision_params(name)
            if params is None and with_params:
                params = _fake_count(name)
            rows.append(
                {
                    "name": name,
                    "family": meta.get("family", "generic"),
                    "source": meta.get("source", provider.__name__.rsplit(".", 1)[-1]),
                    "params": params,
                }
            )
    return sorted(rows, key=lambda r: (r["source"], r["name"]))


def _torchvision_params(name: str) -> int | None:
    """``num_params`` of the default weights' metadata (no download), if it has weights."""
    import torchvision

    try:
        return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    except (ValueError, AttributeError, KeyError):
        return None


def _fake_count(name: str) -> int | None:
    """Parameters of ``name`` built on fake tensors (ties once); None if it cannot be built."""
    from memlens.engine.build import build_fake
    from memlens.workload import Workload

    try:
        spec = registry.resolve(name)
        model = build_fake(spec, Workload(input_shape=(3, 224, 224))).model
    except (MemlensError, ImportError):
        return None
    return sum(p.numel() for p in model.parameters())
