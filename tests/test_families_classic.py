"""What the OPT, GPT-Neo, GPT-J and BLOOM adapters do beyond the invariants every family passes
(tests/test_engine_invariants.py): the variants they refuse and why, OPT's projections around
the residual stream, BLOOM's embedding LayerNorm, and the message for an unknown family."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from lmscope.errors import UnsupportedModelError
from lmscope.models.adapter import adapter_for
from lmscope.tracing.capture import capture_layers, run_forward
from lmscope.tracing.engine import run_trace
from lmscope.tracing.layers import attribute_layer
from lmscope.tracing.tokens import tokenize
from tests.conftest import TINY_CONFIGS, TINY_PROMPT, build_tiny


def from_config(config: transformers.PretrainedConfig) -> torch.nn.Module:
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval().requires_grad_(False)


def test_an_unknown_model_type_is_named_and_the_supported_ones_listed():
    model = from_config(
        transformers.GPTBigCodeConfig(vocab_size=64, n_embd=32, n_layer=1, n_head=4)
    )
    with pytest.raises(UnsupportedModelError) as error:
        adapter_for(model)
    message = str(error.value)
    assert "'gpt_bigcode'" in message
    for family in ("bloom", "gpt_neo", "gptj", "opt", "gpt2", "llama"):
        assert family in message


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            transformers.OPTConfig(
                vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                num_attention_heads=4, do_layer_norm_before=False,
            ),
            "do_layer_norm_before=False",
        ),
        (
            transformers.BloomConfig(
                vocab_size=64, hidden_size=32, n_layer=1, n_head=4,
                apply_residual_connection_post_layernorm=True,
            ),
            "apply_residual_connection_post_layernorm=True",
        ),
        (
            transformers.BloomConfig(
                vocab_size=64, hidden_size=32, n_layer=1, n_head=4, pretraining_tp=2,
                slow_but_exact=True,
            ),
            "slow_but_exact=True",
        ),
    ],
    ids=["opt-post-layernorm", "bloom-residual-after-norm", "bloom-sliced-projections"],
)  # fmt: skip
def test_variants_whose_layer_output_is_not_input_plus_updates_are_refused(config, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        adapter_for(from_config(config))


def opt_with_projections() -> torch.nn.Module:
    """A pre-LN OPT whose embeddings (16 wide) are projected in and out of a 32-wide stream."""
    config = TINY_CONFIGS["opt"]()
    config.word_embed_proj_dim = 16
    model = from_config(config)
    with torch.no_grad():  # non-zero biases, as build_tiny makes them
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape) * 0.2)
    return model


def test_opt_project_out_folds_into_the_unembedding_so_the_lens_of_the_last_layer_is_the_logits():
    torch.manual_seed(0)
    model = opt_with_projections()
    adapter = adapter_for(model)
    assert adapter.unembedding_weight().shape == (64, 32)  # [V, d], not [V, 16]
    ids = torch.tensor([0, 2, 3, 4, 5])
    layers: list = []
    with capture_layers(adapter, layers.append):
        logits = run_forward(model, ids)
    with torch.no_grad():
        lens = adapter.final_norm()(layers[-1].resid_out) @ adapter.unembedding_weight().T
    assert torch.allclose(lens, logits, atol=1e-5)


def test_opt_with_projected_embeddings_keeps_the_invariants_of_every_family():
    torch.manual_seed(0)
    model = opt_with_projections()
    adapter = adapter_for(model)
    ids = torch.tensor([0, 2, 3, 4, 5, 6, 7])
    layers: list = []
    with capture_layers(adapter, layers.append):
        run_forward(model, ids)
    for cap in layers:  # x' = x + attention + FFN, and each target's contributions sum to 1
        whole = cap.resid_in + cap.attn_out + cap.ffn_out
        assert torch.allclose(whole, cap.resid_out, atol=1e-5)
        result = attribute_layer(adapter, cap, keep_above=-1.0)
        per_target = torch.zeros(len(ids)).index_add_(
            0, result.edge_target, result.edge_heads.sum(-1)
        )
        assert torch.allclose(per_target + result.residual_attention, torch.ones(len(ids)))
    data = run_trace(dataclasses.replace(build_tiny("opt"), model=model), TINY_PROMPT)
    assert data.edges.layer.size
    # predictions through the unembedding's own input (after project_out), as the model's
    logits = run_forward(model, torch.tensor(data.tokens.ids.tolist()))
    top = torch.softmax(logits, -1).topk(data.predictions.ids.shape[1], dim=-1)
    assert data.predictions.ids.tolist() == top.indices.tolist()
    assert torch.allclose(torch.from_numpy(data.predictions.probs), top.values, atol=1e-6)


def test_bloom_s_embedding_node_is_the_stream_after_the_embedding_layernorm():
    loaded = build_tiny("bloom")
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    layers: list = []
    with capture_layers(adapter, layers.append):
        run_forward(loaded.model, ids)
    transformer = loaded.model.transformer
    with torch.no_grad():
        expected = transformer.word_embeddings_layernorm(transformer.word_embeddings(ids))
    assert torch.allclose(layers[0].resid_in, expected, atol=1e-6)
    raw = transformer.word_embeddings(ids)
    assert not torch.allclose(layers[0].resid_in, raw, atol=1e-3)  # the norm did change it


def test_a_gpt_neo_local_layer_attends_only_inside_its_window_in_the_captured_probabilities():
    loaded = build_tiny("gpt_neo")  # layer 1 is local with a window of 4
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    layers: list = []
    with capture_layers(adapter, layers.append):
        run_forward(loaded.model, ids)
    n = len(ids)
    window = loaded.model.config.window_size
    too_far = torch.ones(n, n, dtype=torch.bool).tril(-window)  # j <= i - window
    assert bool(too_far.any())
    assert float(layers[1].attn_probs[:, too_far].abs().max()) == 0.0
    assert float(layers[0].attn_probs[:, too_far].min()) > 0.0  # the global layer reaches them
