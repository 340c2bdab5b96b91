# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for BLOOM: pre-LayerNorm sequential blocks, ALiBi, an embedding LayerNorm, a fused
per-head query_key_value, biases everywhere.

- ALiBi only biases the attention scores; the probabilities are captured, so it needs nothing.
- `word_embeddings_layernorm` runs before layer 0: the embedding node X is what enters layer 0,
  i.e. the embeddings *after* that norm, which is exactly the captured layer input.
- The fused `query_key_value` output is viewed as [n, H, 3, dh]: head h's value is the last dh
  of its 3·dh slice (the GPT-NeoX layout).
- BloomAttention and BloomMLP add the residual inside their own forward (output = x + update),
  so the updates are read from their output projections: `dense` for attention (through
  `attention_update`) and `dense_4h_to_h` as the FFN block.

Refused: `apply_residual_connection_post_layernorm` (the residual added is the normed input,
so a layer's output is not x + its updates) and `slow_but_exact` tensor-parallel slicing
(`pretraining_tp > 1`), which bypasses the output projection modules the updates are read from.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.errors import UnsupportedModelError
from lmscope.models.adapter import ArchitectureAdapter, layernorm_frozen, param, register

TRAINED_CONTEXT = 2048  # ALiBi has no position table; BLOOM was trained on 2048 tokens


@register("bloom")
class BloomAdapter(ArchitectureAdapter):
    family = "bloom"

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        if config.apply_residual_connection_post_layernorm:
            raise UnsupportedModelError(
                "BLOOM with apply_residual_connection_post_layernorm=True is not supported: its "
                "blocks add the normed input as the residual, so a layer's output is not the "
                "sum of its input and its two updates"
            )
        if config.pretraining_tp > 1 and config.slow_but_exact:
            raise UnsupportedModelError(
                "BLOOM with slow_but_exact=True and pretraining_tp > 1 is not supported: it "
                "computes the output projections by slices, bypassing the modules lmscope reads "
                "(load it with slow_but_exact=False; the result is the same up to rounding)"
            )
        self.n_heads = config.n_head
        self.n_kv_heads = self.n_heads
        self.d_model = config.hidden_size
        self.d_head = self.d_model // self.n_heads
        self.d_ffn = 4 * self.d_model
        self.context_length = getattr(config, "seq_length", None) or TRAINED_CONTEXT
        super().__init__(model)

    def layers(self) -> list[nn.Module]:
        return list(self.model.transformer.h)

    def attention(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].self_attention

    def attention_update(self, layer: int) -> nn.Module:
        return self.attention(layer).dense  # the block's output[0] is x + update

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
        return self.ffn_down(layer)  # BloomMLP's output is x + update; dense_4h_to_h's is f

    def ffn_down(self, layer: int) -> nn.Module:
        return self.model.transformer.h[layer].mlp.dense_4h_to_h

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).dense)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        attn = self.attention(layer)
        v_bias = self._value_slice(param(attn.query_key_value, "bias"))  # [H, dh]
        folded = torch.einsum("hk,hkd->d", v_bias, self.head_output_weights(layer))
        return param(attn.dense, "bias") + folded

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer), "bias")

    def final_norm(self) -> nn.Module:
        return self.model.transformer.ln_f

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        return layernorm_frozen(update, residual, param(norm), norm.eps)
