# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for OPT: pre-LayerNorm sequential blocks, learned positions, biases everywhere.

The FFN has no module of its own (fc1 -> act -> fc2 run inline in the decoder layer, on tokens
flattened to [n, *]), so `fc2` is both the FFN block and its output projection: its output is
the update f, its input the neuron activations.

`word_embed_proj_dim != hidden_size` (OPT-350m) adds two bias-free linear maps outside the
layers: `project_in` before layer 0 (it only shapes what enters the residual stream, whose
first value the method reads anyway) and `project_out` after the final norm (a linear map before
the unembedding, folded into W_U: logits = W_U · P_out · ln_f(x)). Post-LN OPT
(`do_layer_norm_before=False`, OPT-350m) normalises the residual stream itself after every
block, so a layer's output is not x + attention + FFN: it is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from lmscope.errors import UnsupportedModelError
from lmscope.models.adapter import (
    ArchitectureAdapter,
    layernorm_frozen,
    param,
    register,
    zero_vector,
)


@register("opt")
class OPTAdapter(ArchitectureAdapter):
    family = "opt"

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        if not config.do_layer_norm_before:
            raise UnsupportedModelError(
                "OPT with post-LayerNorm blocks (do_layer_norm_before=False, e.g. OPT-350m) is "
                "not supported: the norm after each block rescales the residual stream, so a "
                "layer's output is not the sum of its input and its two updates"
            )
        if model.model.decoder.final_layer_norm is None:
            raise UnsupportedModelError("OPT without a final LayerNorm is not supported")
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = self.n_heads
        self.d_model = config.hidden_size
        self.d_head = self.d_model // self.n_heads
        self.d_ffn = config.ffn_dim
        self.context_length = config.max_position_embeddings
        self._unembedding: torch.Tensor | None = None  # W_U · P_out, built once when needed
        super().__init__(model)

    def _layer(self, layer: int) -> nn.Module:
        return self.model.model.decoder.layers[layer]

    def layers(self) -> list[nn.Module]:
        return list(self.model.model.decoder.layers)

    def attention(self, layer: int) -> nn.Module:
        return self._layer(layer).self_attn

    def value_module(self, layer: int) -> nn.Module:
        return self.attention(layer).v_proj

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        bias = param(self.value_module(layer), "bias")
        values = output[0] if bias is None else output[0] - bias
        return values.reshape(values.shape[0], self.n_heads, self.d_head)

    def ffn(self, layer: int) -> nn.Module:
        return self._layer(layer).fc2  # no FFN module: fc2's output is the update

    def ffn_down(self, layer: int) -> nn.Module:
        return self._layer(layer).fc2

    def head_output_weights(self, layer: int) -> torch.Tensor:
        return self.split_heads(self.attention(layer).out_proj)  # Linear: [d, H·dh]

    def attention_bias(self, layer: int) -> torch.Tensor:
        attn = self.attention(layer)
        out_bias = param(attn.out_proj, "bias")
        total = zero_vector(param(attn.out_proj), self.d_model)
        if out_bias is not None:
            total = total + out_bias
        v_bias = param(attn.v_proj, "bias")
        if v_bias is not None:
            per_head = v_bias.reshape(self.n_heads, self.d_head)
            total = total + torch.einsum("hk,hkd->d", per_head, self.head_output_weights(layer))
        return total

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        return param(self.ffn_down(layer)).T  # [d_ffn, d]

    def ffn_bias(self, layer: int) -> torch.Tensor:
        return self.bias_or_zeros(self.ffn_down(layer))

    def final_norm(self) -> nn.Module:
        return self.model.model.decoder.final_layer_norm

    def unembedding_weight(self) -> torch.Tensor:
        """W_U [V, d]; with `project_out` [d_proj, d] folded in: W_U · P_out."""
        w_u = super().unembedding_weight()
        project_out = self.model.model.decoder.project_out
        if project_out is None:
            return w_u
        if self._unembedding is None:
            with torch.no_grad():
                self._unembedding = w_u @ param(project_out).to(w_u.device)  # [V, d]
        return self._unembedding

    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        norm = self.final_norm()
        weight = param(norm)
        if weight is None:  # layer_norm_elementwise_affine=False
            weight = torch.ones(self.d_model, device=update.device)
        return layernorm_frozen(update, residual, weight, norm.eps)
