# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapters for OLMo (model_type "olmo") and OLMo-2 / OLMo-3 ("olmo2", "olmo3").

Both keep the Llama module names (`self_attn.{q,k,v,o}_proj`, `mlp.down_proj` of a SwiGLU FFN,
`model.norm`, `model.layers`), so they subclass its adapter.

- OLMo: pre-norm sequential blocks whose norms are *non-parametric* LayerNorms (no weight, no
  bias, eps 1e-5), so the final norm's frozen map is a LayerNorm with γ = 1. `clip_qkv` clamps
  q, k and v in place after their projections: the values the heads read are the clamped ones,
  so the adapter clamps the projection's output the same way (clamping is idempotent).
- OLMo-2 / OLMo-3: no pre-norms at all; each block's *output* is normed before the residual adds
  it (`post_attention_layernorm`, `post_feedforward_layernorm`, RMSNorms with gain = weight). The
  engine freezes their scale at the block's raw output (docs/method.md, "Post-norm blocks").
  Note the name: in Llama and OLMo `post_attention_layernorm` is the FFN's pre-norm; here it is
  the attention block's output norm. The QK-norm (`q_norm`, `k_norm`) and OLMo-3's sliding
  windows act on queries and keys only, so they shape the captured probabilities and nothing
  else.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.models.adapter import layernorm_frozen, param, register
from lmscope.models.llama import LlamaAdapter

OLMO_LAYERNORM_EPS = 1e-5  # OlmoLayerNorm's, fixed in transformers (no config key)


@register("olmo")
class OlmoAdapter(LlamaAdapter):
    family = "olmo"

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        clip = self.model.config.clip_qkv
        values = output[0] if clip is None else output[0].clamp(-clip, clip)  # [n, H_kv·dh]
        bias = param(self.value_module(layer), "bias")
        if bias is not None:
            values = values - bias
        return values.reshape(values.shape[0], self.n_kv_heads, self.d_head)

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # The final norm has no parameters: a LayerNorm with γ = 1 and no β.
        gain = torch.ones(self.d_model, device=update.device)
        return layernorm_frozen(update, residual, gain, OLMO_LAYERNORM_EPS)


@register("olmo2", "olmo3")
class Olmo2Adapter(LlamaAdapter):
    family = "olmo2"

    def post_attention_norm(self, layer: int) -> nn.Module | None:
        return self.model.model.layers[layer].post_attention_layernorm

    def post_ffn_norm(self, layer: int) -> nn.Module | None:
        return self.model.model.layers[layer].post_feedforward_layernorm
