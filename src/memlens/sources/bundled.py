"""Popular models that work offline: Hugging Face ``config.json`` files shipped with memlens.

Each file in ``memlens/data/configs/`` is a model's real ``config.json`` (architecture numbers
only) plus a ``_memlens`` entry, stripped before building:

- ``hub_id``: the Hub repository the config mirrors (``null`` for GPT-3, not on the Hub);
- ``aliases``: other spellings and Hub ids that name the model;
- ``params``: the parameter count of the default head, ties counted once, cached from a
  fake build (``tests/test_sources_bundled.py`` checks it against that build and against the
  published counts);
- ``task`` (optional): a default head other than the config's ``architectures``;
- ``note`` (optional): where the file departs from the Hub's.

A diffusion UNet needs the ``diffusers`` package, which memlens does not depend on: no such
config is bundled.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from memlens.sources import huggingface
from memlens.sources.base import ModelSpec

_META_KEY = "_memlens"
#: The ``source`` of these models' metadata and specs.
SOURCE = "bundled"


@functools.cache
def _files() -> dict[str, dict[str, Any]]:
    """Canonical name (the file's stem) -> the file's JSON."""
    folder = resources.files("memlens") / "data" / "configs"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            out[entry.name.removesuffix(".json")] = json.loads(entry.read_text())
    return out


@functools.cache
def names() -> dict[str, dict[str, Any]]:
    """Every bundled model, with its family, Hub id, parameter count and aliases."""
    out = {}
    for name, doc in _files().items():
        meta = doc[_META_KEY]
        task = meta.get("task") or huggingface.default_task(doc)
        kind = huggingface.modality(doc, task)
        out[name] = {
            "family": huggingface.family(task, kind, bool(doc.get("is_encoder_decoder"))),
            "source": SOURCE,
            "params": meta["params"],
            "hub_id": meta["hub_id"],
            "model_type": doc["model_type"],
            "aliases": list(meta.get("aliases", ())),
        }
    return out


def config(name: str) -> dict[str, Any]:
    """The bundled ``config.json`` of ``name``, as the Hub has it (without ``_memlens``)."""
    return {k: v for k, v in _files()[name].items() if k != _META_KEY}


def resolve(name: str, *, task: str | None = None) -> ModelSpec | None:
    """The spec of a bundled model (``task`` picks another head), or None if not bundled."""
    if name not in _files():
        return None
    meta = _files()[name][_META_KEY]
    default = meta.get("task")
    extra = {"hub_id": meta["hub_id"]}
    if task is None or task == (default or huggingface.default_task(config(name))):
        extra["params"] = meta["params"]
    return huggingface.spec_from_config(
        config(name),
        name=name,
        source=SOURCE,
        where=f"bundled config {name}",
        task=task or default,
        metadata=extra,
    )
