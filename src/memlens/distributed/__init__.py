"""Many devices: a step under a parallel layout (DDP, FSDP2, tensor and pipeline parallelism),
traced per rank on PyTorch's own distributed code over a fake process group.

- :mod:`memlens.distributed.world`: the fake (or real) process group and the device mesh;
- :mod:`memlens.distributed.parallelize`: the layout applied to a model with PyTorch's APIs;
- :mod:`memlens.distributed.strategies`: the workload's strategies plus the layout, for the
  engine and the measurer alike;
- :mod:`memlens.distributed.nccl`: NCCL's own device memory (outside the allocator);
- :mod:`memlens.distributed.estimate`: the per-rank estimates and the worst rank;
- :mod:`memlens.distributed.result`: :class:`ParallelInfo` (torch-free).
"""
