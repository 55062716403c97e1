"""CPU batch-norm forward: the per-channel buffers of ``batch_norm_cpu``.

``batch_norm_cpu`` (aten/src/ATen/native/Normalization.cpp) allocates the output, then
(training) ``save_mean`` and ``save_invstd`` of ``C`` channels. On a contiguous input (in any
memory format), ``batch_norm_cpu_update_stats_template`` gathers the statistics in two more
``C``-long temporaries (``_mean``, ``_var_sum``); its channels-last kernel, taken for a
channels-last input or one whose spatial size is 1 (``batch_norm_cpu_collect_stats_kernel``,
aten/src/ATen/native/cpu/batch_norm_kernel.cpp), adds a ``{num_threads, C}`` buffer when it
reduces more rows (batch x spatial) than threads. The
normalisation (``batch_norm_cpu_stub``) then folds weight, bias and statistics into two
``C``-long terms (``alpha``, ``beta``). A strided input takes the TensorIterator path of
``batch_norm_cpu_transform_input_template``: in evaluation ``1 / sqrt(running_var + eps)``
(three ``C``-long tensors alive at once), in training ``at::mean`` for ``save_mean`` and
one-element weight and bias tensors where they are undefined. fp32 and fp64 only; half
precision is not ruled.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


def _contiguous(t: torch.Tensor) -> bool:
    """``is_contiguous`` of Normalization.cpp: contiguous in some memory format."""
    formats = [torch.contiguous_format]
    formats += [torch.channels_last] if t.dim() == 4 else []
    formats += [torch.channels_last_3d] if t.dim() == 5 else []
    return any(t.is_contiguous(memory_format=f) for f in formats)


@register_rule(aten.native_batch_norm.default)
def batch_norm(call: OpCall) -> list[int]:
    x, weight, bias, running_mean, running_var, training = call.args[:6]
    if call.device != "cpu" or x.dtype not in (torch.float32, torch.float64) or not x.numel():
        return []
    c, elem = x.shape[1], x.element_size()
    outs = sum(t.untyped_storage().nbytes() for t in call.out)
    params = [t for t in (weight, bias, running_mean, running_var) if t is not None]
    if _contiguous(x) and all(t.is_contiguous() for t in params):
        if not training:
            return [outs + 2 * c * elem]  # alpha, beta
        spatial, threads = x.numel() // x.shape[0] // c, torch.get_num_threads()
        channels_last = not x.is_contiguous() or spatial == 1
        # batch_norm_cpu_collect_stats_channels_last_impl: the buffer for N * HW > threads
        buffer = threads * c * elem if channels_last and x.numel() // c > threads else 0
        # _mean and _var_sum (with the buffer), then alpha and beta
        return [outs + 2 * c * elem + buffer]
    if not training:
        return [outs + 3 * c * elem]  # running_var + eps, its sqrt, the reciprocal
    return [outs + elem * ((weight is None) + (bias is None))]
