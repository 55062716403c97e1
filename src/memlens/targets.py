"""The target of an estimate: a catalog device plus the traits the engine emulates it by.

A :class:`Target` is what the engine, the allocator replay and the measurer ask about the
device, instead of branching on a device name: the allocator model, the memory outside the
allocator (runtime context) and through it (BLAS workspace), which kernel rules and autocast
op lists the trace applies, the optimizer implementation PyTorch picks by default, and
whether the device computes in bfloat16.

Kinds and their traits (:func:`resolve_target`):

- ``cpu``: exact allocator (every request is its own ``malloc``, no cache), CPU kernel rules
  (oneDNN convolution buffers...), CPU autocast lists, the per-tensor optimizer loop.
- ``cuda``: PyTorch's caching allocator (``c10/cuda/CUDACachingAllocator.cpp``), the CUDA
  context and library workspaces of the software stack (:mod:`memlens.cuda_stack`: CUDA
  version, module loading, ``CUBLAS_WORKSPACE_CONFIG``...; overridden by ``cuda_version=``,
  ``eager_module_loading=`` and ``context=``), CUDA kernel rules (fused attention, cuBLAS
  and cuBLASLt workspaces), CUDA autocast lists, ``foreach`` optimizers
  (``torch.optim.optimizer._default_to_fused_or_foreach``).
- ``rocm``: estimated through the CUDA model, since PyTorch's ROCm build hipifies
  ``c10/cuda/*`` (``tools/amd_build/build_amd.py``) and runs HIP tensors as ``cuda`` devices;
  every assumption this makes is listed in :attr:`Target.assumptions`, which the estimate
  copies into ``Estimate.unknowns``.
- ``tpu`` and ``mps``: refused (:class:`~memlens._errors.UnsupportedDeviceError`), with what
  to do instead: their allocators and compilers are not modelled, and treating them as CUDA
  would give a number with nothing to back it.

Example usage::

    resolve_target("h100").workspace_bytes  # 32 MiB: sm90's cuBLAS workspace
    resolve_target("cuda", budget="24GiB").capacity_bytes
    resolve_target("mi300x").assumptions  # what a ROCm estimate takes from CUDA
    resolve_target("v100", cuda_version="11.2").context_bytes  # eager: 1341 MiB, measured

This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from memlens._errors import UnsupportedDeviceError, WorkloadError
from memlens.cuda_stack import CudaStack, cuda_stack, given_context
from memlens.devices import Device, custom_device, get_device, kind_overheads
from memlens.units import fmt_bytes

#: Device kinds that name a generic device of the kind (``device="cuda"``).
KINDS = ("cpu", "cuda", "rocm", "tpu", "mps")
#: Keywords of the target's software stack (API keywords, CLI options ``--cuda-version``...).
STACK_OPTIONS = ("cuda_version", "eager_module_loading", "context")


@dataclass(frozen=True)
class Target:
    """A device as the engine emulates it (see the module docstring)."""

    device: Device | None  # catalog device; None: a generic device of the kind
    device_kind: str  # the catalog kind: "cpu", "cuda" or "rocm" (traced as "cuda")
    kind: str  # traced kind: "cpu" or "cuda"
    allocator: str  # "exact" (CPU) | "cuda-caching"
    context_bytes: int  # outside the allocator (CUDA context)
    workspace_bytes: int  # BLAS workspace, through the caching allocator
    kernel_rules: str  # key of the engine's kernel-rule set: "cpu" | "cuda"
    autocast: str  # whose autocast op lists: "cpu" | "cuda"
    optimizer_impl: str  # default implementation: "for-loop" | "foreach"
    bf16: bool  # computes in bfloat16 natively
    assumptions: tuple[str, ...] = ()  # copied into Estimate.unknowns
    stack: CudaStack | None = None  # a CUDA target's software stack

    @property
    def capacity_bytes(self) -> int | None:
        return self.device.capacity_bytes if self.device is not None else None

    @property
    def name(self) -> str:
        return self.device.name if self.device is not None else self.device_kind


def resolve_target(
    device: str | Device | Target | None = "cuda",
    budget: int | str | None = None,
    *,
    cuda_version: str | None = None,
    eager_module_loading: bool | None = None,
    context: int | str | None = None,
) -> Target:
    """The target for ``device`` (a kind such as ``"cuda"``, a catalog name, a
    :class:`~memlens.devices.Device` or a :class:`Target`), with ``budget`` (``"24GiB"``)
    replacing its capacity. Raises UnsupportedDeviceError for TPU and MPS devices.

    A CUDA target's stack follows the installed torch and the environment unless
    ``cuda_version`` (``"12.4"``), ``eager_module_loading`` or ``context`` (the CUDA context,
    bytes or ``"500MiB"``) say otherwise; ``context`` also applies to ROCm. A bad value, or a
    keyword the device kind has no use for, raises :class:`~memlens.WorkloadError` naming it.
    """
    stack = {
        "cuda_version": cuda_version,
        "eager_module_loading": eager_module_loading,
        "context": context,
    }
    if isinstance(device, Target):
        if budget is None and all(v is None for v in stack.values()):
            return device
        catalog: Device | None = device.device
        kind = device.device_kind
    elif isinstance(device, Device):
        catalog = device
        kind = device.kind
    else:
        name = "cuda" if device is None else device
        kind = name.strip().lower()
        if kind in KINDS:  # a generic device of the kind; the CPU is this machine
            catalog = get_device("cpu") if kind == "cpu" else None
        else:
            catalog = get_device(name)
            kind = catalog.kind
    _refuse(kind, catalog)
    if budget is not None:
        custom = custom_device(budget, kind)
        # a budget replaces the capacity only: the architecture still sets the stack
        # (sm90's cuBLAS workspace, the context row)
        catalog = (
            custom
            if catalog is None
            else replace(custom, arch=catalog.arch, workspace_bytes=catalog.workspace_bytes)
        )
    return _target(catalog, kind, stack)


def _target(device: Device | None, kind: str, options: dict[str, object]) -> Target:
    arch = device.arch if device is not None else ""
    catalog_context, workspace = kind_overheads(kind, arch)
    context = catalog_context or 0
    given = [k for k, v in options.items() if v is not None]
    if kind == "cpu":
        if given:
            what = "CUDA and ROCm targets" if given[0] == "context" else "CUDA targets"
            raise WorkloadError(given[0], options[given[0]], f"applies to {what} only")
        return Target(
            device=device,
            device_kind="cpu",
            kind="cpu",
            allocator="exact",
            context_bytes=context,
            workspace_bytes=workspace,
            kernel_rules="cpu",
            autocast="cpu",
            optimizer_impl="for-loop",
            bf16=True,
        )
    stack = None
    if kind == "cuda":
        stack = cuda_stack(
            arch,
            cuda_version=options["cuda_version"],  # type: ignore[arg-type]
            eager_module_loading=options["eager_module_loading"],  # type: ignore[arg-type]
            context=options["context"],  # type: ignore[arg-type]
            default_workspace_bytes=workspace,
        )
        context, workspace, assumptions = (
            stack.context_bytes,
            stack.cublas_workspace_bytes,
            stack.assumptions,
        )
    else:  # rocm
        wrong = [k for k in given if k != "context"]
        if wrong:
            raise WorkloadError(wrong[0], options[wrong[0]], "applies to CUDA targets only")
        if options["context"] is not None:
            context = given_context(options["context"])  # type: ignore[arg-type]
        assumptions = _rocm_assumptions(context, workspace)
        if options["context"] is not None:  # the user's figure: nothing assumed about it
            assumptions = tuple(a for a in assumptions if "HIP context" not in a)
    return Target(
        device=device,
        device_kind=kind,
        kind="cuda",
        allocator="cuda-caching",
        context_bytes=context,
        workspace_bytes=workspace,
        kernel_rules="cuda",
        autocast="cuda",
        optimizer_impl="foreach",
        bf16=_bf16(device),
        assumptions=assumptions,
        stack=stack,
    )


def _bf16(device: Device | None) -> bool:
    """Native bfloat16 on NVIDIA GPUs from compute capability 8.0 (Ampere); AMD Instinct GPUs
    have it from CDNA (gfx908). A generic device is taken as a current one."""
    if device is None or not device.arch.startswith("sm"):
        return True
    return int(device.arch[2:]) >= 80


def _rocm_assumptions(context: int, workspace: int) -> tuple[str, ...]:
    return (
        "ROCm is estimated with CUDA's model: the HIP caching allocator is replayed with "
        "CUDA's rules (PyTorch's ROCm build hipifies c10/cuda/CUDACachingAllocator.cpp)",
        f"ROCm: the HIP context is assumed to take {fmt_bytes(context)}, as CUDA's "
        "lazy-loading context does (no published figure)",
        f"ROCm: the hipBLAS workspace ({fmt_bytes(workspace)}) is assumed to be allocated at "
        "the first matrix multiply, as cuBLAS's is (a second one for backward's autograd "
        "thread); hipBLASLt's own workspace is not counted",
        "ROCm: attention is traced with CUDA's flash / memory-efficient kernels (ROCm's "
        "AOTriton and CK kernels are assumed to keep the same tensors)",
        "ROCm: autocast follows CUDA's op lists and optimizers default to foreach, as for "
        "any 'cuda' tensor; MIOpen and rocBLAS internal buffers are not modelled",
    )


def _refuse(kind: str, device: Device | None) -> None:
    """Raise for the kinds memlens has no model of, saying what to do instead."""
    name = device.name if device is not None else kind
    budget = f", budget='{fmt_bytes(device.capacity_bytes)}'" if device is not None else ""
    if kind == "tpu":
        raise UnsupportedDeviceError(
            name,
            "TPUs run PyTorch through XLA, which compiles the step and assigns its buffers "
            "itself, and memlens models only eager PyTorch on the CPU and CUDA allocators",
            f"for a rough guide estimate a GPU of the same memory (device='cuda'{budget}), "
            "or measure on the TPU (torch_xla.core.xla_model.get_memory_info)",
        )
    if kind == "mps":
        raise UnsupportedDeviceError(
            name,
            "Apple GPUs allocate through PyTorch's MPS allocator (Metal heaps in memory "
            "shared with the system), which memlens does not model",
            f"for a rough guide estimate the same step on the CPU (device='cpu'{budget}), "
            "or measure on the Mac (torch.mps.driver_allocated_memory)",
        )
