"""Cards of experts and expert neurons (`L5.E3`, `L5.S0`, `L5.E3.N120`; docs/method.md,
"Experts (mixture of experts)"), filled into a card `cards.card` started.

- expert (l, e): promoted/suppressed tokens of its part q[e,t] = g[t,e] · E_e(x̂_t) at the
  route's output token t, through the final norm frozen at x'_t (needs the model, and the
  expert chosen at t). Share: Σ over the route's FFN nodes M(l,i) of flow(M) · c_e /
  (1 − c_rest), with c_e, c_rest of the expert step; an expert the router did not choose at i
  is no part there (c_e = 0). The experts of a layer add up to the FFN block's share.
- expert neuron (l, e, k): its output row W_out^e[k] projected like a dense neuron's (weights
  only); share as a neuron's, from the neuron step with experts; its signed activation
  a_e[t,k] and the expert's gate g[t,e] are shown apart (the part is their product with the
  row).
What the trace stores answers without the model: the experts table of its detailed FFN nodes
(every chosen expert, so an unchosen one is known to be 0) and their top neurons (flat ids).
Torch-free, like every card.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lmscope.cards.parts import BUSY, context, stored_neuron
from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError, ModelBusyError
from lmscope.graph import FFN, Node
from lmscope.traces.experts import ExpertLayout
from lmscope.traces.experts import stored as stored_experts
from lmscope.traces.live import TOP_TOKENS, ExpertAt, LiveQueries, NeuronAt, TokenScores
from lmscope.traces.trace import Trace


class CardParts(Protocol):
    """The fields of a card this module fills (`cards.card`'s card under construction)."""

    ref: ComponentRef
    promoted: TokenScores
    suppressed: TokenScores
    context: dict[str, Any] | None
    notes: list[str]


class RouteFlow(Protocol):
    """The route of the card's output token and its flow (`cards.card`'s view)."""

    flow: dict[Node, float]

    @property
    def token(self) -> int: ...

    def nodes(self, kind: str, layer: int) -> list[Node]: ...


def layout_of(trace: Trace | None, live: LiveQueries | None, ref: ComponentRef) -> ExpertLayout:
    """The model's expert layout, with `ref` checked against it (LmscopeError otherwise)."""
    layout = trace.expert_layout if trace is not None else None
    if layout is None and live is not None:
        layout = live.expert_layout
    if layout is None:
        if trace is None and live is None:
            raise LmscopeError(f"{ref.label()}: experts need a trace or the model to be named")
        raise LmscopeError(f"{ref.label()}: the model is dense: it has no experts")
    if not layout.is_sparse(ref.layer):
        raise LmscopeError(f"{ref.label()}: layer {ref.layer} has a dense FFN, not experts")
    count = layout.n_shared if ref.shared else layout.n_experts
    assert ref.expert is not None
    if ref.expert >= count:
        what = "shared experts" if ref.shared else "experts"
        raise LmscopeError(
            f"{ref.label()}: the model has {count} {what} per sparse layer (0-{count - 1})"
            if count
            else f"{ref.label()}: the model has no shared experts"
        )
    width = layout.d_shared if ref.shared else layout.d_expert
    if ref.kind == "expert_neuron" and ref.index is not None and ref.index >= width:
        raise LmscopeError(
            f"{ref.label()}: an expert has {width} neurons (0-{width - 1}), not {ref.index}"
        )
    return layout


def _slot(layout: ExpertLayout, ref: ComponentRef) -> int:
    assert ref.expert is not None
    return layout.n_experts + ref.expert if ref.shared else ref.expert


def _stored_expert(
    trace: Trace, layer: int, slot: int, positions: list[int]
) -> dict[int, ExpertAt]:
    """The expert at the stored FFN nodes among `positions` (0 where it was not chosen)."""
    found = stored_experts(trace.data.extra, trace.n_layers, trace.n_tokens)
    out: dict[int, ExpertAt] = {}
    if found is None:
        return out
    for position in positions:
        row = found.table.row(layer, position)
        if row is None:
            continue
        rest = float(found.table.rest[row])
        hit = np.nonzero(found.table.expert[row] == slot)[0]
        if len(hit) == 0:
            out[position] = ExpertAt(0.0, 0.0, rest)
        else:
            col = int(hit[0])
            contribution = float(found.table.contribution[row, col])
            out[position] = ExpertAt(contribution, float(found.table.gate[row, col]), rest)
    return out


def _share(view: RouteFlow, nodes: list[Node], known: dict[int, Any]) -> float:
    """Σ over the FFN nodes of flow · c / (1 − c_rest): the part renormalised over experts (or
    neurons), so the parts of a layer add up to the FFN block's share."""
    share = 0.0
    for node in nodes:
        found = known.get(node.position)
        if found is not None and found.rest < 1.0:
            share += view.flow.get(node, 0.0) * found.contribution / (1.0 - found.rest)
    return share


def _expert_at(
    card: CardParts,
    trace: Trace,
    live: LiveQueries | None,
    layer: int,
    slot: int,
    positions: list[int],
) -> dict[int, ExpertAt]:
    if live is not None and live.has_prompt:
        try:
            return live.expert_at(layer, slot, positions)
        except ModelBusyError:
            card.notes.append(BUSY)
    return _stored_expert(trace, layer, slot, positions)


def fill_expert(
    card: CardParts, trace: Trace | None, view: RouteFlow | None, live: LiveQueries | None
) -> None:
    """An expert's card (`L5.E3`, `L5.S0`)."""
    ref, layer = card.ref, card.ref.layer
    layout = layout_of(trace, live, ref)
    slot = _slot(layout, ref)
    if trace is None or view is None:
        card.notes.append("an expert's promoted tokens depend on the prompt: trace one to see them")
        return
    nodes = view.nodes(FFN, layer)
    positions = sorted({n.position for n in nodes} | {view.token})
    known = _expert_at(card, trace, live, layer, slot, positions)
    at_token = known.get(view.token)
    gate = None if at_token is None else at_token.gate
    card.context = context(_share(view, nodes, known), [], None, expert=True, gate=gate)
    if not nodes:
        card.notes.append(f"no FFN node of layer {layer} is on the route: it carries none of it")
    missing = [n.label() for n in nodes if n.position not in known]
    if missing:
        card.notes.append(
            f"the trace stores no experts for {', '.join(missing)}: the share counts 0 there "
            "(load the model for exact numbers)"
        )
    if at_token is not None and at_token.gate == 0.0:
        card.notes.append(
            f"the router did not choose {ref.label()} at token {view.token}: it sent nothing there"
        )
        return
    if live is not None and live.has_prompt:
        try:
            card.promoted, card.suppressed = live.expert_tokens(layer, slot, view.token, TOP_TOKENS)
        except ModelBusyError:
            card.notes.append(BUSY)
    else:
        card.notes.append("an expert's promoted/suppressed tokens need the model")


def _stored_neuron(
    trace: Trace, layer: int, flat: int, slot: int, positions: list[int]
) -> dict[int, NeuronAt]:
    """The neuron at the stored FFN nodes among `positions`: from the neuron table when among
    the top stored, 0 when the experts table shows its expert was not chosen there."""
    out = stored_neuron(trace, layer, flat, positions)
    table = trace.data.neurons
    chosen = _stored_expert(trace, layer, slot, positions)
    for row in np.nonzero(table.layer == layer)[0]:
        position = int(table.position[row])
        if position not in out and position in chosen and chosen[position].gate == 0.0:
            out[position] = NeuronAt(0.0, 0.0, float(table.rest_contribution[row]))
    return out


def fill_expert_neuron(
    card: CardParts, trace: Trace | None, view: RouteFlow | None, live: LiveQueries | None
) -> None:
    """An expert neuron's card (`L5.E3.N120`, `L5.S0.N120`)."""
    ref, layer = card.ref, card.ref.layer
    layout = layout_of(trace, live, ref)
    slot = _slot(layout, ref)
    assert ref.index is not None
    flat = layout.flat_id(slot, ref.index)
    if live is not None:
        card.promoted, card.suppressed = live.neuron_tokens(layer, flat, TOP_TOKENS)
    else:
        card.notes.append("promoted/suppressed tokens need the model")
    if trace is None or view is None:
        return
    nodes = view.nodes(FFN, layer)
    positions = sorted({n.position for n in nodes} | {view.token})
    known: dict[int, NeuronAt] | None = None
    if live is not None and live.has_prompt:
        try:
            known = live.neuron_at(layer, flat, positions)
        except ModelBusyError:
            card.notes.append(BUSY)
    if known is None:
        known = _stored_neuron(trace, layer, flat, slot, positions)
    gates = _expert_at(card, trace, live, layer, slot, [view.token])
    at = known.get(view.token)
    gate = gates[view.token].gate if view.token in gates else None
    activation = None if at is None else at.activation
    card.context = context(_share(view, nodes, known), [], activation, expert=True, gate=gate)
    if not nodes:
        card.notes.append(f"no FFN node of layer {layer} is on the route: it carries none of it")
    missing = [n.label() for n in nodes if n.position not in known]
    if missing:
        card.notes.append(
            f"{ref.label()} is not among the top {trace.data.settings.top_neurons} neurons "
            f"stored for {', '.join(missing)}: the share counts 0 there (load the model for "
            "exact numbers)"
        )
    if gate == 0.0:
        card.notes.append(
            f"the router did not choose {ref.expert_name()} at token {view.token}: the neuron "
            "sent nothing there"
        )
    elif at is not None and at.activation < 0:
        card.notes.append(
            f"activation is negative here ({at.activation:.3g}): it suppresses the 'promoted' "
            "list and promotes the 'suppressed' one"
        )
