"""The process group and device mesh a parallel layout runs on.

The trace runs on PyTorch's fake process group (``torch/testing/_internal/distributed/
fake_pg.py``: ``FakeStore`` and the ``"fake"`` backend, whose collectives return at once
without touching data), one rank at a time, in this process; the measurement runs on a real
``gloo`` group. Either way the layout's :class:`~torch.distributed.device_mesh.DeviceMesh`
has the dimensions ``("pp", "dp_replicate", "dp_shard", "cp", "tp")`` of size > 1 (the order
of torchtitan's ``ParallelDims``), so a rank's coordinates are the same in both.

Needs torch >= 2.4 (``init_device_mesh`` with named dimensions, FSDP2, the fake backend).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from memlens._errors import ConfigError
from memlens.workload import Layout


def mesh_shape(layout: Layout) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The mesh's (sizes, names): pp, dp_replicate, dp_shard, cp, tp, those of size > 1, and
    dp_shard under FSDP (a layout of one device keeps one dimension of size 1)."""
    replicate = layout.dp // layout.shard
    dims = [
        ("pp", layout.pp),
        ("dp_replicate", replicate),
        ("dp_shard", layout.shard),
        ("cp", layout.cp),
        ("tp", layout.tp),
    ]
    kept = [(n, s) for n, s in dims if s > 1 or (n == "dp_shard" and layout.fsdp != "none")]
    kept = kept or [("dp_shard", 1)]
    return tuple(s for _, s in kept), tuple(n for n, _ in kept)


def coordinates(layout: Layout, rank: int) -> dict[str, int]:
    """Rank ``rank``'s index along each mesh dimension (row-major, as ``init_device_mesh``
    lays ranks out)."""
    sizes, names = mesh_shape(layout)
    out: dict[str, int] = {}
    for name, size in zip(reversed(names), reversed(sizes), strict=True):
        out[name] = rank % size
        rank //= size
    return out


@contextlib.contextmanager
def fake_world(layout: Layout, rank: int) -> Iterator[dict[str, DeviceMesh]]:
    """The fake process group of ``layout.world_size`` ranks, as rank ``rank``, and its
    meshes (:func:`meshes`)."""
    if dist.is_initialized():
        raise ConfigError(
            "a torch.distributed process group is already initialised in this process; "
            "memlens traces a parallel layout on its own fake group"
        )
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=layout.world_size)
    try:
        with _sharding_propagation_apart():
            yield meshes(layout)
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _sharding_propagation_apart() -> Iterator[None]:
    """DTensor's sharding propagation runs each new op on global-shape scratch tensors under
    the fake mode it finds, or a fresh one (``torch/distributed/tensor/_sharding_prop.py``
    ``_propagate_tensor_meta_non_cached``: ``detect_fake_mode() or FakeTensorMode()``): a
    real run allocates nothing there. Inside the trace it would find the engine's mode and
    its scratch would be recorded (tens of GiB for a foreach optimizer step over a large
    model), so it runs with the trace's modes set aside, under a fresh fake mode."""
    from torch.distributed.tensor._sharding_prop import ShardingPropagator
    from torch.utils._python_dispatch import _disable_current_modes

    original = getattr(ShardingPropagator, "_propagate_tensor_meta_non_cached", None)
    if original is None:  # older torch: its own FakeTensorMode
        yield
        return

    def apart(self: ShardingPropagator, op_schema: object) -> object:
        with _disable_current_modes():
            return original(self, op_schema)

    ShardingPropagator._propagate_tensor_meta_non_cached = apart  # type: ignore[method-assign]
    try:
        yield
    finally:
        ShardingPropagator._propagate_tensor_meta_non_cached = original  # type: ignore[method-assign]


def meshes(layout: Layout) -> dict[str, DeviceMesh]:
    """The layout's CPU mesh over the initialised process group, and its sub-meshes by use:
    ``"tp"``, and ``"fsdp"`` (``dp_shard``, or ``(dp_replicate, dp_shard)`` for HSDP). Sliced
    here, before any fake mode is entered: slicing builds real rank tensors."""
    sizes, names = mesh_shape(layout)
    mesh = init_device_mesh("cpu", sizes, mesh_dim_names=names)
    out = {"world": mesh}
    if layout.tp > 1:
        out["tp"] = mesh["tp"]
    if layout.fsdp == "hybrid":
        out["fsdp"] = mesh["dp_replicate", "dp_shard"]
    elif layout.fsdp != "none":
        out["fsdp"] = mesh["dp_shard"]
    return out


def torch_supports_layouts() -> bool:
    """Whether this torch has what the traced layouts need (2.4: FSDP2 and named meshes)."""
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4)
