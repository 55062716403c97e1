"""NCCL's own device memory per rank: the communicators' connection buffers, which NCCL
allocates with ``cudaMalloc`` (or ``cuMem``), outside PyTorch's caching allocator.

Each communicator a rank joins sets up, per channel, a ring connection whose buffers hold
one set per protocol (NCCL ``src/include/device.h`` and ``src/init.cc``):

- Simple: ``NCCL_BUFFSIZE``, default ``DEFAULT_BUFFSIZE = 1 << 22`` (4 MiB);
- LL: ``NCCL_LL_LINES_PER_THREAD * NCCL_LL_MAX_NTHREADS * NCCL_STEPS *
  sizeof(union ncclLLFifoLine)`` = 8 x 512 x 8 x 16 = 512 KiB;
- LL128: ``NCCL_LL128_ELEMS_PER_THREAD * NCCL_LL128_MAX_NTHREADS * NCCL_STEPS *
  sizeof(uint64_t)`` = 120 x 640 x 8 x 8 = 4,915,200 bytes.

PyTorch creates one communicator per process group a rank uses (``ProcessGroupNCCL``:
one per mesh dimension of size > 1), and, for pipeline point-to-point traffic, one per
peer pair (``getNCCLComm`` keyed ``"lowRank:highRank"``): two for a middle stage. The number
of channels depends on the topology NCCL detects and is not knowable from here: it is an
assumption (:data:`CHANNELS`), stated in the estimate's unknowns; ``NCCL_MAX_NCHANNELS``
bounds it on a real machine.
"""

from __future__ import annotations

from memlens.workload import Layout

SIMPLE_BYTES = 1 << 22
LL_BYTES = 8 * 512 * 8 * 16
LL128_BYTES = 120 * 640 * 8 * 8
#: Ring channels per communicator assumed (NCCL picks 2 to 32 from the topology).
CHANNELS = 16

ASSUMPTION = (
    f"NCCL: {CHANNELS} ring channels per communicator assumed (NCCL picks them from the "
    "topology; NCCL_MAX_NCHANNELS bounds them), each with its Simple (NCCL_BUFFSIZE, "
    "4 MiB), LL (512 KiB) and LL128 (4.7 MiB) buffers (nccl src/include/device.h); "
    "tree and NVLS buffers and NCCL's own kernels' module memory are not counted"
)


def communicators(layout: Layout, stage: int) -> list[tuple[str, int]]:
    """(group, ranks) of each NCCL communicator a rank of pipeline stage ``stage`` uses."""
    out = []
    replicate = layout.dp // layout.shard
    for name, size in (
        ("dp_replicate", replicate),
        ("dp_shard", layout.shard),
        ("cp", layout.cp),
        ("tp", layout.tp),
    ):
        if size > 1:
            out.append((name, size))
    if layout.pp > 1:
        peers = (stage > 0) + (stage < layout.pp - 1)
        out += [("pp send/recv", 2)] * peers
    return out


def nccl_lines(layout: Layout, stage: int = 0) -> list[tuple[str, int]]:
    """``("NCCL <group> (<n> ranks)", bytes)`` for each communicator of the rank."""
    per = CHANNELS * (SIMPLE_BYTES + LL_BYTES + LL128_BYTES)
    return [(f"NCCL {name} ({size} ranks)", per) for name, size in communicators(layout, stage)]
