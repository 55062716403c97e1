"""Parameter-count formulas per layer type, written out and evaluated.

A formula is a small function of a module returning a :class:`Formula`: the textbook form
(``C_o*C_i*k_h*k_w/g + C_o``), the same with the module's numbers substituted
(``64*32*3*3/2 + 64``), and the value of that expression, computed from the string itself.
:func:`memlens.layers` compares the value with the real parameter count and flags a
difference; nothing is bent to agree.

Formulas live in one registry keyed by module class and filled by :func:`register_formula`
(duplicates refused); lookup walks the class's MRO, so subclasses inherit their base's formula.
Callers may pass extra formulas, merged per call (``{**registry, **extra}``); nothing global is
mutated. Modules of unknown classes get a *shapes* formula (the product of each parameter's
shape, summed): exact by construction, and marked as such.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from torch import nn

FormulaFn = Callable[[nn.Module], "Formula"]
Formulas = dict[type, FormulaFn]

_REGISTRY: Formulas = {}

#: Module classes shown as one row with their submodules: their forward uses the children's
#: weights directly instead of calling them (``nn.MultiheadAttention`` and its ``out_proj``).
ATOMIC: tuple[type, ...] = (nn.MultiheadAttention,)


@dataclass(frozen=True)
class Formula:
    """A parameter-count formula: symbolic form, substituted expression and its value."""

    symbolic: str  # "C_o*C_i*k_h*k_w/g + C_o"
    expression: str  # "64*32*3*3/2 + 64"
    value: int  # the expression, evaluated
    kind: str = "textbook"  # "textbook", or "shapes" for the generic sum of parameter shapes


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: Fraction}


def evaluate(expression: str) -> int:
    """The value of an integer expression of ``+ - * /`` and parentheses (exact division)."""

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Div):
                return left / right
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"unsupported term in formula {expression!r}")

    value = ev(ast.parse(expression, mode="eval"))
    if value.denominator != 1:
        raise ValueError(f"formula {expression!r} is not an integer ({value})")
    return int(value)


def formula(symbolic: str, expression: str, kind: str = "textbook") -> Formula:
    """A :class:`Formula` whose value is computed from ``expression``."""
    return Formula(symbolic, expression, evaluate(expression), kind)


def register_formula(*classes: type) -> Callable[[FormulaFn], FormulaFn]:
    """Register ``fn`` as the parameter formula of ``classes`` (module classes)."""

    def wrap(fn: FormulaFn) -> FormulaFn:
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(f"formulas are keyed by nn.Module subclasses, got {cls!r}")
            if cls in _REGISTRY:
                raise ValueError(f"duplicate parameter formula for {cls.__name__}")
            _REGISTRY[cls] = fn
        return fn

    return wrap


def formulas(extra: Formulas | None = None) -> Formulas:
    """The registered formulas, with ``extra`` merged on top for one call."""
    return {**_REGISTRY, **(extra or {})}


def formula_for(module: nn.Module, registry: Formulas | None = None) -> Formula | None:
    """The formula of ``module`` (None when it has no parameters)."""
    registry = registry if registry is not None else _REGISTRY
    if not any(True for _ in module.parameters()):
        return None
    for cls in type(module).__mro__:
        fn = registry.get(cls)
        if fn is not None:
            return fn(module)
    name = type(module).__name__
    if name == "Conv1D" and module.weight.dim() == 2:  # transformers' GPT-2 "Conv1D" is a Linear
        c_i, c_o = module.weight.shape
        return _dense("C_i*C_o", f"{c_i}*{c_o}", c_o, module.bias is not None)
    if "Norm" in name and all(p.dim() == 1 for p in module.parameters(recurse=False)):
        return _norm(module)
    return shapes_formula(list(module.parameters()))


def shapes_formula(params: list[nn.Parameter]) -> Formula:
    """The generic formula: each parameter's shape multiplied out, summed."""
    terms = ["*".join(str(d) for d in p.shape) or "1" for p in params]
    return formula("sum of parameter shapes", " + ".join(terms) or "0", kind="shapes")


def _dense(symbolic: str, expression: str, c_o: int, bias: bool) -> Formula:
    if bias:
        return formula(f"{symbolic} + C_o", f"{expression} + {c_o}")
    return formula(symbolic, expression)


@register_formula(nn.Linear)
def linear(m: nn.Linear) -> Formula:
    return _dense(
        "C_o*C_i", f"{m.out_features}*{m.in_features}", m.out_features, m.bias is not None
    )


@register_formula(nn.Bilinear)
def bilinear(m: nn.Bilinear) -> Formula:
    expr = f"{m.out_features}*{m.in1_features}*{m.in2_features}"
    return _dense("C_o*C_i1*C_i2", expr, m.out_features, m.bias is not None)


_KERNEL_SYMBOLS = {1: ["k"], 2: ["k_h", "k_w"], 3: ["k_d", "k_h", "k_w"]}


@register_formula(nn.modules.conv._ConvNd)
def conv(m: nn.modules.conv._ConvNd) -> Formula:
    """``C_o*C_i*k_h*k_w/g``: each of the ``C_o`` filters sees ``C_i/g`` input channels."""
    c_o = m.out_channels
    kernel = list(m.kernel_size)
    symbols = _KERNEL_SYMBOLS.get(len(kernel), [f"k{i}" for i in range(len(kernel))])
    symbolic = "*".join(["C_o", "C_i", *symbols])
    expression = "*".join(str(d) for d in [c_o, m.in_channels, *kernel])
    if m.groups > 1:
        symbolic += "/g"
        expression += f"/{m.groups}"
    return _dense(symbolic, expression, c_o, m.bias is not None)


@register_formula(nn.Embedding, nn.EmbeddingBag)
def embedding(m: nn.Embedding | nn.EmbeddingBag) -> Formula:
    return formula("V*d", f"{m.num_embeddings}*{m.embedding_dim}")


def _norm(m: nn.Module) -> Formula:
    """``2*C`` (scale and shift), ``C`` (scale only, as RMSNorm) or ``0`` (no affine)."""
    weight = getattr(m, "weight", None)
    bias = getattr(m, "bias", None)
    sizes = [p.numel() for p in (weight, bias) if isinstance(p, nn.Parameter)]
    if not sizes:
        return shapes_formula(list(m.parameters()))
    c = sizes[0]
    if len(sizes) == 2 and sizes[1] == c:
        return formula("2*C", f"2*{c}")
    return formula("C", f"{c}")


register_formula(
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm
)(_norm)


@register_formula(nn.PReLU)
def prelu(m: nn.PReLU) -> Formula:
    return formula("C", f"{m.num_parameters}")


@register_formula(nn.MultiheadAttention)
def multihead_attention(m: nn.MultiheadAttention) -> Formula:
    """Q, K, V and output projections: ``4*(d*d + d)`` with biases and equal dims."""
    d, k, v = m.embed_dim, m.kdim, m.vdim
    bias = m.in_proj_bias is not None
    if m._qkv_same_embed_dim:
        symbolic, expression = (
            ("4*(d*d + d)", f"4*({d}*{d} + {d})")
            if bias
            else (
                "4*d*d",
                f"4*{d}*{d}",
            )
        )
    else:
        symbolic = "d*d + d*d_k + d*d_v + d*d" + (" + 4*d" if bias else "")
        expression = f"{d}*{d} + {d}*{k} + {d}*{v} + {d}*{d}" + (f" + 4*{d}" if bias else "")
    if m.bias_k is not None:
        symbolic += " + 2*d"
        expression += f" + 2*{d}"
    return formula(symbolic, expression)


_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


@register_formula(nn.RNNBase)
def recurrent(m: nn.RNNBase) -> Formula:
    """Per layer and direction, ``G*(h*(i+h) + 2h)``: ``G`` gates (LSTM 4, GRU 3, RNN 1),
    each with input and hidden weights and two bias vectors; ``i`` is the layer's input size
    (``h * directions`` above the first layer). An LSTM projection adds ``p*h`` and feeds
    ``p`` instead of ``h`` back."""
    g, h, p = _GATES[m.mode], m.hidden_size, m.proj_size
    dirs = 2 if m.bidirectional else 1
    r = p or h  # the size fed back into the recurrence
    symbolic = f"{g}*(h*(i+{'p' if p else 'h'}){'+2h' if m.bias else ''})" + (" + p*h" if p else "")
    terms = []
    for layer in range(m.num_layers):
        i = m.input_size if layer == 0 else r * dirs
        term = (
            f"{g}*({h}*({i}+{r})" + (f"+2*{h})" if m.bias else ")") + (f" + {p}*{h}" if p else "")
        )
        terms.append(f"{dirs}*({term})" if dirs > 1 else term)
    per = "per layer and direction, " if m.num_layers > 1 or dirs > 1 else ""
    return formula(per + symbolic, " + ".join(terms))
