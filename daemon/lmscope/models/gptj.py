# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for GPT-J: *parallel* attention + FFN reading one LayerNorm
(`x' = x + attn(ln_1(x)) + mlp(ln_1(x))`), partial rotary, biases only in the FFN and lm_head.

Rotary touches the first `rotary_dim` channels of queries and keys only, never the values, so
the value path is a plain v_proj. q/k/v and out_proj have no bias (b_attn = 0); fc_in/fc_out
and the unembedding do.
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


@register("gptj")
class GPTJAdapter(ArchitectureAdapter):
    family = "gptj"
    parallel_blocks = True

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
        return self.attention(layer).v_proj

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        values = output[0]  # v_proj has no bias
        return values.reshape(values.shape[0], self.n_heads, self.d_head)

    def ffn(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].mlp

    def ffn_down(self, layer: int) -> nn.Module:
        return self.ffn(layer).fc_out

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).out_proj)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(
            self.attention(layer).out_proj
        )  # bias-free in transformers' GPT-J

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(self.ffn_down(layer))

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        return layernorm_frozen(update, residual, param(norm), norm.eps)
