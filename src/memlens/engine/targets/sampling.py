"""Token sampling: the exponential draws ``torch.multinomial`` makes inside.

``multinomial_out`` (aten/src/ATen/native/Distributions.cpp, device-generic: CPU and CUDA)
draws one sample, or samples without replacement, by the Gumbel trick: ``q =
at::empty_like(self).exponential_()``, ``div_out(q, self, q)``, then ``argmax_out`` (one
sample) or ``topk_out`` into ``vals``, an ``empty(result.sizes())`` of the probabilities'
dtype (several). ``q`` is as large as the probabilities, a row of the vocabulary per sequence
in generation (``_sample``'s ``torch.multinomial(probs, num_samples=1)``); fake tensors run
the meta function, which makes neither. The sanity checks' scalars (``aminmax``, the zero-sum
test: a few bytes) are not counted; sampling several with replacement takes
``multinomial_with_replacement_stub``, whose buffers are not modelled.
"""

from __future__ import annotations

import torch

from memlens.engine.rules import OpCall, register_rule

aten = torch.ops.aten


@register_rule(aten.multinomial.default)
def multinomial(call: OpCall) -> list[int]:
    probs, samples = call.args[0], call.args[1]
    replacement = call.args[2] if len(call.args) > 2 else call.kwargs.get("replacement", False)
    if replacement and samples > 1:
        return []
    q = probs.numel() * probs.element_size()
    vals = 0 if samples == 1 else call.out.numel() * probs.element_size()
    return [q + vals]
