# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for the Llama family: Llama, Mistral, Qwen2/Qwen3, SmolLM (via Llama); the base of
Phi-3, Gemma and OLMo (models/phi3.py, gemma.py, olmo.py).

Pre-norm sequential blocks, RMSNorm, rotary (queries/keys only, so it never enters the value
path), grouped-query attention, gated FFN (`down_proj(act(gate) * up)`), optional q/k/v biases
(Qwen2) and an optional o_proj bias.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.models.adapter import ArchitectureAdapter, param, register, rms_frozen, zero_vector


@register("llama", "mistral", "qwen2", "qwen3", "smollm3")
class LlamaAdapter(ArchitectureAdapter):
    family = "llama"

    def __init__(self, model: nn.Module) -> None:
        config = model.config.get_text_config()  # the decoder's (Gemma 3's is nested)
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
        bias = param(self.value_module(layer), "bias")
        values = output[0] if bias is None else output[0] - bias
        return values.reshape(values.shape[0], self.n_kv_heads, self.d_head)

    def ffn(self, layer: int) -> nn.Module:
        return self.model.model.layers[layer].mlp

    def ffn_down(self, layer: int) -> nn.Module:
        return self.ffn(layer).down_proj

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).o_proj)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        attn = self.attention(layer)
        o_bias = param(attn.o_proj, "bias")
        total = zero_vector(param(attn.o_proj), self.d_model) if o_bias is None else o_bias.clone()
        v_bias = param(attn.v_proj, "bias")
        if v_bias is not None:
            per_kv = v_bias.reshape(self.n_kv_heads, self.d_head)
            w_o = self.head_output_weights(layer)
            for head in range(self.n_heads):
                total = total + per_kv[self.kv_head_of(head)] @ w_o[head]
        return total

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(self.ffn_down(layer))

    def final_norm(self) -> nn.Module:
        return self.model.model.norm

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
        # Gemma-style norms scale by (1 + weight) (norm_gain_offset 1); Llama-style by weight.
        return rms_frozen(update, residual, param(norm), eps, self.norm_gain_offset)
