"""Device emulation: how a trace on CPU fake tensors follows the target device's kernels.

- :mod:`.emulation`: the kernel-rule set and the modes a :class:`~memlens.targets.Target`
  selects;
- :mod:`.cuda_attention`: CUDA's fused attention kernels;
- :mod:`.cuda_autocast`: CUDA's autocast op lists at the ``AutocastCPU`` key;
- :mod:`.cuda_blas`: the cuBLAS workspace;
- :mod:`.cpu_conv` (with :mod:`.cpu_onednn_conv` and :mod:`.cpu_slow_conv`): the buffers of
  the CPU convolution backend PyTorch picks on this machine;
- :mod:`.cpu_reduce`: half-precision reductions' fp32 copies.
"""
