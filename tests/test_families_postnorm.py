"""Post-norm blocks, soft-capping and the Gemma/OLMo specifics (docs/method.md, "Post-norm
blocks" and "Soft-capping"), beyond the invariants every family passes
(tests/test_engine_invariants.py, test_bench.py, test_cards.py, test_api.py).

A post-norm block's output norm is frozen at the block's raw output y_i as the diagonal D_i; the
parts are D_i ⊙ (head part), D^ffn_i ⊙ (neuron write), and the constants become D_i ⊙ b per
position. Each claim is checked against what the norm modules themselves computed, seen through
hooks of this file's own (not the capture's), on tiny models whose norm gains are not the
identity (tests/conftest.py perturbs them).
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from lmscope.attribution.neurons import neuron_contributions
from lmscope.attribution.proximity import EPSILON, scaled_parts_proximity
from lmscope.cards import component_card
from lmscope.components import ComponentRef
from lmscope.errors import UnsupportedModelError
from lmscope.graph import RESIDUAL, Node
from lmscope.models.adapter import adapter_for
from lmscope.traces.data import LOGIT_SOFTCAP_KEY, logit_softcap
from lmscope.traces.trace import Trace
from lmscope.tracing.capture import capture_layers, run_forward
from lmscope.tracing.engine import TraceOptions, run_trace
from lmscope.tracing.layers import attribute_layer
from lmscope.tracing.live import LiveModel
from lmscope.tracing.tokens import tokenize
from tests.conftest import TINY_CONFIGS, TINY_PROMPT, build_tiny

POST_NORM = ["gemma2", "gemma3_text", "olmo2"]


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def traced_with_norm_io(loaded):
    """(adapter, ids, captures, logits, norm_io): norm_io[(layer, "attention"|"ffn")] is the
    (input, output) [n, d] each output norm saw (none without output norms), read by hooks
    independent of the capture's."""
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    norm_io: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for layer in range(adapter.n_layers):
        for block, norm in (
            ("attention", adapter.post_attention_norm(layer)),
            ("ffn", adapter.post_ffn_norm(layer)),
        ):
            if norm is None:
                continue

            def seen(_module, args, output, key=(layer, block)):
                norm_io[key] = (args[0][0].detach().clone(), output[0].detach().clone())

            handles.append(norm.register_forward_hook(seen))
    layers: list = []
    try:
        with capture_layers(adapter, layers.append):
            logits = run_forward(loaded.model, ids)
    finally:
        for handle in handles:
            handle.remove()
    return adapter, ids, layers, logits, norm_io


@pytest.fixture(scope="module", params=POST_NORM)
def post_norm(request):
    return traced_with_norm_io(build_tiny(request.param))


def test_the_output_norm_gains_are_not_the_identity(post_norm):
    adapter, *_ = post_norm
    gain = adapter.post_norm_gain(adapter.post_ffn_norm(0))
    assert float((gain - 1.0).abs().max()) > 0.3  # γ' is exercised, not the all-ones init


def test_the_frozen_scale_times_the_raw_update_is_the_norm_module_s_own_output(post_norm):
    _adapter, _ids, layers, _logits, norm_io = post_norm
    for cap in layers:
        for block, scale in (("attention", cap.attn_scale), ("ffn", cap.ffn_scale)):
            raw, normed = norm_io[(cap.layer, block)]
            assert scale is not None
            assert relative(scale * raw, normed) <= 1e-6
            assert relative(raw, normed) > 0.1  # the norm did change the update


def test_the_captured_updates_are_the_post_normed_ones_the_residual_receives(post_norm):
    _adapter, _ids, layers, _logits, norm_io = post_norm
    for cap in layers:
        assert torch.equal(cap.attn_out, norm_io[(cap.layer, "attention")][1])
        assert torch.equal(cap.ffn_out, norm_io[(cap.layer, "ffn")][1])
        whole = cap.resid_in + cap.attn_out + cap.ffn_out  # x + PN_att + PN_ffn = x'
        assert (whole - cap.resid_out).abs().max() <= 1e-4 * cap.resid_out.abs().max()


def test_scaled_head_parts_and_the_per_position_constant_rebuild_the_attention_update(post_norm):
    adapter, _ids, layers, _logits, _io = post_norm
    kv = torch.tensor([adapter.kv_head_of(h) for h in range(adapter.n_heads)])
    for cap in layers:
        w_o = adapter.head_output_weights(cap.layer).float()
        u = torch.einsum("nhk,hkd->hnd", cap.values[:, kv], w_o)  # [H, n, d]
        parts = torch.einsum("hij,hjd->ijd", cap.attn_probs, u) * cap.attn_scale[:, None]  # z'
        constant = cap.attn_scale * adapter.attention_bias(cap.layer).float()  # [n, d]
        rebuilt = parts.sum(1) + constant
        assert (rebuilt - cap.attn_out).abs().max() <= 1e-4 * cap.attn_out.abs().max()


def test_scaled_neuron_writes_and_the_scaled_bias_rebuild_the_ffn_update(post_norm):
    adapter, _ids, layers, _logits, _io = post_norm
    for cap in layers:
        w_out = adapter.ffn_output_weights(cap.layer).float()  # [d_ffn, d]
        writes = cap.ffn_act @ w_out + adapter.ffn_bias(cap.layer).float()  # Σ_k a W_out + b
        rebuilt = cap.ffn_scale * writes
        assert (rebuilt - cap.ffn_out).abs().max() <= 1e-4 * cap.ffn_out.abs().max()


def test_the_neuron_step_equals_a_literal_float64_sum_over_scaled_writes(post_norm):
    adapter, _ids, layers, _logits, _io = post_norm
    for cap in layers:
        w_out = adapter.ffn_output_weights(cap.layer).float()
        whole, rest = cap.resid_out, cap.resid_out - cap.ffn_out
        got = neuron_contributions(cap.ffn_act, w_out, whole, rest, cap.ffn_scale)
        y = whole.double()[:, None, :]  # [n, 1, d]
        writes = cap.ffn_act.double()[:, :, None] * w_out.double()[None]  # [n, d_ffn, d]
        writes = writes * cap.ffn_scale.double()[:, None, :]
        prox = (y.abs() - (y - writes).abs()).sum(-1).clamp_min(EPSILON)
        rest_prox = (y[:, 0].abs() - (y[:, 0] - rest.double()).abs()).sum(-1).clamp_min(EPSILON)
        total = prox.sum(-1) + rest_prox
        assert (got.contribution.double() - prox / total[:, None]).abs().max() < 1e-6
        assert (got.rest.double() - rest_prox / total).abs().max() < 1e-6


def test_the_attention_step_without_the_scale_would_score_other_parts(post_norm):
    """The scale is not a no-op: dropping it changes the contributions (the check above and the
    dense reference would catch an engine that forgot it)."""
    adapter, _ids, layers, _logits, _io = post_norm
    cap = layers[0]
    scaled = attribute_layer(adapter, cap, keep_above=-1.0)
    cap.attn_scale, saved = None, cap.attn_scale
    try:
        plain = attribute_layer(adapter, cap, keep_above=-1.0)
    finally:
        cap.attn_scale = saved
    assert float((scaled.edge_heads - plain.edge_heads).abs().max()) > 1e-3


# --- the kernel ------------------------------------------------------------------------------
def literal(whole, coef, vectors, scale):
    parts = coef.double()[:, :, None] * vectors.double()[None] * scale.double()[:, None, :]
    y = whole.double()[:, None, :]
    return (y.abs() - (y - parts).abs()).sum(-1).clamp_min(EPSILON)


@pytest.mark.parametrize("seed", range(3))
def test_the_kernel_with_a_row_scale_equals_the_literal_sum(seed):
    g = torch.Generator().manual_seed(seed)
    b, p, d = 7, 50, 64
    whole = (
        torch.randn(b, d, generator=g) * torch.logspace(-3, 2, d)[torch.randperm(d, generator=g)]
    )
    coef = torch.rand(b, p, generator=g) ** 4
    coef[:, ::7] *= -3.0
    vectors = torch.randn(p, d, generator=g) * 2.0
    scale = torch.rand(b, d, generator=g) * 30.0  # post-norm scales reach the hundreds
    scale[:, ::9] *= -1.0  # a negative gain in some coordinates
    got = scaled_parts_proximity(whole, coef, vectors, scale).double()
    expected = literal(whole, coef, vectors, scale)
    norm = whole.abs().sum(-1, keepdim=True).double()
    assert ((got - expected).abs() / norm).max() < 1e-6
    assert bool((expected > 10 * EPSILON).any() & (expected <= EPSILON).any())  # both kinds


def test_a_row_scale_of_ones_gives_the_unscaled_kernel_bit_for_bit():
    g = torch.Generator().manual_seed(5)
    whole, coef = torch.randn(9, 48, generator=g), torch.rand(9, 30, generator=g)
    vectors = torch.randn(30, 48, generator=g) * 3.0
    plain = scaled_parts_proximity(whole, coef, vectors)
    assert torch.equal(scaled_parts_proximity(whole, coef, vectors, torch.ones(9, 48)), plain)


# --- soft-capping ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def capped():
    loaded = build_tiny("gemma2")
    return loaded, run_trace(loaded, TINY_PROMPT, TraceOptions(detail="all"))


def test_predictions_are_the_capped_logits_and_the_lens_is_pre_cap(capped):
    loaded, data = capped
    adapter = adapter_for(loaded.model)
    cap = loaded.model.config.final_logit_softcapping
    assert adapter.final_logit_softcap == cap and data.extra[LOGIT_SOFTCAP_KEY] == cap
    ids = torch.tensor(data.tokens.ids.tolist())
    layers: list = []
    with capture_layers(adapter, layers.append):
        logits = run_forward(loaded.model, ids)  # the model's own, capped
    with torch.no_grad():
        pre_cap = adapter.final_norm()(layers[-1].resid_out) @ adapter.unembedding_weight().T
    assert torch.allclose(logits, cap * torch.tanh(pre_cap / cap), atol=1e-5)
    assert float((pre_cap - logits).abs().max()) > 0.5  # the cap bites on this model
    top = torch.softmax(logits, -1).topk(data.predictions.ids.shape[1], dim=-1)
    assert data.predictions.ids.tolist() == top.indices.tolist()
    assert torch.allclose(torch.from_numpy(data.predictions.probs), top.values, atol=1e-6)
    trace = Trace(data)
    last = Node(RESIDUAL, adapter.n_layers - 1, data.n_tokens - 1)
    lens = trace.projection(last, "lens")
    expected = pre_cap[-1].topk(len(lens["top"]))
    assert trace.projection_ids(last, "lens")["top"] == expected.indices.tolist()
    assert [v for _t, v, _rank in lens["top"]] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert max(v for _t, v, _rank in lens["top"]) > cap  # pre-cap: above what the cap allows


def test_cards_of_a_capping_model_say_their_scores_are_pre_cap_logits(capped):
    loaded, data = capped
    trace = Trace(data, live=LiveModel(loaded, [int(i) for i in data.tokens.ids]))
    result = component_card(ComponentRef("ffn", 1), trace, threshold=0.01)
    assert result["promoted"]
    notes = " ".join(result["notes"])
    assert "pre-cap logits" in notes and "c = 0.5" in notes
    uncapped = run_trace(build_tiny("gemma3_text"), TINY_PROMPT)
    assert LOGIT_SOFTCAP_KEY not in uncapped.extra
    plain = component_card(ComponentRef("ffn", 1), Trace(uncapped), threshold=0.01)
    assert "pre-cap" not in " ".join(plain["notes"])


@pytest.mark.parametrize(
    ("value", "read"), [(30.0, 30.0), (2, 2.0), (0.0, None), (-1.0, None), (math.inf, None),
                        (math.nan, None), ("30", None), (True, None), (None, None)],
)  # fmt: skip
def test_only_a_positive_finite_softcap_is_read_from_a_trace(value, read):
    extra = {} if value is None else {LOGIT_SOFTCAP_KEY: value}
    assert logit_softcap(extra) == read


# --- Gemma and OLMo specifics ----------------------------------------------------------------
@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_a_sliding_layer_attends_only_inside_its_window_and_far_sources_get_only_the_floor(
    family,
):
    loaded = build_tiny(family)  # layer 0 slides with a window of 4, layer 1 is global
    adapter, ids, layers, _logits, _io = traced_with_norm_io(loaded)
    n, window = len(ids), loaded.model.config.sliding_window
    too_far = torch.ones(n, n, dtype=torch.bool).tril(-window)  # j <= i - window
    assert bool(too_far.any())
    assert float(layers[0].attn_probs[:, too_far].abs().max()) == 0.0
    assert float(layers[1].attn_probs[:, too_far].min()) > 0.0
    result = attribute_layer(adapter, layers[0], keep_above=-1.0)
    far = too_far[result.edge_target, result.edge_source]
    assert float(result.edge_heads[far].max()) < 1e-4  # ε / Σ prox: never above min_threshold


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_the_embedding_node_is_the_sqrt_d_scaled_embedding(family):
    loaded = build_tiny(family)
    adapter, ids, layers, _logits, _io = traced_with_norm_io(loaded)
    raw = loaded.model.get_input_embeddings().weight[ids]
    assert torch.allclose(layers[0].resid_in, raw * math.sqrt(adapter.d_model), atol=1e-6)
    assert not torch.allclose(layers[0].resid_in, raw, atol=1e-3)


def test_gemma_1_has_no_output_norms_its_post_attention_layernorm_is_the_ffn_pre_norm():
    loaded = build_tiny("gemma")
    adapter, ids, layers, _logits, norm_io = traced_with_norm_io(loaded)
    assert norm_io == {}
    assert adapter.post_attention_norm(0) is None and adapter.post_ffn_norm(0) is None
    assert all(c.attn_scale is None and c.ffn_scale is None for c in layers)
    assert adapter.norm_gain_offset == 1.0
    attention: list = []
    handle = adapter.attention(0).register_forward_hook(lambda _m, _a, out: attention.append(out))
    try:
        run_forward(loaded.model, ids)
    finally:
        handle.remove()
    assert torch.equal(layers[0].attn_out, attention[0][0][0])  # the raw update, un-normed


def test_bidirectional_gemma_is_refused_with_the_reason():
    config = TINY_CONFIGS["gemma3_text"]()
    config.use_bidirectional_attention = True
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with pytest.raises(UnsupportedModelError, match="use_bidirectional_attention"):
        adapter_for(model)


def test_olmo_heads_read_the_clipped_values():
    loaded = build_tiny("olmo")
    adapter, ids, layers, _logits, _io = traced_with_norm_io(loaded)
    clip = loaded.model.config.clip_qkv
    raw: list = []

    def unclipped(module, args, _output):  # the projection again, before the in-place clamp
        raw.append(torch.nn.functional.linear(args[0], module.weight, module.bias))

    handle = adapter.value_module(0).register_forward_hook(unclipped)
    try:
        run_forward(loaded.model, ids)
    finally:
        handle.remove()
    assert float(raw[0].abs().max()) > clip  # the clip bites on this model
    clipped = raw[0][0].clamp(-clip, clip)  # [n, H_kv·dh]
    assert torch.allclose(layers[0].values.flatten(1), clipped, atol=1e-7)


def tiny_gemma3_vision_language() -> torch.nn.Module:
    """Gemma 3 4B's layout: a Gemma3ForConditionalGeneration with a (tiny) SigLIP tower."""
    text = TINY_CONFIGS["gemma3_text"]()
    text.final_logit_softcapping = 0.5  # named in the config, not applied by this forward
    vision = transformers.SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14,
    )  # fmt: skip
    config = transformers.Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
        boi_token_index=61, eoi_token_index=62, image_token_index=63,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval().requires_grad_(False)


def tiny_olmo3() -> torch.nn.Module:
    """OLMo-3: OLMo-2's output norms plus sliding-window layers."""
    config = transformers.Olmo3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        bos_token_id=0, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize(
    ("build", "family"), [(tiny_gemma3_vision_language, "gemma"), (tiny_olmo3, "olmo2")],
    ids=["gemma3-vision-language", "olmo3"],
)  # fmt: skip
def test_layout_variants_trace_through_the_same_adapters(build, family):
    import dataclasses

    model = build()
    adapter = adapter_for(model)
    assert adapter.family == family and adapter.post_ffn_norm(0) is not None
    loaded = dataclasses.replace(build_tiny("llama"), model=model)
    _adapter, ids, layers, logits, _io = traced_with_norm_io(loaded)
    assert logits.shape == (len(ids), adapter.vocab_size)
    for cap in layers:
        whole = cap.resid_in + cap.attn_out + cap.ffn_out
        assert (whole - cap.resid_out).abs().max() <= 1e-4 * cap.resid_out.abs().max()
        writes = cap.ffn_act @ adapter.ffn_output_weights(cap.layer).float()
        rebuilt = cap.ffn_scale * (writes + adapter.ffn_bias(cap.layer).float())
        assert (rebuilt - cap.ffn_out).abs().max() <= 1e-4 * cap.ffn_out.abs().max()
        result = attribute_layer(adapter, cap, keep_above=-1.0)
        per_target = torch.zeros(len(ids)).index_add_(
            0, result.edge_target, result.edge_heads.sum(-1)
        )
        assert torch.allclose(per_target + result.residual_attention, torch.ones(len(ids)))
    # The adapter's cap is what the forward does: none (Gemma3ForConditionalGeneration ignores
    # its text config's final_logit_softcapping), so the logits are the lens of the last layer.
    assert adapter.final_logit_softcap is None
    with torch.no_grad():
        lens = adapter.final_norm()(layers[-1].resid_out) @ adapter.unembedding_weight().T
    assert torch.allclose(logits, lens, atol=1e-5)
    assert run_trace(loaded, TINY_PROMPT).edges.layer.size
