"""Comparing two traces (`Trace.diff`, `lmscope diff`; docs/method.md "Comparing two traces"):
the same-model rule, position alignment, union membership, Δ = B − A of each trace's own route,
share changes, the prediction change with its "< p_k" bound, and the command line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import lmscope
from lmscope.cards import component_card
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError
from lmscope.graph import FFN
from lmscope.traces.alignment import IDENTITY, LAST, align, parse_pairs
from lmscope.traces.diff import BOTH, ONLY_A, ONLY_B, DiffNode
from lmscope.traces.trace import Trace
from tests.conftest import TINY_PROMPT, build_tiny

SWAPPED = "when john and mary went to the store , mary gave a drink to"  # as many tokens
SHORTER = "when john went to the store , mary gave a drink to"  # two fewer
TAU = 0.01  # tiny models' routes are small at the default τ


@pytest.fixture(scope="module", params=["llama", "gpt_neox"])  # sequential and parallel blocks
def traces(request) -> dict[str, Trace]:
    model = build_tiny(request.param)
    return {
        name: lmscope.trace(prompt, model=model)
        for name, prompt in (("a", TINY_PROMPT), ("b", SWAPPED), ("short", SHORTER))
    }


def _other_model(trace: Trace) -> Trace:
    model = dataclasses.replace(
        trace.data.model, name="tiny-other", content_hash="sha256:" + "1" * 64
    )
    return Trace(dataclasses.replace(trace.data, model=model))


def test_traces_of_different_models_are_refused_naming_both(traces):
    with pytest.raises(LmscopeError, match="different models") as error:
        traces["a"].diff(_other_model(traces["b"]))
    assert traces["a"].data.model.name in str(error.value)
    assert "tiny-other" in str(error.value)


def test_equal_token_counts_align_one_to_one(traces):
    diff = traces["a"].diff(traces["b"], threshold=TAU)
    assert diff.alignment.how == IDENTITY
    assert diff.alignment.pairs == tuple((i, i) for i in range(traces["a"].n_tokens))
    assert all(row.node.aligned for row in diff.nodes)


def test_different_token_counts_without_alignment_are_refused_saying_how(traces):
    with pytest.raises(LmscopeError, match="--align-last K") as error:
        traces["a"].diff(traces["short"])
    assert "A 15, B 13" in str(error.value)


def test_align_last_k_pairs_the_last_tokens_and_reports_unaligned_nodes(traces):
    a, short = traces["a"], traces["short"]
    diff = a.diff(short, threshold=TAU, align_last=3)
    assert diff.alignment.how == LAST
    assert diff.alignment.pairs == ((12, 10), (13, 11), (14, 12))
    # Every node of B's route is in the diff: at an aligned position in A's, else with its own.
    route_b = short.route(-1, TAU)
    for node in route_b.nodes:
        partner = diff.alignment.b_to_a.get(node.position)
        row = next(
            r
            for r in diff.nodes
            if (r.node.kind, r.node.layer, r.node.position_b)
            == (node.kind, node.layer, node.position)
        )
        assert row.node.position_a == partner
        assert row.share_b == pytest.approx(route_b.flow()[node])
    off_alignment = [n for n in route_b.nodes if n.position not in diff.alignment.b_to_a]
    reported = [r for r in diff.nodes if r.node.position_a is None]
    assert len(reported) == len(off_alignment)
    assert all(r.membership == ONLY_B for r in reported)


def test_explicit_alignments_are_checked():
    assert align(4, 5, pairs=[(0, 0), (2, 1), (3, 4)]).b_to_a == {0: 0, 1: 2, 4: 3}
    bad = {
        "not in A": [(0, 0), (4, 1)],
        "not in B": [(0, 5)],
        "must increase": [(1, 1), (0, 2)],
        "at least one": [],
    }
    for message, pairs in bad.items():
        with pytest.raises(LmscopeError, match=message):
            align(4, 5, pairs=pairs)
    with pytest.raises(LmscopeError, match="not both"):
        align(4, 5, last=2, pairs=[(0, 0)])
    with pytest.raises(LmscopeError, match=r"within 1\.\.4"):
        align(4, 5, last=5)
    assert parse_pairs("0:0, 2:1") == [(0, 0), (2, 1)]
    with pytest.raises(LmscopeError, match="not a pair"):
        parse_pairs("0-0")


def test_output_tokens_must_be_aligned_to_each_other(traces):
    with pytest.raises(LmscopeError, match="not aligned"):
        traces["a"].diff(traces["b"], token_a=-1, token_b=-2)


def test_a_trace_diffed_with_itself_is_all_zero_and_both(traces):
    diff = traces["a"].diff(traces["a"], threshold=TAU)
    assert diff.edges and diff.nodes
    assert all(row.membership == BOTH and row.delta == 0 for row in diff.edges + diff.nodes)
    assert not diff.head_deltas.any() and not diff.ffn_deltas.any()
    assert not diff.attention_deltas.any()


def _own_route(trace: Trace, positions):
    """Each route's nodes and edges in diff coordinates, computed from the trace directly."""
    route = trace.route(-1, TAU)
    flow = route.flow()
    nodes = {(n.kind, n.layer, positions(n.position)): flow[n] for n in route.nodes}
    edges = {
        (e.kind, (e.source.kind, e.source.layer, positions(e.source.position)),
         (e.target.kind, e.target.layer, positions(e.target.position))): e.weight
        for e in route.edges
    }  # fmt: skip
    return nodes, edges


def test_deltas_are_b_minus_a_of_each_traces_own_route_and_membership_is_the_union(traces):
    a, b = traces["a"], traces["b"]
    diff = a.diff(b, threshold=TAU)
    nodes_a, edges_a = _own_route(a, lambda p: p)
    nodes_b, edges_b = _own_route(b, lambda p: p)
    found_nodes = {(r.node.kind, r.node.layer, r.node.position_a): r for r in diff.nodes}
    assert found_nodes.keys() == nodes_a.keys() | nodes_b.keys()
    for key, row in found_nodes.items():
        assert row.share_a == nodes_a.get(key, 0.0) and row.share_b == nodes_b.get(key, 0.0)
        assert row.delta == pytest.approx(nodes_b.get(key, 0.0) - nodes_a.get(key, 0.0))
        expected = (
            BOTH if key in nodes_a and key in nodes_b else ONLY_A if key in nodes_a else ONLY_B
        )
        assert row.membership == expected
    found_edges = {
        (r.kind, (r.source.kind, r.source.layer, r.source.position_a),
         (r.target.kind, r.target.layer, r.target.position_a)): r
        for r in diff.edges
    }  # fmt: skip
    assert found_edges.keys() == edges_a.keys() | edges_b.keys()
    for key, row in found_edges.items():
        assert row.delta == pytest.approx(edges_b.get(key, 0.0) - edges_a.get(key, 0.0))
    if a.data.model.family == "llama":  # there, the swapped names move some edges
        assert {row.membership for row in diff.edges} == {ONLY_A, ONLY_B, BOTH}


def test_share_changes_are_the_cards_shares_of_each_trace(traces):
    a, b = traces["a"], traces["b"]
    diff = a.diff(b, threshold=TAU)
    assert np.allclose(diff.shares_a.heads.sum(1), diff.shares_a.attention)
    for trace, shares in ((a, diff.shares_a), (b, diff.shares_b)):
        for layer in range(trace.n_layers):
            ffn = component_card(ComponentRef("ffn", layer), trace, threshold=TAU)
            assert shares.ffn[layer] == pytest.approx(ffn["context"]["share"])
            head = int(np.argmax(shares.heads[layer]))
            card = component_card(ComponentRef("head", layer, head), trace, threshold=TAU)
            assert shares.heads[layer, head] == pytest.approx(card["context"]["share"])
    assert np.array_equal(diff.ffn_deltas, diff.shares_b.ffn - diff.shares_a.ffn)
    if a.data.model.family == "llama":  # its routes at τ = 0.01 hold attention edges
        assert diff.head_deltas.any()


def test_prediction_change_gives_a_bound_when_b_does_not_store_as_prediction(traces):
    a, b = traces["a"], traces["b"]
    top_a = int(a.data.predictions.ids[-1, 0])
    ids = b.data.predictions.ids.copy()  # [n, k]
    ids[-1] = np.where(ids[-1] == top_a, 63, ids[-1])  # B's stored top k without A's token
    cut = Trace(
        dataclasses.replace(b.data, predictions=dataclasses.replace(b.data.predictions, ids=ids))
    )
    change = a.diff(cut).prediction
    token = change.of(top_a)
    assert token.p_a == pytest.approx(float(a.data.predictions.probs[-1, 0]))
    assert token.p_b is None
    assert token.below_b == pytest.approx(float(b.data.predictions.probs[-1, -1]))
    assert token.shown("b").startswith("< ")
    same = a.diff(b).prediction.of(top_a)
    assert same.p_b == pytest.approx(
        float(b.data.predictions.probs[-1][list(b.data.predictions.ids[-1]).index(top_a)])
    )


def test_diff_node_labels_say_which_side_an_unaligned_node_is_on():
    assert DiffNode(FFN, 3, 7, 9).label() == "M3.7"
    assert DiffNode(FFN, 3, None, 9).label() == "M3.b9"


def _lmscope(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmscope", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_diff_command_prints_the_changes_and_writes_json(traces, tmp_path):
    if traces["a"].data.model.family != "llama":
        pytest.skip("one family is enough for the subprocess")
    for name in ("a", "b", "short"):
        traces[name].save(tmp_path / f"{name}.lmtrace")
    argv = ["diff", "a.lmtrace", "b.lmtrace", "--threshold", "0.01", "--json", "d.json"]
    done = _lmscope(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "prediction (A → B):" in done.stdout
    assert "heads whose share of the prediction changed most" in done.stdout
    written = json.loads((tmp_path / "d.json").read_text())
    assert written["alignment"]["how"] == IDENTITY and written["edges"]
    refused = _lmscope("diff", "a.lmtrace", "short.lmtrace", cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("lmscope: the traces have different token counts")
    aligned = _lmscope("diff", "a.lmtrace", "short.lmtrace", "--align-last", "5", cwd=tmp_path)
    assert aligned.returncode == 0, aligned.stderr
    assert "the last 5 tokens of each" in aligned.stdout
