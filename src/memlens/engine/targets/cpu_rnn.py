"""oneDNN LSTM on CPU: the workspace kept for backward and the buffers inside each layer call.

On CPU, ``at::lstm`` sends a float LSTM to oneDNN when mkldnn is enabled
(``use_mkldnn`` in aten/src/ATen/native/RNN.cpp; GRU, vanilla RNN and packed sequences run
PyTorch's own cells, :mod:`.cpu_rnn_native`). Each layer and direction is one
``mkldnn_rnn_layer`` call (aten/src/ATen/native/mkldnn/RNN.cpp): with grad mode on it
returns, besides the output and final states, a ``workspace`` of
``pd.workspace_desc().get_size()`` bytes that autograd keeps for
``mkldnn_rnn_layer_backward``; the meta kernel returns it empty. Its size is oneDNN's
(``set_workspace_sizes`` in src/cpu/rnn/rnn_utils.hpp, page-aligned entries summed by
``set_offsets`` in src/cpu/rnn/rnn_utils.cpp, oneDNN 3.x as bundled with PyTorch): gates,
``ht``, states, the LSTM cell states, and the diff states the backward pass fills, each for
``(n_layer + 1) * n_dir * (n_iter + 1) * mb`` rows of a "good" leading dimension
(``get_good_ld``: rounded up to 64 bytes, plus 64 bytes when a multiple of 256 elements).

Inside the call PyTorch adds the biases (``_shuffle_bias``) and ideep reorders the
``ldgoi`` weights into the layout the primitive expects, then oneDNN takes a scratchpad:

- training forward and backward (f32) run the reference gemm implementation (brgemm refuses
  f32 training, ``init_brgemm`` in src/cpu/rnn/ref_rnn.cpp): weights in ``ldigo`` with a
  good leading dimension; scratch gates for every step when the layer GEMM is merged
  (batch below 128 forward, always backward), else for one, plus ``ht`` and ``diff_ht``;
- inference (f32, AVX2 or newer) runs the brgemm implementation: weights in
  ``ldgOi{n}o`` blocks (``n = 2 * simd width``: 32 on AVX-512, 16 on AVX2;
  ``brgemm_calc_n_block``), and, the workspace not being kept, the states go to the
  scratchpad with one step's scratch gates.

The backward pass makes the incoming gradients contiguous, zero-fills the missing ones and
computes the weight gradients in ``ldigo`` before copying them out. Each scratchpad also
holds the pointer arrays ``init_scratchpad`` books and, for brgemm, its batch. Measured with
the profiler's allocation records, f32 calls match to the byte on AVX-512 (two threads).
bf16/fp16 LSTMs (brgemm, other block sizes and types) get the workspace only: their
scratchpads are not modelled.
"""

from __future__ import annotations

import math

import torch

from memlens.engine.rules import OpCall, OutputBytes, register_rule
from memlens.engine.targets.cpu_onednn_conv import isa

aten = torch.ops.aten
_PAGE = 4096  # set_offsets: each workspace/scratchpad entry starts on a page
_ALIGN = 128  # memory_tracking: default_alignment, added to each booked scratchpad entry
#: ``init_scratchpad`` (src/cpu/rnn/ref_rnn.cpp) books, besides ``key_rnn_space`` (padded by
#: its 4096-byte alignment): three weight-pointer arrays (one ``float *`` per layer and
#: direction) and the bias pointers (as many ``void *`` as bias bytes per element).
_POINTERS = 3 * (8 + _ALIGN) + (4 * 8 + _ALIGN)
#: brgemm's batch of ``brgemm_batch_element_t`` (40 bytes), ``max_K_Block`` per thread: two
#: when the layer and iteration reductions each fit one K block (``brgemm_calc_k_block``).
_BATCH_ELEMENT, _K_BLOCKS = 40, 2
_GATES = {0: 1, 1: 1, 2: 4, 3: 3}  # ideep::rnn_kind RNN_RELU, RNN_TANH, LSTM, GRU


def _page(n: int) -> int:
    return -(-n // _PAGE) * _PAGE


def _good_ld(dim: int, elem: int) -> int:
    """``rnn_utils::get_good_ld``: a 64-byte-aligned leading dimension, off 4K aliasing."""
    ld = math.ceil(dim / (64 // elem)) * (64 // elem)
    return ld + 64 // elem if ld % 256 == 0 else ld


class _Layer:
    """One ``mkldnn_rnn_layer`` call's problem, as ``RNNParams`` and ``init_conf`` see it."""

    def __init__(self, x: torch.Tensor, hidden: int, mode: int) -> None:
        self.t, self.mb, self.slc = x.shape
        self.dhc = self.sic = hidden
        self.lstm = mode == 2
        self.gates = _GATES[mode]
        self.elem = x.element_size()

    def states(self, ld: int, elem: int) -> int:
        """One ``(n_layer + 1) * n_dir * (n_iter + 1) * mb * ld`` block (one layer, one
        direction per PyTorch call)."""
        return 2 * (self.t + 1) * self.mb * ld * elem

    def workspace(self) -> int:
        """``workspace_size`` of a training primitive (``set_workspace_sizes``)."""
        acc = 4  # gemm_acc_t: f32; gates_t and the c states: the cell's type
        states_ld = _good_ld(max(self.sic, self.slc, self.dhc), self.elem)
        diff_ld = _good_ld(max(self.slc, self.dhc, self.sic), acc)
        c_states = self.lstm
        return _page_each(
            self.t * self.mb * _good_ld(self.dhc * self.gates, self.elem) * self.elem,  # ws_gates
            self.t * self.mb * _good_ld(self.dhc, self.elem) * self.elem,  # ws_ht
            self.states(states_ld, self.elem),  # ws_states_layer (= ws_states_iter)
            self.states(self.dhc, self.elem) if c_states else 0,  # ws_states_iter_c
            self.states(diff_ld, acc),  # ws_diff_states_layer
            self.states(diff_ld, acc),  # ws_diff_states_iter
            self.states(self.dhc, acc) if c_states else 0,  # ws_diff_states_iter_c
        )

    def ldigo_weights(self) -> int:
        """Weights (layer and iter) in ``ldigo`` with a good leading dimension."""
        ld = _good_ld(self.gates * self.dhc, self.elem)
        return (self.slc + self.sic) * ld * self.elem

    def ldgoi_weights(self) -> int:
        """Backward's weights reordered to ``ldgoi`` with a good leading dimension (none where
        PyTorch's plain ``ldgoi`` already has it)."""
        return sum(
            self.gates * self.dhc * _good_ld(k, self.elem) * self.elem
            for k in (self.slc, self.sic)
            if _good_ld(k, self.elem) != k
        )

    def ref_scratchpad(self, forward: bool) -> int:
        """The reference implementation's ``key_rnn_space`` when the workspace is kept."""
        merged = not forward or self.mb < 128  # merge_gemm_layer (trivial strides)
        gates_ld = _good_ld(self.gates * self.dhc, 4)
        gates = (self.t if merged else 1) * self.mb * gates_ld * 4
        ht = self.mb * _good_ld(self.dhc, self.elem) * self.elem
        diff_ht = self.mb * _good_ld(self.dhc, 4) * 4
        cell = 0 if self.lstm or self.gates == 1 else self.mb * _good_ld(self.dhc, self.elem) * 4
        return _page_each(gates, ht, diff_ht, cell) + _PAGE + _POINTERS

    def brgemm_inference(self) -> int:
        """Blocked weights and scratchpad of the brgemm inference primitive."""
        # 2 * simd width in floats; 4 * on AVX2 for one-row LSTM problems
        block = 32 if "AVX512" in isa() or self.mb == 1 else 16
        # merged layer GEMM over all steps for one-row LSTM problems (configure_brgemm)
        merged = self.lstm and self.mb <= 1 and self.t >= 2
        weights = self.gates * (self.slc + self.sic) * math.ceil(self.dhc / block) * block * 4
        states_ld = _good_ld(max(self.sic, self.slc, self.dhc), 4)
        states = self.states(states_ld, 4)
        c_states = self.states(self.dhc, 4) if self.lstm else 0
        gates = (self.t if merged else 1) * self.mb * _good_ld(self.gates * self.dhc, 4) * 4
        ht = self.mb * _good_ld(self.dhc, 4) * 4
        batch = _K_BLOCKS * torch.get_num_threads() * _BATCH_ELEMENT + _ALIGN
        return weights + _page_each(states, c_states, gates, ht) + _PAGE + _POINTERS + batch


def _page_each(*sizes: int) -> int:
    return sum(_page(n) for n in sizes)


def _out_bytes(out: tuple) -> int:
    return sum(t.untyped_storage().nbytes() for t in out if isinstance(t, torch.Tensor))


@register_rule(aten.mkldnn_rnn_layer.default)
def rnn_layer(call: OpCall) -> list[int | OutputBytes]:
    """The workspace kept for backward (grad mode on) and the peak inside the call."""
    if call.device != "cpu":
        return []
    x, mode, hidden = call.args[0], call.args[9], call.args[10]
    layer = _Layer(x, hidden, mode)
    bias = (4 if mode == 3 else layer.gates) * hidden * layer.elem
    outputs = _out_bytes(call.out[:3])
    if torch.is_grad_enabled():
        workspace = layer.workspace()
        if x.dtype != torch.float32:
            return [OutputBytes(3, workspace)]
        inside = layer.ldigo_weights() + layer.ref_scratchpad(forward=True)
        return [OutputBytes(3, workspace), outputs + workspace + bias + inside]
    if x.dtype != torch.float32:
        return []
    return [outputs + bias + layer.brgemm_inference()]


@register_rule(aten.mkldnn_rnn_layer_backward.default)
def rnn_layer_backward(call: OpCall) -> list[int]:
    """Peak inside the backward call, its gradients included."""
    x, hx, output = call.args[0], call.args[5], call.args[7]
    if call.device != "cpu" or x.dtype != torch.float32:
        return []
    grads = call.args[10:13]
    mode, hidden = call.args[14], call.args[15]
    layer = _Layer(x, hidden, mode)
    filled = sum(
        ref.numel() * ref.element_size()
        for g, ref in zip(grads, (output, hx, hx), strict=True)
        if g is None
    )
    copied = sum(
        g.numel() * g.element_size()
        for g in grads
        if isinstance(g, torch.Tensor) and not g.is_contiguous()
    )
    bias = (4 if mode == 3 else layer.gates) * hidden * layer.elem
    inside = layer.ldgoi_weights() + layer.ldigo_weights() + layer.ref_scratchpad(forward=False)
    return [_out_bytes(call.out) + filled + copied + bias + inside]
