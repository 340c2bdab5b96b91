# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapters for the mixture-of-experts families: Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE.

Attention is the Llama layout (q/k/v/o projections, RMSNorm, rotary, GQA; Qwen2-MoE adds q/k/v
biases, Qwen3-MoE and OLMoE a QK-norm, which shapes only the captured probabilities). The FFN of
a sparse layer is a `SparseMoeBlock` (transformers 5.x): `gate`, a top-k router returning
(logits, top_k_weights, top_k_index), and `experts`, ONE module holding every routed expert as
3-D parameters `gate_up_proj` [E, 2·d_e, d] and `down_proj` [E, d, d_e]. There is no module
per expert to hook: the engine captures the experts module's inputs (normed input, chosen
expert ids, their gates) and recomputes each chosen expert's activations from these weights
(`tracing/experts.py`). Qwen2-MoE adds one shared expert (a dense gated MLP) scaled by
`sigmoid(shared_expert_gate(x̂))`, and may interleave dense layers (`decoder_sparse_step`,
`mlp_only_layers`); Qwen3-MoE has the same config keys and no shared expert; Mixtral and OLMoE
are sparse in every layer.

Neuron ids of an FFN node (docs/method.md, "Experts") are flat over the layer's experts,
expert-major: routed expert e owns ids e·d_e .. (e+1)·d_e − 1, then shared expert s owns
E·d_e + s·d_s .. E·d_e + (s+1)·d_s − 1 (`lmscope.traces.experts.ExpertLayout`). `d_ffn` is the
width of that flat space (or of a dense layer, if wider), so the neuron table and the `L5.N…`
references keep working; labels show `L5.E3.N120` / `L5.S0.N120`.

The experts implementation (`config._experts_implementation`: eager loop, `grouped_mm`,
`batched_mm`) changes only how the experts module computes its output: the capture reads the
module's inputs, the output it returned, and the weights, so every implementation traces the
same (the invariant test compares the recomputed sum with the captured output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmscope.errors import UnsupportedModelError
from lmscope.models.adapter import param, register, zero_vector
from lmscope.models.llama import LlamaAdapter
from lmscope.traces.experts import ExpertLayout


@dataclass(frozen=True)
class SharedExpert:
    """A dense expert every token goes through: `mlp(x̂)` scaled by `sigmoid(gate(x̂))` (or 1
    when `gate` is None)."""

    mlp: nn.Module  # gate_proj, up_proj, down_proj, act_fn
    gate: nn.Module | None  # Linear d -> 1, its output the gate's logit

    @property
    def down_proj(self) -> nn.Module:
        """The output projection: its input [n, d_s] are the shared expert's activations."""
        return self.mlp.down_proj


@dataclass(frozen=True)
class MoeLayer:
    """Where one sparse layer keeps its mixture (modules, not weights)."""

    block: nn.Module  # the SparseMoeBlock: its output is the FFN update f
    router: nn.Module  # forward(x̂ [n, d]) -> (logits [n, E], gates [n, k], ids [n, k])
    experts: nn.Module  # forward(x̂ [n, d], ids [n, k], gates [n, k]) -> Σ gate·expert [n, d]
    shared: tuple[SharedExpert, ...]


class MoeAdapter(LlamaAdapter):
    """The Llama attention path plus a mixture of experts in the FFN of sparse layers."""

    family = ""
    has_shared_expert_gate = False  # Qwen2-MoE

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        super().__init__(model)
        sparse = [i for i in range(self.n_layers) if self._is_sparse(config, i)]
        if not sparse:
            raise UnsupportedModelError(f"{self.model_type}: no layer has a mixture of experts")
        first = self.moe_layer(sparse[0])
        self.n_experts = int(first.experts.num_experts)
        self.top_k = int(first.router.top_k)
        self.d_expert = int(first.experts.intermediate_dim)
        d_shared = [int(param(s.mlp.down_proj).shape[1]) for s in first.shared]
        if len(set(d_shared)) > 1:
            raise UnsupportedModelError(f"{self.model_type}: shared experts of unequal widths")
        dense_width = int(config.intermediate_size) if len(sparse) < self.n_layers else 0
        self.dense_width = dense_width  # d_ffn of the dense layers among sparse ones (or 0)
        self.expert_layout = ExpertLayout(
            n_experts=self.n_experts,
            top_k=self.top_k,
            d_expert=self.d_expert,
            n_shared=len(d_shared),
            d_shared=d_shared[0] if d_shared else 0,
            sparse_layers=tuple(sparse),
            d_dense=dense_width,
        )
        # The flat neuron space of a sparse layer, or a dense layer's width where wider.
        self.d_ffn = max(self.expert_layout.flat_width, dense_width)

    @staticmethod
    def _is_sparse(config: Any, layer: int) -> bool:
        """transformers' own rule (Qwen2MoeDecoderLayer): sparse unless listed in
        `mlp_only_layers`, and only every `decoder_sparse_step`-th layer."""
        step = getattr(config, "decoder_sparse_step", 1) or 1
        return layer not in (getattr(config, "mlp_only_layers", None) or []) and (
            (layer + 1) % step == 0
        )

    # --- the mixture ---------------------------------------------------------------------------
    def moe_layer(self, layer: int) -> MoeLayer | None:
        block = self.ffn(layer)
        if not hasattr(block, "experts"):
            return None  # a dense layer of a Qwen-MoE model
        shared: tuple[SharedExpert, ...] = ()
        if hasattr(block, "shared_expert"):
            shared = (
                SharedExpert(block.shared_expert, getattr(block, "shared_expert_gate", None)),
            )
        return MoeLayer(block=block, router=block.gate, experts=block.experts, shared=shared)

    def _moe(self, layer: int) -> MoeLayer:
        found = self.moe_layer(layer)
        if found is None:
            raise UnsupportedModelError(f"layer {layer} has a dense FFN, not experts")
        return found

    def expert_weights(self, layer: int, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Routed expert `expert` of `layer`: (W_gate_up [2·d_e, d]: gate rows then up rows,
        W_out [d_e, d]: one row per neuron), both views of the 3-D parameters."""
        experts = self._moe(layer).experts
        if not 0 <= expert < self.n_experts:
            raise UnsupportedModelError(f"expert {expert} of {self.n_experts} does not exist")
        return param(experts, "gate_up_proj")[expert], param(experts, "down_proj")[expert].T

    def shared_expert_weights(
        self, layer: int, shared: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shared expert `shared`: (W_gate [d_s, d], W_up [d_s, d], W_out [d_s, d]) views."""
        mlp = self._moe(layer).shared[shared].mlp
        return param(mlp.gate_proj), param(mlp.up_proj), param(mlp.down_proj).T

    def expert_activation(self, layer: int) -> Any:
        """The experts' activation function (the module's own `act_fn`)."""
        return self._moe(layer).experts.act_fn

    # --- the dense FFN interface: dense layers only ----------------------------------------------
    def ffn_block(self, layer: int) -> nn.Module | None:
        return None if self.moe_layer(layer) is not None else super().ffn_block(layer)

    def ffn_down(self, layer: int) -> nn.Module:
        if self.moe_layer(layer) is not None:
            raise UnsupportedModelError(f"layer {layer} is a mixture of experts: no one down_proj")
        return super().ffn_down(layer)

    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        if self.moe_layer(layer) is not None:
            raise UnsupportedModelError(
                f"layer {layer} is a mixture of experts: its output rows are per expert "
                "(expert_weights)"
            )
        return super().ffn_output_weights(layer)

    def ffn_bias(self, layer: int) -> torch.Tensor:
        moe = self.moe_layer(layer)
        if moe is not None:  # no family here has expert biases
            return zero_vector(param(moe.experts, "down_proj"), self.d_model)
        return super().ffn_bias(layer)


@register("mixtral")
class MixtralAdapter(MoeAdapter):
    family = "mixtral"


@register("qwen2_moe")
class Qwen2MoeAdapter(MoeAdapter):
    family = "qwen2_moe"


@register("qwen3_moe")
class Qwen3MoeAdapter(MoeAdapter):
    family = "qwen3_moe"


@register("olmoe")
class OlmoeAdapter(MoeAdapter):
    """OLMoE may clip q, k and v (`clip_qkv`); the values are clamped in place after `v_proj`,
    so the captured `v_proj` output is clamped here the same way (clamping twice is clamping
    once)."""

    family = "olmoe"

    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        clip = getattr(self.model.config, "clip_qkv", None)
        values = super().values_from_output(layer, output)
        return values if clip is None else values.clamp(-clip, clip)
