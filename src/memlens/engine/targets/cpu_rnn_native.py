"""PyTorch's own recurrent layers and packed sequences, run op by op as ATen's C++ runs them.

GRU, vanilla RNN (tanh, ReLU) and LSTM where oneDNN does not take it (packed sequences,
projections, types ``use_mkldnn`` refuses) run the native implementation of
aten/src/ATen/native/RNN.cpp (``ONE_HIDDEN_RNN``, ``lstm``: ``_rnn_impl`` over ``FullLayer`` /
``FullBidirectionalLayer``, or ``PackedLayer`` / ``ReversedPackedLayer`` /
``PackedBidirectionalLayer``, with ``SimpleCell``, ``GRUCell``, ``LSTMCell``). They are
composite: a dispatch mode sees the ATen ops they call, but two things differ under one:

- ``CellParams::linear_ih`` calls ``at::linear``, which for a non-contiguous 3-D input (a
  ``batch_first`` layer's transposed input) adds the bias in place, ``output.add_(bias)``,
  unless the bias is "tensor-subclass-like" (aten/src/ATen/native/Linear.cpp ``linear``):
  under a dispatch mode every tensor is, so the traced layer would allocate a second
  ``(seq, batch, gates * hidden)`` buffer that the real one does not (+7.7% for a 1-layer
  GRU classifier in inference, where that buffer is the peak);
- packed sequences read their ``batch_sizes`` through ``data_ptr`` (``PackedLayer``,
  ``_pack_padded_sequence`` and ``_pad_packed_sequence`` in
  aten/src/ATen/native/PackedSequence.cpp), which fake tensors do not have.

:class:`NativeRNN` runs these ``torch._VF`` calls as the C++ does, in the same order, with the
same in-place ops and the same lifetimes (a C++ local dies at the end of its scope; here at
the same point), reading ``batch_sizes`` and the sequence lengths from their real shadows
(:mod:`memlens.engine.shadow`): lengths given as a list or computed from constants or from
real inputs (``inputs=``) have them; lengths of values the trace lacks are refused
(:class:`TraceError`), not guessed. ``_pack_padded_sequence`` (``CompositeExplicitAutograd``,
its backward ``_pack_padded_sequence_backward``) is an autograd function here with the same
forward and backward ops. oneDNN's LSTM (``mkldnn_rnn_layer``) stays a C++ call
(:mod:`.cpu_rnn`). A CUDA target runs these layers in cuDNN; its trace follows this CPU path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import _VF, Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode_stack

from memlens._errors import TraceError
from memlens.engine.recorder import RecordingMode
from memlens.engine.shadow import Shadows

Hidden = Any  # a Tensor, or (h, c) for an LSTM
Params = tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``at::native::linear`` as it runs outside a dispatch mode (Linear.cpp): 2-D and
    contiguous inputs take ``addmm`` (F.linear), any other ``matmul`` then ``add_(bias)``."""
    if bias is not None and x.dim() != 2 and not x.is_contiguous():
        return torch.matmul(x, weight.t()).add_(bias)
    return F.linear(x, weight, bias)


class _Cell:
    """``CellParams`` and one cell (``SimpleCell``, ``LSTMCell``, ``GRUCell`` in RNN.cpp,
    their CPU branch)."""

    def __init__(self, kind: str, params: Params) -> None:
        self.kind = kind
        self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr = params

    def linear_ih(self, x: Tensor) -> Tensor:
        return _linear(x, self.w_ih, self.b_ih)

    def __call__(self, x: Tensor, hidden: Hidden, pre_computed: bool) -> Hidden:
        if self.kind == "lstm":
            hx, cx = hidden
            gates = _linear(hx, self.w_hh, self.b_hh).add_(x if pre_computed else self.linear_ih(x))
            chunked = gates.unsafe_chunk(4, 1)
            ingate = chunked[0].sigmoid_()
            forgetgate = chunked[1].sigmoid_()
            cellgate = chunked[2].tanh_()
            outgate = chunked[3].sigmoid_()
            cy = (forgetgate * cx).add_(ingate * cellgate)
            hy = outgate * cy.tanh()
            if self.w_hr is not None:  # CellParams::matmul_hr
                hy = torch.matmul(hy, self.w_hr.t())
            return hy, cy
        if self.kind == "gru":
            igates = (x if pre_computed else self.linear_ih(x)).unsafe_chunk(3, 1)
            hgates = _linear(hidden, self.w_hh, self.b_hh).unsafe_chunk(3, 1)
            reset_gate = hgates[0].add_(igates[0]).sigmoid_()
            input_gate = hgates[1].add_(igates[1]).sigmoid_()
            new_gate = igates[2].add(hgates[2].mul_(reset_gate)).tanh_()
            return (hidden - new_gate).mul_(input_gate).add_(new_gate)
        gates = _linear(hidden, self.w_hh, self.b_hh).add_(x if pre_computed else self.linear_ih(x))
        return torch.tanh(gates) if self.kind == "rnn_tanh" else torch.relu(gates)


def _output(hidden: Hidden) -> Tensor:
    """``hidden_as_output``."""
    return hidden[0] if isinstance(hidden, tuple) else hidden


def _slice(hidden: Hidden, start: int, end: int) -> Hidden:
    """``hidden_slice``."""
    if isinstance(hidden, tuple):
        return tuple(t.narrow(0, start, end - start) for t in hidden)
    return hidden.narrow(0, start, end - start)


def _concat(hiddens: Sequence[Hidden]) -> Hidden:
    """``hidden_concat``."""
    if isinstance(hiddens[0], tuple):
        return tuple(torch.cat([h[i] for h in hiddens], 0) for i in range(2))
    return torch.cat(list(hiddens), 0)


def _steps(cell: _Cell, inputs: Sequence[Tensor], hidden: Hidden) -> tuple[list[Tensor], Hidden]:
    """``FullLayer::operator()`` over unbound (pre-computed) step inputs."""
    outputs = []
    for x in inputs:
        hidden = cell(x, hidden, True)
        outputs.append(_output(hidden))
    return outputs, hidden


def _full_layer(x: Tensor, hidden: Hidden, cell: _Cell) -> tuple[Tensor, Hidden]:
    """``FullLayer``: the input projection of every step at once, then the steps."""
    inputs_w = cell.linear_ih(x)
    outputs, hidden = _steps(cell, inputs_w.unbind(0), hidden)
    return torch.stack(outputs, 0), hidden


def _full_bidirectional(x: Tensor, hidden: Hidden, cells: tuple[_Cell, _Cell]):
    """``FullBidirectionalLayer``: the forward direction's step outputs stay alive (in
    ``fw_result``) through the reverse direction."""
    input_w = cells[0].linear_ih(x)
    step_inputs = input_w.unbind(0)
    fw_outputs, fw_hidden = _steps(cells[0], step_inputs, hidden[0])
    fw_output = torch.stack(fw_outputs, 0)
    input_w = cells[1].linear_ih(x)
    step_inputs = input_w.unbind(0)  # the forward projection's views die: it is freed
    rev_outputs, rev_hidden = _steps(cells[1], step_inputs[::-1], hidden[1])
    rev_output = torch.stack(rev_outputs[::-1], 0)
    return torch.cat([fw_output, rev_output], fw_output.dim() - 1), (fw_hidden, rev_hidden)


def _packed_layer(x: Tensor, sizes: list[int], hidden: Hidden, cell: _Cell):
    """``PackedLayer``: finished sequences' states are sliced off as the batch shrinks."""
    step_outputs, hiddens = [], []
    offset, last = 0, sizes[0]
    input_w = cell.linear_ih(x)
    for size in sizes:
        step_input = input_w.narrow(0, offset, size)
        offset += size
        dec = last - size
        if dec > 0:
            hiddens.append(_slice(hidden, last - dec, last))
            hidden = _slice(hidden, 0, last - dec)
        last = size
        hidden = cell(step_input, hidden, True)
        step_outputs.append(_output(hidden))
    del step_input
    hiddens.append(hidden)
    output = torch.cat(step_outputs, 0)
    return output, _concat(hiddens[::-1])


def _reversed_packed_layer(x: Tensor, sizes: list[int], hidden: Hidden, cell: _Cell):
    """``ReversedPackedLayer``: from the last step, the batch grows with initial states."""
    step_outputs = []
    offset, last = x.size(0), sizes[-1]
    input_w = cell.linear_ih(x)
    state = _slice(hidden, 0, sizes[-1])
    for size in reversed(sizes):
        if size - last > 0:
            state = _concat([state, _slice(hidden, last, size)])
        step_input = input_w.narrow(0, offset - size, size)
        offset -= size
        last = size
        state = cell(step_input, state, True)
        step_outputs.append(_output(state))
    del step_input
    return torch.cat(step_outputs[::-1], 0), state


def _packed_bidirectional(x: Tensor, sizes: list[int], hidden: Hidden, cells: tuple):
    """``PackedBidirectionalLayer``."""
    fw_output, fw_hidden = _packed_layer(x, sizes, hidden[0], cells[0])
    rev_output, rev_hidden = _reversed_packed_layer(x, sizes, hidden[1], cells[1])
    return torch.cat([fw_output, rev_output], -1), (fw_hidden, rev_hidden)


def _layer_stack(
    layer: Callable[[Tensor, Hidden, Any], tuple[Tensor, Hidden]],
    x: Tensor,
    hiddens: list,
    cells: list,
    dropout_p: float,
    train: bool,
) -> tuple[Tensor, list]:
    """``apply_layer_stack``: dropout between layers when training."""
    finals = []
    for i, (hidden, cell) in enumerate(zip(hiddens, cells, strict=True)):
        layer_output = layer(x, hidden, cell)
        finals.append(layer_output[1])
        x = layer_output[0]
        if dropout_p != 0 and train and i < len(cells) - 1:
            x = torch.dropout(x, dropout_p, True)
        del layer_output  # a C++ local of the loop body
    return x, finals


def _rnn_impl(
    kind: str,
    x: Tensor,
    sizes: list[int] | None,
    hiddens: list,
    flat: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout_p: float,
    train: bool,
    bidirectional: bool,
    projections: bool = False,
) -> tuple[Tensor, list]:
    """``gather_params`` and ``_rnn_impl``: the layer stack, its final states per layer and
    direction (flattened as ``unpair_vec`` does)."""
    per = 2 + 2 * has_biases + projections
    cells = []
    for i in range(0, len(flat), per):
        w = list(flat[i : i + per])
        b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
        cells.append(_Cell(kind, (w[0], w[1], b_ih, b_hh, w[-1] if projections else None)))
    if sizes is None:
        uni: Callable = _full_layer
        bi: Callable = _full_bidirectional
    else:

        def uni(x, h, c):
            return _packed_layer(x, sizes, h, c)

        def bi(x, h, c):
            return _packed_bidirectional(x, sizes, h, c)

    if not bidirectional:
        return _layer_stack(uni, x, hiddens, cells, dropout_p, train)
    pairs = list(zip(hiddens[::2], hiddens[1::2], strict=True))
    cell_pairs = list(zip(cells[::2], cells[1::2], strict=True))
    out, finals = _layer_stack(bi, x, pairs, cell_pairs, dropout_p, train)
    return out, [h for pair in finals for h in pair]


def _one_hidden(kind: str, args: tuple) -> tuple[Tensor, Tensor]:
    """``ONE_HIDDEN_RNN`` (gru, rnn_tanh, rnn_relu), both overloads."""
    if isinstance(args[1], Tensor) and isinstance(args[2], Tensor):  # (data, batch_sizes, hx, ...)
        data, batch_sizes, hx, flat, has_biases, layers, p, train, bi = args
        sizes = _values(batch_sizes, "batch_sizes")
        out, finals = _rnn_impl(
            kind, data, sizes, hx.unbind(0), flat, has_biases, layers, p, train, bi
        )
        return out, torch.stack(finals, 0)
    x, hx, flat, has_biases, layers, p, train, bi, batch_first = args
    x = x.transpose(0, 1) if batch_first else x
    out, finals = _rnn_impl(kind, x, None, hx.unbind(0), flat, has_biases, layers, p, train, bi)
    results = (out, torch.stack(finals, 0))
    if batch_first:
        results[0].transpose_(0, 1)
    return results


def _lstm(args: tuple) -> tuple[Tensor, Tensor, Tensor]:
    """``lstm`` (RNN.cpp) past its oneDNN branch: ``_lstm_impl`` over full or packed layers."""
    packed = isinstance(args[1], Tensor)
    if packed:
        data, batch_sizes, hx, flat, has_biases, layers, p, train, bi = args
        sizes: list[int] | None = _values(batch_sizes, "batch_sizes")
        x = data
    else:
        x, hx, flat, has_biases, layers, p, train, bi, batch_first = args
        sizes = None
        x = x.transpose(0, 1) if batch_first else x
    projections = hx[0].size(2) != hx[1].size(2)
    hiddens = list(zip(hx[0].unbind(0), hx[1].unbind(0), strict=True))
    out, finals = _rnn_impl(
        "lstm", x, sizes, hiddens, flat, has_biases, layers, p, train, bi, projections
    )
    hy = torch.stack([h for h, _ in finals], 0)
    cy = torch.stack([c for _, c in finals], 0)
    if not packed and batch_first:
        out = out.transpose(0, 1)
    return out, hy, cy


def _onednn_lstm(args: tuple) -> bool:
    """``use_mkldnn`` (RNN.cpp) for an unpacked LSTM without projections: oneDNN takes it."""
    x, hx, flat = args[0], args[1], args[2]
    if isinstance(hx, Tensor) or hx[0].size(2) != hx[1].size(2):
        return False
    if not (torch.backends.mkldnn.is_available() and torch._C._get_mkldnn_enabled()):
        return False
    if any(t.device.type != "cpu" for t in (x, *hx, *flat)) or x.numel() == 0:
        return False
    if x.dtype == torch.float32:
        return True
    if x.dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if x.dtype == torch.float16:
        return not torch.is_grad_enabled() and bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return False


def _shadows() -> Shadows | None:
    """The shadows of the dispatch mode running the model: the recorder's, or those of a
    mode that keeps its own (``memlens.layers``' FLOP counter)."""
    for mode in reversed(_get_current_dispatch_mode_stack()):
        owner = mode.recorder if isinstance(mode, RecordingMode) else mode
        if isinstance(getattr(owner, "shadows", None), Shadows):
            return owner.shadows
    return None


def _shadow(t: Tensor) -> Tensor | None:
    """The real value of ``t``, if it has one."""
    if not isinstance(t, torch._subclasses.FakeTensor):
        return t
    shadows = _shadows()
    return shadows.get(t) if shadows is not None else None


def _values(t: Tensor, what: str) -> list[int]:
    """The integers in ``t`` (``batch_sizes``, ``lengths``), from its shadow."""
    real = _shadow(t)
    if real is None:
        raise TraceError(
            f"packed sequence {what} depend on input values the trace does not have: give "
            "real inputs (inputs=) from which the lengths are computed, or the lengths as a "
            "tensor made from them"
        )
    with _disable_current_modes():
        return [int(v) for v in real.reshape(-1).tolist()]


def _seeded(values: list[int]) -> Tensor:
    """A new int64 tensor (``at::empty``, as the C++ allocates it) whose shadow is ``values``."""
    out = torch.empty(len(values), dtype=torch.int64)
    shadows = _shadows()
    if shadows is not None:
        with _disable_current_modes():
            real = torch.tensor(values, dtype=torch.int64)
        shadows.seed(out, real)
    return out


class _Pack(torch.autograd.Function):
    """``_pack_padded_sequence`` and its backward (PackedSequence.cpp)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lengths: list[int], batch_first: bool):  # type: ignore[override]
        x = x.transpose(0, 1) if batch_first else x
        batch = x.size(1)
        steps, sizes, prev = [], [], 0
        for i in range(batch):
            length = lengths[batch - 1 - i]
            if length > prev:
                current = batch - i
                piece = x.narrow(0, prev, length - prev).narrow(1, 0, current)
                steps.append(piece.contiguous().view(-1, *x.shape[2:]))
                sizes += [current] * (length - prev)
                prev = length
        batch_sizes = _seeded(sizes)
        data = torch.cat(steps)
        ctx.sizes, ctx.shape, ctx.batch_first = sizes, tuple(x.shape), batch_first
        ctx.mark_non_differentiable(batch_sizes)
        ctx.save_for_backward(batch_sizes)  # ``result1``, which the real node saves
        return data, batch_sizes

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _: Any) -> tuple[Tensor, None, None]:  # type: ignore[override]
        """``_pack_padded_sequence_backward``: zeros of the input's shape, one copy per step."""
        grad_input = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device)
        offset = 0
        for i, size in enumerate(ctx.sizes):
            grad_input[i].narrow(0, 0, size).copy_(grad.narrow(0, offset, size))
            offset += size
        return (grad_input.transpose(0, 1) if ctx.batch_first else grad_input), None, None


def _pack(x: Tensor, lengths: Tensor, batch_first: bool) -> tuple[Tensor, Tensor]:
    """``_pack_padded_sequence``'s checks, then :class:`_Pack`."""
    values = _values(lengths, "lengths")
    batch = x.size(0 if batch_first else 1)
    if len(values) != batch:
        raise TraceError(f"pack_padded_sequence: {len(values)} lengths for a batch of {batch}")
    if values and values[-1] <= 0:
        raise TraceError("pack_padded_sequence: every sequence length must be positive")
    if any(a < b for a, b in zip(values, values[1:], strict=False)):
        raise TraceError(
            "pack_padded_sequence: lengths must be sorted in decreasing order when "
            "enforce_sorted is True"
        )
    return _Pack.apply(x, values, batch_first)


def _pad(data: Tensor, batch_sizes: Tensor, batch_first: bool, padding_value: float, total: int):
    """``_pad_packed_sequence`` (PackedSequence.cpp): a filled output, one copy per run of
    equal batch sizes, and the lengths."""
    sizes = _values(batch_sizes, "batch_sizes")
    max_batch, real_steps = sizes[0], len(sizes)
    if 0 < total < real_steps:
        raise TraceError(
            f"pad_packed_sequence: total_length {total} is below the longest sequence, {real_steps}"
        )
    steps = total if total > 0 else real_steps
    output = torch.full(
        (steps, max_batch, *data.shape[1:]), padding_value, dtype=data.dtype, device=data.device
    )
    lengths = [0] * max_batch
    offset, prev_size, prev_i = 0, max_batch, 0
    for i in range(real_steps + 1):
        size = sizes[i] if i != real_steps else 0
        if size != prev_size:
            n = prev_size * (i - prev_i)
            piece = data.narrow(0, offset, n).view(i - prev_i, prev_size, *data.shape[1:])
            output.narrow(0, prev_i, i - prev_i).narrow(1, 0, prev_size).copy_(piece)
            offset += n
            prev_i = i
        for j in range(size, prev_size):
            lengths[j] = i
        prev_size = size
    lengths_t = _seeded(lengths)
    if batch_first:
        output = output.transpose(0, 1)
    return output, lengths_t


class NativeRNN(TorchFunctionMode):
    """Recurrent ``torch._VF`` calls that ATen runs natively, run as it runs them."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if not kwargs:
            if func is _VF.gru:
                return _one_hidden("gru", args)
            if func is _VF.rnn_tanh:
                return _one_hidden("rnn_tanh", args)
            if func is _VF.rnn_relu:
                return _one_hidden("rnn_relu", args)
            if func is _VF.lstm and (isinstance(args[1], Tensor) or not _onednn_lstm(args)):
                return _lstm(args)
            if func is _VF._pack_padded_sequence:
                return _pack(*args)
            if func is _VF._pad_packed_sequence:
                return _pad(*args)
        return func(*args, **kwargs)
