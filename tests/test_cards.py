"""Interpretation cards (`lmscope.cards`) on tiny models of every family: wire shape, what each
kind of component says with and without a trace or the model, shares that add up (heads to
their block, neurons to their FFN), out-of-range components, and Markdown that stays inert
whatever the tokens are."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from html import unescape
from typing import Any

import numpy as np
import pytest
import torch
from markdown_it import MarkdownIt

import lmscope
from lmscope import protocol
from lmscope.cards import component_card, md_text, md_token
from lmscope.cards.markdown import TOKEN_CHARS
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError, ThresholdError
from lmscope.graph import ATTENTION_EDGE
from lmscope.models.adapter import adapter_for
from lmscope.models.loading import LoadedModel
from lmscope.traces.data import FFN
from lmscope.traces.text import display_token
from lmscope.traces.trace import Trace
from lmscope.tracing.live import LiveModel, queries_for
from lmscope.tracing.live_experts import output_row
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny

TAU = 0.01  # tiny random models have few edges above the default 0.04
CARD_KEYS = {"title", "component", "promoted", "suppressed", "context", "notes", "markdown"}
CONTEXT_KEYS = {"handle", "token", "threshold", "mode", "share", "edges", "activation"}
SEQUENTIAL_WITH_EDGES = ["llama", "mistral", "qwen2", "gpt_neox_sequential"]


@dataclasses.dataclass
class Traced:
    family: str
    model: LoadedModel
    live: Trace
    saved: Trace


def _traced(family: str, path) -> Traced:
    model = build_tiny(family)
    live = lmscope.trace(TINY_PROMPT, model=model, detail="all")
    live.save(path)
    return Traced(family, model, live, lmscope.load_trace(path))


@pytest.fixture(scope="module", params=FAMILIES)
def traced(request, tmp_path_factory) -> Traced:
    return _traced(request.param, tmp_path_factory.mktemp(request.param) / "t.lmtrace")


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Traced:
    return _traced("llama", tmp_path_factory.mktemp("llama") / "t.lmtrace")


def card(
    ref: ComponentRef, trace: Trace | None = None, model: LoadedModel | None = None, **kwargs
) -> dict:
    """The card as the daemon makes it: with the trace's live model, or with `model` (the
    loaded model) where it made the trace or there is no trace."""
    kwargs.setdefault("threshold", TAU)
    if trace is None or trace.live is None:
        live, notes = queries_for(model, None if trace is None else trace.data)
        kwargs.update(live=live, notes=notes)
    return component_card(ref, trace, **kwargs)


def refs_on_route(trace: Trace) -> list[ComponentRef]:
    """One component of each kind that the route of the last token passes through (where the
    tiny model has one): the strongest head of an attention edge, an FFN block of a node at the
    output position and its top stored neuron, and the attention block of the last layer."""
    route = trace.route(-1, TAU)
    found = [ComponentRef("attention", trace.n_layers - 1)]
    attention = route.edges_of_kind(ATTENTION_EDGE)
    if attention:
        edge = max(attention, key=lambda e: e.weight)
        found.append(ComponentRef("head", edge.target.layer, int(np.argmax(edge.heads))))
    ffn = sorted(n for n in route.nodes if n.kind == FFN and n.position == route.token)
    if ffn:
        layer = ffn[0].layer
        found.append(ComponentRef("ffn", layer))
        top = trace.ffn_neurons(layer, route.token, limit=1)["neurons"][0]["neuron"]
        found.append(ComponentRef("neuron", layer, top))
    return found


def all_kinds(trace: Trace) -> list[ComponentRef]:
    return [
        ComponentRef("head", 0, 1),
        ComponentRef("neuron", 1, 5),
        ComponentRef("attention", 0),
        ComponentRef("ffn", 1),
        *refs_on_route(trace),
    ]


def check_wire_shape(result: dict) -> None:
    assert set(result) == CARD_KEYS
    json.dumps(result, allow_nan=False)
    assert isinstance(result["title"], str) and isinstance(result["markdown"], str)
    assert all(isinstance(note, str) for note in result["notes"])
    for row in result["promoted"] + result["suppressed"]:
        assert set(row) == {"token", "id", "score"}
        assert isinstance(row["token"], str) and type(row["id"]) is int
        assert isinstance(row["score"], float) and math.isfinite(row["score"])
    context = result["context"]
    if context is not None:
        assert set(context) == CONTEXT_KEYS
        assert context["mode"] in ("renormalize", "raw")
        assert type(context["token"]) is int and context["token"] >= 0
        for edge in context["edges"]:
            assert set(edge) == {"source", "target", "weight"}
            assert type(edge["source"]) is int and type(edge["target"]) is int


# --- shape -----------------------------------------------------------------------------------
def test_cards_are_json_with_exactly_the_wire_keys_in_every_situation(traced):
    for ref in all_kinds(traced.live):
        for trace, model in [
            (traced.live, None),
            (traced.saved, None),
            (traced.saved, traced.model),
            (None, traced.model),
            (None, None),
        ]:
            result = card(ref, trace, model=model, handle="t3")
            check_wire_shape(result)
            assert result["component"] == ref.to_wire()
            assert result["title"].startswith(ref.label() + " · ")
            assert (result["context"] is None) is (trace is None)
            if trace is not None:
                assert result["context"]["handle"] == "t3"


def test_a_card_without_trace_or_model_says_what_is_missing_instead_of_failing():
    for ref in [
        ComponentRef("head", 40, 99),
        ComponentRef("neuron", 3, 10**6),
        ComponentRef("attention", 7),
        ComponentRef("ffn", 0),
    ]:
        result = component_card(ref)
        check_wire_shape(result)
        assert result["promoted"] == result["suppressed"] == [] and result["context"] is None
        notes = " ".join(result["notes"])
        assert "no trace" in notes and "not checked" in notes


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (ComponentRef("head", 3, 0), "layer 3 is out of range"),
        (ComponentRef("ffn", 3), "layer 3 is out of range"),
        (ComponentRef("head", 0, 6), "head 6 is out of range"),
        (ComponentRef("neuron", 0, 96), "neuron 96 is out of range"),
    ],
)
def test_components_the_model_does_not_have_are_an_error(llama, ref, message):
    # tiny llama: 3 layers, 6 heads, 96 neurons
    for trace, model in [(llama.live, None), (llama.saved, None), (None, llama.model)]:
        with pytest.raises(LmscopeError, match=message):
            card(ref, trace, model=model)
    card(ComponentRef("neuron", 2, 95), llama.saved)  # the last ones exist
    card(ComponentRef("head", 2, 5), None, model=llama.model)


def test_a_bad_token_or_threshold_is_the_trace_s_error(llama):
    with pytest.raises(LmscopeError, match="out of range"):
        card(ComponentRef("ffn", 0), llama.live, token=99)
    with pytest.raises(ThresholdError):
        card(ComponentRef("ffn", 0), llama.live, threshold=0.001)


def test_context_names_the_resolved_token_threshold_and_mode(llama):
    result = card(ComponentRef("ffn", 0), llama.live, token=-3, renormalize=False)
    context = result["context"]
    assert context["token"] == llama.live.n_tokens - 3
    assert (context["threshold"], context["mode"]) == (TAU, "raw")
    assert any("relative" in note for note in result["notes"])
    assert card(ComponentRef("ffn", 0), llama.live, token=2)["context"]["token"] == 2


# --- shares ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", SEQUENTIAL_WITH_EDGES)
def test_an_attention_block_s_share_is_the_sum_of_its_heads_shares(family, tmp_path):
    traced = _traced(family, tmp_path / "t.lmtrace")
    n_heads = traced.saved.data.model.n_heads
    seen = 0.0
    for layer in range(traced.saved.n_layers):
        block = card(ComponentRef("attention", layer), traced.saved)["context"]
        heads = [
            card(ComponentRef("head", layer, h), traced.saved)["context"] for h in range(n_heads)
        ]
        assert sum(h["share"] for h in heads) == pytest.approx(block["share"], abs=1e-9)
        # The block's edges are the heads' edges summed per (source, target).
        summed: dict[tuple[int, int], float] = {}
        for h in heads:
            for e in h["edges"]:
                key = (e["source"], e["target"])
                summed[key] = summed.get(key, 0.0) + e["weight"]
        assert summed == pytest.approx(
            {(e["source"], e["target"]): e["weight"] for e in block["edges"]}
        )
        seen += block["share"]
    assert seen > 0  # the route uses some attention


def test_attention_share_is_the_flow_through_the_layer_s_attention_edges(llama):
    route = llama.live.route(-1, TAU)
    flow = route.flow()
    for layer in range(llama.live.n_layers):
        edges = [e for e in route.edges_of_kind(ATTENTION_EDGE) if e.target.layer == layer]
        expected = sum(flow[e.target] * e.weight for e in edges)
        context = card(ComponentRef("attention", layer), llama.live)["context"]
        assert context["share"] == pytest.approx(expected)
        assert len(context["edges"]) == len(edges)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_with_the_model_an_ffn_block_s_share_is_the_sum_of_its_neurons_shares(family, tmp_path):
    traced = _traced(family, tmp_path / "t.lmtrace")
    route = traced.live.route(-1, TAU)
    flow = route.flow()
    layers = sorted({n.layer for n in route.nodes if n.kind == FFN})
    assert layers
    layer = layers[0]
    block = card(ComponentRef("ffn", layer), traced.live)["context"]
    expected = sum(flow[n] for n in route.nodes if n.kind == FFN and n.layer == layer)
    assert block["share"] == pytest.approx(expected) and block["share"] > 0
    d_ffn = traced.live.data.model.d_ffn
    neurons = [card(ComponentRef("neuron", layer, k), traced.live)["context"] for k in range(d_ffn)]
    assert sum(n["share"] for n in neurons) == pytest.approx(block["share"], rel=1e-4)


def test_a_neuron_reports_its_activation_and_flags_a_negative_one(traced):
    t = traced.live.n_tokens - 1
    listed = traced.live.ffn_neurons(0, t, limit=10_000)["neurons"]
    negative = next(n for n in listed if n["activation"] < 0)
    positive = next(n for n in listed if n["activation"] > 0)
    for entry, flagged in [(negative, True), (positive, False)]:
        result = card(ComponentRef("neuron", 0, entry["neuron"]), traced.live)
        assert result["context"]["activation"] == pytest.approx(entry["activation"], abs=1e-6)
        assert any("activation is negative" in n for n in result["notes"]) is flagged


def test_a_saved_trace_knows_only_its_stored_top_neurons(traced):
    # The last token whose route has an FFN node at its own position (the card reports the
    # neuron's activation there).
    found = (
        (route, n)
        for token in reversed(range(traced.saved.n_tokens))
        for route in [traced.saved.route(token, TAU)]
        for n in sorted(route.nodes)
        if n.kind == FFN and n.position == route.token
    )
    route, node = next(found)
    layer, t = node.layer, route.token
    stored = traced.saved.ffn_neurons(layer, t)["neurons"]
    top = stored[0]
    result = card(ComponentRef("neuron", layer, top["neuron"]), traced.saved, token=t)
    assert result["context"]["activation"] == top["activation"]  # the stored number itself
    assert result["context"]["share"] > 0
    assert result["promoted"] == [] and "need the model" in " ".join(result["notes"])
    top_k = traced.saved.data.settings.top_neurons
    stored_ids = {n["neuron"] for n in traced.saved.ffn_neurons(layer, t, limit=top_k)["neurons"]}
    d_ffn = traced.saved.ffn_width(layer)  # d_ffn; an MoE layer: its nodes' expert neurons
    if len(stored_ids) < d_ffn:
        missing = min(set(range(d_ffn)) - stored_ids)
        result = card(ComponentRef("neuron", layer, missing), traced.saved, token=t)
        assert result["context"]["activation"] is None
        assert "not among the top" in " ".join(result["notes"])
        # With the model, the same saved trace knows it.
        with_model = card(
            ComponentRef("neuron", layer, missing), traced.saved, model=traced.model, token=t
        )
        assert with_model["context"]["activation"] is not None


def test_a_component_off_the_route_carries_nothing_and_says_so(llama):
    # At τ = 0.04 the tiny llama's route is residual edges only.
    for ref, words in [
        (ComponentRef("attention", 1), "no attention edge"),
        (ComponentRef("head", 1, 2), "on no attention edge"),
        (ComponentRef("ffn", 2), "no FFN node"),
        (ComponentRef("neuron", 2, 3), "no FFN node"),
    ]:
        result = card(ref, llama.live, threshold=0.04)
        assert result["context"]["share"] == 0.0 and result["context"]["edges"] == []
        assert words in " ".join(result["notes"])


# --- promoted / suppressed -------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_tokens_rank_its_output_row_through_the_final_norm_scale(family):
    model = build_tiny(family)
    adapter = adapter_for(model.model)
    norm = adapter.final_norm()
    with torch.no_grad():  # a non-trivial γ, so that forgetting it would show
        if hasattr(norm, "weight"):  # OLMo's LayerNorm has no parameters
            norm.weight.copy_(
                torch.randn(norm.weight.shape, generator=torch.Generator().manual_seed(1))
            )
    layer, k = adapter.n_layers - 1, 7
    if adapter.moe_layer(layer) is not None:  # flat id 7: neuron 7 of expert 0 (its W_out^0[7])
        w = output_row(adapter, layer, k).float()  # type: ignore[arg-type]
    else:
        w = adapter.ffn_output_weights(layer)[k].float()
    post_norm = adapter.post_ffn_norm(layer)
    with torch.no_grad():
        # An RMSNorm maps a vector of ones to its gain γ' (γ, or Gemma's 1 + γ) / sqrt(1 + eps).
        if post_norm is not None:  # the neuron writes γ'_post ⊙ W_out[k] / rms at every position
            w = w * post_norm(torch.ones_like(w))
        if isinstance(norm, torch.nn.LayerNorm):
            direction = norm.weight.float() * (w - w.mean())
        elif not hasattr(norm, "weight"):
            direction = w - w.mean()
        else:
            direction = norm(torch.ones_like(w)) * w
    scores = adapter.unembedding_weight().float() @ direction
    result = card(ComponentRef("neuron", layer, k), None, model=model)
    assert [r["id"] for r in result["promoted"]] == scores.topk(8).indices.tolist()
    assert [r["id"] for r in result["suppressed"]] == scores.topk(8, largest=False).indices.tolist()
    promoted = [r["score"] for r in result["promoted"]]
    assert promoted == sorted(promoted, reverse=True)
    texts = [model.tokenizer.decode([r["id"]]) for r in result["promoted"]]
    assert [r["token"] for r in result["promoted"]] == texts


def test_the_heads_outputs_and_the_bias_rebuild_the_attention_block_output(traced):
    live = LiveModel(traced.model, [int(i) for i in traced.live.data.tokens.ids])
    t = traced.live.n_tokens - 1
    for layer in range(traced.live.n_layers):
        outputs = [live.head_output(layer, h, t)[0] for h in range(live.adapter.n_heads)]
        bias = live.adapter.attention_bias(layer).float()
        scale = live.layer(layer).attn_scale  # post-norm: the constant is D_t ⊙ b_attn
        rebuilt = torch.stack(outputs).sum(0) + (bias if scale is None else scale[t] * bias)
        whole = live.layer(layer).attn_out[t]
        assert torch.allclose(rebuilt, whole, atol=1e-4 * float(whole.abs().max()))


def test_block_tokens_come_from_the_trace_s_stored_update_projections(traced):
    layer, t = traced.saved.n_layers - 1, traced.saved.n_tokens - 1
    node_kind = "residual" if traced.saved.data.model.parallel_blocks else "post_attention"
    for ref, node, kind in [
        (ComponentRef("attention", layer), (node_kind, layer, t), "attention_update"),
        (ComponentRef("ffn", layer), ("ffn", layer, t), "ffn_update"),
    ]:
        try:
            stored = traced.saved.projection(node, kind)
        except LmscopeError:
            continue  # not on any route of this tiny model
        result = card(ref, traced.saved)
        assert [(r["token"], r["score"]) for r in result["promoted"]] == [
            (token, pytest.approx(logit)) for token, logit, _ in stored["top"][:8]
        ]
        assert [(r["token"], r["score"]) for r in result["suppressed"]] == [
            (token, pytest.approx(logit)) for token, logit in stored["bottom"][:8]
        ]


def test_blocks_the_trace_did_not_store_are_projected_with_the_model(llama):
    # M(0, 1) is on no route of the tiny llama at the trace's minimum threshold.
    ref = ComponentRef("ffn", 0)
    saved = card(ref, llama.saved, token=1)
    assert saved["promoted"] == [] and "need the model" in " ".join(saved["notes"])
    live = card(ref, llama.live, token=1)
    assert len(live["promoted"]) == 8 and len(live["suppressed"]) == 8
    assert live["promoted"][0]["score"] > live["suppressed"][0]["score"]


def rounded_scores(value: Any) -> Any:
    """A card with token scores rounded to 5 significant digits: the same logit computed from
    one vector or from a batch of them differs in the last float32 bits."""
    if isinstance(value, dict):
        return {
            k: float(f"{v:.5g}") if k == "score" else rounded_scores(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [rounded_scores(v) for v in value]
    return value


def test_a_saved_trace_with_its_model_gives_the_live_trace_s_card(traced):
    for ref in all_kinds(traced.live):
        with_model = card(ref, traced.saved, model=traced.model)
        assert rounded_scores(with_model) == rounded_scores(card(ref, traced.live))


def test_a_saved_trace_alone_gives_the_live_context_for_heads_and_blocks(traced):
    for ref in all_kinds(traced.live):
        if ref.kind == "neuron":
            continue
        saved, live = card(ref, traced.saved), card(ref, traced.live)
        assert saved["context"] == live["context"]
        if ref.kind == "head":
            assert saved["promoted"] == [] and live["promoted"]
            assert "need the model" in " ".join(saved["notes"])


def test_a_model_that_is_not_the_trace_s_is_not_used(llama):
    other = build_tiny("gpt2")
    result = card(ComponentRef("neuron", 0, 3), llama.saved, model=other)
    assert result["promoted"] == []
    assert "is not this trace's model" in " ".join(result["notes"])


def test_head_and_block_tokens_need_a_prompt(llama):
    for ref in [ComponentRef("head", 0, 0), ComponentRef("attention", 0), ComponentRef("ffn", 0)]:
        result = card(ref, None, model=llama.model)
        assert result["promoted"] == [] and "depend on the prompt" in " ".join(result["notes"])


# --- Markdown --------------------------------------------------------------------------------
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "``` code ```",
    "`",
    "a|b",
    "line\nbreak",
    "**bold** _it_",
    "[link](javascript:alert(1))",
    "![img](http://evil.example/x.png)",
    "http://evil.example",
    "www.evil.example",
    "&lt;b&gt;",
    "\u202eevil",
    "back\\slash",
    "# heading",
    "   three",
    "- item",
    "</td></tr>",
    "\\|![x](http://evil.example/y.png)",
]


def hostile(trace: Trace) -> Trace:
    """The same trace with every token string replaced by a hostile one."""
    data = dataclasses.replace(
        trace.data,
        vocabulary={
            i: HOSTILE[n % len(HOSTILE)] for n, i in enumerate(sorted(trace.data.vocabulary))
        },
        tokens=dataclasses.replace(
            trace.data.tokens,
            strings=[HOSTILE[n % len(HOSTILE)] for n in range(trace.n_tokens)],
        ),
    )
    return Trace(data)


def render(markdown: str) -> str:
    # The most permissive renderer: raw HTML on, GFM tables on, links linkified.
    return (
        MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table").render(markdown)
    )


@pytest.mark.parametrize("family", SEQUENTIAL_WITH_EDGES)
def test_hostile_token_strings_render_inert(family, tmp_path):
    traced = _traced(family, tmp_path / "t.lmtrace")
    trace = hostile(traced.saved)
    refs = [*refs_on_route(traced.saved), ComponentRef("ffn", 0)]
    assert any(r.kind == "head" for r in refs)
    for ref in refs:
        result = card(ref, trace)
        markdown = result["markdown"]
        # Outside code spans nothing is raw: no tag can open, no unescaped backtick.
        prose = _CODE_SPAN.sub("", markdown)
        assert "<" not in prose and ">" not in prose
        assert re.search(r"(?<!\\)`", prose) is None
        html = render(markdown)
        for tag in ("<img", "<script", "<a ", "<h1", "<ul", "<pre"):
            assert tag not in html
        # Every code span is one token's display, whole.
        spans = [unescape(code) for code in re.findall(r"<code>(.*?)</code>", html)]
        assert spans and set(spans) <= DISPLAYED
        # The only emphasis is ours: the title, the share, and one italic line per note.
        assert html.count("<strong>") == 2
        assert html.count("<em>") == len(result["notes"])
        rows = [row for row in html.split("<tr>")[2:]]
        for row in rows:
            assert row.count("<td") == 4  # no cell was split or merged


# A code span as md_code writes it: a fence, the text, the same fence.
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
# What a rendered code span may hold: a hostile token's display (a backslash right before a `|`
# shows doubled in a table cell: `_escaped_pipe`).
DISPLAYED = {display_token(t, limit=TOKEN_CHARS) for t in HOSTILE} | {
    display_token(t, limit=TOKEN_CHARS).replace("\\|", "\\\\|") for t in HOSTILE
}


def test_markdown_tables_keep_four_cells_even_for_pipes_and_line_breaks(llama):
    trace = hostile(llama.saved)
    markdown = card(ComponentRef("attention", 2), trace)["markdown"]
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 8
    for line in table:
        assert len(re.findall(r"(?<!\\)\|", line)) == 5


def _marked_cells(row: str) -> list[str]:
    """A GFM table row split into cells as marked (VS Code's Markdown) splits it: at each `|`
    not after an odd run of backslashes, before code spans are read."""
    cells, start = [], 0
    for match in re.finditer(r"(\\*)\|", row):
        if len(match.group(1)) % 2 == 0:
            cells.append(row[start : match.end() - 1])
            start = match.end()
    return [*cells, row[start:]]


def test_table_cells_escape_pipes_so_that_every_renderer_keeps_them_whole():
    for token in ["a|b", "a\\|b", "a\\\\|b", "\\|![x](http://evil.example/y.png)", "||"]:
        cell = md_token(token, in_table=True)
        assert _marked_cells(f"| {cell} | 1 |") == ["", f" {cell} ", " 1 ", ""], token
        html = render(f"| h | s |\n|---|---|\n| {cell} | 1 |\n")  # markdown-it, as GFM
        (row,) = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td>1</td>", html)
        assert unescape(row).removeprefix("<code>").removesuffix("</code>") in {
            display_token(token),
            display_token(token).replace("\\|", "\\\\|"),  # one more backslash, never a split
        }


def test_md_token_shows_tokens_as_every_view_does_in_code_spans():
    assert md_token(" Mary") == "`·Mary`"
    assert md_token("a\nb\tc") == "`a⏎b→c`"
    assert md_token("   x") == "`···x`"
    assert md_token("\u202e") == "`\\u202e`"
    assert md_token("") == "`∅`"
    assert md_token("x" * 100) == "`" + "x" * 39 + "…`"
    assert md_token("`") == "`` ` ``" and md_token("a``b") == "```a``b```"
    assert md_token("a|b") == "`a|b`" and md_token("a|b", in_table=True) == "`a\\|b`"
    assert md_token("a\\|b", in_table=True) == "`a\\\\\\|b`"  # an odd run of backslashes
    assert md_token("\ufffd", b"\xe2\x80") == "`⟨E2 80⟩`"
    assert md_text("<b> & a|b `c` *d*") == "&lt;b&gt; &amp; a\\|b \\`c\\` \\*d\\*"


def test_cards_show_byte_pieces_as_their_bytes_with_a_note(llama):
    from lmscope.protocol.vocabulary import TOKENS
    from lmscope.traces.pieces import TOKEN_BYTES_KEY

    saved = llama.saved
    n, vocab = saved.n_tokens, sorted(saved.data.vocabulary)
    extra = {
        **saved.data.extra,
        TOKEN_BYTES_KEY: {"tokens": ["e280"] * n, "vocabulary": ["e2"] * len(vocab)},
    }
    trace = Trace(dataclasses.replace(saved.data, extra=extra))
    markdown = card(ComponentRef("attention", 2), trace)["markdown"]
    assert "`⟨E2 80⟩`\u00a0@" in markdown and "| `⟨E2⟩` |" in markdown
    assert markdown.count(md_text(TOKENS.hints["bytePiece"])) == 1
    plain = dataclasses.replace(saved.data, vocabulary=dict.fromkeys(vocab, "\ufffd"))
    markdown = card(ComponentRef("attention", 2), Trace(plain))["markdown"]
    assert md_text(TOKENS.hints["maybeBytePiece"]) in markdown


def test_markdown_reads_as_a_card(llama):
    ref = refs_on_route(llama.live)[1]
    assert ref.kind == "head"
    markdown = card(ref, llama.live)["markdown"]
    lines = markdown.split("\n\n")
    assert lines[0] == f"**{ref.label()} · attention head** — layer {ref.layer} of tiny\\-llama"
    assert re.match(r"carries \*\*[0-9.]+%\*\* of the prediction of `.+` after `", lines[1])
    assert "τ = 0.01" in lines[1]
    assert any(line.startswith("route edges: ") for line in lines)
    assert any(line.startswith("attends most (attention weight): ") for line in lines)
    assert "| promoted | score | suppressed | score |" in markdown
    notes = card(ComponentRef("head", 0, 0), None)["markdown"]
    assert "_no trace\\: trace a prompt to see where this component acts_" in notes


def test_a_head_s_attention_summary_lists_only_causal_pairs(llama):
    # At token 1 the route's layer-0 targets are positions 0 and 1: three (target, source) pairs.
    markdown = card(ComponentRef("head", 0, 1), llama.live, token=1)["markdown"]
    (line,) = [x for x in markdown.split("\n\n") if x.startswith("attends most")]
    pairs = re.findall(r"@(\d+) ← `[^`]*`\u00a0@(\d+)", line)
    assert pairs and all(int(source) <= int(target) for target, source in pairs)


def test_cards_validate_against_the_protocol_schema(traced):
    for ref in all_kinds(traced.live):
        for trace, model in [(traced.live, None), (traced.saved, None), (None, traced.model)]:
            protocol.validate_result(
                "lmscope/component", card(ref, trace, model=model, handle="t3")
            )
    protocol.validate_result("lmscope/component", component_card(ComponentRef("head", 99, 99)))
