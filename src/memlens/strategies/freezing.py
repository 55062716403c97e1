"""Freezing: parameters that take no gradient and no optimizer state.

Activations still flow through frozen layers, and autograd still saves what the backward
pass needs to reach the trainable parameters before them; what it no longer needs (the
inputs of frozen layers before the first trainable one) it does not save. The engine runs
the real autograd, so that follows by itself.
"""

from __future__ import annotations

import fnmatch

from torch import nn

from memlens._errors import WorkloadError

ALL_BUT_HEAD = "all-but-head"


def head_modules(model: nn.Module) -> list[str]:
    """Dotted paths of the output head: Hugging Face's output embeddings (``lm_head``) when
    the model declares them, else the last registered module that holds parameters of its
    own (``fc`` in a ResNet, ``heads.head`` in a ViT)."""
    names = {id(m): n for n, m in model.named_modules()}
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        out = get_out()
        if isinstance(out, nn.Module) and id(out) in names:
            return [names[id(out)]]
    last = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    return last[-1:]


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def freeze(model: nn.Module, patterns: tuple[str, ...]) -> int:
    """Turn off ``requires_grad`` of the parameters a pattern names; returns how many
    elements were frozen.

    A pattern is an ``fnmatch`` glob on parameter names (``layer1.*``, ``*.bias``) or on
    module names (``encoder``: every parameter under it); ``all-but-head`` freezes all but
    :func:`head_modules`. A pattern that matches nothing is an error.
    """
    frozen = 0
    named = list(model.named_parameters())
    for pattern in patterns:
        if pattern == ALL_BUT_HEAD:  # by identity: a head tied to the embedding keeps it
            head = {id(p) for h in head_modules(model) for p in model.get_submodule(h).parameters()}
            hits = [(n, p) for n, p in named if id(p) not in head]
        else:
            hits = [(n, p) for n, p in named if _matches(n, pattern)]
        if not hits:
            examples = ", ".join(n for n, _ in named[:3])
            raise WorkloadError(
                "freeze", pattern, f"matches no parameter or module (names look like {examples})"
            )
        for _, p in hits:
            if p.requires_grad:
                frozen += p.numel()
                p.requires_grad_(False)
    return frozen
