# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for GPT-Neo: pre-LayerNorm sequential blocks, learned positions, q/k/v without bias,
out_proj and the FFN with biases.

Layers alternate global and local attention (`config.attention_layers`): a local layer masks
keys more than `window_size` tokens back, so their captured probabilities are exactly 0 and their
edges score like any unattended edge. GPT-Neo does not scale its scores by 1/sqrt(dh); that only
changes the probabilities, which are captured, never recomputed. Each block's attention wrapper
(`attn`) delegates to the global/local module (`attn.attention`) that holds the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.models.adapter import (
    ArchitectureAdapter,
    layernorm_frozen,
    param,
    register,
)


@register("gpt_neo")
class GPTNeoAdapter(ArchitectureAdapter):
    family = "gpt_neo"

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.n_heads = config.num_heads
        self.n_kv_heads = self.n_heads
        self.d_model = config.hidden_size
        self.d_head = self.d_model // self.n_heads
        self.d_ffn = config.intermediate_size or 4 * self.d_model
        self.context_length = config.max_position_embeddings
        super().__init__(model)

    def layers(self) -> list[nn.Module]:
        return list(self.model.transformer.h)

    def attention(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].attn.attention  # the global or local module

    def value_module(self, layer: int) -> nn.Module:
        return self.attention(layer).v_proj

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        values = output[0]  # v_proj has no bias
        return values.reshape(values.shape[0], self.n_heads, self.d_head)

    def ffn(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].mlp

    def ffn_down(self, layer: int) -> nn.Module:
        return self.ffn(layer).c_proj

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).out_proj)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        return param(self.attention(layer).out_proj, "bias")  # no value bias to fold in

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(self.ffn_down(layer))

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        return layernorm_frozen(update, residual, param(norm), norm.eps)
