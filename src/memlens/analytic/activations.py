"""Activation memory of a transformer layer in closed form, term by term.

Each :class:`Term` is one tensor saved for backward (or kept alive through it), with how
tensor parallelism splits it:

- ``tp``: inside the tensor-parallel regions (projections, attention heads, the MLP's inner
  width): divided by ``tp``;
- ``sp``: outside them (norms, dropout masks, the inputs of the first projections):
  replicated on every tensor-parallel rank unless sequence parallelism splits the sequence;
- ``core``: the attention core (scores, softmax, its dropout), divided by ``tp``; it is what
  selective recomputation drops.

Two recipes:

- :func:`korthikanti_terms`: Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models", Section 4.1 (Megatron's GPT layer, 16-bit activations, 1-byte
  dropout masks): attention 11sbh + 5as^2b, MLP 19sbh, norms 4sbh, so
  ``sbh(34 + 5as/h)`` per layer (Eq. 1); with tensor parallelism ``sbh(10 + 24/t + 5as/(ht))``
  (Eq. 2); with sequence parallelism ``sbh/t (34 + 5as/h)`` (Eq. 4); selective recompute
  ``34 sbh/t`` (Table 2). The MLP's ``8sbh`` terms are ``2 sb·ffn`` for a 4h MLP; GQA's K and V
  are ``kv`` wide. The input and output layers follow Megatron's
  ``megatron/training/theoretical_memory_usage.py`` (``compute_activation_memory``): the
  embedding's dropout mask ``sbh`` and token ids ``8sb`` per micro-batch in flight, and on the
  last stage ``4sbh(1 + v/h)`` (the final norm's input and fp32 logits for the loss).
- :func:`hf_llama_terms`: transformers' ``LlamaDecoderLayer`` as its code saves tensors
  (``transformers/models/llama/modeling_llama.py``), at compute dtype ``d`` bytes:
  ``LlamaRMSNorm`` keeps its fp32 input (``pow`` and ``mul`` save it), the normalised fp32
  (or its ``.to(input_dtype)`` copy) and its output (the projections' input); rotary
  embeddings save only ``cos``/``sin`` (the pre-rotary q, k are freed); attention keeps
  q, k, v after rotation, and under SDPA's flash / memory-efficient kernels the output and a
  log-sum-exp (``integrations/sdpa_attention.py``; the kernels write the output as
  ``(b, s, heads, d)``, so ``transpose(1, 2).contiguous()`` is a view that feeds ``o_proj``),
  under eager the fp32 softmax and its dtype copy, and the contiguous copy of the output;
  ``LlamaMLP``
  keeps gate, SiLU, up and their product (``down_proj(act(gate(x)) * up(x))``). The tail is
  ``LlamaForCausalLM`` with transformers' ``ForCausalLMLoss`` (``loss/loss_utils.py``): the
  logits (alive through the step when the loop keeps the output), ``cross_entropy``'s saved
  fp32 ``log_softmax`` (``logits.float()`` is not saved) and the shifted labels
  (``labels[..., 1:].contiguous()``, the target ``nll_loss`` saves). ``LlamaRotaryEmbedding``
  runs once per forward: its ``cos`` and ``sin`` (``(1, s, head_dim)``, compute dtype) are
  saved by every layer's rotary products.
"""

from __future__ import annotations

from dataclasses import dataclass

from memlens.analytic.transformer import TransformerShape

SPLITS = ("tp", "sp", "core")


@dataclass(frozen=True)
class Term:
    """One saved tensor of a layer (or of the input/output layers) for one micro-batch."""

    name: str
    nbytes: int
    split: str  # see SPLITS

    def share(self, tp: int, sequence_parallel: bool) -> int:
        """Bytes on one tensor-parallel rank."""
        if self.split == "sp" and not sequence_parallel:
            return self.nbytes
        return -(-self.nbytes // tp)


def korthikanti_terms(
    shape: TransformerShape, seq: int, batch: int, dtype_bytes: int = 2
) -> list[Term]:
    """Korthikanti et al. Section 4.1, one layer (see the module docstring); the paper's
    2-byte activations are ``dtype_bytes`` (4 in fp32 training), masks stay 1 byte."""
    sb, d = seq * batch, dtype_bytes
    h, a = shape.hidden, shape.heads
    return [
        Term("layernorm inputs", 2 * d * sb * h, "sp"),
        Term("QKV input", d * sb * h, "sp"),
        Term("Q, K", d * sb * (shape.q_width + shape.kv_width), "tp"),
        Term("softmax output", d * a * seq * seq * batch, "core"),
        Term("softmax dropout mask", a * seq * seq * batch, "core"),
        Term("attention over V input", d * a * seq * seq * batch, "core"),
        Term("V", d * sb * shape.kv_width, "tp"),
        Term("output projection input", d * sb * shape.q_width, "tp"),
        Term("attention dropout mask", sb * h, "sp"),
        Term("MLP input", d * sb * h, "sp"),
        Term("GeLU input", d * sb * shape.ffn, "tp"),
        Term("GeLU output", d * sb * shape.ffn, "tp"),
        Term("MLP dropout mask", sb * h, "sp"),
    ]


def korthikanti_embedding(shape: TransformerShape, seq: int, batch: int) -> list[Term]:
    """Megatron's input layer per micro-batch: token ids and the embedding dropout mask."""
    return [
        Term("token ids", 8 * seq * batch, "sp"),
        Term("embedding dropout mask", seq * batch * shape.hidden, "sp"),
    ]


def korthikanti_head(shape: TransformerShape, seq: int, batch: int) -> list[Term]:
    """Megatron's output layer: ``4sbh(1 + v/h)``: the final norm's input and fp32 logits."""
    return [
        Term("final norm input", 4 * seq * batch * shape.hidden, "sp"),
        Term("logits (fp32, loss)", 4 * seq * batch * shape.vocab, "tp"),
    ]


def hf_llama_terms(
    shape: TransformerShape,
    seq: int,
    batch: int,
    dtype_bytes: int,
    attention: str,
    amp: bool = False,
) -> list[Term]:
    """``LlamaDecoderLayer``, one layer (see the module docstring). ``attention``: ``eager``
    (the math path: scores kept) or ``flash`` (SDPA's flash or memory-efficient kernels).

    ``amp``: fp32 weights under autocast (``dtype_bytes`` is the autocast dtype's): the
    residual stream stays fp32, so each norm keeps its normalised input in fp32, and its
    output is cast again by every projection that reads it (autocast caches the casts of
    leaf weights only, ``aten/src/ATen/autocast_mode.cpp`` ``cached_cast``)."""
    sb, d = seq * batch, dtype_bytes
    h, q, kv, f, a = shape.hidden, shape.q_width, shape.kv_width, shape.ffn, shape.heads
    terms = [
        *(Term(f"input_layernorm: {n}", b, s) for n, b, s in _rms_norm(sb, h, d, amp, 3)),
        Term("q (rotated)", d * sb * q, "tp"),
        # eager attention's repeat_kv copies k and v to every query head (expand + reshape);
        # the matmuls save the copies and the grouped originals are freed
        Term("k (rotated)", d * sb * (q if attention == "eager" else kv), "tp"),
        Term("v", d * sb * (q if attention == "eager" else kv), "tp"),
    ]
    if attention == "eager":
        scores = a * seq * seq * batch
        terms.append(Term("softmax output (fp32)", 4 * scores, "core"))
        if d != 4:
            terms.append(Term("softmax .to(dtype)", d * scores, "core"))
        terms.append(Term("o_proj input (contiguous copy)", d * sb * q, "tp"))
    else:  # the kernels write (b, s, heads, d): transpose(1, 2).contiguous() is a view
        terms.append(Term("attention output (o_proj input)", d * sb * q, "tp"))
        terms.append(Term("log-sum-exp (fp32)", 4 * a * sb, "tp"))
    terms += [
        *(Term(f"post_attention_layernorm: {n}", b, s) for n, b, s in _rms_norm(sb, h, d, amp, 2)),
        Term("gate_proj output", d * sb * f, "tp"),
        Term("SiLU output", d * sb * f, "tp"),
        Term("up_proj output", d * sb * f, "tp"),
        Term("down_proj input", d * sb * f, "tp"),
    ]
    return terms


def hf_llama_layer_backward(
    shape: TransformerShape,
    seq: int,
    batch: int,
    dtype_bytes: int,
    attention: str,
    amp: bool = False,
) -> dict[str, tuple[list[Term], list[Term]]]:
    """The two busiest moments of a layer's backward, each as (the layer's saved tensors
    still alive, the transient gradients alive):

    - ``mlp``: ``mul``'s backward in ``down_proj(act(gate(x)) * up(x))``: every saved tensor
      of the layer but the product (freed by ``down_proj``'s backward), the residual stream's
      gradient, the gradient of the product and the two gradients it makes;
    - ``attention``: the attention core's backward, the MLP's tensors freed: the input norm's,
      q, k and what the kernel saves. Eager: ``_softmax_backward_data`` reads the fp32 softmax
      output and the fp32 gradient of the probabilities (``.to(dtype)``'s backward) and writes
      an fp32 gradient, beside the gradient of v (``bmm``); SDPA: the kernel's backward writes
      dq, dk, dv beside the output's gradient.
    """
    sb, d = seq * batch, dtype_bytes
    h, q, kv, a, f = shape.hidden, shape.q_width, shape.kv_width, shape.heads, shape.ffn
    layer = hf_llama_terms(shape, seq, batch, d, attention, amp)
    residual = Term("gradient of the residual stream", d * sb * h, "sp")
    mlp = [residual, Term("gradients of the product and its two inputs", 3 * d * sb * f, "tp")]
    keep = ("input_layernorm", "q (rotated)", "k (rotated)")
    if attention == "eager":
        keep += ("softmax output (fp32)",)
        scores = a * seq * seq * batch
        transient = [
            Term("gradient of the probabilities (fp32)", 4 * scores, "core"),
            Term("softmax backward output (fp32)", 4 * scores, "core"),
            Term("gradient of v", d * sb * q, "tp"),
        ]
    else:
        keep += ("v", "attention output", "log-sum-exp")
        transient = [
            Term("gradient of the output", d * sb * q, "tp"),
            Term("dq, dk, dv", d * sb * (q + 2 * kv), "tp"),
        ]
    transient.append(residual)
    mlp_left = [t for t in layer if t.name != "down_proj input"]  # freed by its backward
    return {
        "mlp": (mlp_left, mlp),
        "attention": ([t for t in layer if t.name.startswith(keep)], transient),
    }


def _rms_norm(
    sb: int, h: int, d: int, amp: bool = False, readers: int = 1
) -> list[tuple[str, int, str]]:
    """``LlamaRMSNorm``'s saved tensors; under autocast its fp32 output is cast once per
    projection that reads it (``readers``)."""
    if amp:
        return [
            ("fp32 input", 4 * sb * h, "sp"),
            ("rsqrt", 4 * sb, "sp"),
            ("normalised (fp32)", 4 * sb * h, "sp"),
            (f"output cast by {readers} projection(s)", readers * d * sb * h, "sp"),
        ]
    return [
        ("fp32 input", 4 * sb * h, "sp"),
        ("rsqrt", 4 * sb, "sp"),
        ("normalised", d * sb * h, "sp"),
        ("output", d * sb * h, "sp"),
    ]


def hf_llama_head(
    shape: TransformerShape,
    seq: int,
    batch: int,
    dtype_bytes: int,
    keep_output: bool,
    amp: bool = False,
) -> list[Term]:
    """``LlamaForCausalLM``'s final norm, logits and loss (see the module docstring); under
    autocast, the head's weight cast too."""
    sb, d = seq * batch, dtype_bytes
    norm = _rms_norm(sb, shape.hidden, d, amp)
    out = [Term(f"final norm: {n}", b, s) for n, b, s in norm]
    if amp:
        out.append(Term("lm_head weight cast", d * shape.vocab * shape.hidden, "tp"))
    if keep_output:
        out.append(logits_term(shape, seq, batch, d))
    out.append(Term("log_softmax output (fp32)", 4 * sb * shape.vocab, "tp"))
    out.append(Term("shifted labels (int64)", 8 * sb, "sp"))
    return out


def logits_term(shape: TransformerShape, seq: int, batch: int, dtype_bytes: int) -> Term:
    """The model output, alive until the step returns when the loop keeps it."""
    return Term("logits (output kept)", dtype_bytes * seq * batch * shape.vocab, "tp")


def hf_llama_rotary(shape: TransformerShape, seq: int, dtype_bytes: int) -> Term:
    """``cos`` and ``sin`` of one forward, shared by every layer of a stage."""
    return Term("rotary cos, sin", 2 * dtype_bytes * seq * shape.head_dim, "sp")


def loss_backward_temporaries(shape: TransformerShape, seq: int, batch: int) -> int:
    """Bytes alive at the start of backward besides the saved tensors: the fp32 gradients
    of ``log_softmax``'s output and input (``nll_loss_backward``, ``_log_softmax_backward_data``),
    ``s·b·v`` fp32 each, split by vocabulary-parallel tensor parallelism."""
    return 2 * 4 * seq * batch * shape.vocab


def layer_input_bytes(shape: TransformerShape, seq: int, batch: int, dtype_bytes: int) -> int:
    """What full recomputation keeps per layer: its input (``2sbh`` at 16 bits)."""
    return dtype_bytes * seq * batch * shape.hidden
