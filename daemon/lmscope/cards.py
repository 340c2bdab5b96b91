"""Interpretation cards: what a head, a neuron or a block does, for hovers on `L12H3` & co.

`component_card(ref, trace, model=...)` returns the wire `Card` (protocol item 10): the tokens
the component promotes and suppresses, where it acts on the route of one output token (its
share, its edges, a neuron's activation), plain-language notes on what could not be answered,
and the whole rendered as Markdown. Missing inputs are never an error: without a trace there is
no context, without the model some lists stay empty, and a note says so each time. Only a
component the model does not have (layer, head or neuron out of range) raises `LmscopeError`.

Promoted / suppressed tokens (direct logit attribution, method.md "Vocabulary projections"):
- neuron L{l}N{k}: `W_U · norm_final(W_out[k])` with the norm's scale frozen at `W_out[k]`
  itself and no bias, i.e. `W_U(γ⊙w)/rms(w)` (RMSNorm) or `W_U(γ⊙(w − mean w))/σ(w)`
  (LayerNorm): a positive multiple of the row's direction, so the ranking is the row's and the
  scores are the logits of the row at unit norm scale. It needs the weights (the model); it does
  not depend on the prompt. A negative activation in context flips both lists (a note says so).
- head L{l}H{h}: the head's output at the output position t, Σ_j A[h,t,j] · v_j · W_O[h],
  projected like the engine's attention update (scale frozen at the residual it is added
  into). A trace stores projections of whole blocks only, so this needs the model.
- blocks L{l}.attn / L{l}.ffn: the trace's stored `attention_update` projection of A(l,t)
  (parallel blocks: of R(l,t)) and `ffn_update` projection of M(l,t); computed with the model
  when the trace did not store them.

Context (with a trace): the route of output token t at threshold τ, and `Route.flow()` (the
share of the output passing through each node). A component's share sums over every position
of its layer on the route (one path crosses a layer's attention once and its FFN at most once,
so the terms add up):
- attention block: Σ over the route's attention edges at layer l of flow(target) · weight;
- head h: the same with the head's own weight `edge.heads[h]`; `context.edges` are the route's
  attention edges at layer l where the head's weight is > 0, with that weight (so the block's
  edge weights are the sums of its heads'). Where the head *looks* (its attention A[h, i, ·]
  into the route's nodes at layer l) is shown in the Markdown only;
- FFN block: Σ over the route's FFN nodes M(l, i) of flow(M(l, i));
- neuron k: Σ over those FFN nodes of flow(M(l, i)) · c_k / (1 − c_rest), where c_k and
  c_rest are the neuron's and the non-neuron part's contributions at the neuron step: the
  neuron's part of the FFN node, renormalised over the neurons. Without the model only the
  stored top neurons are known, so nodes where the neuron is not among them count 0 (noted).
  `context.activation` is a[t, k] at the output position t, when known.
In raw mode weights need not sum to 1, so shares are relative only (noted).

Markdown: every token and name is inert text: HTML specials become entities, every other ASCII
punctuation is backslash-escaped (no emphasis, links, autolinks or table breaks), control and
invisible characters are shown as `\\n` / `\\u202e`. Tokens are quoted “like this” rather than
put in code spans, because nothing inside a code span can be escaped (a `<` stays a `<`, a `|`
still splits a table row in GFM).

Why over 400 lines: four component kinds, each answered from a saved trace or with the model,
plus the Markdown they render to; split the Markdown helpers out when a second user appears.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lmscope.attribution.graph import ATTENTION_EDGE, RENORMALIZE, Edge, Node, Route
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError, NeedsModelError
from lmscope.traces.data import (
    FFN,
    POST_ATTENTION,
    PROJ_ATTENTION_UPDATE,
    PROJ_FFN_UPDATE,
    RESIDUAL,
)
from lmscope.traces.trace import LiveModel, Trace

if TYPE_CHECKING:
    import torch

    from lmscope.models.loading import LoadedModel
    from lmscope.tracing.capture import LayerCapture

TOP_TOKENS = 8  # promoted / suppressed tokens per card
TOP_PATTERN = 5  # strongest attention weights shown for a head
TOP_EDGES = 5  # route edges listed in the Markdown
TOKEN_CHARS = 40  # longer tokens are cut in the Markdown

_TITLES = {
    "head": "attention head",
    "neuron": "FFN neuron",
    "attention": "attention block",
    "ffn": "FFN block",
}


# --- the card --------------------------------------------------------------------------------
@dataclass
class _Card:
    """What a card says, filled step by step; `wire()` gives the protocol dict."""

    ref: ComponentRef
    promoted: list[dict[str, Any]] = field(default_factory=list)
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # Markdown only:
    subtitle: str = ""
    tokens: list[str] = field(default_factory=list)
    predicted: str | None = None
    pattern: list[tuple[int, int, float]] = field(default_factory=list)  # (source, target, A)

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


class _Model:
    """The model for weight and live queries, with at most one re-run per card."""

    def __init__(self, loaded: LoadedModel, token_ids: list[int] | None) -> None:
        from lmscope.models.adapter import adapter_for

        self.loaded = loaded
        self.adapter = adapter_for(loaded.model)
        self.token_ids = token_ids  # None: no prompt (weights only)
        self._captured: dict[int, LayerCapture] = {}

    def layer(self, layer: int) -> LayerCapture:
        """What `layer` computed on the trace's prompt (runs the model up to that layer)."""
        from lmscope.traces.trace import _recapture

        assert self.token_ids is not None
        if layer not in self._captured:
            self._captured[layer] = _recapture(LiveModel(self.loaded, self.token_ids), layer)
        return self._captured[layer]

    def token_lists(
        self, vector: torch.Tensor
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Top and bottom tokens of W_U · vector ([d], already through the frozen norm)."""
        from lmscope.tracing.engine import display_strings

        w_u = self.adapter.unembedding_weight()
        scores = w_u.float() @ vector.to(w_u.device).float()  # [V]
        k = min(TOP_TOKENS, scores.shape[0])
        top = scores.topk(k)
        bottom = scores.topk(k, largest=False)
        ids = [int(i) for i in top.indices] + [int(i) for i in bottom.indices]
        texts = display_strings(self.loaded, ids)
        values = [float(v) for v in top.values] + [float(v) for v in bottom.values]
        rows = [{"token": s, "id": i, "score": v} for s, i, v in zip(texts, ids, values)]
        return rows[:k], rows[k:]


def component_card(
    ref: ComponentRef,
    trace: Trace | None = None,
    *,
    token: int = -1,
    threshold: float = 0.04,
    renormalize: bool = True,
    model: LoadedModel | None = None,
    handle: str | None = None,
) -> dict[str, Any]:
    """The wire Card of `ref`, in the context of `trace`'s route of output `token` if given.

    `model` is used when the trace has no live model (a saved trace) and is the trace's model,
    or when there is no trace (neuron weights only). `handle` is the trace's wire handle,
    copied into `context.handle` (the server passes it).
    """
    card = _Card(ref)
    runner = _runner(trace, model, card.notes)
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
        predictions = trace.predictions(route.token)
        card.predicted = predictions[0][0] if predictions else None
    else:
        card.notes.append("no trace: trace a prompt to see where this component acts")
    if ref.kind == "neuron":
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
    return card.wire()


def _runner(trace: Trace | None, model: LoadedModel | None, notes: list[str]) -> _Model | None:
    """The model to use: the trace's live one, else `model` if it is the trace's model."""
    if trace is not None and trace.live is not None:
        return _Model(trace.live.loaded, list(trace.live.token_ids))
    if model is None:
        return None
    if trace is None:
        return _Model(model, None)
    runner = _Model(model, [int(i) for i in trace.data.tokens.ids])
    facts, adapter = trace.data.model, runner.adapter
    same = (
        model.content_hash == facts.content_hash
        and adapter.model_type == facts.model_type
        and (adapter.n_layers, adapter.d_model, adapter.vocab_size)
        == (facts.n_layers, facts.d_model, facts.vocab_size)
    )
    if not same:
        notes.append(
            f"the loaded model ({model.name}) is not this trace's model ({facts.name}): "
            "it is not used"
        )
        return None
    return runner


def _sizes(trace: Trace | None, runner: _Model | None) -> _Sizes | None:
    if trace is not None:
        m = trace.data.model
        return _Sizes(m.name, m.n_layers, m.n_heads, m.d_ffn)
    if runner is not None:
        a = runner.adapter
        return _Sizes(runner.loaded.name, a.n_layers, a.n_heads, a.d_ffn)
    return None


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


def _context(share: float, edges: list[dict[str, Any]], activation: float | None) -> dict[str, Any]:
    return {
        "handle": None,
        "token": 0,
        "threshold": 0.0,
        "mode": RENORMALIZE,
        "share": float(share),
        "edges": edges,
        "activation": activation,
    }


# --- neurons ---------------------------------------------------------------------------------
def _neuron(
    card: _Card, trace: Trace | None, view: _RouteView | None, runner: _Model | None
) -> None:
    layer, k = card.ref.layer, card.ref.index
    assert k is not None
    if runner is not None:
        with _inference():
            row = runner.adapter.ffn_output_weights(layer)[k].float()  # [d]
            direction = runner.adapter.frozen_final_norm(row, row)  # positive multiple of γ⊙w
            card.promoted, card.suppressed = runner.token_lists(direction)
    else:
        card.notes.append("promoted/suppressed tokens need the model")
    if trace is None or view is None:
        return
    ffn_nodes = view.nodes(FFN, layer)
    positions = sorted({n.position for n in ffn_nodes} | {view.token})
    if runner is not None:
        known = _live_neuron(runner, layer, k, positions)
    else:
        known = _stored_neuron(trace, layer, k, positions)
    share = 0.0
    for node in ffn_nodes:
        if node.position in known:
            contribution, _, rest = known[node.position]
            if rest < 1.0:
                share += view.flow.get(node, 0.0) * contribution / (1.0 - rest)
    activation = known[view.token][1] if view.token in known else None
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


def _live_neuron(
    runner: _Model, layer: int, k: int, positions: list[int]
) -> dict[int, tuple[float, float, float]]:
    """position -> (contribution c_k, activation a, rest c_rest) at FFN node (layer, position)."""
    import torch

    from lmscope.attribution.neurons import neuron_contributions

    captured = runner.layer(layer)
    with _inference():
        rows = torch.tensor(positions, device=captured.resid_out.device)
        act, whole = captured.ffn_act[rows], captured.resid_out[rows]
        w_out = runner.adapter.ffn_output_weights(layer).to(whole.device)
        result = neuron_contributions(act, w_out, whole, whole - captured.ffn_out[rows])
    return {
        p: (float(result.contribution[r, k]), float(act[r, k]), float(result.rest[r]))
        for r, p in enumerate(positions)
    }


def _stored_neuron(
    trace: Trace, layer: int, k: int, positions: list[int]
) -> dict[int, tuple[float, float, float]]:
    table = trace.data.neurons
    found = {}
    for row in np.nonzero(table.layer == layer)[0]:
        position = int(table.position[row])
        hit = np.nonzero(table.index[row] == k)[0]
        if position in positions and len(hit):
            col = int(hit[0])
            found[position] = (
                float(table.contribution[row, col]),
                float(table.activation[row, col]),
                float(table.rest_contribution[row]),
            )
    return found


# --- heads -----------------------------------------------------------------------------------
def _head(card: _Card, trace: Trace | None, view: _RouteView | None, runner: _Model | None) -> None:
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
    t = view.token
    if runner is not None:
        pattern = runner.layer(layer).attn_probs[h].cpu().numpy()  # [n, n]
        causal = np.arange(pattern.shape[1]) <= np.asarray(targets)[:, None]  # [targets, n]
        rows = np.where(causal, pattern[targets], -np.inf)
        order = np.argsort(-rows, axis=None, kind="stable")[:TOP_PATTERN]
        card.pattern = [
            (int(j), targets[r], float(rows[r, j]))
            for r, j in zip(*np.unravel_index(order, rows.shape))
            if causal[r, j]
        ]
        output, residual = _head_output(runner, layer, h, t, parallel)
        with _inference():
            vector = runner.adapter.frozen_final_norm(output, residual)
            card.promoted, card.suppressed = runner.token_lists(vector)
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


def _head_output(
    runner: _Model, layer: int, head: int, position: int, parallel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head `head`'s output at `position`, Σ_j A[h,i,j] · v_j · W_O[h] ([d], value bias
    excluded as in the attention parts), and the residual its norm scale is frozen at ([d])."""
    captured = runner.layer(layer)
    adapter = runner.adapter
    with _inference():
        values = captured.values[:, adapter.kv_head_of(head), :]  # [n, dh]
        w_o = adapter.head_output_weights(layer)[head].to(values.device).float()  # [dh, d]
        output = captured.attn_probs[head, position] @ values @ w_o  # [d]
        if parallel:
            residual = captured.resid_out[position]
        else:
            residual = captured.resid_in[position] + captured.attn_out[position]
    return output, residual


def head_tokens(
    trace: Trace, layer: int, head: int, position: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tokens head `head` of `layer` promotes and suppresses with its output at `position` of
    a live trace's prompt (wire `TokenScore` lists, strongest first). NeedsModelError on a
    trace without its model; `position` is already resolved (>= 0)."""
    if trace.live is None:
        raise NeedsModelError(
            f"the tokens L{layer}H{head} promotes need the model: a saved trace stores "
            "projections of whole blocks only"
        )
    runner = _Model(trace.live.loaded, list(trace.live.token_ids))
    output, residual = _head_output(runner, layer, head, position, trace.data.model.parallel_blocks)
    with _inference():
        return runner.token_lists(runner.adapter.frozen_final_norm(output, residual))


def _strongest(entries: Iterable[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """The TOP_PATTERN strongest (source, target, attention) entries, ties by position."""
    return sorted(entries, key=lambda e: (-e[2], e[1], e[0]))[:TOP_PATTERN]


# --- blocks ----------------------------------------------------------------------------------
def _block(
    card: _Card, trace: Trace | None, view: _RouteView | None, runner: _Model | None
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
    lists = _stored_projection(trace, node, kind)
    if lists is not None:
        card.promoted, card.suppressed = lists
    elif runner is not None:
        captured = runner.layer(layer)
        with _inference():
            if attention:
                update = captured.attn_out[t]
                residual = captured.resid_out[t] if parallel else captured.resid_in[t] + update
            else:
                update, residual = captured.ffn_out[t], captured.resid_out[t]
            vector = runner.adapter.frozen_final_norm(update, residual)
            card.promoted, card.suppressed = runner.token_lists(vector)
    else:
        card.notes.append(
            f"the trace stores no {kind} projection of {node.label()} (it is on no route at "
            f"τ ≥ {trace.data.settings.min_threshold}): promoted/suppressed tokens need the model"
        )


def _stored_projection(
    trace: Trace, node: Node, kind: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The trace's stored (kind) projection of `node` as card token lists, or None."""
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


def _inference():
    import torch

    return torch.inference_mode()


# --- Markdown --------------------------------------------------------------------------------
def card_markdown(
    card: dict[str, Any],
    *,
    subtitle: str = "",
    tokens: list[str] | None = None,
    predicted: str | None = None,
    pattern: list[tuple[int, int, float]] | None = None,
) -> str:
    """A Card (without "markdown") as Markdown; every piece of untrusted text is escaped.

    `tokens` (the prompt's tokens) label edge positions, `predicted` is the output token's top
    prediction, `pattern` a head's strongest attention (source, target, weight) on the route.
    """
    tokens = tokens or []

    def at(position: int) -> str:
        if 0 <= position < len(tokens):
            return f"{md_token(tokens[position])}\u00a0@{position}"
        return f"@{position}"

    # The title is ours (a label and a kind); the subtitle names the model: escaped.
    lines = [f"**{card['title']}**" + (f" — {md_text(subtitle)}" if subtitle else "")]
    context = card.get("context")
    if context is not None:
        share = context["share"]
        amount = f"**{100 * share:.1f}%**" if context["mode"] == RENORMALIZE else f"**{share:.3g}**"
        of = f" of {md_token(predicted)}" if predicted is not None else ""
        lines.append(
            f"carries {amount} of the prediction{of} after {at(context['token'])} "
            f"at τ = {context['threshold']:g} ({md_text(context['mode'])})"
        )
        if context.get("activation") is not None:
            lines.append(f"activation here: {context['activation']:.4g}")
        edges = context.get("edges") or []
        if edges:
            shown = ", ".join(
                f"{at(e['target'])} ← {at(e['source'])} {e['weight']:.3f}"
                for e in edges[:TOP_EDGES]
            )
            more = f" and {len(edges) - TOP_EDGES} more" if len(edges) > TOP_EDGES else ""
            lines.append(f"route edges: {shown}{more}")
    if pattern:
        shown = ", ".join(f"{at(i)} ← {at(j)} {a:.2f}" for j, i, a in pattern)
        lines.append(f"attends most (attention weight): {shown}")
    promoted, suppressed = card.get("promoted") or [], card.get("suppressed") or []
    if promoted or suppressed:
        table = ["| promoted | score | suppressed | score |", "|---|---:|---|---:|"]
        for r in range(max(len(promoted), len(suppressed))):
            cells = []
            for column in (promoted, suppressed):
                if r < len(column):
                    cells += [md_token(column[r]["token"]), f"{column[r]['score']:+.2f}"]
                else:
                    cells += ["", ""]
            table.append("| " + " | ".join(cells) + " |")
        lines.append("\n".join(table))
    lines += [f"_{md_text(note)}_" for note in card.get("notes") or []]
    return "\n\n".join(lines) + "\n"


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def md_text(text: str) -> str:
    """Untrusted text as inert Markdown: `& < >` as entities, every other ASCII punctuation
    backslash-escaped, control and invisible format characters (bidi overrides, zero-width,
    line separators) shown as escapes, so nothing can open a tag, link, emphasis or table cell."""
    out = []
    for char in text:
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _VISIBLE:
            out.append("\\" + _VISIBLE[char])  # the backslash itself escaped: shows "\n"
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(f"\\\\u{ord(char):04x}")
        elif char.isascii() and not char.isalnum() and not char.isspace():
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def md_token(token: str) -> str:
    """A token as inert, visible Markdown: escaped, quoted “…”, runs of spaces kept, long
    tokens cut."""
    if len(token) > TOKEN_CHARS:
        token = token[: TOKEN_CHARS - 1] + "…"
    # A space after another space would collapse when rendered: make it a no-break space.
    shown = re.sub(r"(?<= ) ", "\u00a0", md_text(token))
    return f"“{shown}”"


__all__ = ["card_markdown", "component_card", "head_tokens", "md_text", "md_token"]
