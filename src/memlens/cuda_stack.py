"""The software stack of a CUDA target, and the device memory it takes outside tensors.

:func:`cuda_stack` resolves the stack (CUDA runtime version, PyTorch version, lazy or eager
module loading) from the caller's overrides, else the environment and the installed torch,
and derives from it:

- **the CUDA context**, outside PyTorch's allocator: no source gives a formula, so it is a
  table of published measurements (``data/cuda_context.json``, each row citing its source).
  The row for the stack is chosen by :func:`context_row`'s stated rule; every difference
  between the row and the stack is listed in :attr:`CudaStack.assumptions`.
- **library workspaces**, through the caching allocator (so in ``memory_allocated``): the
  cuBLAS workspace of each (handle, stream) and the cuBLASLt workspace, sized as
  aten/src/ATen/cuda/CublasHandlePool.cpp sizes them. The engine's rule
  (:mod:`memlens.engine.targets.cuda_blas`) allocates them when the trace reaches a BLAS op.

Module loading (NVIDIA CUDA Programming Guide, "Lazy Loading": first in CUDA 11.7, off by
default; on by default on Linux from 12.2): PyTorch 1.13 set ``CUDA_MODULE_LOADING=LAZY``
when the user had not (pytorch/pytorch PR #86509, ``CUDAHooks::initCUDA``); later versions
leave it to the driver (PRs #152695, #161103), whose default is lazy from 12.2. So an unset
variable means lazy from CUDA 11.7 on; ``DEFAULT`` means eager before 12.2 and lazy after.

Example usage::

    cuda_stack("sm90", cuda_version="12.4").context_bytes
    cuda_stack("sm80", env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8:16:8"}).cublas_workspace_bytes

This module never imports torch (it reads ``torch.version.cuda`` only if torch is imported).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from memlens._errors import WorkloadError
from memlens.units import fmt_bytes, parse_size

#: cuBLASLt workspace default, in KiB: ``parseCUDABlasLtWorkspaceSize`` in
#: CublasHandlePool.cpp ("default size in KiB according to #73328"), ``CUBLASLT_WORKSPACE_SIZE``.
LT_WORKSPACE_KIB = 1024
#: cuBLASLt workspace lifetimes by PyTorch version (release membership inferred from merge dates):
#: per call before 2.8 (CUDABlas.cpp ``gemm_and_bias`` allocates and frees it); one per
#: (handle, stream), kept, from 2.8 (PR #156495, merged 2025-06-27); the cuBLAS workspace itself
#: from 2.12 (PR #168175 made unified workspaces the default, PR #175879 of 2026-03-02 fixed the
#: getter that still treated them as opt-in).
LT_PERSISTENT_FROM = (2, 8)
LT_SHARED_FROM = (2, 12)
#: CUDA runtime that introduced lazy loading, and the one that made it the default on Linux.
LAZY_FROM, LAZY_DEFAULT_FROM = (11, 7), (12, 2)


@dataclass(frozen=True)
class ContextRow:
    """One published context measurement (``data/cuda_context.json``)."""

    id: str
    loading: str  # "lazy" | "eager"
    cuda: tuple[int, int]
    arch: str  # "sm70"; "" when the source does not say
    torch: str
    context_bytes: int  # measured, less the probe tensor's allocator segment
    source: str


@dataclass(frozen=True)
class CudaStack:
    """A CUDA target's software stack and what it takes besides the step's tensors."""

    cuda_version: str  # "12.4"
    torch_version: str  # "2.14.1"; "" when unknown
    module_loading: str  # "lazy" | "eager"
    context_bytes: int  # outside the allocator
    context_row: str  # id of the measurement used; "" for a context the user gave
    cublas_workspace_bytes: int  # per (handle, stream), kept once allocated
    cublaslt_workspace_bytes: int
    cublaslt_workspace: str  # "per-call" | "persistent" | "shared" (the cuBLAS one) | "off"
    assumptions: tuple[str, ...] = ()


def cuda_stack(
    arch: str,
    *,
    cuda_version: str | None = None,
    eager_module_loading: bool | None = None,
    context: int | str | None = None,
    env: Mapping[str, str] | None = None,
    default_workspace_bytes: int = 4096 * 1024 * 2 + 16 * 1024 * 8,
) -> CudaStack:
    """The stack of a CUDA device of ``arch`` (``"sm90"``; ``""``: a generic device).

    ``cuda_version`` (``"12.4"``), ``eager_module_loading`` and ``context`` (bytes or a size
    such as ``"500MiB"``) override what the installed torch and ``env`` (default:
    ``os.environ``) say; ``default_workspace_bytes`` is the catalog's cuBLAS default for
    ``arch``. Bad values raise :class:`~memlens.WorkloadError` naming the keyword.
    """
    env = os.environ if env is None else env
    notes: list[str] = []
    torch_version, installed_cuda = installed_torch()
    cuda = _cuda(cuda_version, installed_cuda, torch_version, notes)
    loading = _module_loading(cuda, eager_module_loading, env, notes)
    if context is not None:
        context_bytes, row_id = given_context(context), ""
    else:
        row = context_row(loading, cuda, arch)
        context_bytes, row_id = row.context_bytes, row.id
        notes += _context_notes(row, loading, cuda, arch)
    workspace = cublas_workspace_bytes(env, default_workspace_bytes, notes)
    lt_bytes = _lt_workspace_bytes(env, notes)
    lt_mode = _lt_mode(torch_version, env)
    if lt_mode == "shared":
        lt_bytes = min(lt_bytes, workspace)  # getCUDABlasLtWorkspaceSize caps it
    notes.append(
        "cuBLAS: a training step's backward pass runs on autograd's device thread, whose own "
        f"cuBLAS handle is assumed to get a second {fmt_bytes(workspace)} workspace "
        "(CublasHandlePool.cpp keys workspaces by (handle, stream) and hands handles out per "
        "thread; inferred from the source, not measured)"
    )
    if arch.startswith(("sm10", "sm12")):
        notes.append(
            "cuBLAS: Blackwell is given the ':4096:2:16:8' workspace; PyTorch PR #175344 "
            "(February 2026) gave it 32 MiB as on sm90, in releases not identified"
        )
    return CudaStack(
        cuda_version=f"{cuda[0]}.{cuda[1]}",
        torch_version=torch_version,
        module_loading=loading,
        context_bytes=context_bytes,
        context_row=row_id,
        cublas_workspace_bytes=workspace,
        cublaslt_workspace_bytes=lt_bytes,
        cublaslt_workspace=lt_mode,
        assumptions=tuple(notes),
    )


# -- the context ------------------------------------------------------------------------------


@cache
def context_rows() -> tuple[ContextRow, ...]:
    """The published context measurements, in file order."""
    data = json.loads((files("memlens") / "data" / "cuda_context.json").read_text("utf-8"))
    return tuple(
        ContextRow(
            id=r["id"],
            loading=r["loading"],
            cuda=_version(r["cuda"]),
            arch=r["arch"],
            torch=r["torch"],
            context_bytes=r["measured_bytes"] - r["probe_reserved_bytes"],
            source=r["source"],
        )
        for r in data["rows"]
    )


def context_row(loading: str, cuda: tuple[int, int], arch: str) -> ContextRow:
    """The measurement used for a stack, by this rule: among the rows of the same module
    loading, a row of the same architecture first (under eager loading the context holds the
    SASS of every kernel for that architecture), then the nearest CUDA version (major +
    minor / 10, CUDA minors never passing 9), then the newer row."""
    same = [r for r in context_rows() if r.loading == loading]

    def rank(r: ContextRow) -> tuple[bool, float, float]:
        return (not arch or r.arch != arch, abs(_value(r.cuda) - _value(cuda)), -_value(r.cuda))

    return min(same, key=rank)


def _context_notes(row: ContextRow, loading: str, cuda: tuple[int, int], arch: str) -> list[str]:
    label = f"{row.arch or 'an unstated GPU'}, CUDA {row.cuda[0]}.{row.cuda[1]}, torch {row.torch}"
    notes = []
    if row.arch != arch or row.cuda != cuda:
        stack = f"{arch or 'a generic GPU'}, CUDA {cuda[0]}.{cuda[1]}"
        notes.append(
            f"CUDA context: {fmt_bytes(row.context_bytes)}, measured on {label} with {loading} "
            f"module loading ({row.source.split(':')[0]}); no measurement for {stack}: the "
            "nearest row (same loading, then same architecture, then nearest CUDA version); "
            "give --context BYTES (context=) for your stack"
        )
    if loading == "lazy":
        notes.append(
            "CUDA context: lazy module loading (assumed supported by the driver) adds each "
            "kernel's module (cuBLAS, cuDNN, NCCL, PyTorch's own) on its first use in the "
            "first step; not modelled"
        )
    return notes


def given_context(context: int | str) -> int:
    """The ``context=`` keyword in bytes."""
    try:
        n = parse_size(context)
    except (ValueError, TypeError) as e:
        raise WorkloadError("context", context, str(e)) from e
    if n < 0:
        raise WorkloadError("context", context, "a size of at least 0 bytes")
    return n


# -- versions and module loading --------------------------------------------------------------


def installed_torch() -> tuple[str, tuple[int, int] | None]:
    """(torch version, its CUDA runtime (major, minor) or None), read without importing torch:
    ``torch.version.cuda`` when torch is imported, else the wheel's ``+cuXYZ`` tag or the
    ``nvidia-cuda-runtime`` wheel it depends on."""
    import importlib.metadata  # not at import time: the CLI's start-up stays fast

    try:
        full = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "", None
    version, _, local = full.partition("+")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "version"):
        cuda = getattr(torch.version, "cuda", None)
        return version, _version(cuda) if cuda else None
    if local.startswith("cu") and local[2:].isdigit() and len(local) >= 5:
        return version, (int(local[2:-1]), int(local[-1]))
    if local:  # "+cpu", "+rocm6.2"
        return version, None
    for dist in ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11"):
        try:
            return version, _version(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return version, None


def _cuda(
    given: str | None, installed: tuple[int, int] | None, torch_version: str, notes: list[str]
) -> tuple[int, int]:
    if given is not None:
        try:
            return _version(str(given))
        except ValueError as e:
            raise WorkloadError("cuda_version", given, "a CUDA version such as 12.4") from e
    if installed is not None:
        return installed
    newest = max(r.cuda for r in context_rows())
    what = f"torch {torch_version} has no CUDA runtime" if torch_version else "torch is absent"
    notes.append(
        f"CUDA version: the installed {what}; CUDA {newest[0]}.{newest[1]} assumed (the newest "
        "of the context table); give --cuda-version (cuda_version=)"
    )
    return newest


def _module_loading(
    cuda: tuple[int, int], eager: bool | None, env: Mapping[str, str], notes: list[str]
) -> str:
    """``"lazy"`` or ``"eager"``, from the override, else ``CUDA_MODULE_LOADING`` (see the
    module docstring)."""
    if eager is not None:
        wanted = "eager" if eager else "lazy"
    else:
        value = env.get("CUDA_MODULE_LOADING", "").strip().upper()
        if value == "EAGER":
            wanted = "eager"
        elif value == "DEFAULT":
            wanted = "lazy" if cuda >= LAZY_DEFAULT_FROM else "eager"
        else:
            if value not in ("", "LAZY"):
                notes.append(
                    f"CUDA_MODULE_LOADING={value!r} is not LAZY, EAGER or DEFAULT; taken as unset"
                )
            wanted = "lazy"
    if wanted == "lazy" and cuda < LAZY_FROM:
        if eager is not None or env.get("CUDA_MODULE_LOADING"):
            notes.append(
                f"CUDA {cuda[0]}.{cuda[1]} loads modules eagerly: lazy loading needs CUDA 11.7"
            )
        return "eager"
    return wanted


def _version(text: str) -> tuple[int, int]:
    """``"12.4"``, ``"12.4.127"`` -> (12, 4); ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\.(\d+)(?:\.\d+)*\s*", text)
    if m is None:
        raise ValueError(f"not a version: {text!r}")
    return int(m.group(1)), int(m.group(2))


def _value(version: tuple[int, int]) -> float:
    return version[0] + version[1] / 10


def _torch_tuple(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


# -- library workspaces -----------------------------------------------------------------------


def cublas_workspace_bytes(env: Mapping[str, str], default: int, notes: list[str]) -> int:
    """The cuBLAS workspace of one (handle, stream): ``parseChosenWorkspaceSize`` in
    aten/src/ATen/cuda/CublasHandlePool.cpp. ``CUBLAS_WORKSPACE_CONFIG`` is a list of
    ``:SIZE:COUNT`` pairs (regex ``:([0-9]+):([0-9]+)``), SIZE in KiB, summed as
    ``SIZE * 1024 * COUNT``; a string with no pair is warned about and ignored."""
    config = env.get("CUBLAS_WORKSPACE_CONFIG")
    if config is None:
        return default
    pairs = re.findall(r":([0-9]+):([0-9]+)", config)
    if not pairs:
        notes.append(
            f"CUBLAS_WORKSPACE_CONFIG={config!r} has no ':SIZE:COUNT' pair: PyTorch warns and "
            f"uses the default ({default:,} bytes)"
        )
        return default
    return sum(int(size) * 1024 * int(count) for size, count in pairs)


def _lt_workspace_bytes(env: Mapping[str, str], notes: list[str]) -> int:
    """``parseCUDABlasLtWorkspaceSize``: ``CUBLASLT_WORKSPACE_SIZE`` in KiB, default 1024."""
    value = env.get("CUBLASLT_WORKSPACE_SIZE")
    if value is None:
        return LT_WORKSPACE_KIB * 1024
    try:
        return int(value) * 1024
    except ValueError:
        notes.append(f"CUBLASLT_WORKSPACE_SIZE={value!r} is not a number of KiB; default taken")
        return LT_WORKSPACE_KIB * 1024


def _lt_mode(torch_version: str, env: Mapping[str, str]) -> str:
    """How the cuBLASLt workspace lives: see :data:`LT_PERSISTENT_FROM` and
    :data:`LT_SHARED_FROM`. ``DISABLE_ADDMM_CUDA_LT=1`` keeps addmm off cuBLASLt
    (Blas.cpp ``addmm_out_cuda_impl``); ``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` opts in (PR
    #151163) or out of sharing the cuBLAS workspace."""
    if env.get("DISABLE_ADDMM_CUDA_LT") == "1":
        return "off"
    version = _torch_tuple(torch_version) or LT_SHARED_FROM
    if version < LT_PERSISTENT_FROM:
        return "per-call"
    unified = env.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE")
    if unified is not None:
        return "shared" if unified == "1" else "persistent"
    return "shared" if version >= LT_SHARED_FROM else "persistent"
