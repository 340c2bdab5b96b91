# mypy: disable-error-code="union-attr,operator,return-value,arg-type,index,assignment"
# (transformers module trees: torch types every nn.Module attribute as Tensor | Module.)
"""Adapter for Gemma 1, 2 and 3 (model_types "gemma", "gemma2", "gemma3_text", "gemma3").

The Llama layout (q/k/v/o projections, rotary, GQA/MQA, a gated FFN `down_proj(act(gate) ·
up)` with GeGLU's `gelu_pytorch_tanh`, `model.norm`, tied embeddings), with:

- RMSNorms that scale by (1 + weight): `norm_gain_offset` 1, for the final norm's frozen map and
  for the output norms below.
- Embeddings scaled by sqrt(d) inside the embedding module: the captured input of layer 0, the
  X nodes' vector, already holds the scaled embedding.
- Gemma 2 and 3 only: an output norm on each block (`post_attention_layernorm` on the attention
  output, `post_feedforward_layernorm` on the FFN output) on top of the pre-norms
  (`input_layernorm`, `pre_feedforward_layernorm`). The engine freezes their scale at the
  block's raw output (docs/method.md, "Post-norm blocks"). Gemma 1 has pre-norms only; its
  `post_attention_layernorm` is, as in Llama, the FFN's *pre*-norm, so the adapter tells the
  two apart by `pre_feedforward_layernorm`, which only the post-norm layouts have.
- Gemma 2: attention-logit soft-capping, alternating sliding-window layers and
  `query_pre_attn_scalar`; Gemma 3: QK-norm, sliding windows and a local rotary base. All act on
  queries, keys and scores only, so they shape the captured probabilities and nothing else.
  Gemma 2's final-logit soft-capping (`final_logit_softcap`) acts after the unembedding: the
  predictions are the model's capped logits, the projections are pre-cap.
- "gemma3" (Gemma 3 4B and larger) is a vision-language `Gemma3ForConditionalGeneration`:
  lmscope traces text prompts through its language model (`model.language_model`), leaving the
  vision tower unused. That forward does not soft-cap its logits (only `Gemma3ForCausalLM`
  does), so neither do its projections' notes.

Bidirectional variants (`use_bidirectional_attention`, e.g. EmbeddingGemma) let a token attend to
later ones, which the causal method cannot split; they are refused.
"""

from __future__ import annotations

from torch import nn

from lmscope.errors import UnsupportedModelError
from lmscope.models.adapter import register
from lmscope.models.llama import LlamaAdapter


@register("gemma", "gemma2", "gemma3_text")
class GemmaAdapter(LlamaAdapter):
    family = "gemma"
    norm_gain_offset = 1.0  # Gemma's RMSNorm: x / rms(x) · (1 + weight)

    def __init__(self, model: nn.Module) -> None:
        config = model.config.get_text_config()
        if getattr(config, "use_bidirectional_attention", False):
            raise UnsupportedModelError(
                f"{config.model_type} with use_bidirectional_attention=True: its tokens attend "
                "to later tokens, and lmscope traces causal language models only"
            )
        super().__init__(model)
        self.final_logit_softcap = getattr(config, "final_logit_softcapping", None)
        self.post_norms = hasattr(self.layers()[0], "pre_feedforward_layernorm")

    def decoder(self) -> nn.Module:
        """The text decoder: the module holding `layers` and the final `norm`."""
        return self.model.model

    def layers(self) -> list[nn.Module]:
        return list(self.decoder().layers)

    def attention(self, layer: int) -> nn.Module:
        return self.decoder().layers[layer].self_attn

    def ffn(self, layer: int) -> nn.Module:
        return self.decoder().layers[layer].mlp

    def final_norm(self) -> nn.Module:
        return self.decoder().norm

    def post_attention_norm(self, layer: int) -> nn.Module | None:
        if not self.post_norms:
            return None  # Gemma 1: post_attention_layernorm is the FFN's pre-norm
        return self.decoder().layers[layer].post_attention_layernorm

    def post_ffn_norm(self, layer: int) -> nn.Module | None:
        return self.decoder().layers[layer].post_feedforward_layernorm if self.post_norms else None


@register("gemma3")
class Gemma3VisionLanguageAdapter(GemmaAdapter):
    """Gemma 3 with a vision tower: its language model, traced on text alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        # Gemma3ForConditionalGeneration returns lm_head's logits as they are: no cap applied.
        self.final_logit_softcap = None

    def decoder(self) -> nn.Module:
        return self.model.model.language_model
