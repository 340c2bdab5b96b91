# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for Phi-3 and Phi-4 (model_type "phi3"): the Llama layout (pre-norm sequential
blocks, RMSNorm, rotary, GQA, gated FFN, `o_proj`, `down_proj`, `model.norm`) with two fused
projections and no biases anywhere (transformers builds them all with bias=False).

- `qkv_proj` writes [q heads | k heads | v heads] on its last axis: H·dh, then H_kv·dh, then
  H_kv·dh. The values are the last H_kv·dh columns of its output, read as a *view* (a slice,
  then `unflatten` into heads); no weight is split or copied.
- `gate_up_proj` writes [gate | up] and the MLP computes `down_proj(up · act(gate))`. The neuron
  activations are `down_proj`'s input, which the engine captures as it is, so the fused weight
  never needs splitting.

Partial rotary (Phi-4-mini) and sliding windows act on queries, keys and the mask only: they
shape the captured attention probabilities and never enter the value path.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.models.adapter import param, register, zero_vector
from lmscope.models.llama import LlamaAdapter


@register("phi3")
class Phi3Adapter(LlamaAdapter):
    family = "phi3"

    def value_module(self, layer: int) -> nn.Module:
        return self.attention(layer).qkv_proj

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        fused = output[0]  # [n, H·dh + 2·H_kv·dh]
        value_start = (self.n_heads + self.n_kv_heads) * self.d_head
        return fused[:, value_start:].unflatten(-1, (self.n_kv_heads, self.d_head))  # [n, H_kv, dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        # No b_O and no b_V: the constant of the attention block is zero.
        return zero_vector(param(self.attention(layer).o_proj), self.d_model)
