"""The one narrow interface between a transformers model and lmscope's tracing engine.

An adapter says *where* things live in a model's module tree (so hooks can capture them) and
gives the few weights the method needs (per-head output maps, FFN output rows, unembedding,
final norm). The engine never touches a model except through this interface, so supporting a new
family means writing one small adapter, not touching the attribution code.

Shapes: d = d_model, H = query heads, H_kv = key/value heads, dh = head width,
d_ffn = FFN width, V = vocabulary, n = tokens.

Architecture invariants an adapter guarantees (tested for every family on tiny models):
- `values_from_output(l, out)` are the value vectors *without* the value bias (docs/method.md folds
  b_V into the attention block's constant `attention_bias(l)`);
- Σ_h Σ_j A[h,i,j] · values[j, g(h)] · W_O[h] + attention_bias(l) == attention block output_i;
- Σ_k act[i,k] · W_out[k] + ffn_bias(l) == FFN block output_i.
- Post-norm families (an output norm on a block, `post_attention_norm` / `post_ffn_norm`): the
  "block output" above is the norm's input y_i, and frozen_post_norm_scale(norm, y) ⊙ y equals
  the norm's output, the update the residual receives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmscope.errors import UnsupportedModelError

if TYPE_CHECKING:
    from lmscope.models.moe import MoeLayer


class ArchitectureAdapter(ABC):
    """Where a model family keeps its parts, and the weights the method needs."""

    family: str = ""
    parallel_blocks: bool = False  # attention and FFN both read the layer input

    def __init__(self, model: nn.Module) -> None:
        # Any: transformers' module trees are only known per family (nn.Module.__getattr__
        # would type every attribute as Tensor | Module).
        self.model: Any = model
        config: Any = getattr(model, "config")  # noqa: B009 (typed as Tensor | Module)
        self.model_type: str = config.model_type
        self.n_layers: int = len(self.layers())
        self.vocab_size: int = int(self.unembedding_weight().shape[0])

    # --- sizes -------------------------------------------------------------------------------
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_ffn: int
    context_length: int

    def kv_head_of(self, head: int) -> int:
        """g(h): the key/value head a query head reads (GQA/MQA, transformers' repeat_kv)."""
        return head // (self.n_heads // self.n_kv_heads)

    # --- modules to hook ---------------------------------------------------------------------
    @abstractmethod
    def layers(self) -> list[nn.Module]:
        """The decoder layers, in order; their input/output are the residual stream."""

    @abstractmethod
    def attention(self, layer: int) -> nn.Module:
        """The attention block: output[0] is its update [1, n, d], output[1] probs [1, H, n, n]."""

    def attention_update(self, layer: int) -> nn.Module:
        """The module whose output [1, n, d] is the attention update (b_attn included).

        Usually the attention block itself (its output[0]). A family whose attention block adds
        the residual inside its own forward (BLOOM: output[0] = x + update) names its output
        projection instead, so the update is read as computed, not as output − input (which
        would lose the update's low bits under a large residual).
        """
        return self.attention(layer)

    @abstractmethod
    def value_module(self, layer: int) -> nn.Module:
        """The module whose output contains the value vectors (v_proj, or a fused qkv)."""

    @abstractmethod
    def values_from_output(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        """Value vectors without bias from `value_module`'s output [1, n, *]: [n, H_kv, dh]."""

    @abstractmethod
    def ffn(self, layer: int) -> nn.Module:
        """The FFN block: its output [1, n, d] is the update f (output bias included).

        Where the family has no such module (OPT's FFN is inline in its layer) or its FFN
        module adds the residual itself (BLOOM), this is the output projection, `ffn_down`.
        A 2-D output [n, d] is read as one row per token (OPT flattens batch and tokens).
        """

    @abstractmethod
    def ffn_down(self, layer: int) -> nn.Module:
        """The FFN's output projection: its *input* [1, n, d_ffn] (or [n, d_ffn]) are the neuron
        activations."""

    def ffn_block(self, layer: int) -> nn.Module | None:
        """The dense FFN as one module whose input [1, n, d] is the normed x̂ and whose forward
        runs `ffn_down`: the neuron activations of any rows can be recomputed by running it on
        those rows of x̂ (`capture.recompute_activations`). None where the FFN has no such
        module (OPT and BLOOM name `ffn_down` as `ffn`); a mixture-of-experts layer has no
        dense neurons at all."""
        module = self.ffn(layer)
        return None if module is self.ffn_down(layer) else module

    # --- weights -----------------------------------------------------------------------------
    def split_heads(self, output_projection: nn.Module) -> torch.Tensor:
        """W_O of a Linear output projection (weight [d, H·dh]) split per head: [H, dh, d]."""
        return param(output_projection).T.reshape(self.n_heads, self.d_head, self.d_model)

    def bias_or_zeros(self, module: nn.Module) -> torch.Tensor:
        """`module`'s bias [d], or zeros [d] on its weight's dtype and device when it has none."""
        if getattr(module, "bias", None) is None:
            return zero_vector(param(module), self.d_model)
        return param(module, "bias")

    @abstractmethod
    def head_output_weights(self, layer: int) -> torch.Tensor:
        """W_O split per head: [H, dh, d]."""

    @abstractmethod
    def attention_bias(self, layer: int) -> torch.Tensor:
        """b_attn = b_O + Σ_h b_V[g(h)] · W_O[h]: [d] (zeros when the model has no biases)."""

    @abstractmethod
    def ffn_output_weights(self, layer: int) -> torch.Tensor:
        """W_out rows, one per neuron: [d_ffn, d]."""

    @abstractmethod
    def ffn_bias(self, layer: int) -> torch.Tensor:
        """b_out: [d] (zeros when absent)."""

    @abstractmethod
    def final_norm(self) -> nn.Module:
        """The norm applied before the unembedding."""

    def unembedding_weight(self) -> torch.Tensor:
        """W_U: [V, d]."""
        return param(self.model.get_output_embeddings())

    def unembedding_bias(self) -> torch.Tensor | None:
        """b_U: [V] or None."""
        head = self.model.get_output_embeddings()
        return param(head, "bias") if hasattr(head, "bias") else None

    @abstractmethod
    def frozen_final_norm(self, update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The final norm applied to `update` [..., d] with its scale frozen at `residual`'s
        [..., d] and without the norm's bias: the linear map used for direct logit attribution."""

    # --- mixtures of experts (docs/method.md, "Experts"); dense families have none ----------
    def moe_layer(self, layer: int) -> MoeLayer | None:
        """Where `layer`'s mixture of experts lives (models/moe.py), or None: a dense FFN,
        read through `ffn_down` / `ffn_output_weights` as above."""
        return None

    # --- post-norm blocks and soft-capping (docs/method.md); most families have neither ----
    norm_gain_offset: float = 0.0  # RMSNorm gain γ' = weight + offset (Gemma: 1 + weight)
    final_logit_softcap: float | None = None  # c of the model's final c·tanh(logits / c)

    def post_attention_norm(self, layer: int) -> nn.Module | None:
        """The norm on the attention block's *output* before the residual adds it (Gemma 2/3,
        OLMo-2), or None. Its input is the raw update y_i, its output what x_i receives."""
        return None

    def post_ffn_norm(self, layer: int) -> nn.Module | None:
        """The norm on the FFN block's output before the residual adds it, or None."""
        return None

    def post_norm_gain(self, norm: nn.Module) -> torch.Tensor:
        """γ' of an RMSNorm output norm: [d] float32 (the weight, plus `norm_gain_offset`)."""
        return param(norm).float() + self.norm_gain_offset

    def frozen_post_norm_scale(self, norm: nn.Module, raw: torch.Tensor) -> torch.Tensor:
        """D_i = γ' / sqrt(mean(y_i²) + eps) of the RMSNorm `norm` frozen at the block's raw
        output `raw` y [n, d]: [n, d] float32, so that norm(y) = D ⊙ y row by row."""
        # Any: nn.Module.__getattr__ would type these as Tensor | Module.
        eps: Any = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
        raw = raw.float()
        inv_rms = torch.rsqrt(raw.pow(2).mean(-1, keepdim=True) + float(eps))  # [n, 1]
        return self.post_norm_gain(norm) * inv_rms


def param(module: nn.Module, name: str = "weight") -> Any:
    """`module.<name>` (a weight, a bias or None), also where accelerate offloads it.

    Under a device map that offloads (to disk, or to CPU RAM under a GPU map) a module holds a
    meta tensor outside its own forward; accelerate keeps the real one in the module's hook's
    weights map and moves it to the execution device only during the forward. The method reads
    a few weights outside any forward, so they come from that map, moved where the layer runs.
    """
    value = getattr(module, name)
    if not isinstance(value, torch.Tensor) or value.device.type != "meta":
        return value
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", [hook]):
        weights = getattr(candidate, "weights_map", None)
        if getattr(candidate, "offload", False) and weights is not None and name in weights:
            return weights[name].to(candidate.execution_device)
    raise UnsupportedModelError(
        f"{type(module).__name__}.{name} is on the meta device and no offload map holds it "
        "(load the model with a device map that accelerate dispatched)"
    )


def zero_vector(weight: torch.Tensor, width: int) -> torch.Tensor:
    """A zero bias of `width` on `weight`'s dtype and device (for bias-free models)."""
    return torch.zeros(width, dtype=weight.dtype, device=weight.device)


def rms_frozen(
    update: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, offset: float
) -> torch.Tensor:
    """RMSNorm of `update` with the 1/rms of `residual` (float32)."""
    residual = residual.float()
    inv_rms = torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + eps)
    return update.float() * inv_rms * (weight.float() + offset)


def layernorm_frozen(
    update: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """LayerNorm of `update` (centred, it is linear) with the 1/σ of `residual`, no bias."""
    residual = residual.float()
    inv_std = torch.rsqrt(residual.var(-1, keepdim=True, unbiased=False) + eps)
    update = update.float()
    return (update - update.mean(-1, keepdim=True)) * inv_std * weight.float()


_REGISTRY: dict[str, type[ArchitectureAdapter]] = {}


def register(*model_types: str):
    """Class decorator: the adapter handles these `config.model_type`s."""

    def wrap(cls: type[ArchitectureAdapter]) -> type[ArchitectureAdapter]:
        for name in model_types:
            _REGISTRY[name] = cls
        return cls

    return wrap


def _import_families() -> None:
    """Import every family module, so each registers its adapter."""
    from lmscope.models import (  # noqa: F401
        bloom,
        gemma,
        gpt2,
        gpt_neo,
        gpt_neox,
        gptj,
        llama,
        moe,
        olmo,
        opt,
        phi,
        phi3,
    )


def supported_model_types() -> list[str]:
    """Every `config.model_type` lmscope traces."""
    _import_families()
    return sorted(_REGISTRY)


def supported_families() -> list[str]:
    """Every adapter family (protocol ModelFamily), sorted."""
    _import_families()
    return sorted({cls.family for cls in _REGISTRY.values()})


def adapter_for(model: nn.Module) -> ArchitectureAdapter:
    """The adapter for a loaded causal LM, or UnsupportedModelError naming what is supported."""
    _import_families()
    model_type = getattr(model.config, "model_type", "?")
    cls = _REGISTRY.get(model_type)
    if cls is None:
        raise UnsupportedModelError(
            f"unsupported architecture '{model_type}': lmscope supports "
            + ", ".join(supported_model_types())
        )
    return cls(model)


__all__ = [
    "ArchitectureAdapter",
    "adapter_for",
    "layernorm_frozen",
    "register",
    "rms_frozen",
    "supported_families",
    "supported_model_types",
    "zero_vector",
]
