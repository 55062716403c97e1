"""Device emulation: how a trace on CPU fake tensors follows the target device's kernels.

- :mod:`.emulation`: the kernel-rule set and the modes a :class:`~memlens.targets.Target`
  selects;
- :mod:`.cuda_attention`: CUDA's fused attention kernels;
- :mod:`.cuda_autocast`: CUDA's autocast op lists at the ``AutocastCPU`` key;
- :mod:`.cuda_blas`: the cuBLAS workspace.

The CPU rules live in :mod:`memlens.engine.cpu_conv` and :mod:`memlens.engine.cpu_reduce`.
"""
