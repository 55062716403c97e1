"""CPU rules of ops the op-level differential test found unmodelled (memlens.engine.targets
.cpu_upsample, .cpu_embedding, .cpu_pool, .cpu_index, .cpu_batch_norm, .cpu_group_norm): one
real call's allocator peak against the outputs plus what the rule says the kernel allocates
inside."""

from __future__ import annotations

import pytest
import torch

from memlens.engine.rules import OpCall
from memlens.engine.targets.emulation import kernel_rules
from memlens.measurement.cpu import allocator_peak
from memlens.targets import resolve_target

aten = torch.ops.aten
CPU = resolve_target("cpu")


def _predicted(func, args: tuple, out: torch.Tensor | tuple) -> int:
    rule = kernel_rules(CPU).get(func)
    inside = list(rule(OpCall(func, args, {}, out, "cpu", CPU))) if rule else []
    outs = out if isinstance(out, tuple) else (out,)
    return max([sum(t.untyped_storage().nbytes() for t in outs), *inside])


# (input shape, output size, channels-last input, threads, dtype)
UPSAMPLES = [
    (
        (2, 21, 8, 8),
        (64, 64),
        False,
        2,
        torch.float32,
    ),  # LRASPP's head: NCHW, small output: both copied
    ((2, 32, 16, 16), (32, 32), False, 2, torch.float32),
    (
        (2, 8, 16, 16),
        (80, 80),
        False,
        2,
        torch.float32,
    ),  # output height + width > 128: generic kernel
    ((2, 8, 16, 16), (80, 80), True, 2, torch.float32),  # channels-last input: no copy
    ((2, 3, 16, 16), (80, 80), False, 1, torch.float32),  # bilinear, one thread, 3 channels: copies
    ((2, 1, 5, 7), (11, 13), False, 2, torch.float32),  # one channel: NCHW is channels-last too
    ((2, 8, 16, 16), (80, 80), False, 2, torch.bfloat16),  # bf16 weights
]


@pytest.mark.parametrize(("shape", "size", "cl", "threads", "dtype"), UPSAMPLES)
@pytest.mark.parametrize("op", ["bilinear", "nearest"])
def test_upsample_rules_match_the_allocator(op, shape, size, cl, threads, dtype) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(*shape, dtype=dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        func = (
            aten.upsample_bilinear2d.default
            if op == "bilinear"
            else aten.upsample_nearest2d.default
        )
        args = (x, size, False) if op == "bilinear" else (x, size)
        out = func(*args)
        assert _predicted(func, args, out) == allocator_peak(lambda: func(*args))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("strided_grad", [False, True])
@pytest.mark.parametrize("strided_indices", [False, True])
def test_embedding_backward_rule_matches_the_allocator(strided_grad, strided_indices) -> None:
    grad = torch.randn(32, 8, 128).transpose(0, 1) if strided_grad else torch.randn(8, 32, 128)
    indices = (
        torch.randint(0, 2000, (32, 8)).t() if strided_indices else torch.randint(0, 2000, (8, 32))
    )
    func, args = aten.embedding_dense_backward.default, (grad, indices, 2000, -1, False)
    out = func(*args)
    assert _predicted(func, args, out) == allocator_peak(lambda: func(*args))


def _strided(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` whose last dimension has stride 2."""
    return torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype)[..., ::2]


@pytest.mark.parametrize("layout", ["contiguous", "strided", "channels_last"])
@pytest.mark.parametrize("grad_layout", ["contiguous", "strided", "channels_last"])
def test_max_pool_rules_match_the_allocator(layout, grad_layout) -> None:
    x = {
        "contiguous": torch.randn(8, 32, 32, 32),
        "strided": _strided((8, 32, 32, 32)).normal_(),
        "channels_last": torch.randn(8, 32, 32, 32).contiguous(memory_format=torch.channels_last),
    }[layout]
    fwd, bwd = aten.max_pool2d_with_indices.default, aten.max_pool2d_with_indices_backward.default
    out, indices = fwd(x, [2, 2])
    assert _predicted(fwd, (x, [2, 2]), (out, indices)) == allocator_peak(lambda: fwd(x, [2, 2]))
    grad = {
        "contiguous": torch.randn(out.shape),
        "strided": _strided(tuple(out.shape)).normal_(),
        "channels_last": torch.randn(out.shape).contiguous(memory_format=torch.channels_last),
    }[grad_layout]
    args = (grad, x, [2, 2], [], [0, 0], [1, 1], False, indices)
    assert _predicted(bwd, args, bwd(*args)) == allocator_peak(lambda: bwd(*args))


@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("strided", [False, True])
def test_index_select_rule_matches_the_allocator(dim, strided) -> None:
    x = torch.randn(256, 8, 32).transpose(0, 1) if strided else torch.randn(8, 256, 32)
    index = (
        _strided((x.shape[dim],), torch.int64)
        if strided
        else torch.zeros(x.shape[dim], dtype=torch.int64)
    )
    func, args = aten.index_select.default, (x, dim, index)
    assert _predicted(func, args, func(*args)) == allocator_peak(lambda: func(*args))


# (indices, bags, dim, rows, index dtype, mode, per-sample weights, strided gradient)
BAGS = [
    (640, 64, 32, 2000, torch.int64, 0, False, True),  # DLRM's sum-pooled tables
    (640, 64, 32, 2000, torch.int32, 0, True, False),
    (5000, 50, 8, 3000, torch.int64, 1, False, False),  # mean: offset2bag from the forward
    (640, 64, 32, 2000, torch.int32, 1, False, True),
    (640, 64, 32, 2000, torch.int64, 2, False, True),  # max
    (100, 10, 8, 50, torch.int64, 0, False, False),  # making offset2bag is the peak
]


@pytest.mark.parametrize(("n", "bags", "d", "rows", "itype", "mode", "psw", "strided"), BAGS)
def test_embedding_bag_backward_rule_matches_the_allocator(
    n, bags, d, rows, itype, mode, psw, strided
) -> None:
    weight, weights = torch.randn(rows, d), torch.randn(n) if psw else None
    indices = torch.randint(0, rows, (n,), dtype=itype)
    offsets = (torch.arange(bags) * (n // bags)).to(itype)
    fwd = aten._embedding_bag.default(weight, indices, offsets, False, mode, False, weights)
    grad = _strided((bags, d)).normal_() if strided else torch.randn(bags, d)
    func = aten._embedding_bag_backward.default
    args = (grad, indices, offsets, *fwd[1:], rows, False, mode, False, weights, -1)
    assert _predicted(func, args, func(*args)) == allocator_peak(lambda: func(*args))


@pytest.mark.parametrize("layout", ["contiguous", "strided", "channels_last"])
@pytest.mark.parametrize("op", ["bilinear", "nearest"])
def test_upsample_backward_rules_match_the_allocator(op, layout) -> None:
    grad = {
        "contiguous": torch.randn(2, 256, 4, 4),
        "strided": torch.randn(2, 256, 5, 4)[:, :, :4],  # a slice of a concatenation's gradient
        "channels_last": torch.randn(2, 256, 4, 4).contiguous(memory_format=torch.channels_last),
    }[layout]
    if op == "bilinear":
        func, args = (
            aten.upsample_bilinear2d_backward.default,
            (grad, (4, 4), (2, 256, 2, 2), False),
        )
    else:
        func, args = aten.upsample_nearest2d_backward.default, (grad, (4, 4), (2, 256, 2, 2))
    assert _predicted(func, args, func(*args)) == allocator_peak(lambda: func(*args))


@pytest.mark.parametrize("dims", [(), (1,), (1, 2), (0, 1, 2)])
@pytest.mark.parametrize("strided", [False, True])
def test_roll_rule_matches_the_allocator(dims, strided) -> None:
    x = torch.randn(2, 8, 8, 48).transpose(1, 2) if strided else torch.randn(2, 8, 8, 48)
    shifts = (-2,) * len(dims) if dims else (3,)
    func, args = aten.roll.default, (x, shifts, dims)
    assert _predicted(func, args, func(*args)) == allocator_peak(lambda: func(*args))


@pytest.mark.parametrize(
    "layout", ["contiguous", "channels_last", "1x1", "1x1_batch2", "2d", "3d", "strided"]
)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_norm_rule_matches_the_allocator(layout, training, affine, threads) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        c = 256
        x = {
            "contiguous": lambda: torch.randn(4, c, 8, 8),
            "channels_last": lambda: torch.randn(4, c, 8, 8).contiguous(
                memory_format=torch.channels_last
            ),
            "1x1": lambda: torch.randn(4, c, 1, 1),
            "1x1_batch2": lambda: torch.randn(2, c, 1, 1),  # no more rows than threads
            "2d": lambda: torch.randn(16, c),
            "3d": lambda: torch.randn(4, c, 10),
            "strided": lambda: _strided((4, c, 8, 8)).normal_(),
        }[layout]()
        w, b = (torch.randn(c), torch.randn(c)) if affine else (None, None)
        func = aten.native_batch_norm.default
        args = (x, w, b, torch.randn(c), torch.rand(c), training, 0.1, 1e-5)
        assert _predicted(func, args, func(*args)) == allocator_peak(lambda: func(*args))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_grad"])
@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, True)])
def test_group_norm_backward_rule_matches_the_allocator(layout, mask) -> None:
    n, c, hw, groups = 2, 128, 4, 8
    x, grad = torch.randn(n, c, hw, hw), torch.randn(n, c, hw, hw)
    if layout == "channels_last":
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    elif layout == "strided_grad":
        grad = _strided((n, c, hw, hw)).normal_()
    mean, rstd, weight = torch.randn(n, groups), torch.rand(n, groups), torch.randn(c)
    func = aten.native_group_norm_backward.default
    args = (grad, x, mean, rstd, weight, n, c, hw * hw, groups, list(mask))
    out = tuple(t for t in func(*args) if t is not None)
    assert _predicted(func, args, out) == allocator_peak(lambda: func(*args))


_F, _I = torch.randn(4, 8), torch.randint(0, 5, (4, 8))
_B, _D0 = torch.ones(4, 8, dtype=torch.bool), torch.tensor(2.0, dtype=torch.float64)
BINARY = [
    (aten.add.Tensor, (_F, 0.5), {}),
    (aten.add.Tensor, (_F, 2), {"alpha": 3}),
    (aten.add.Tensor, (_F, True), {}),
    (aten.add.Tensor, (_F, _D0), {}),  # a 0-dim double tensor: converted to fp32
    (aten.add.Tensor, (_F, _F), {}),  # nothing wrapped or converted
    (aten.add.Tensor, (_B, 1), {}),
    (aten.mul.Tensor, (_F, _B), {}),  # a bool mask: a float copy
    (aten.mul.Tensor, (_I, 0.5), {}),
    (aten.mul.Tensor, (_F, 1j), {}),
    (aten.mul.Tensor, (_F.bfloat16(), 0.5), {}),
    (aten.div.Tensor, (_I, _I), {}),  # true division of integers: both in fp32
    (aten.div.Tensor_mode, (_I, 2), {"rounding_mode": "floor"}),
    (aten.eq.Scalar, (_F, 0), {}),
    (aten.gt.Scalar, (_I, 0), {}),
    (aten.lt.Tensor, (_F, _I), {}),
    (aten.rsub.Scalar, (_F, 1.0), {}),
    (aten.add_.Tensor, (_F.clone(), 1), {}),
    (aten.mul_.Tensor, (_F.clone(), _B), {}),
]


_WRAPPED_DTYPE = {
    bool: torch.bool,
    int: torch.int64,
    float: torch.float64,
    complex: torch.complex128,
}


@pytest.mark.parametrize(("func", "args", "kwargs"), BINARY, ids=lambda x: str(x)[:40])
def test_binary_rule_matches_the_allocator(func, args, kwargs) -> None:
    out = func(*args, **kwargs)
    rule = kernel_rules(CPU).get(func)
    inside = list(rule(OpCall(func, args, kwargs, out, "cpu", CPU))) if rule else []
    new = 0 if func.overloadpacket.__name__.endswith("_") else out.untyped_storage().nbytes()
    # a Python number is wrapped into an 8-byte tensor (1 for a bool, 16 for a complex) and,
    # in another dtype than the common one, converted: bytes the rule leaves out
    wrapped = sum(
        {bool: 1, complex: 16}.get(type(x), 8)
        + (torch.result_type(*args) != _WRAPPED_DTYPE[type(x)]) * torch.result_type(*args).itemsize
        for x in args
        if not isinstance(x, torch.Tensor)
    )
    assert max([new, *inside]) + wrapped == allocator_peak(lambda: func(*args, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize(
    "layouts",
    [("plain", "weird"), ("plain", "transposed"), ("weird", "transposed"), ("weird", "weird")],
)
@pytest.mark.parametrize("k", [32, 4])  # 2 x 4 x 4 < 400: bmm's own loops, no copy
def test_bmm_rule_matches_the_allocator(dtype, layouts, k) -> None:
    def operand(rows: int, cols: int, layout: str) -> torch.Tensor:
        if layout == "weird":  # (batch, rows, cols) read from (rows, cols, batch)
            return torch.randn(rows, cols, 64, dtype=dtype).permute(2, 0, 1)
        if layout == "transposed":
            return torch.randn(64, cols, rows, dtype=dtype).transpose(1, 2)
        return torch.randn(64, rows, cols, dtype=dtype)

    a, b = operand(2, k, layouts[0]), operand(k, k, layouts[1])
    func = aten.bmm.default
    assert _predicted(func, (a, b), func(a, b)) == allocator_peak(lambda: func(a, b))
