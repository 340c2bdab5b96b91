"""Causal checks on tiny models (lmscope.causal; docs/method.md, "Causal checks"): an empty
ablation is the plain forward pass, edge and head ablations agree, patching from the same prompt
changes nothing, mean and patch replace exactly what the method says, and route verification."""

from __future__ import annotations

import pytest
import torch

import lmscope
from lmscope.causal.ablate import Plan, ablated_logits, forward_logits, record
from lmscope.causal.attention import edges_supported
from lmscope.causal.targets import AblationError, parse_target, parse_targets
from lmscope.errors import LmscopeError, NeedsModelError
from lmscope.models.adapter import adapter_for
from lmscope.tracing.capture import capture_layers
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny, save_tiny_folder

NO_REGISTRY = {"gpt_neo", "gptj", "bloom"}  # their attention does not call the registry


def prompt_ids(loaded) -> list[int]:
    return [0, *loaded.tokenizer.encode(TINY_PROMPT)]


@pytest.mark.parametrize("family", FAMILIES)
def test_ablating_nothing_gives_the_plain_forward_logits(family):
    loaded = build_tiny(family)
    adapter, ids = adapter_for(loaded.model), prompt_ids(loaded)
    plain = forward_logits(loaded.model, ids)
    assert torch.equal(ablated_logits(adapter, ids, Plan(len(ids)), "zero"), plain)
    # The wrapper is installed only for the pass and every config is restored.
    assert loaded.model.config._attn_implementation == "eager"
    assert (edges_supported(adapter) is None) == (family not in NO_REGISTRY)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "phi3", "mixtral"])
def test_ablating_every_edge_of_a_head_equals_zeroing_its_output_projection_slice(family):
    loaded = build_tiny(family)
    adapter, ids = adapter_for(loaded.model), prompt_ids(loaded)
    n, layer, head = len(ids), adapter.n_layers - 1, 1
    edges = Plan(n)
    edges.edge_mask(layer, adapter.n_heads)[head] = torch.ones(n, n, dtype=torch.bool).tril()
    whole_head = Plan.of_targets([parse_target(f"L{layer}H{head}")], n, adapter.n_heads)
    by_edges = ablated_logits(adapter, ids, edges, "zero")
    by_slice = ablated_logits(adapter, ids, whole_head, "zero")
    assert (by_edges - by_slice).abs().max() <= 1e-6
    assert (by_slice - forward_logits(loaded.model, ids)).abs().max() > 1e-4  # it did something


def test_edge_ablation_is_refused_where_attention_bypasses_the_registry():
    loaded = build_tiny("gpt_neo")
    adapter, ids = adapter_for(loaded.model), prompt_ids(loaded)
    plan = Plan.of_targets(parse_targets("L1:5<-2"), len(ids), adapter.n_heads)
    with pytest.raises(AblationError, match="not supported for gpt_neo"):
        ablated_logits(adapter, ids, plan, "zero")
    # Heads, FFN nodes and neurons use module hooks: they work on every family.
    plan = Plan.of_targets(parse_targets("L1H0,L0.ffn@3,L1.N2"), len(ids), adapter.n_heads)
    changed = ablated_logits(adapter, ids, plan, "zero")
    assert not torch.equal(changed, forward_logits(loaded.model, ids))


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "olmoe", "bloom"])
def test_patching_every_component_from_the_same_prompt_changes_nothing(family):
    loaded = build_tiny(family)
    adapter, ids = adapter_for(loaded.model), prompt_ids(loaded)
    n, last = len(ids), adapter.n_layers - 1
    written = [f"L{layer}H{h}" for layer in range(adapter.n_layers) for h in range(adapter.n_heads)]
    written += [f"L{layer}.ffn" for layer in range(adapter.n_layers)]
    if adapter.moe_layer(last) is None:
        written += [f"L{last}.N{k}" for k in range(4)]
    if edges_supported(adapter) is None:
        written += [f"L0:{i}<-{j}" for i in range(n) for j in range(i + 1)]
    plan = Plan.of_targets(parse_targets(written), n, adapter.n_heads)
    reference = record(adapter, ids, plan, patch=True)
    patched = ablated_logits(adapter, ids, plan, "patch", reference)
    torch.testing.assert_close(patched, forward_logits(loaded.model, ids), atol=1e-5, rtol=0)


def layer0(adapter, ids, plan=None, kind="zero", reference=None):
    """Layer 0's capture (the engine's own hooks) of a plain or ablated pass."""
    found = []
    with capture_layers(adapter, found.append):
        if plan is None:
            forward_logits(adapter.model, ids)
        else:
            ablated_logits(adapter, ids, plan, kind, reference)
    return found[0]


def test_mean_and_patch_replace_what_the_method_says_by_hand():
    """Layer 0 of a tiny Llama (no biases): an edge's term A[h,i,j]·v[j]·W_O[h] becomes
    A·mean_j' v[j']·W_O (mean) or A'·v'[j]·W_O (patch, the other prompt's); an FFN node's
    update becomes its mean over positions; a neuron's activation the other prompt's."""
    loaded = build_tiny("llama")
    adapter, ids = adapter_for(loaded.model), prompt_ids(loaded)
    other = [
        0,
        *loaded.tokenizer.encode("when john and mary went to the store , mary gave a drink to"),
    ]
    assert len(other) == len(ids)
    head, i, j = 3, 9, 2
    g, w_o = adapter.kv_head_of(head), adapter.head_output_weights(0)[head]  # [dh, d]
    clean, patch_source = layer0(adapter, ids), layer0(adapter, other)
    a, v = clean.attn_probs[head, i, j], clean.values[:, g]  # v [n, dh]

    plan = Plan.of_targets([parse_target(f"L0H{head}:{i}<-{j}")], len(ids), adapter.n_heads)
    mean = layer0(adapter, ids, plan, "mean", record(adapter, ids, plan, patch=False))
    expected = clean.attn_out[i] + a * (v.mean(0) - v[j]) @ w_o
    torch.testing.assert_close(mean.attn_out[i], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(mean.attn_out[:i], clean.attn_out[:i])  # other rows untouched

    patched = layer0(adapter, ids, plan, "patch", record(adapter, other, plan, patch=True))
    a2, v2 = patch_source.attn_probs[head, i, j], patch_source.values[j, g]
    expected = clean.attn_out[i] + (a2 * v2 - a * v[j]) @ w_o
    torch.testing.assert_close(patched.attn_out[i], expected, atol=1e-5, rtol=0)

    # The engine's capture hooks run before the ablation's on the same module, so they see a
    # block's output before it is replaced: read the replacement in the layer's output.
    plan = Plan.of_targets(parse_targets(f"L0.ffn@{i},L0.N7@{j}"), len(ids), adapter.n_heads)
    w_out = adapter.ffn_output_weights(0)[7]  # [d]
    mean = layer0(adapter, ids, plan, "mean", record(adapter, ids, plan, patch=False))
    before_ffn = clean.resid_in[i] + clean.attn_out[i]
    torch.testing.assert_close(
        mean.resid_out[i], before_ffn + clean.ffn_out.mean(0), atol=1e-5, rtol=0
    )
    mean_activation = clean.ffn_act[:, 7].mean()
    expected = clean.ffn_out[j] + (mean_activation - clean.ffn_act[j, 7]) * w_out
    torch.testing.assert_close(mean.ffn_out[j], expected, atol=1e-5, rtol=0)
    patched = layer0(adapter, ids, plan, "patch", record(adapter, other, plan, patch=True))
    torch.testing.assert_close(
        patched.resid_out[i], before_ffn + patch_source.ffn_out[i], atol=1e-5, rtol=0
    )
    expected = clean.ffn_out[j] + (patch_source.ffn_act[j, 7] - clean.ffn_act[j, 7]) * w_out
    torch.testing.assert_close(patched.ffn_out[j], expected, atol=1e-5, rtol=0)


def test_targets_are_parsed_and_bad_ones_refused_with_the_forms():
    labels = ["L23H0", "L23H0:14<-2", "L23:14<-2", "L5.ffn@14", "L5.ffn", "L5.N120@14", "L5.N1"]
    assert [t.label() for t in parse_targets(",".join(labels))] == labels
    assert parse_target("L5.mlp@3").label() == "L5.ffn@3"
    for bad, message in [
        ("L23H0@4", "the forms are"),
        ("L5.attn", "the forms are"),
        ("L2:1<-3", "the model is causal"),
        ("nonsense", "the forms are"),
    ]:
        with pytest.raises(AblationError, match=message):
            parse_target(bad)


@pytest.fixture(scope="module")
def traced():
    return lmscope.trace(TINY_PROMPT, model=build_tiny("llama"))


def test_an_ablation_reports_the_change_of_the_traced_prediction(traced):
    result = traced.ablate("L2H0,L2H1,L2H2,L1.ffn@13")
    assert result.targets == ["L2H0", "L2H1", "L2H2", "L1.ffn@13"]
    assert result.token_id == traced.data.predictions.ids[-1][0]
    assert result.logprob == pytest.approx(
        float(torch.tensor(traced.data.predictions.probs[-1][0]).log()), abs=1e-5
    )
    assert result.delta_logprob == result.ablated_logprob - result.logprob != 0
    assert len(result.top) == 8 and result.top[0].prob >= result.top[-1].prob
    with pytest.raises(AblationError, match="same token count"):
        traced.ablate("L0H0", kind="patch", patch="when mary")
    with pytest.raises(AblationError, match="out of range"):
        traced.ablate("L9H0")
    with pytest.raises(AblationError, match="unknown ablation kind"):
        traced.ablate("L0H0", kind="scramble")


def test_a_saved_trace_without_its_model_says_ablation_needs_the_model(traced, tmp_path):
    saved = lmscope.load_trace(traced.save(tmp_path / "t.lmtrace"))
    with pytest.raises(NeedsModelError, match="needs the model"):
        saved.ablate("L0H0")
    with pytest.raises(NeedsModelError, match="needs the model"):
        saved.verify_route()


def test_verify_route_at_tau_zero_keeps_the_full_probability(traced):
    everything = traced.verify_route(threshold=0.0, n_random=1)
    assert everything.kept_edges == everything.total_edges
    assert everything.route_prob == pytest.approx(everything.full_prob, abs=1e-6)
    assert everything.kept == pytest.approx(1.0, abs=1e-5)


def test_verify_route_records_a_reproducible_seeded_baseline(traced):
    # τ = 0.01: on this random model the route at 0.04 is the residual stream alone.
    first = traced.verify_route(threshold=0.01, n_random=3, seed=7)
    again = traced.verify_route(threshold=0.01, n_random=3, seed=7)
    other = traced.verify_route(threshold=0.01, n_random=3, seed=8)
    assert first.seed == 7 and len(first.random_probs) == 3
    assert first.random_probs == again.random_probs and first.route_prob == again.route_prob
    assert other.random_probs != first.random_probs
    assert 0 < first.kept_edges < first.total_edges
    wire = first.to_wire()
    assert wire["seed"] == 7 and wire["kept"] == pytest.approx(first.route_prob / first.full_prob)
    mean = traced.verify_route(threshold=0.01, kind="mean", n_random=1)
    assert mean.kind == "mean" and mean.route_prob != first.route_prob
    with pytest.raises(LmscopeError, match="zero' or 'mean"):
        traced.verify_route(kind="patch")


def test_lmscope_verify_checks_a_saved_trace_on_its_model(model_folder, tmp_path, capsys):
    from lmscope.cli import main

    saved = tmp_path / "t.lmtrace"
    assert (
        main(["trace", TINY_PROMPT, "--model", str(model_folder), "--out", str(saved), "--quiet"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "verify",
                str(saved),
                "--threshold",
                "0.01",
                "--random",
                "2",
                "--quiet",
                "--json",
                str(tmp_path / "v.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "faithfulness" in out and "seed 0" in out
    assert (tmp_path / "v.json").exists()
    assert (
        main(["verify", str(saved), "--ablate", "L1H0,L0.ffn@3", "--kind", "mean", "--quiet"]) == 0
    )
    assert "Δ" in capsys.readouterr().out
    assert main(["verify", str(saved), "--ablate", "L1Hx", "--quiet"]) == 1
    assert "the forms are" in capsys.readouterr().err
    other = save_tiny_folder("qwen2", tmp_path / "other")
    assert main(["verify", str(saved), "--model", str(other), "--quiet"]) == 1
    assert "is not this trace's model" in capsys.readouterr().err
