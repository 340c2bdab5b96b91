"""The embedded default model (SmolLM2-135M-Instruct) on docs/method.md's demo prompts: the known
IOI prediction and route, exact save/load round trips, and the queries that need the model.

Uses the real lmscope cache (the first run converts the GGUF once, ~20 s or more; later loads
take ~4 s). Deselect with `-m "not default_model"`.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import lmscope
from lmscope.api import load_model
from lmscope.errors import LmscopeError, NeedsModelError
from lmscope.graph import ATTENTION_EDGE, Node
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

pytestmark = pytest.mark.default_model

IOI = "When Mary and John went to the store, John gave a drink to"
GREATER_THAN = "The war lasted from the year 1732 to the year 17"
ARITHMETIC = "5 + 4 = 9, 2 + 3 ="
MARY = 2  # position of " Mary" (BOS is 0)
THRESHOLDS = (0.01, 0.04, 0.1)
PROJECTIONS_OF = {
    EMBEDDING: (PROJ_LENS,),
    POST_ATTENTION: (PROJ_LENS, PROJ_ATTENTION_UPDATE),
    FFN: (PROJ_FFN_UPDATE,),
    RESIDUAL: (PROJ_LENS, PROJ_ATTENTION_UPDATE),
}


@pytest.fixture(scope="module")
def smollm():
    return load_model("default")


@pytest.fixture(scope="module")
def ioi(smollm) -> Trace:
    return lmscope.trace(IOI, model=smollm)


@pytest.fixture(scope="module")
def ioi_loaded(ioi, tmp_path_factory) -> Trace:
    path = tmp_path_factory.mktemp("ioi") / "ioi.lmtrace"
    ioi.save(path)
    return lmscope.load_trace(path)


def outcome(call):
    try:
        return call()
    except LmscopeError as exc:  # NeedsModelError, or "does not apply"
        return (type(exc), str(exc))


def test_ioi_predicts_mary_after_the_bos(ioi):
    assert ioi.tokens[0] == "<|im_start|>"
    assert ioi.tokens[MARY] == " Mary"
    assert ioi.tokens[-1] == " to"
    token, p = ioi.predictions()[0]
    assert token == " Mary"
    assert 0.7 < p < 0.95  # docs/method.md: ≈ 0.84 with BOS


def test_ioi_route_carries_mary_through_a_late_attention_edge(ioi):
    route = ioi.route(-1, 0.04)
    last = ioi.n_tokens - 1
    assert route.edges
    attention = route.edges_of_kind(ATTENTION_EDGE)
    assert any(0 < e.source.position < e.target.position for e in attention), (
        "no attention edge from an earlier word (not the BOS)"
    )
    into_last = [
        e
        for e in attention
        if e.source.position == MARY and e.target.position == last and e.target.layer >= 15
    ]
    assert into_last, "no late attention edge from ' Mary' into the last token"
    print("\n' Mary' -> last:", [(e.target.layer, round(e.weight, 3)) for e in into_last])


def test_saved_ioi_trace_answers_exactly_what_the_live_one_does(ioi, ioi_loaded):
    live, loaded = ioi, ioi_loaded
    for token in range(live.n_tokens):
        for threshold in THRESHOLDS:
            for renormalize in (True, False):
                expected = live.route(token, threshold, renormalize=renormalize)
                assert loaded.route(token, threshold, renormalize=renormalize) == expected
    edges = live.data.edges
    for layer, target, source in zip(edges.layer, edges.target, edges.source):
        args = (int(layer), int(target), int(source))
        assert loaded.edge_heads(*args) == live.edge_heads(*args)
    # The file stores neurons and projections of the last token's renormalised route at
    # τ = 0.04; the live trace computes any other node's on demand.
    nodes = live.route(-1, 0.04).nodes
    ffn_nodes = [node for node in nodes if node.kind == FFN]
    assert ffn_nodes
    for node in ffn_nodes:
        page = loaded.ffn_neurons(node.layer, node.position)
        assert page == live.ffn_neurons(node.layer, node.position)
        assert len(page["neurons"]) == 50
    for node in nodes:
        for kind in PROJECTIONS_OF[node.kind]:
            expected = outcome(lambda node=node, kind=kind: live.projection(node, kind))
            assert outcome(lambda node=node, kind=kind: loaded.projection(node, kind)) == expected
    elsewhere = next(
        Node(RESIDUAL, layer, position)
        for layer in range(live.n_layers)
        for position in range(live.n_tokens)
        if Node(RESIDUAL, layer, position) not in nodes
    )
    assert live.projection(elsewhere)["top"]
    assert outcome(lambda: loaded.projection(elsewhere))[0] is NeedsModelError


def test_cli_trace_summary_names_mary(tmp_path):
    # The real default cache: no LMSCOPE_CACHE_DIR override.
    result = subprocess.run(
        [sys.executable, "-m", "lmscope", "trace", IOI, "--quiet", "--out", "ioi.lmtrace"],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "prediction after “·to”: “·Mary”" in result.stdout
    assert "“·Mary”(2)" in result.stdout  # an attention edge from " Mary" is listed
    assert (tmp_path / "ioi.lmtrace").is_file()


@pytest.mark.parametrize("prompt", [GREATER_THAN, ARITHMETIC])
def test_other_demo_prompts_trace(prompt, smollm):
    trace = lmscope.trace(prompt, model=smollm)
    route = trace.route()
    assert route.edges
    predictions = trace.predictions()
    assert 0 < predictions[0][1] <= 1
    print(f"\n{prompt!r}: " + ", ".join(f"{t!r} {p:.3f}" for t, p in predictions[:5]))


def test_neurons_beyond_the_stored_top_come_from_the_live_model(ioi, ioi_loaded):
    route = ioi.route(-1, 0.04)
    node = max((n for n in route.nodes if n.kind == FFN), key=lambda n: route.flow().get(n, 0.0))
    stored = ioi.data.settings.top_neurons
    assert stored == 64
    top = ioi.ffn_neurons(node.layer, node.position, offset=0, limit=stored)
    page = ioi.ffn_neurons(node.layer, node.position, offset=100, limit=20)
    assert page["total"] == ioi.data.model.d_ffn
    assert page["offset"] == 100
    assert len(page["neurons"]) == 20
    # Across the page boundary: one live page spanning stored and unstored neurons agrees
    # with the stored ones and keeps the order. Not bit for bit: the trace scored its FFN nodes
    # in one matrix product, the live query scores one row (float32 sums in another order).
    across = ioi.ffn_neurons(node.layer, node.position, offset=stored - 4, limit=8)
    assert [n["neuron"] for n in across["neurons"][:4]] == [
        n["neuron"] for n in top["neurons"][-4:]
    ]
    np.testing.assert_allclose(
        [n["contribution"] for n in across["neurons"][:4]],
        [n["contribution"] for n in top["neurons"][-4:]],
        rtol=1e-5,
        atol=1e-7,
    )
    contributions = (
        [n["contribution"] for n in top["neurons"]]
        + [n["contribution"] for n in across["neurons"][4:]]
        + [n["contribution"] for n in page["neurons"]]
    )
    assert all(a >= b - 1e-7 for a, b in itertools.pairwise(contributions))
    assert page["rest"] == pytest.approx(top["rest"], abs=1e-5)
    with pytest.raises(NeedsModelError):
        ioi_loaded.ffn_neurons(node.layer, node.position, offset=100, limit=20)
    # The stored top itself needs no model.
    assert ioi_loaded.ffn_neurons(node.layer, node.position, limit=stored) == top


def test_attention_pattern_is_causal_and_row_stochastic(ioi, ioi_loaded):
    n = ioi.n_tokens
    for layer, head in ((0, 0), (23, 4), (ioi.n_layers - 1, ioi.data.model.n_heads - 1)):
        pattern = ioi.attention_pattern(layer, head)
        assert isinstance(pattern, np.ndarray)
        assert pattern.shape == (n, n)
        assert np.all(pattern >= 0)
        assert np.all(np.triu(pattern, k=1) == 0)
        np.testing.assert_allclose(pattern.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(NeedsModelError):
        ioi_loaded.attention_pattern(0, 0)


def test_a_chat_on_the_default_model_is_its_template_with_role_headers_marked(smollm):
    messages = [
        {"role": "user", "content": "When Mary and John went to the store, who got a drink?"}
    ]
    traced = lmscope.trace(messages=messages, model=smollm)
    template_ids = smollm.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert traced.data.tokens.ids.tolist() == list(template_ids)
    assert traced.tokens[0] == "<|im_start|>" and traced.tokens.count("<|im_start|>") == 3
    chat = traced.chat
    assert chat is not None and chat.exact
    content = "".join(t for t, m in zip(traced.tokens, chat.token_message) if m == 0)
    assert content == messages[0]["content"]
    headers = [t for t, m in zip(traced.tokens, chat.token_message) if m == -1]
    # The default system turn, the user's header and the assistant's generation prompt.
    assert headers[:3] == ["<|im_start|>", "system", "\n"]
    assert headers[-4:] == ["<|im_start|>", "ass", "istant", "\n"]
    assert "user" in headers and "<|im_end|>" in headers
