# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for Phi-1 / Phi-1.5 / Phi-2 (model_type "phi"): a *parallel* block in which attention
and a dense FFN read the same `input_layernorm(x)` (`x' = x + attn(ln(x)) + mlp(ln(x))`),
LayerNorm, biases on q/k/v/dense, fc1/fc2 and the lm_head.

Partial rotary and the optional `qk_layernorm` (a LayerNorm on each head's queries and keys)
act on queries and keys only: they shape the attention probabilities, which are captured, and
never enter the value path, so the method is the one for any parallel block (docs/method.md).
Queries, keys and values have their own projections; `v_proj`'s output is [n, H_kv·dh], heads
contiguous (transformers' `view(..., -1, head_dim)`), so GQA configs work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.models.adapter import (
    ArchitectureAdapter,
    layernorm_frozen,
    param,
    register,
    zero_vector,
)


@register("phi")
class PhiAdapter(ArchitectureAdapter):
    family = "phi"
    parallel_blocks = True  # PhiDecoderLayer always adds attn and mlp of one normed input

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = getattr(config, "num_key_value_heads", None) or self.n_heads
        self.d_model = config.hidden_size
        self.d_head = getattr(config, "head_dim", None) or self.d_model // self.n_heads
        self.d_ffn = config.intermediate_size
        self.context_length = config.max_position_embeddings
        super().__init__(model)

    def layers(self) -> list[nn.Module]:
        return list(self.model.model.layers)

    def attention(self, layer: int) -> nn.Module:
        return self.model.model.layers[layer].self_attn

    def value_module(self, layer: int) -> nn.Module:
        return self.attention(layer).v_proj

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        bias = param(self.value_module(layer), "bias")  # [H_kv·dh] or None
        values = output[0] if bias is None else output[0] - bias  # [n, H_kv·dh]
        return values.unflatten(-1, (self.n_kv_heads, self.d_head))  # [n, H_kv, dh]

    def ffn(self, layer: int) -> nn.Module:
        return self.model.model.layers[layer].mlp

    def ffn_down(self, layer: int) -> nn.Module:
        return self.ffn(layer).fc2  # its input is act(fc1(ln(x))): the neuron activations

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).dense)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        attn = self.attention(layer)
        dense_bias = param(attn.dense, "bias")
        if dense_bias is None:
            total = zero_vector(param(attn.dense), self.d_model)
        else:
            total = dense_bias.clone()
        v_bias = param(attn.v_proj, "bias")
        if v_bias is not None:
            per_kv = v_bias.reshape(self.n_kv_heads, self.d_head)  # [H_kv, dh]
            kv_of_head = [self.kv_head_of(h) for h in range(self.n_heads)]
            per_head = per_kv[kv_of_head]  # [H, dh]
            total = total + torch.einsum("hk,hkd->d", per_head, self.head_output_weights(layer))
        return total

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(self.ffn_down(layer))

    def final_norm(self) -> nn.Module:
        return self.model.model.final_layernorm

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        return layernorm_frozen(update, residual, param(norm), norm.eps)
