"""Interpretation cards: what a head, a neuron or a block does, for hovers on `L12H3` & co.

`component_card(ref, trace, live=...)` returns the wire `Card`: the tokens the component
promotes and suppresses, where it acts on the route of one output token (its share, its edges,
a neuron's activation), plain-language notes on what could not be answered, and the whole
rendered as Markdown (`cards.markdown`). Missing inputs are never an error: without a trace
there is no context, without the model some lists stay empty, and a note says so each time.
Only a component the model does not have (layer, head or neuron out of range) raises
`LmscopeError`.

What needs the model comes through `traces.live.LiveQueries` (the trace's own, or the loaded
model when it is the trace's model), one batch per card, so this module never imports torch. A
card never waits for the model: while a trace holds it, the card answers at once from what the
trace stores and says what needs the model (`ModelBusyError`).

Promoted / suppressed tokens (direct logit attribution, docs/method.md "Vocabulary
projections"):
- neuron L{l}N{k}: its output row `W_out[k]` through the final norm frozen at the row itself,
  no bias: a positive multiple of the row's direction. It needs the weights (the model), not
  the prompt. A negative activation in context flips both lists (a note says so).
- head L{l}H{h}: the head's output at the output position t, Σ_j A[h,t,j] · v_j · W_O[h],
  projected like the engine's attention update. A trace stores projections of whole blocks
  only, so this needs the model.
- blocks L{l}.attn / L{l}.ffn: the trace's stored `attention_update` projection of A(l,t)
  (parallel blocks: of R(l,t)) and `ffn_update` projection of M(l,t); computed with the model
  when the trace did not store them.
All are pre-cap: where the trace records a final-logit soft-cap (`extra["lmscope.logitSoftcap"]`,
Gemma 2) a note says the scores are pre-cap logits.

Context (with a trace): the route of output token t at threshold τ, and `Route.flow()` (the
share of the output passing through each node; docs/method.md "Flow"). A component's share sums
over every position of its layer on the route (one path crosses a layer's attention once and
its FFN at most once, so the terms add up):
- attention block: Σ over the route's attention edges at layer l of flow(target) · weight;
- head h: the same with the head's own weight `edge.heads[h]`; `context.edges` are the route's
  attention edges at layer l where the head's weight is > 0, with that weight. Where the head
  *looks* (its attention A[h, i, ·] into the route's nodes at layer l) is in the Markdown only;
- FFN block: Σ over the route's FFN nodes M(l, i) of flow(M(l, i));
- neuron k: Σ over those FFN nodes of flow(M(l, i)) · c_k / (1 − c_rest), where c_k and
  c_rest are the neuron's and the non-neuron part's contributions at the neuron step: the
  neuron's part of the FFN node, renormalised over the neurons. Without the model only the
  stored top neurons are known, so nodes where the neuron is not among them count 0 (noted).
  `context.activation` is a[t, k] at the output position t, when known.
In raw mode weights need not sum to 1, so shares are relative only (noted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmscope.cards.experts import fill_expert, fill_expert_neuron
from lmscope.cards.markdown import card_markdown
from lmscope.cards.parts import BUSY, stored_neuron
from lmscope.cards.parts import context as _context
from lmscope.cards.runs import RunStats, run_line
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError, ModelBusyError, NeedsModelError
from lmscope.graph import (
    ATTENTION_EDGE,
    FFN,
    POST_ATTENTION,
    RENORMALIZE,
    RESIDUAL,
    Edge,
    Node,
    Route,
)
from lmscope.protocol import defaults
from lmscope.traces.data import PROJ_ATTENTION_UPDATE, PROJ_FFN_UPDATE, logit_softcap
from lmscope.traces.live import TOP_TOKENS, LiveQueries, TokenScores
from lmscope.traces.pieces import StoredBytes
from lmscope.traces.text import display_token
from lmscope.traces.trace import Trace

TOP_PATTERN = 5  # strongest attention weights shown for a head

_TITLES = {
    "head": "attention head",
    "neuron": "FFN neuron",
    "attention": "attention block",
    "ffn": "FFN block",
    "expert": "expert",
    "expert_neuron": "expert neuron",
}


@dataclass
class _Card:
    """What a card says, filled step by step; `wire()` gives the protocol dict."""

    ref: ComponentRef
    promoted: TokenScores = field(default_factory=list)
    suppressed: TokenScores = field(default_factory=list)
    context: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # Markdown only:
    subtitle: str = ""
    tokens: list[str] = field(default_factory=list)
    predicted: str | None = None
    pattern: list[tuple[int, int, float]] = field(default_factory=list)  # (source, target, A)
    token_bytes: list[bytes | None] = field(default_factory=list)  # byte pieces' bytes
    vocabulary_bytes: dict[int, bytes] = field(default_factory=dict)
    predicted_bytes: bytes | None = None
    run_line: str | None = None  # cards/runs.py

    def wire(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "title": f"{self.ref.label()} · {_TITLES[self.ref.kind]}",
            "component": self.ref.to_wire(),
            "promoted": self.promoted,
            "suppressed": self.suppressed,
            "context": self.context,
            "notes": self.notes,
        }
        card["markdown"] = card_markdown(
            card,
            subtitle=self.subtitle,
            tokens=self.tokens,
            predicted=self.predicted,
            pattern=self.pattern,
            token_bytes=self.token_bytes,
            vocabulary_bytes=self.vocabulary_bytes,
            predicted_bytes=self.predicted_bytes,
            run_line=self.run_line,
        )
        return card


@dataclass
class _Sizes:
    name: str
    n_layers: int
    n_heads: int
    d_ffn: int


@dataclass
class _RouteView:
    route: Route
    flow: dict[Node, float]

    @property
    def token(self) -> int:
        return self.route.token

    def attention_edges(self, layer: int) -> list[Edge]:
        return [e for e in self.route.edges_of_kind(ATTENTION_EDGE) if e.target.layer == layer]

    def nodes(self, kind: str, layer: int) -> list[Node]:
        return sorted(n for n in self.route.nodes if n.kind == kind and n.layer == layer)


def component_card(
    ref: ComponentRef,
    trace: Trace | None = None,
    *,
    token: int = defaults.TOKEN,
    threshold: float = defaults.THRESHOLD,
    renormalize: bool = True,
    live: LiveQueries | None = None,
    handle: str | None = None,
    notes: Iterable[str] = (),
    run: RunStats | None = None,
) -> dict[str, Any]:
    """The wire Card of `ref`, in the context of `trace`'s route of output `token` if given.

    `live` answers what needs the model: the trace's own live queries when it has them, else
    what the caller passes (the loaded model, matched to a saved trace, or with no prompt when
    there is no trace). `handle` is the trace's wire handle, copied into `context.handle`;
    `notes` are the caller's (e.g. why the loaded model is not used); `run`, a corpus run
    whose line the card adds for a head or an FFN block of its model (cards/runs.py).
    """
    card = _Card(ref, notes=list(notes))
    if trace is not None and trace.live is not None:
        live = trace.live
    runner = None if live is None else live.batch(wait=False)
    sizes = _sizes(trace, runner)
    if sizes is None:
        card.notes.append("no trace or model: the layer and index are not checked")
    else:
        _check(ref, sizes)
        card.subtitle = f"layer {ref.layer} of {sizes.name}"
    view = None
    if trace is not None:
        route = trace.route(token, threshold, renormalize)
        view = _RouteView(route, route.flow())
        card.tokens = trace.tokens
        stored = StoredBytes.of(trace.data)
        card.token_bytes, card.vocabulary_bytes = stored.prompt, stored.vocabulary
        predictions = trace.predictions(route.token)
        card.predicted = predictions[0][0] if predictions else None
        if predictions:
            card.predicted_bytes = stored.vocabulary.get(
                int(trace.data.predictions.ids[route.token][0])
            )
        generated = trace.generation
        k = None if generated is None else generated.predicted_index(route.token)
        if k is not None:  # the route that predicted a generated token (lmscope.chats)
            shown = display_token(trace.tokens[route.token + 1], limit=24)
            card.notes.append(f"route of the prediction of generated token {k + 1} “{shown}”")
    else:
        card.notes.append("no trace: trace a prompt to see where this component acts")
    if ref.kind == "expert":  # mixtures of experts: cards/experts.py
        fill_expert(card, trace, view, runner)
    elif ref.kind == "expert_neuron":
        fill_expert_neuron(card, trace, view, runner)
    elif ref.kind == "neuron":
        _neuron(card, trace, view, runner)
    elif ref.kind == "head":
        _head(card, trace, view, runner)
    else:
        _block(card, trace, view, runner)
    if view is not None and card.context is not None:
        card.context.update(
            handle=handle,
            token=view.token,
            threshold=float(threshold),
            mode=view.route.mode,
        )
        if view.route.mode != RENORMALIZE:
            card.notes.append("raw mode: weights need not sum to 1, so the share is relative")
    cap = None if trace is None else logit_softcap(trace.data.extra)
    if cap is not None and (card.promoted or card.suppressed):
        card.notes.append(
            f"scores are pre-cap logits: the model caps its final logits at c·tanh(ℓ/c), "
            f"c = {cap:g} (same ranking)"
        )
    card.run_line = run_line(ref, run, trace, runner)
    return card.wire()


def _sizes(trace: Trace | None, live: LiveQueries | None) -> _Sizes | None:
    facts = trace.data.model if trace is not None else live.facts if live is not None else None
    if facts is None:
        return None
    return _Sizes(facts.name, facts.n_layers, facts.n_heads, facts.d_ffn)


def _check(ref: ComponentRef, sizes: _Sizes) -> None:
    """LmscopeError when the model has no such component."""
    if ref.layer >= sizes.n_layers:
        raise LmscopeError(
            f"{ref.label()}: layer {ref.layer} is out of range: {sizes.name} has "
            f"{sizes.n_layers} layers (0-{sizes.n_layers - 1})"
        )
    if ref.kind == "head" and ref.index is not None and ref.index >= sizes.n_heads:
        raise LmscopeError(
            f"{ref.label()}: head {ref.index} is out of range: {sizes.name} has "
            f"{sizes.n_heads} heads per layer (0-{sizes.n_heads - 1})"
        )
    if ref.kind == "neuron" and ref.index is not None and ref.index >= sizes.d_ffn:
        raise LmscopeError(
            f"{ref.label()}: neuron {ref.index} is out of range: {sizes.name} has "
            f"{sizes.d_ffn} FFN neurons per layer (0-{sizes.d_ffn - 1})"
        )


# --- neurons ---------------------------------------------------------------------------------
def _neuron(
    card: _Card, trace: Trace | None, view: _RouteView | None, live: LiveQueries | None
) -> None:
    layer, k = card.ref.layer, card.ref.index
    assert k is not None
    if live is not None:
        card.promoted, card.suppressed = live.neuron_tokens(layer, k, TOP_TOKENS)
    else:
        card.notes.append("promoted/suppressed tokens need the model")
    if trace is None or view is None:
        return
    ffn_nodes = view.nodes(FFN, layer)
    positions = sorted({n.position for n in ffn_nodes} | {view.token})
    known = None
    if live is not None and live.has_prompt:
        try:
            known = live.neuron_at(layer, k, positions)
        except ModelBusyError:
            card.notes.append(BUSY)
    if known is None:
        known = stored_neuron(trace, layer, k, positions)
    share = 0.0
    for node in ffn_nodes:
        if node.position in known:
            found = known[node.position]
            if found.rest < 1.0:
                share += view.flow.get(node, 0.0) * found.contribution / (1.0 - found.rest)
    activation = known[view.token].activation if view.token in known else None
    card.context = _context(share, [], activation)
    label = card.ref.label()
    if not ffn_nodes:
        card.notes.append(f"no FFN node of layer {layer} is on the route: it carries none of it")
    missing = [n for n in ffn_nodes if n.position not in known]
    if missing:
        top = trace.data.settings.top_neurons
        where = ", ".join(n.label() for n in missing)
        card.notes.append(
            f"{label} is not among the top {top} neurons stored for {where}: "
            "the share counts 0 there (load the model for exact numbers)"
        )
    if activation is None and view.token not in {n.position for n in missing}:
        card.notes.append(
            f"its activation at token {view.token} is not stored in this trace: it needs the model"
        )
    if activation is not None and activation < 0:
        card.notes.append(
            f"activation is negative here ({activation:.3g}): it suppresses the 'promoted' list "
            "and promotes the 'suppressed' one"
        )


# --- heads -----------------------------------------------------------------------------------
def _head(
    card: _Card, trace: Trace | None, view: _RouteView | None, live: LiveQueries | None
) -> None:
    layer, h = card.ref.layer, card.ref.index
    assert h is not None
    if trace is None or view is None:
        card.notes.append("a head's promoted tokens depend on the prompt: trace one to see them")
        return
    parallel = trace.data.model.parallel_blocks
    mine = [e for e in view.attention_edges(layer) if e.heads and e.heads[h] > 0]
    mine.sort(key=lambda e: (-e.heads[h], e.target.position, e.source.position))
    share = sum(view.flow.get(e.target, 0.0) * e.heads[h] for e in mine)
    edges = [
        {"source": e.source.position, "target": e.target.position, "weight": float(e.heads[h])}
        for e in mine
    ]
    card.context = _context(share, edges, None)
    if not mine:
        card.notes.append(f"{card.ref.label()} is on no attention edge of the route")
    targets = [n.position for n in view.nodes(RESIDUAL if parallel else POST_ATTENTION, layer)]
    if live is not None and live.has_prompt and _model_free_for(card, live, layer):
        pattern = live.attention_pattern(layer, h)  # [n, n]
        causal = np.arange(pattern.shape[1]) <= np.asarray(targets)[:, None]  # [targets, n]
        rows = np.where(causal, pattern[targets], -np.inf)
        order = np.argsort(-rows, axis=None, kind="stable")[:TOP_PATTERN]
        card.pattern = [
            (int(j), targets[r], float(rows[r, j]))
            for r, j in zip(*np.unravel_index(order, rows.shape))
            if causal[r, j]
        ]
        card.promoted, card.suppressed = live.head_tokens(layer, h, view.token, TOP_TOKENS)
    else:
        stored = trace.data.edges
        rows = np.nonzero((stored.layer == layer) & np.isin(stored.target, targets))[0]
        card.pattern = _strongest(
            (int(stored.source[r]), int(stored.target[r]), float(stored.head_attention[r, h]))
            for r in rows
        )
        card.notes.append(
            "a single head's promoted/suppressed tokens need the model: the trace stores them "
            f"for whole blocks (see L{layer}.attn)"
        )


def _model_free_for(card: _Card, live: LiveQueries, layer: int) -> bool:
    """Run `layer` on the prompt now if the model is free (the batch keeps that capture for the
    card's other queries); False, with a note, while a trace holds the model."""
    try:
        live.attention_pattern(layer, 0)
    except ModelBusyError:
        card.notes.append(BUSY)
        return False
    return True


def _strongest(entries: Iterable[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """The TOP_PATTERN strongest (source, target, attention) entries, ties by position."""
    return sorted(entries, key=lambda e: (-e[2], e[1], e[0]))[:TOP_PATTERN]


# --- blocks ----------------------------------------------------------------------------------
def _block(
    card: _Card, trace: Trace | None, view: _RouteView | None, live: LiveQueries | None
) -> None:
    layer, attention = card.ref.layer, card.ref.kind == "attention"
    what = "an attention block's" if attention else "an FFN block's"
    if trace is None or view is None:
        card.notes.append(f"{what} promoted tokens depend on the prompt: trace one to see them")
        return
    parallel = trace.data.model.parallel_blocks
    t = view.token
    if attention:
        mine = sorted(
            view.attention_edges(layer),
            key=lambda e: (-e.weight, e.target.position, e.source.position),
        )
        share = sum(view.flow.get(e.target, 0.0) * e.weight for e in mine)
        edges = [
            {"source": e.source.position, "target": e.target.position, "weight": float(e.weight)}
            for e in mine
        ]
        card.context = _context(share, edges, None)
        if not mine:
            card.notes.append(f"no attention edge of layer {layer} is on the route")
        node = Node(RESIDUAL if parallel else POST_ATTENTION, layer, t)
        kind = PROJ_ATTENTION_UPDATE
    else:
        ffn_nodes = view.nodes(FFN, layer)
        share = sum(view.flow.get(n, 0.0) for n in ffn_nodes)
        card.context = _context(share, [], None)
        if not ffn_nodes:
            card.notes.append(f"no FFN node of layer {layer} is on the route")
        node, kind = Node(FFN, layer, t), PROJ_FFN_UPDATE
    lists = None
    if trace.live is None or trace.has_projection(node, kind):  # at hand: no forward pass
        lists = _stored_projection(trace, node, kind)
    if lists is not None:
        card.promoted, card.suppressed = lists
    elif live is not None and live.has_prompt:
        block = "attention" if attention else "ffn"
        try:
            card.promoted, card.suppressed = live.block_tokens(layer, block, t, TOP_TOKENS)
        except ModelBusyError:
            card.notes.append(BUSY)
    else:
        card.notes.append(
            f"the trace stores no {kind} projection of {node.label()} (it is on no route at "
            f"τ ≥ {trace.data.settings.min_threshold}): promoted/suppressed tokens need the model"
        )


def _stored_projection(
    trace: Trace, node: Node, kind: str
) -> tuple[TokenScores, TokenScores] | None:
    """The trace's (kind) projection of `node` as card token lists: stored, or computed by a
    live trace; None when a saved trace does not store it."""
    try:
        lists, ids = trace.projection(node, kind), trace.projection_ids(node, kind)
    except NeedsModelError:
        return None
    top = [
        {"token": token, "id": i, "score": logit}
        for (token, logit, _rank), i in zip(lists["top"], ids["top"])
    ]
    bottom = [
        {"token": token, "id": i, "score": logit}
        for (token, logit), i in zip(lists["bottom"], ids["bottom"])
    ]
    return top[:TOP_TOKENS], bottom[:TOP_TOKENS]
