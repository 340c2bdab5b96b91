"""Mixture-of-experts families (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE): experts as sub-parts of
FFN nodes weighted by the captured router gates (docs/method.md, "Experts")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmscope import protocol
from lmscope.attribution import experts as maths
from lmscope.cards import component_card
from lmscope.components import ComponentRef, find_references
from lmscope.errors import LmscopeError, TraceFileError
from lmscope.graph import FFN
from lmscope.models.adapter import adapter_for
from lmscope.traces import experts as stored_experts
from lmscope.traces.lmtrace import export_json, import_json, read_trace, write_trace
from lmscope.traces.trace import Trace
from lmscope.tracing.capture import capture_layers, run_forward
from lmscope.tracing.engine import TraceOptions, run_trace
from lmscope.tracing.experts import expert_parts, reconstruct_ffn
from lmscope.tracing.live import LiveModel
from lmscope.tracing.live_experts import expert_update
from lmscope.tracing.tokens import tokenize
from tests.conftest import TINY_PROMPT, build_tiny

MOE_FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def captured(request):
    """A tiny MoE model, its adapter, and every layer captured on the tiny prompt."""
    loaded = build_tiny(request.param)
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    layers = []
    with capture_layers(adapter, layers.append):
        logits = run_forward(loaded.model, ids)
    return loaded, adapter, ids, layers, logits


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def traced(request):
    """A live trace of a tiny MoE model with detail for every reachable node."""
    loaded = build_tiny(request.param)
    data = run_trace(loaded, TINY_PROMPT, TraceOptions(detail="all"))
    live = LiveModel(loaded, [int(i) for i in data.tokens.ids])
    return loaded, Trace(data, live)


def _sparse(layers):
    found = [cap for cap in layers if cap.moe is not None]
    assert found, "no sparse layer captured"
    return found


def test_expert_parts_reconstruct_the_ffn_update(captured):
    _loaded, adapter, _ids, layers, _logits = captured
    for cap in _sparse(layers):
        rebuilt = reconstruct_ffn(adapter, cap.layer, cap.moe)
        assert (rebuilt - cap.ffn_out).abs().max() <= 1e-4 * cap.ffn_out.abs().max()
        # The routed experts alone are the experts module's own output.
        parts = expert_parts(adapter, cap.layer, cap.moe, torch.arange(len(cap.ffn_out)))
        routed = maths.routed_updates(parts).sum(1)
        assert (routed - cap.moe.routed_out).abs().max() <= 1e-4 * cap.ffn_out.abs().max()


def test_a_grouped_experts_implementation_traces_like_the_eager_loop(captured):
    loaded, adapter, ids, layers, logits = captured
    loaded.model.set_experts_implementation("eager")
    try:
        eager = []
        with capture_layers(adapter, eager.append):
            eager_logits = run_forward(loaded.model, ids)
    finally:
        loaded.model.set_experts_implementation("grouped_mm")
    assert (eager_logits - logits).abs().max() <= 1e-4 * logits.abs().max()
    for a, b in zip(_sparse(layers), _sparse(eager)):
        assert torch.equal(a.moe.chosen, b.moe.chosen)
        assert torch.allclose(a.moe.gates, b.moe.gates, atol=1e-6)
        rebuilt = reconstruct_ffn(adapter, b.layer, b.moe)
        assert (rebuilt - b.ffn_out).abs().max() <= 1e-4 * b.ffn_out.abs().max()


def test_captured_gates_are_the_router_s_and_hooks_leave_the_logits_unchanged(captured):
    loaded, adapter, ids, layers, logits = captured
    assert torch.equal(run_forward(loaded.model, ids), logits)
    for cap in _sparse(layers):
        moe = adapter.moe_layer(cap.layer)
        with torch.inference_mode():
            _router_logits, gates, chosen = moe.router(cap.moe.normed)
        assert torch.equal(chosen, cap.moe.chosen)
        assert torch.equal(gates.float(), cap.moe.gates)
        family = adapter.family
        if family == "mixtral" or (family != "olmoe" and loaded.model.config.norm_topk_prob):
            assert torch.allclose(cap.moe.gates.sum(-1), torch.ones(len(ids)), atol=1e-6)
        else:  # softmax over all experts, top-k not renormalised
            assert (cap.moe.gates.sum(-1) < 1).all()
        for s, shared in enumerate(moe.shared):  # Qwen2-MoE: sigmoid(shared_expert_gate(x̂))
            expected = torch.sigmoid(shared.gate(cap.moe.normed))[:, 0]
            assert torch.allclose(cap.moe.shared_gates[:, s], expected, atol=1e-6)


def test_qwen2_moe_keeps_its_dense_layer_dense():
    adapter = adapter_for(build_tiny("qwen2_moe").model)
    layout = adapter.expert_layout
    assert adapter.moe_layer(0) is None and adapter.moe_layer(1) is not None
    assert layout.sparse_layers == (1,) and layout.n_shared == 1 and layout.d_dense == 64
    assert adapter.ffn_output_weights(0).shape == (64, 32)
    with pytest.raises(LmscopeError, match="mixture of experts"):
        adapter.ffn_output_weights(1)


def test_expert_weights_are_views_of_the_model_s_parameters(captured):
    _loaded, adapter, _ids, layers, _logits = captured
    layer = _sparse(layers)[0].layer
    experts = adapter.moe_layer(layer).experts
    gate_up, w_out = adapter.expert_weights(layer, 1)
    assert gate_up.data_ptr() == experts.gate_up_proj[1].data_ptr()
    assert w_out.data_ptr() == experts.down_proj[1].data_ptr()  # [d_e, d] = down_proj[1].T
    assert w_out.shape == (adapter.d_expert, adapter.d_model)


def test_each_step_sums_to_one_and_an_unchosen_expert_is_no_part(captured):
    _loaded, adapter, _ids, layers, _logits = captured
    layout = adapter.expert_layout
    for cap in _sparse(layers):
        rows = torch.arange(len(cap.ffn_out))
        whole, rest = cap.resid_out, cap.resid_out - cap.ffn_out
        parts = expert_parts(adapter, cap.layer, cap.moe, rows)
        step = maths.expert_step(whole, parts, rest)
        total = step.routed.sum(1) + step.shared.sum(1) + step.rest
        assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
        neurons = maths.expert_neuron_step(whole, parts, rest)
        total = neurons.routed.sum((1, 2)) + neurons.rest
        for shared in neurons.shared:
            total = total + shared.sum(1)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
        # Exactly k routed parts per node: an unchosen expert adds no ε to the denominator.
        assert step.routed.shape == (len(rows), layout.top_k)
        assert neurons.routed.shape == (len(rows), layout.top_k, layout.d_expert)


def test_the_expert_step_matches_a_float64_reference(captured):
    _loaded, adapter, _ids, layers, _logits = captured
    for cap in _sparse(layers):
        rows = torch.arange(len(cap.ffn_out))
        parts = expert_parts(adapter, cap.layer, cap.moe, rows)
        whole, rest = cap.resid_out.double(), (cap.resid_out - cap.ffn_out).double()
        # The literal definition in float64: every chosen expert's and shared expert's part.
        w_out = torch.stack(parts.w_out).double()  # [E, d_e, d]
        vectors = [
            parts.gates[:, j, None].double()
            * torch.einsum("fk,fkd->fd", parts.activation[:, j].double(), w_out[parts.chosen[:, j]])
            for j in range(parts.chosen.shape[1])
        ]
        vectors += [
            s.gate[:, None].double() * (s.activation.double() @ s.w_out.double())
            for s in parts.shared
        ]
        vectors.append(rest)
        prox = torch.stack(
            [(whole.abs() - (whole - v).abs()).sum(-1).clamp_min(1e-5) for v in vectors], dim=1
        )
        expected = prox / prox.sum(1, keepdim=True)
        step = maths.expert_step(cap.resid_out, parts, cap.resid_out - cap.ffn_out)
        got = torch.cat([step.routed, step.shared, step.rest[:, None]], dim=1).double()
        assert (got - expected).abs().max() <= 1e-6


def test_the_expert_neuron_step_matches_a_float64_reference(captured):
    _loaded, adapter, _ids, layers, _logits = captured
    cap = _sparse(layers)[-1]
    rows = torch.arange(len(cap.ffn_out))
    parts = expert_parts(adapter, cap.layer, cap.moe, rows)
    whole = cap.resid_out.double()
    rest = (cap.resid_out - cap.ffn_out).double()
    neurons = maths.expert_neuron_step(cap.resid_out, parts, cap.resid_out - cap.ffn_out)
    for i in range(len(rows)):
        vectors = []
        for j, expert in enumerate(parts.chosen[i].tolist()):
            coef = parts.gates[i, j].double() * parts.activation[i, j].double()
            vectors.append(coef[:, None] * parts.w_out[expert].double())  # [d_e, d]
        for shared in parts.shared:
            coef = shared.gate[i].double() * shared.activation[i].double()
            vectors.append(coef[:, None] * shared.w_out.double())
        every = torch.cat([*vectors, rest[i][None]])  # [P + 1, d]
        prox = (whole[i].abs() - (whole[i] - every).abs()).sum(-1).clamp_min(1e-5)
        expected = prox / prox.sum()
        got = torch.cat(
            [neurons.routed[i].reshape(-1), *(s[i] for s in neurons.shared), neurons.rest[i, None]]
        ).double()
        assert (got - expected).abs().max() <= 1e-6


def test_the_trace_stores_the_experts_of_its_detailed_ffn_nodes(traced):
    _loaded, trace = traced
    layout = trace.expert_layout
    table = stored_experts.stored(trace.data.extra, trace.n_layers, trace.n_tokens).table
    neurons = trace.data.neurons
    detailed = {(int(layer), int(p)) for layer, p in zip(neurons.layer, neurons.position)}
    sparse_detailed = {(layer, p) for layer, p in detailed if layout.is_sparse(layer)}
    assert sparse_detailed, "no FFN node of a sparse layer is detailed: the check proves little"
    assert set(zip(table.layer.tolist(), table.position.tolist())) == sparse_detailed
    for row, (layer, position) in enumerate(zip(table.layer, table.position)):
        live = trace.live.experts(int(layer), int(position))
        np.testing.assert_array_equal(table.expert[row], live.slot)
        np.testing.assert_allclose(table.contribution[row], live.contribution, atol=1e-6)
        assert table.contribution[row].sum() + table.rest[row] == pytest.approx(1.0, abs=1e-5)
        assert (np.diff(table.contribution[row]) <= 0).all()  # strongest first
    # Neurons of sparse layers are flat ids of chosen (or shared) experts only.
    for row, (layer, position) in enumerate(
        zip(trace.data.neurons.layer, trace.data.neurons.position)
    ):
        if not layout.is_sparse(int(layer)):
            continue
        chosen = set(table.expert[table.row(int(layer), int(position))].tolist())
        slots = {layout.split(int(k))[0] for k in trace.data.neurons.index[row]}
        assert slots <= chosen


def test_the_experts_table_round_trips_through_a_trace_file_and_json(traced, tmp_path):
    _loaded, trace = traced
    path = write_trace(trace.data, tmp_path / "moe.lmtrace")
    for back in (read_trace(path), import_json(export_json(trace.data))):
        again = Trace(back)
        assert again.expert_layout == trace.expert_layout
        original = stored_experts.stored(trace.data.extra, trace.n_layers, trace.n_tokens)
        read = stored_experts.stored(back.extra, trace.n_layers, trace.n_tokens)
        for key in ("layer", "position", "expert", "gate", "contribution", "rest"):
            np.testing.assert_array_equal(getattr(read.table, key), getattr(original.table, key))
        layer, position = int(read.table.layer[0]), int(read.table.position[0])
        assert again.ffn_experts(layer, position) == trace.ffn_experts(layer, position)


def test_a_damaged_experts_table_is_refused_with_its_path(traced):
    _loaded, trace = traced
    extra = dict(trace.data.extra)
    good = extra[stored_experts.EXPERTS_KEY]
    bad = {"layout": good["layout"], "nodes": dict(good["nodes"])}
    bad["nodes"]["expert"] = [[99] * len(r) for r in good["nodes"]["expert"]]
    problem = stored_experts.read({stored_experts.EXPERTS_KEY: bad}, trace.n_layers, trace.n_tokens)
    assert isinstance(problem, str) and "extra.lmscope.experts.nodes.expert" in problem
    assert stored_experts.read({}, trace.n_layers, trace.n_tokens) is None  # a dense / old file


def test_an_unchosen_expert_sends_nothing_at_a_node(traced):
    _loaded, trace = traced
    layout = trace.expert_layout
    layer = layout.sparse_layers[-1]
    listed = trace.live.experts(layer, trace.n_tokens - 1)
    unchosen = sorted(set(range(layout.n_experts)) - set(listed.slot.tolist()))[0]
    at = trace.live.expert_at(layer, unchosen, [trace.n_tokens - 1])[trace.n_tokens - 1]
    assert at.contribution == 0.0 and at.gate == 0.0
    with pytest.raises(LmscopeError, match="was not chosen"):
        trace.live.expert_tokens(layer, unchosen, trace.n_tokens - 1, 5)


def test_expert_parts_projected_add_up_to_the_ffn_update(traced):
    _loaded, trace = traced
    layout = trace.expert_layout
    layer, position = layout.sparse_layers[-1], trace.n_tokens - 1
    captured = trace.live.layer(layer)
    adapter = trace.live.adapter
    total = torch.zeros(adapter.d_model)
    slots = trace.live.experts(layer, position).slot.tolist()
    for slot in slots:
        update, residual = expert_update(adapter, captured, int(slot), position)
        assert torch.equal(residual, captured.resid_out[position])  # N_frozen at x'_i
        total = total + update
    # The experts' parts sum to the FFN update, so (the frozen norm is linear) do projections.
    scale = captured.ffn_out.abs().max()
    assert (total - captured.ffn_out[position]).abs().max() <= 1e-4 * scale
    top, bottom = trace.live.expert_tokens(layer, int(slots[0]), position, 5)
    assert len(top) == len(bottom) == 5
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)


def test_a_route_s_ffn_nodes_are_all_detailed_with_experts(traced):
    _loaded, trace = traced
    layout = trace.expert_layout
    route = trace.route(trace.n_tokens - 1, 0.04, True)
    for node in route.nodes:
        if node.kind == FFN and layout.is_sparse(node.layer):
            listed = trace.ffn_experts(node.layer, node.position)
            assert listed["total"] == layout.top_k + layout.n_shared
            assert listed["rest"] + sum(e["contribution"] for e in listed["experts"]) == (
                pytest.approx(1.0, abs=1e-5)
            )


# --- component references and cards ----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("L5.E3", ComponentRef("expert", 5, None, 3)),
        ("L5.E3.N120", ComponentRef("expert_neuron", 5, 120, 3)),
        ("L5.S0", ComponentRef("expert", 5, None, 0, shared=True)),
        ("L5.S0.N120", ComponentRef("expert_neuron", 5, 120, 0, shared=True)),
        ("model.layers[5].mlp.experts", ComponentRef("ffn", 5)),
        ("model.layers.5.mlp.shared_expert_gate", ComponentRef("ffn", 5)),
        ("model.layers[5].block_sparse_moe.gate", ComponentRef("ffn", 5)),
    ],
)
def test_expert_references_parse_and_round_trip_through_the_wire(text, expected):
    assert find_references(f"see {text} here") == [(expected, 4, 4 + len(text))]
    assert expected.label() == (text if text.startswith("L") else "L5.ffn")
    assert ComponentRef.from_wire(expected.to_wire()) == expected


@pytest.mark.parametrize("text", ["L5.E03", "L5.e3", "L5E3", "L5.E3x", "L5.X3", "xL5.E3"])
def test_malformed_expert_references_stay_quiet(text):
    assert find_references(f"see {text} here") == []


def _route_layer(trace):
    """A sparse layer with an FFN node on the last token's route at τ = 0.01."""
    layout = trace.expert_layout
    route = trace.route(trace.n_tokens - 1, 0.01, True)
    layers = sorted({n.layer for n in route.nodes if n.kind == FFN and layout.is_sparse(n.layer)})
    assert layers, "no FFN node of a sparse layer on the route: the check proves little"
    return layers[-1]


def test_the_experts_of_a_layer_share_what_its_ffn_block_carries(traced):
    _loaded, trace = traced
    layout = trace.expert_layout
    layer = _route_layer(trace)
    kwargs = {"token": trace.n_tokens - 1, "threshold": 0.01}
    block = component_card(ComponentRef("ffn", layer), trace, **kwargs)["context"]["share"]
    assert block > 0
    shares = [
        component_card(ComponentRef("expert", layer, None, e), trace, **kwargs)["context"]["share"]
        for e in range(layout.n_experts)
    ] + [
        component_card(ComponentRef("expert", layer, None, s, shared=True), trace, **kwargs)[
            "context"
        ]["share"]
        for s in range(layout.n_shared)
    ]
    assert sum(shares) == pytest.approx(block, rel=1e-5)


def test_an_expert_card_shows_its_gate_tokens_and_validates(traced):
    _loaded, trace = traced
    layer = _route_layer(trace)
    t = trace.n_tokens - 1
    top = trace.ffn_experts(layer, t)["experts"][0]
    layout = trace.expert_layout
    shared = top["expert"] >= layout.n_experts
    number = top["expert"] - layout.n_experts if shared else top["expert"]
    ref = ComponentRef("expert", layer, None, number, shared=shared)
    result = component_card(ref, trace, token=t, threshold=0.01, handle="t1")
    assert result["title"] == f"{ref.label()} · expert"
    assert ref.label().endswith(top["label"])  # "L1.E2" and "E2"
    assert result["context"]["gate"] == pytest.approx(top["gate"])
    assert len(result["promoted"]) == 8
    assert "router gate here" in result["markdown"]
    protocol.validate_result("lmscope/component", result)
    # A saved trace (no model) still knows the share and the gate, not the tokens.
    saved = Trace(trace.data)
    offline = component_card(ref, saved, token=t, threshold=0.01)
    assert offline["context"]["share"] == pytest.approx(result["context"]["share"], rel=1e-5)
    assert offline["promoted"] == [] and "need the model" in " ".join(offline["notes"])


def test_an_expert_neuron_card_shows_activation_and_gate_apart(traced):
    _loaded, trace = traced
    layer = _route_layer(trace)
    t = trace.n_tokens - 1
    layout = trace.expert_layout
    flat = trace.ffn_neurons(layer, t, limit=1)["neurons"][0]
    slot, neuron = layout.split(flat["neuron"])
    shared = slot >= layout.n_experts
    ref = ComponentRef(
        "expert_neuron", layer, neuron, slot - layout.n_experts if shared else slot, shared
    )
    result = component_card(ref, trace, token=t, threshold=0.01, handle="t1")
    assert result["context"]["activation"] == pytest.approx(flat["activation"])
    gate = next(e["gate"] for e in trace.ffn_experts(layer, t)["experts"] if e["expert"] == slot)
    assert result["context"]["gate"] == pytest.approx(gate)
    assert result["context"]["share"] > 0
    protocol.validate_result("lmscope/component", result)
    assert trace.neuron_label(layer, flat["neuron"]) == ref.label()


def test_expert_references_the_model_lacks_are_refused(traced):
    _loaded, trace = traced
    layout = trace.expert_layout
    layer = layout.sparse_layers[-1]
    with pytest.raises(LmscopeError, match="experts per sparse layer"):
        component_card(ComponentRef("expert", layer, None, layout.n_experts), trace)
    with pytest.raises(LmscopeError, match="neurons"):
        component_card(ComponentRef("expert_neuron", layer, layout.d_expert, 0), trace)
    if layout.n_shared == 0:
        with pytest.raises(LmscopeError, match="no shared experts"):
            component_card(ComponentRef("expert", layer, None, 0, shared=True), trace)
    dense = build_tiny("llama")
    dense_trace = Trace(run_trace(dense, TINY_PROMPT), None)
    with pytest.raises(LmscopeError, match="dense"):
        component_card(ComponentRef("expert", 0, None, 0), dense_trace)


def test_a_trace_file_with_a_damaged_experts_table_is_refused(traced, tmp_path):
    _loaded, trace = traced
    data = trace.data
    good = data.extra[stored_experts.EXPERTS_KEY]
    nodes = dict(good["nodes"], gate=[[2.0] * len(row) for row in good["nodes"]["gate"]])
    data.extra[stored_experts.EXPERTS_KEY] = {"layout": good["layout"], "nodes": nodes}
    try:
        with pytest.raises(TraceFileError, match=r"extra\.lmscope\.experts\.nodes\.gate"):
            write_trace(data, tmp_path / "bad.lmtrace")
    finally:
        data.extra[stored_experts.EXPERTS_KEY] = good
