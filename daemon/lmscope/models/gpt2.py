# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for GPT-2: pre-LayerNorm sequential blocks, biases everywhere, Conv1D layers.

Conv1D stores weights as [in, out] (the transpose of nn.Linear). The fused `c_attn` output is
[q | k | v], each d wide; heads are contiguous dh-wide slices.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.models.adapter import ArchitectureAdapter, layernorm_frozen, param, register


@register("gpt2")
class GPT2Adapter(ArchitectureAdapter):
    family = "gpt2"

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.n_heads = config.n_head
        self.n_kv_heads = self.n_heads
        self.d_model = config.n_embd
        self.d_head = self.d_model // self.n_heads
        self.d_ffn = config.n_inner or 4 * self.d_model
        self.context_length = config.n_positions
        super().__init__(model)

    def layers(self) -> list[nn.Module]:
        return list(self.model.transformer.h)

    def attention(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].attn

    def value_module(self, layer: int) -> nn.Module:
        return self.attention(layer).c_attn

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        d = self.d_model
        bias = param(self.value_module(layer), "bias")[2 * d :]
        values = output[0, :, 2 * d :] - bias
        return values.reshape(values.shape[0], self.n_heads, self.d_head)

    def ffn(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].mlp

    def ffn_down(self, layer: int) -> nn.Module:
        return self.ffn(layer).c_proj

    def head_output_weights(self, layer: int) -> torch.Tensor:
        weight = param(self.attention(layer).c_proj)  # Conv1D: [H*dh, d]
        return weight.reshape(self.n_heads, self.d_head, self.d_model)

    def attention_bias(self, layer: int) -> torch.Tensor:
        attn = self.attention(layer)
        v_bias = param(attn.c_attn, "bias")[2 * self.d_model :].reshape(self.n_heads, self.d_head)
        folded = torch.einsum("hk,hkd->d", v_bias, self.head_output_weights(layer))
        return param(attn.c_proj, "bias") + folded

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer))  # Conv1D: [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer), "bias")

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        return layernorm_frozen(update, residual, param(norm), norm.eps)
