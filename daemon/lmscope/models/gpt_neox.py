# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for GPT-NeoX / Pythia: LayerNorm, biases, fused per-head qkv, usually *parallel*
attention + FFN (`x' = x + attn(ln1(x)) + mlp(ln2(x))`), which LM-TT cannot trace.

The fused `query_key_value` output is laid out per head as [q | k | v] (each dh wide), i.e. it
is viewed as [n, H, 3*dh] and the value of head h is the last dh of its slice.
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


@register("gpt_neox")
class GPTNeoXAdapter(ArchitectureAdapter):
    family = "gpt_neox"

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = self.n_heads
        self.d_model = config.hidden_size
        self.d_head = self.d_model // self.n_heads
        self.d_ffn = config.intermediate_size
        self.context_length = config.max_position_embeddings
        self.parallel_blocks = bool(config.use_parallel_residual)
        super().__init__(model)

    def layers(self) -> list[nn.Module]:
        return list(self.model.gpt_neox.layers)

    def attention(self, layer: int) -> nn.Module:
        return self.model.gpt_neox.layers[layer].attention

    def value_module(self, layer: int) -> nn.Module:
        return self.attention(layer).query_key_value

    def _value_slice(self, fused: torch.Tensor) -> torch.Tensor:
        """[..., H*3*dh] -> [..., H, dh]: the value part of each head's [q|k|v] slice."""
        per_head = fused.reshape(*fused.shape[:-1], self.n_heads, 3 * self.d_head)
        return per_head[..., 2 * self.d_head :]

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        bias = param(self.value_module(layer), "bias")
        values = self._value_slice(output[0])
        return values if bias is None else values - self._value_slice(bias)

    def ffn(self, layer: int) -> nn.Module:
        return self.model.gpt_neox.layers[layer].mlp

    def ffn_down(self, layer: int) -> nn.Module:
        return self.ffn(layer).dense_4h_to_h

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).dense)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        attn = self.attention(layer)
        dense_bias = param(attn.dense, "bias")
        total = torch.zeros(self.d_model, dtype=param(attn.dense).dtype)
        if dense_bias is not None:
            total = total.to(dense_bias.device) + dense_bias
        if attn.query_key_value.bias is not None:
            v_bias = self._value_slice(param(attn.query_key_value, "bias"))  # [H, dh]
            total = total + torch.einsum("hk,hkd->d", v_bias, self.head_output_weights(layer))
        return total

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(self.ffn_down(layer))

    def final_norm(self) -> nn.Module:
        return self.model.gpt_neox.final_layer_norm

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        return layernorm_frozen(update, residual, param(norm), norm.eps)
