"""The method's invariants (docs/method.md) on a tiny random-init model of every family."""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import pytest
import torch

from lmscope.attribution import budget, decompose
from lmscope.attribution import neurons as neuron_step
from lmscope.attribution.neurons import neuron_contributions
from lmscope.graph import (
    EMBEDDING,
    FFN,
    POST_ATTENTION,
    RAW,
    RENORMALIZE,
    RESIDUAL,
    ContributionGraph,
    Node,
)
from lmscope.models.adapter import adapter_for
from lmscope.tracing.capture import capture_layers, run_forward
from lmscope.tracing.engine import TraceOptions, run_trace
from lmscope.tracing.experts import reconstruct_ffn
from lmscope.tracing.layers import attribute_layer
from lmscope.tracing.tokens import tokenize
from tests.conftest import TINY_PROMPT


def captured_layers(loaded):
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    layers = []
    with torch.inference_mode(), capture_layers(adapter, layers.append):
        loaded.model(input_ids=ids[None], use_cache=False)
    return adapter, ids, layers


def test_capturing_leaves_logits_unchanged(tiny_model):
    adapter = adapter_for(tiny_model.model)
    ids = torch.tensor(tokenize(tiny_model, TINY_PROMPT, True, adapter.context_length))
    plain = run_forward(tiny_model.model, ids)
    with capture_layers(adapter, lambda _captured: None):
        hooked = run_forward(tiny_model.model, ids)
    assert torch.equal(plain, hooked)


def test_hooks_are_removed_even_when_the_pass_fails(tiny_model):
    adapter = adapter_for(tiny_model.model)

    def explode(_captured):
        raise RuntimeError("boom")

    ids = torch.tensor([0, 2, 3])
    with pytest.raises(RuntimeError, match="boom"), capture_layers(adapter, explode):
        run_forward(tiny_model.model, ids)
    hooked = [m for m in tiny_model.model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooked == []


def test_attention_parts_and_biases_reconstruct_every_block_output(tiny_model):
    adapter, _ids, layers = captured_layers(tiny_model)
    kv = torch.tensor([adapter.kv_head_of(h) for h in range(adapter.n_heads)])
    for cap in layers:
        w_o = adapter.head_output_weights(cap.layer).float()
        u = torch.einsum("nhk,hkd->hnd", cap.values[:, kv], w_o)  # [H, n, d]
        attn = torch.einsum("hij,hjd->id", cap.attn_probs, u) + adapter.attention_bias(cap.layer)
        if cap.attn_scale is not None:  # post-norm: D_i ⊙ (parts + b_attn) at each position
            attn = attn * cap.attn_scale
        scale = cap.attn_out.abs().max()
        assert (attn - cap.attn_out).abs().max() <= 1e-4 * scale
        if cap.moe is not None:  # a mixture: the chosen and shared experts' parts
            ffn = reconstruct_ffn(adapter, cap.layer, cap.moe)  # type: ignore[arg-type]
        else:
            ffn = cap.ffn_act @ adapter.ffn_output_weights(cap.layer).float()
        ffn = ffn + adapter.ffn_bias(cap.layer)
        if cap.ffn_scale is not None:
            ffn = ffn * cap.ffn_scale
        assert (ffn - cap.ffn_out).abs().max() <= 1e-4 * cap.ffn_out.abs().max()
        whole = cap.resid_in + cap.attn_out + cap.ffn_out
        assert (whole - cap.resid_out).abs().max() <= 1e-4 * cap.resid_out.abs().max()


def test_contributions_of_each_target_sum_to_one(tiny_model):
    adapter, ids, layers = captured_layers(tiny_model)
    n = len(ids)
    for cap in layers:
        result = attribute_layer(adapter, cap, keep_above=-1.0)
        assert len(result.edge_target) == n * (n + 1) // 2  # every causal edge, none future
        assert bool((result.edge_source <= result.edge_target).all())
        per_target = torch.zeros(n).index_add_(0, result.edge_target, result.edge_heads.sum(-1))
        if adapter.parallel_blocks:
            total = per_target + result.residual_attention + result.ffn
            assert result.residual_ffn is None
        else:
            total = per_target + result.residual_attention
            assert torch.allclose(result.ffn + result.residual_ffn, torch.ones(n), atol=1e-5)
        assert torch.allclose(total, torch.ones(n), atol=1e-5)


@pytest.mark.parametrize("keep_above", [0.0, 0.01, 0.05, 0.3])
def test_the_kept_edges_are_those_whose_head_contributions_sum_past_the_threshold(
    tiny_model, keep_above
):
    """A layer lists the edges whose summed head contributions exceed keep_above, with the
    same contributions as the list of every causal edge (edges are decided on those sums,
    not on a sum rounded otherwise)."""
    adapter, _ids, layers = captured_layers(tiny_model)
    for cap in layers:
        every = attribute_layer(adapter, cap, keep_above=-1.0)
        kept = attribute_layer(adapter, cap, keep_above=keep_above)
        past = every.edge_heads.sum(-1) > keep_above
        assert torch.equal(kept.edge_target, every.edge_target[past])
        assert torch.equal(kept.edge_source, every.edge_source[past])
        assert torch.equal(kept.edge_heads, every.edge_heads[past])
        assert torch.equal(kept.residual_attention, every.residual_attention)


CHUNKINGS = {
    "gpu": budget.GPU,  # every target row and node in one chunk
    "one row": dataclasses.replace(
        budget.CPU, targets_per_chunk=1, parts_per_chunk=1, nodes_per_chunk=1, scratch_bytes=1
    ),
}


@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
def test_contributions_do_not_depend_on_how_rows_are_chunked(tiny_model, chunking, monkeypatch):
    """The attention and neuron steps work on chunks of target rows (nodes) sized by the
    device's budget; chunks of one row and of every row give the CPU budget's numbers."""
    adapter, _ids, layers = captured_layers(tiny_model)

    def attribute_all():
        edges, neurons = [], []
        for cap in layers:
            edges.append(attribute_layer(adapter, cap, keep_above=-1.0))
            if cap.moe is None:
                w_out = adapter.ffn_output_weights(cap.layer)
                whole, rest = cap.resid_out, cap.resid_out - cap.ffn_out
                neurons.append(neuron_contributions(cap.ffn_act, w_out, whole, rest, cap.ffn_scale))
        return edges, neurons

    edges, neurons = attribute_all()
    chunks = []
    for module in (decompose, neuron_step):
        monkeypatch.setattr(module, "budget_for", lambda _device: chunks.append(1) or chosen)
    chosen = CHUNKINGS[chunking]
    other_edges, other_neurons = attribute_all()
    assert chunks  # the patched budget was read
    for ours, theirs in zip(edges, other_edges, strict=True):
        assert torch.equal(ours.edge_target, theirs.edge_target)
        assert torch.equal(ours.edge_source, theirs.edge_source)
        torch.testing.assert_close(ours.edge_heads, theirs.edge_heads, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            ours.residual_attention, theirs.residual_attention, rtol=0, atol=1e-6
        )
    for ours, theirs in zip(neurons, other_neurons, strict=True):
        torch.testing.assert_close(ours.contribution, theirs.contribution, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.rest, theirs.rest, rtol=0, atol=1e-6)


def test_contributions_match_a_dense_float64_reference(tiny_model):
    """An independent, LM-TT-style dense computation ([n, n, H, d] at once, float64)."""
    adapter, ids, layers = captured_layers(tiny_model)
    n = len(ids)
    for cap in layers:
        result = attribute_layer(adapter, cap, keep_above=-1.0)
        x, attn, f, out = (
            t.double() for t in (cap.resid_in, cap.attn_out, cap.ffn_out, cap.resid_out)
        )
        v = cap.values.double()
        w_o = adapter.head_output_weights(cap.layer).double()
        a = cap.attn_probs.double()
        z = torch.zeros(n, n, adapter.n_heads, x.shape[1], dtype=torch.float64)
        for h in range(adapter.n_heads):
            z[:, :, h] = a[h][:, :, None] * (v[:, adapter.kv_head_of(h)] @ w_o[h])[None]
        if cap.attn_scale is not None:  # post-norm parts: D_i ⊙ z[i, j, h]
            z = z * cap.attn_scale.double()[:, None, None, :]
        whole = out if adapter.parallel_blocks else x + attn
        prox = (whole[:, None, None].abs() - (whole[:, None, None] - z).abs()).sum(-1)
        prox = prox.clamp_min(1e-5) * torch.ones(n, n).tril()[:, :, None]
        res = ((whole.abs() - (whole - x).abs()).sum(-1)).clamp_min(1e-5)
        total = prox.sum((1, 2)) + res
        if adapter.parallel_blocks:
            ffn_p = ((whole.abs() - (whole - f).abs()).sum(-1)).clamp_min(1e-5)
            total = total + ffn_p
        dense = prox / total[:, None, None]
        got = dense[result.edge_target, result.edge_source]
        assert (got - result.edge_heads.double()).abs().max() < 1e-5
        assert (res / total - result.residual_attention.double()).abs().max() < 1e-5


def edge_key(edge):
    return (edge.kind, edge.source, edge.target)


@pytest.fixture
def tiny_trace(tiny_model):
    return run_trace(tiny_model, TINY_PROMPT)


def graph_of(data):
    return ContributionGraph(
        data.blocks, data.edges, data.model.n_layers, data.n_tokens, data.model.parallel_blocks
    )


def all_nodes(graph):
    nodes = [Node(EMBEDDING, 0, i) for i in range(graph.n_tokens)]
    kinds = (FFN, RESIDUAL) if graph.parallel_blocks else (POST_ATTENTION, FFN, RESIDUAL)
    for layer in range(graph.n_layers):
        nodes += [Node(kind, layer, i) for i in range(graph.n_tokens) for kind in kinds]
    return nodes


def full_graph_edges(graph, tau, mode):
    """Every kept edge of the whole graph: the oracle the lazy route is checked against."""
    return [e for node in all_nodes(graph) for e in graph.incoming(node, tau, mode)]


@pytest.mark.parametrize("mode", [RENORMALIZE, RAW])
def test_routes_shrink_as_the_threshold_grows(tiny_trace, mode):
    graph = graph_of(tiny_trace)
    for token in range(tiny_trace.n_tokens):
        previous = None
        for tau in (0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5):
            keys = {edge_key(e) for e in graph.route(token, tau, mode).edges}
            if previous is not None:
                assert keys <= previous
            previous = keys


@pytest.mark.parametrize("mode", [RENORMALIZE, RAW])
def test_lazy_route_equals_reachability_in_the_full_graph(tiny_trace, mode):
    graph = graph_of(tiny_trace)
    for tau in (0.01, 0.04, 0.1):
        full = full_graph_edges(graph, tau, mode)
        into: dict = {}
        for e in full:
            into.setdefault(e.target, []).append(e)
        for token in range(tiny_trace.n_tokens):
            start = graph.output_node(token)
            seen, queue, expected = {start}, deque([start]), set()
            while queue:
                for e in into.get(queue.popleft(), []):
                    expected.add(edge_key(e))
                    if e.source not in seen:
                        seen.add(e.source)
                        queue.append(e.source)
            got = graph.route(token, tau, mode)
            assert {edge_key(e) for e in got.edges} == expected
            assert len(got.edges) == len(expected)


def stored_detail(data):
    """(projection keys, FFN nodes with neurons) that a trace stores."""
    projections = {
        (k, nk, int(layer), int(pos))
        for k, nk, layer, pos in zip(
            data.projections.kind,
            data.projections.node_kind,
            data.projections.layer,
            data.projections.position,
        )
    }
    return projections, set(zip(data.neurons.layer.tolist(), data.neurons.position.tolist()))


def test_a_route_detail_trace_stores_exactly_the_last_token_s_route_nodes(tiny_model, tiny_trace):
    graph = graph_of(tiny_trace)
    last = tiny_trace.n_tokens - 1
    route_nodes = graph.route(last, 0.04, RENORMALIZE).nodes
    projections, neurons = stored_detail(tiny_trace)
    assert {(nk, layer, pos) for _k, nk, layer, pos in projections} == {
        (node.kind, node.layer, node.position) for node in route_nodes
    }
    assert neurons == {(node.layer, node.position) for node in route_nodes if node.kind == "ffn"}
    assert tiny_trace.extra["lmscope.detail"] == {
        "scope": "route",
        "token": last,
        "threshold": 0.04,
    }


def test_every_node_of_any_route_has_its_projections_and_neurons_stored(tiny_model):
    tiny_trace = run_trace(tiny_model, TINY_PROMPT, TraceOptions(detail="all"))
    graph = graph_of(tiny_trace)
    stored, neurons = stored_detail(tiny_trace)
    for mode in (RENORMALIZE, RAW):
        for token in range(tiny_trace.n_tokens):
            for node in graph.route(token, 0.01, mode).nodes:
                if node.kind == "ffn":
                    assert ("ffn_update", "ffn", node.layer, node.position) in stored
                    assert (node.layer, node.position) in neurons
                else:
                    assert ("lens", node.kind, node.layer, node.position) in stored


def test_flow_is_conserved_the_shares_reaching_a_route_s_sources_sum_to_one(tiny_trace):
    graph = graph_of(tiny_trace)
    checked = 0
    for token in range(tiny_trace.n_tokens):
        for tau in (0.01, 0.04, 0.1):
            route = graph.route(token, tau, RENORMALIZE)
            share = route.flow()
            targets = {e.target for e in route.edges}
            sources = [node for node in route.nodes if node not in targets]
            assert sum(share[node] for node in sources) == pytest.approx(1.0, abs=1e-9)
            for node in route.nodes:  # nothing is carried through a node twice
                assert 0.0 <= share[node] <= 1.0 + 1e-9
            checked += len(route.edges) > 0 and any(n.kind == FFN for n in route.nodes)
    assert checked > 0, "no route went through an FFN node: the check proved little"


def test_renormalised_weights_of_each_target_sum_to_one_or_zero(tiny_trace):
    graph = graph_of(tiny_trace)
    for node in all_nodes(graph):
        if node.kind in ("post_attention", "residual"):
            weights = [e.weight for e in graph.incoming(node, 0.04, RENORMALIZE)]
            if tiny_trace.model.parallel_blocks or node.kind == "post_attention":
                total = sum(weights)
                assert total == pytest.approx(1.0, abs=1e-5) or total == 0.0


def test_edges_never_point_to_the_future_and_heads_are_complete(tiny_trace):
    edges = tiny_trace.edges
    assert np.all(edges.source <= edges.target)
    assert edges.head_contributions.shape[1] == tiny_trace.model.n_heads
    assert np.all(edges.head_contributions.sum(-1) > tiny_trace.settings.min_threshold)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_half_precision_models_trace_with_float32_sums(family):
    import dataclasses

    from tests.conftest import build_tiny

    loaded = build_tiny(family)
    loaded.model.to(torch.bfloat16)
    data = run_trace(dataclasses.replace(loaded, dtype=torch.bfloat16), TINY_PROMPT)
    assert data.environment.dtype == "bfloat16"
    assert data.edges.head_contributions.dtype == np.float32
    per_target = np.zeros((data.model.n_layers, data.n_tokens))
    np.add.at(
        per_target, (data.edges.layer, data.edges.target), data.edges.head_contributions.sum(-1)
    )
    assert np.all(per_target + data.blocks.residual_attention <= 1.0 + 1e-5)
    assert np.isfinite(data.projections.top_logits).all()
    assert graph_of(data).route(data.n_tokens - 1, 0.04).edges
