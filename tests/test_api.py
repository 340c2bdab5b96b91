"""The notebook API (`lmscope.trace`, `Trace`, `lmscope.load_trace`) on tiny random-init models
of every family: a saved trace answers exactly what the live one does, out-of-range questions
are one `LmscopeError`, and every answer is a plain Python or numpy value."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

import lmscope
from lmscope.errors import LmscopeError, NeedsModelError, ThresholdError
from lmscope.graph import ATTENTION_EDGE, Edge, Node, Route
from lmscope.traces.data import (
    EMBEDDING,
    FFN,
    POST_ATTENTION,
    PROJ_ATTENTION_UPDATE,
    PROJ_FFN_UPDATE,
    PROJ_LENS,
    RESIDUAL,
)
from lmscope.traces.trace import Trace
from lmscope.tracing.engine import TraceOptions, run_trace
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny

THRESHOLDS = (0.01, 0.02, 0.04, 0.1, 0.3)
MODES = (True, False)  # renormalize, raw

# Which projections apply to which node kind (parallel blocks: the attention update of R).
PROJECTIONS_OF = {
    EMBEDDING: (PROJ_LENS,),
    POST_ATTENTION: (PROJ_LENS, PROJ_ATTENTION_UPDATE),
    FFN: (PROJ_FFN_UPDATE,),
    RESIDUAL: (PROJ_LENS, PROJ_ATTENTION_UPDATE),
}


@dataclasses.dataclass
class Traced:
    family: str
    live: Trace
    loaded: Trace


@pytest.fixture(scope="module", params=FAMILIES)
def traced(request, tmp_path_factory) -> Traced:
    model = build_tiny(request.param)
    # "all": the file must answer every node of every route, like the live trace.
    live = lmscope.trace(TINY_PROMPT, model=model, detail="all")
    path = tmp_path_factory.mktemp(f"api-{request.param}") / "tiny.lmtrace"
    assert live.save(path) == path
    return Traced(request.param, live, lmscope.load_trace(path))


def outcome(call) -> Any:
    """A call's result, or (exception type, message) when it raises an LmscopeError."""
    try:
        return call()
    except LmscopeError as exc:
        return (type(exc), str(exc))


def route_nodes_at(trace: Trace, threshold: float) -> set[Node]:
    found: set[Node] = set()
    for token in range(trace.n_tokens):
        for renormalize in MODES:
            found |= trace.route(token, threshold, renormalize=renormalize).nodes
    return found


# --- the live trace ------------------------------------------------------------------------
def test_trace_of_a_loaded_model_returns_a_trace_with_the_prompt_tokens(traced):
    live = traced.live
    assert isinstance(live, Trace)
    assert live.live is not None
    assert live.prompt == TINY_PROMPT
    assert live.tokens[0] == "<bos>"  # BOS prepended once
    assert live.n_tokens == len(TINY_PROMPT.split()) + 1
    assert live.tokens[1:] == TINY_PROMPT.split()
    assert traced.loaded.live is None


# --- save / load round trip ----------------------------------------------------------------
def test_saved_trace_gives_identical_routes_for_every_token_threshold_and_mode(traced):
    live, loaded = traced.live, traced.loaded
    non_empty = 0
    for token in range(live.n_tokens):
        for threshold in THRESHOLDS:
            for renormalize in MODES:
                expected = live.route(token, threshold, renormalize=renormalize)
                got = loaded.route(token, threshold, renormalize=renormalize)
                assert got == expected, (token, threshold, renormalize)
                # Route equality covers these; spelled out so a failure names the part.
                assert [(e.kind, e.source, e.target, e.weight, e.heads) for e in got.edges] == [
                    (e.kind, e.source, e.target, e.weight, e.heads) for e in expected.edges
                ]
                assert got.nodes == expected.nodes
                non_empty += bool(got.edges)
    assert non_empty > 0, "every route is empty: the comparison proved nothing"


def test_saved_trace_gives_identical_head_splits_for_every_stored_edge(traced):
    edges = traced.live.data.edges
    assert len(edges.layer) > 0
    for layer, target, source in zip(edges.layer, edges.target, edges.source):
        args = (int(layer), int(target), int(source))
        assert traced.loaded.edge_heads(*args) == traced.live.edge_heads(*args), args


def test_a_route_past_its_edge_budget_stops_with_a_clear_error(traced):
    full = traced.loaded.route(-1, 0.01, renormalize=False)
    assert len(full.edges) > 3
    assert traced.loaded.route(-1, 0.01, False, max_edges=len(full.edges)) == full
    with pytest.raises(LmscopeError, match=r"more than 3 edges: ask for a higher threshold"):
        traced.loaded.route(-1, 0.01, renormalize=False, max_edges=3)


def test_edge_heads_come_strongest_first_with_ties_in_head_order(traced):
    edges = traced.live.data.edges
    for row in range(len(edges.layer)):
        args = (int(edges.layer[row]), int(edges.target[row]), int(edges.source[row]))
        heads = traced.loaded.edge_heads(*args)
        assert sorted(h["head"] for h in heads) == list(range(traced.live.data.model.n_heads))
        order = [(-h["contribution"], h["head"]) for h in heads]
        assert order == sorted(order), args
        # The stored row, by head index, is the same numbers.
        stored = edges.head_contributions[row]
        assert [h["contribution"] for h in heads] == sorted(map(float, stored), reverse=True)


def test_saved_trace_gives_identical_neurons_and_projections_on_the_routes(traced):
    live, loaded = traced.live, traced.loaded
    nodes = route_nodes_at(live, 0.01)
    assert route_nodes_at(loaded, 0.01) == nodes
    ffn_nodes = [node for node in nodes if node.kind == FFN]
    answered = 0
    for node in ffn_nodes:
        page = loaded.ffn_neurons(node.layer, node.position)  # stored: never needs the model
        assert page == live.ffn_neurons(node.layer, node.position)
        assert len(page["neurons"]) == 50
    for node in sorted(nodes):
        for kind in PROJECTIONS_OF[node.kind]:
            expected = outcome(lambda node=node, kind=kind: live.projection(node, kind))
            assert outcome(lambda node=node, kind=kind: loaded.projection(node, kind)) == expected
            answered += isinstance(expected, dict)
    assert answered > 0
    # Every residual node on a route has its lens stored.
    for node in nodes:
        if node.kind in (EMBEDDING, RESIDUAL):
            assert len(loaded.projection(node, PROJ_LENS)["top"]) > 0


def test_saved_trace_keeps_tokens_predictions_and_model_facts(traced):
    live, loaded = traced.live, traced.loaded
    assert loaded.tokens == live.tokens
    assert loaded.prompt == live.prompt
    for token in range(live.n_tokens):
        assert loaded.predictions(token) == live.predictions(token)
    assert loaded.data.model == live.data.model
    assert repr(loaded) == repr(live)


# --- thresholds and positions --------------------------------------------------------------
def test_threshold_below_the_stored_minimum_raises_threshold_error(traced):
    for trace in (traced.live, traced.loaded):
        with pytest.raises(ThresholdError, match=r"0\.01"):
            trace.route(threshold=0.005)
        with pytest.raises(ThresholdError):
            trace.route(threshold=float("nan"))
    # The stored minimum itself is answerable.
    assert isinstance(traced.loaded.route(threshold=0.01), Route)


def test_token_out_of_range_raises_lmscope_error(traced):
    n = traced.loaded.n_tokens
    for trace in (traced.live, traced.loaded):
        with pytest.raises(LmscopeError, match="out of range"):
            trace.route(token=999)
        with pytest.raises(LmscopeError, match="out of range"):
            trace.route(token=-(n + 1))
        with pytest.raises(LmscopeError):
            trace.predictions(999)
        with pytest.raises(LmscopeError):
            trace.ffn_neurons(0, 999)
        with pytest.raises(LmscopeError):
            trace.edge_heads(0, 999, 0)
        with pytest.raises(LmscopeError):
            trace.edge_heads(trace.n_layers, 1, 0)  # layer out of range
        with pytest.raises(LmscopeError, match="causal"):
            trace.edge_heads(0, 1, 2)  # source after target


def test_negative_token_positions_count_from_the_end(traced):
    trace = traced.loaded
    n = trace.n_tokens
    assert trace.position(-1) == n - 1
    assert trace.route(-1) == trace.route(n - 1)
    assert trace.route(-1).token == n - 1
    assert trace.route(-3, 0.1, renormalize=False) == trace.route(n - 3, 0.1, renormalize=False)
    assert trace.predictions(-1) == trace.predictions(n - 1)
    edges = trace.data.edges
    layer, target, source = (int(edges.layer[-1]), int(edges.target[-1]), int(edges.source[-1]))
    assert trace.edge_heads(layer, target - n, source - n) == trace.edge_heads(
        layer, target, source
    )


# --- queries that need the model -----------------------------------------------------------
def test_contribution_map_of_a_live_trace_matches_the_stored_head_splits(traced):
    live = traced.live
    edges = live.data.edges
    n, heads = live.n_tokens, live.data.model.n_heads
    for layer in range(live.n_layers):
        rows = np.nonzero(edges.layer == layer)[0]
        for head in range(heads):
            cmap = live.contribution_map(layer, head)
            assert isinstance(cmap, np.ndarray) and cmap.shape == (n, n)
            assert np.all(np.triu(cmap, k=1) == 0), "a future token contributes"
            # The same computation on the same captured tensors: bit-identical.
            np.testing.assert_array_equal(
                cmap[edges.target[rows], edges.source[rows]], edges.head_contributions[rows, head]
            )
            pattern = live.attention_pattern(layer, head)
            np.testing.assert_array_equal(
                pattern[edges.target[rows], edges.source[rows]], edges.head_attention[rows, head]
            )
    for call in (
        lambda: traced.loaded.contribution_map(0, 0),
        lambda: traced.loaded.attention_pattern(0, 0),
    ):
        with pytest.raises(NeedsModelError):
            call()


def test_head_split_of_an_unstored_edge_needs_the_model(tmp_path):
    model = build_tiny("llama")
    # A high stored minimum leaves most edges out of the file.
    live = lmscope.trace(TINY_PROMPT, model=model, min_threshold=0.3)
    loaded = lmscope.load_trace(live.save(tmp_path / "sparse.lmtrace"))
    stored = set(zip(live.data.edges.layer.tolist(), live.data.edges.target.tolist(),
                     live.data.edges.source.tolist()))  # fmt: skip
    layer, target, source = next(
        (ly, i, j)
        for ly in range(live.n_layers)
        for i in range(live.n_tokens - 1, 0, -1)
        for j in range(i)
        if (ly, i, j) not in stored
    )
    with pytest.raises(NeedsModelError, match="not stored"):
        loaded.edge_heads(layer, target, source)
    heads = live.edge_heads(layer, target, source)
    assert sorted(h["head"] for h in heads) == list(range(live.data.model.n_heads))
    assert sum(h["contribution"] for h in heads) <= 0.3 + 1e-6  # why it was not stored
    for h in heads:
        cmap = live.contribution_map(layer, h["head"])
        assert h["contribution"] == float(cmap[target, source])
        pattern = live.attention_pattern(layer, h["head"])
        assert h["attention"] == float(pattern[target, source])
    with pytest.raises(ThresholdError, match=r"0\.3"):
        loaded.route(threshold=0.1)


def test_neurons_beyond_the_stored_top_need_the_model(traced):
    live, loaded = traced.live, traced.loaded
    neurons = live.data.neurons
    assert len(neurons.layer) > 0, "no FFN node stored"
    layer, position = int(neurons.layer[0]), int(neurons.position[0])
    stored, total = neurons.index.shape[1], live.ffn_width(layer)  # MoE: its nodes' expert neurons
    if total <= stored:  # the file stores every neuron; a live page runs to the end
        page = live.ffn_neurons(layer, position, offset=total - 4, limit=10)
        assert [n["neuron"] for n in page["neurons"]] == neurons.index[0, -4:].tolist()
        return
    with pytest.raises(NeedsModelError):
        loaded.ffn_neurons(layer, position, offset=stored - 2, limit=4)
    page = live.ffn_neurons(layer, position, offset=stored - 2, limit=4)
    top = loaded.ffn_neurons(layer, position, offset=0, limit=stored)
    assert page["total"] == live.data.model.d_ffn
    assert [n["neuron"] for n in page["neurons"][:2]] == [n["neuron"] for n in top["neurons"][-2:]]
    contributions = [n["contribution"] for n in top["neurons"]] + [
        n["contribution"] for n in page["neurons"][2:]
    ]
    assert contributions == sorted(contributions, reverse=True)
    assert page["rest"] == top["rest"]


def test_projection_of_an_unknown_node_kind_raises_lmscope_error(traced):
    for trace in (traced.live, traced.loaded):
        with pytest.raises(LmscopeError, match="unknown node kind"):
            trace.projection(("neuron", 0, 0))
        with pytest.raises(LmscopeError, match="projection kind"):
            trace.projection((RESIDUAL, 0, 0), kind="tuned_lens")


# --- plain values --------------------------------------------------------------------------
PLAIN = (type(None), bool, int, float, str)


def assert_plain(value: Any, where: str = "value") -> None:
    """No torch tensor (or anything else foreign) anywhere inside `value`."""
    assert not isinstance(value, torch.Tensor), f"{where} is a torch tensor"
    if isinstance(value, np.ndarray):
        assert value.dtype.kind in "biuf", f"{where} has dtype {value.dtype}"
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_plain(key, f"{where} key")
            assert_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (Route, Edge, Node)):
        for f in dataclasses.fields(value):
            assert_plain(getattr(value, f.name), f"{where}.{f.name}")
    else:
        assert type(value) in PLAIN, f"{where} is a {type(value).__name__}"


def test_every_answer_is_a_plain_python_or_numpy_value(traced):
    live, loaded = traced.live, traced.loaded
    edges = live.data.edges
    edge = (int(edges.layer[0]), int(edges.target[0]), int(edges.source[0]))
    node = max(route_nodes_at(loaded, 0.01) - {Node(EMBEDDING, 0, 0)})  # deterministic pick
    kind = "ffn_update" if node.kind == FFN else "lens"
    ffn = next((n for n in route_nodes_at(loaded, 0.01) if n.kind == FFN), None)
    for trace in (live, loaded):
        assert_plain(trace.tokens, "tokens")
        assert_plain(trace.prompt, "prompt")
        assert_plain(trace.n_tokens, "n_tokens")
        assert_plain(trace.n_layers, "n_layers")
        assert_plain(trace.position(-1), "position")
        assert_plain(trace.predictions(), "predictions")
        assert_plain(trace.route(), "route")
        assert_plain(trace.route(2, 0.02, renormalize=False), "raw route")
        assert_plain(trace.route().flow(), "flow")
        assert_plain(trace.edge_heads(*edge), "edge_heads")
        assert_plain(trace.projection(Node(RESIDUAL, trace.n_layers - 1, 0)), "projection")
        assert_plain(trace.projection(node, kind), "projection")
        if ffn is not None:
            assert_plain(trace.ffn_neurons(ffn.layer, ffn.position), "ffn_neurons")
    assert_plain(live.attention_pattern(0, 0), "attention_pattern")
    assert_plain(live.contribution_map(0, 0), "contribution_map")
    neurons = live.data.neurons
    if len(neurons.layer):
        page = live.ffn_neurons(int(neurons.layer[0]), int(neurons.position[0]), 60, 20)
        assert_plain(page, "live ffn_neurons")
    for edge_obj in live.route(threshold=0.01).edges_of_kind(ATTENTION_EDGE):
        assert len(edge_obj.heads) == live.data.model.n_heads


def test_head_and_node_positions_are_checked_with_clear_errors():
    live = lmscope.trace(TINY_PROMPT, model=build_tiny("llama"))
    with pytest.raises(LmscopeError, match="head 99 is out of range"):
        live.attention_pattern(0, 99)
    with pytest.raises(LmscopeError, match="head -1 is out of range"):
        live.contribution_map(0, -1)
    last = live.n_tokens - 1
    assert live.projection(("residual", 0, -1)) == live.projection(("residual", 0, last))
    with pytest.raises(LmscopeError, match="layer 7 is out of range"):
        live.projection(("residual", 7, 0))


def test_a_loaded_trace_that_stores_every_neuron_pages_to_the_end(tmp_path):
    loaded = build_tiny("llama")  # d_ffn = 96 <= 128 stored neurons
    data = run_trace(loaded, TINY_PROMPT, TraceOptions(top_neurons=128, detail="all"))
    path = Trace(data).save(tmp_path / "all.lmtrace")
    trace = lmscope.load_trace(path)
    layer, position = int(data.neurons.layer[0]), int(data.neurons.position[0])
    page = trace.ffn_neurons(layer, position, offset=90, limit=50)
    assert len(page["neurons"]) == 6


# --- detail: what the file stores, and what a live trace computes on demand -----------------
@pytest.mark.parametrize("family", FAMILIES)
def test_a_live_route_detail_trace_answers_every_node_like_an_all_detail_trace(family):
    model = build_tiny(family)
    fast = lmscope.trace(TINY_PROMPT, model=model)  # detail="route"
    full = lmscope.trace(TINY_PROMPT, model=model, detail="all")
    assert len(fast.data.projections.layer) < len(full.data.projections.layer)
    nodes = route_nodes_at(full, 0.01)
    computed = 0
    for node in sorted(nodes):
        for kind in PROJECTIONS_OF[node.kind]:
            expected = outcome(lambda node=node, kind=kind: full.projection(node, kind))
            got = outcome(lambda node=node, kind=kind: fast.projection(node, kind))
            if isinstance(expected, dict):
                # Computed from one token row instead of a batch: equal up to float32 rounding.
                assert [t for t, _v, _r in got["top"]] == [t for t, _v, _r in expected["top"]]
                assert [r for _t, _v, r in got["top"]] == [r for _t, _v, r in expected["top"]]
                assert [v for _t, v, _r in got["top"]] == pytest.approx(
                    [v for _t, v, _r in expected["top"]], rel=1e-5, abs=1e-6
                )
                assert fast.projection_ids(node, kind) == full.projection_ids(node, kind)
                computed += 1
            else:
                assert got == expected  # the same "does not apply" error
        if node.kind == FFN:
            a = fast.ffn_neurons(node.layer, node.position)
            b = full.ffn_neurons(node.layer, node.position)
            assert [n["neuron"] for n in a["neurons"]] == [n["neuron"] for n in b["neurons"]]
    assert computed > 0


def test_a_saved_route_detail_trace_answers_its_route_and_names_what_it_lacks(tmp_path):
    model = build_tiny("llama")
    live = lmscope.trace(TINY_PROMPT, model=model)
    saved = lmscope.load_trace(live.save(tmp_path / "route.lmtrace"))
    route = saved.route(-1, 0.04)
    for node in route.nodes:
        for kind in PROJECTIONS_OF[node.kind]:
            assert outcome(lambda n=node, k=kind: saved.projection(n, k)) == outcome(
                lambda n=node, k=kind: live.projection(n, k)
            )
    off_route = [
        node
        for node in route_nodes_at(live, 0.01) - route.nodes
        if node.kind in (EMBEDDING, RESIDUAL)
    ]
    assert off_route
    with pytest.raises(NeedsModelError, match=r"last token's route at τ = 0\.04"):
        saved.projection(off_route[0], PROJ_LENS)
    assert live.projection(off_route[0], PROJ_LENS)["top"]


def test_unknown_detail_scope_is_refused():
    with pytest.raises(LmscopeError, match="detail must be one of route, all"):
        lmscope.trace(TINY_PROMPT, model=build_tiny("llama"), detail="everything")
