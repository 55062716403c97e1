"""CPU 2-D nearest and bilinear upsampling: the channels-last kernels' copies.

``upsample_nearest2d_kernel_impl``, ``_upsample_nearest_exact2d_kernel_impl`` and, for
floating inputs, ``upsample_bilinear2d_kernel_impl_float`` (aten/src/ATen/native/cpu/
UpSampleKernel.cpp) take the vectorised channels-last kernel when
``_use_vectorized_kernel_cond_2d`` holds: a channels-last input of more than 3 channels, or an
output whose height plus width is at most 128 (bilinear also with one thread and 3 channels).
That kernel (``cpu_upsample_nearest_channels_last``, ``cpu_upsample_linear_channels_last``)
runs on ``input.contiguous(ChannelsLast)`` into ``output.contiguous(ChannelsLast)`` and copies
the result back: an NCHW input and output are both copied, alive together with the output.
The generic kernel (``upsample_generic_Nd_kernel_impl``, larger NCHW outputs) allocates, per
resized dimension, ``interp_size`` (1 nearest, 2 linear) pairs of an int64 index and a weight
vector of the output's length (``HelperInterpNearest`` / ``HelperInterpLinear
::compute_indices_weights``; nearest's weight is a placeholder). The 3-D kernels take the
channels-last path only for channels-last inputs (no copy); they and the 1-D ones are not
ruled (index vectors of a few KiB).

The 2-D backward kernels (``upsample_*2d_backward_kernel_impl``, UpSampleMoreKernel.cpp) run
the channels-last kernel when the incoming gradient is channels-last contiguous, else
``cpu_upsample_linear_backward`` / ``cpu_upsample_nearest_backward``, which take
``grad_output_.contiguous()`` (and of ``grad_input_``, allocated in the gradient's format):
a strided gradient (a slice of a concatenation's gradient) is copied for the call.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten
_CL = torch.channels_last


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _inside(x: torch.Tensor, out: torch.Tensor, pairs: int, forced: bool = False) -> list[int]:
    """The peak inside a 2-D upsample: the output plus the channels-last kernel's copies, or
    the generic kernel's index and weight vectors (``pairs`` per dimension); ``forced``: the
    channels-last kernel whatever the shapes."""
    vectorised = (x.is_contiguous(memory_format=_CL) and x.shape[1] > 3) or (
        out.shape[-2] + out.shape[-1] <= 128
    )
    if vectorised or forced:
        inside = (0 if x.is_contiguous(memory_format=_CL) else _bytes(x)) + (
            0 if out.is_contiguous(memory_format=_CL) else _bytes(out)
        )
    else:
        inside = pairs * (8 + x.element_size()) * (out.shape[-2] + out.shape[-1])
    return [out.untyped_storage().nbytes() + inside] if inside else []


@register_rule(aten.upsample_nearest2d.default, aten._upsample_nearest_exact2d.default)
def upsample_nearest2d(call: OpCall) -> list[int]:
    return _inside(call.args[0], call.out, 1) if call.device == "cpu" else []


@register_rule(aten.upsample_bilinear2d.default)
def upsample_bilinear2d(call: OpCall) -> list[int]:
    x, out = call.args[0], call.out
    if call.device != "cpu" or x.dtype == torch.uint8:
        return []
    return _inside(x, out, 2, forced=torch.get_num_threads() == 1 and x.shape[1] == 3)


@register_rule(
    aten.upsample_bilinear2d_backward.default,
    aten.upsample_nearest2d_backward.default,
    aten._upsample_nearest_exact2d_backward.default,
)
def upsample2d_backward(call: OpCall) -> list[int]:
    grad, out = call.args[0], call.out
    if call.device != "cpu":
        return []
    fmt = _CL if grad.is_contiguous(memory_format=_CL) else torch.contiguous_format
    copies = sum(0 if t.is_contiguous(memory_format=fmt) else _bytes(t) for t in (grad, out))
    return [out.untyped_storage().nbytes() + copies] if copies else []
