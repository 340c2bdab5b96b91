"""Compare two traces of the same model: `TraceDiff` (docs/method.md, "Comparing two traces").

For the route of each trace's chosen output token at one τ and mode, the diff lists
- every node and edge of the union of both routes, in A's positions where the alignment maps
  them (`traces.alignment`), with its value in A, in B and Δ = B − A, and whether it lies on
  A's route only, B's only or both. A node's value is its share of the prediction (`flow`), an
  edge's its weight; off a route the value is 0. A node at a position the alignment leaves out
  keeps that side's position only (`position_a` or `position_b` None): reported, never dropped;
- the prediction change: both top-k lists and, for every token in either, its probability in A
  and in B; a trace stores its top k predictions only, so a token outside them has the bound
  "< p_k" (the k-th stored probability), never a made-up number;
- every head's, attention block's and FFN block's share of the prediction in A and B
  (`graph.shares`).

Traces of different models (content hash) are refused, naming both. Torch-free; works on saved
files. TypeScript twin: extension/shared/diff/diff.ts (the webview's slider re-diffs locally).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lmscope.errors import LmscopeError
from lmscope.graph import FFN, RAW, RENORMALIZE, Edge, Node, Route
from lmscope.graph.shares import ComponentShares, component_shares
from lmscope.protocol import defaults
from lmscope.protocol.vocabulary import node_label
from lmscope.traces.alignment import Alignment, align

if TYPE_CHECKING:
    from lmscope.traces.trace import Trace

ONLY_A = "a"  # on A's route only
ONLY_B = "b"  # on B's route only
BOTH = "both"
MEMBERSHIPS = (ONLY_A, ONLY_B, BOTH)


@dataclass(frozen=True)
class DiffNode:
    """A node of either route: kind and layer, and its position in A and in B (None where the
    alignment has no partner for it)."""

    kind: str
    layer: int
    position_a: int | None
    position_b: int | None

    @property
    def aligned(self) -> bool:
        return self.position_a is not None and self.position_b is not None

    def label(self) -> str:
        """`M3.7` in A's positions; `M3.b9` for a node of B at a position not aligned to A."""
        if self.position_a is not None:
            return node_label(self.kind, self.layer, self.position_a)
        return node_label(self.kind, self.layer, 0)[:-1] + f"b{self.position_b}"

    def sort_key(self) -> tuple[str, int, int, int]:
        return (self.kind, self.layer, _or_minus(self.position_a), _or_minus(self.position_b))

    def wire(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layer": self.layer,
            "positionA": self.position_a,
            "positionB": self.position_b,
        }


@dataclass(frozen=True)
class NodeRow:
    """A node of the union: its share of the prediction in A and B."""

    node: DiffNode
    share_a: float
    share_b: float
    membership: str  # ONLY_A | ONLY_B | BOTH

    @property
    def delta(self) -> float:
        return self.share_b - self.share_a


@dataclass(frozen=True)
class EdgeRow:
    """An edge of the union: its weight in A and B, and the share of the prediction it passes
    down (what `Route.flow` passes: flow(target) · weight, or flow(target) into an FFN node)."""

    kind: str
    source: DiffNode
    target: DiffNode
    weight_a: float
    weight_b: float
    share_a: float
    share_b: float
    membership: str

    @property
    def delta(self) -> float:
        return self.weight_b - self.weight_a

    @property
    def share_delta(self) -> float:
        return self.share_b - self.share_a

    def label(self) -> str:
        return f"{self.source.label()} → {self.target.label()} ({self.kind})"


@dataclass(frozen=True)
class TokenChange:
    """One predicted token's probability in A and in B; None where that trace's stored top k
    does not hold it, with the bound: below that trace's k-th stored probability."""

    token_id: int
    text: str
    p_a: float | None
    p_b: float | None
    below_a: float  # A's k-th stored probability: p_a < below_a when p_a is None
    below_b: float

    def shown(self, side: str) -> str:
        p, below = (self.p_a, self.below_a) if side == "a" else (self.p_b, self.below_b)
        return f"{100 * p:.1f}%" if p is not None else f"< {100 * below:.1f}%"


@dataclass(frozen=True)
class PredictionChange:
    """Both top-k predictions, and each of their tokens in A and in B (A's top list first)."""

    top_a: list[tuple[int, float]]  # (id, probability), most probable first
    top_b: list[tuple[int, float]]
    tokens: list[TokenChange]

    def of(self, token_id: int) -> TokenChange:
        return next(t for t in self.tokens if t.token_id == token_id)


@dataclass(frozen=True)
class TraceDiff:
    """The comparison of trace A with trace B (`Trace.diff`)."""

    model: str
    prompt_a: str
    prompt_b: str
    alignment: Alignment
    token_a: int  # output positions, resolved
    token_b: int
    threshold: float
    mode: str  # RENORMALIZE | RAW
    nodes: list[NodeRow]  # sorted by DiffNode.sort_key
    edges: list[EdgeRow]  # sorted by (target, source, kind)
    prediction: PredictionChange
    shares_a: ComponentShares
    shares_b: ComponentShares

    @property
    def head_deltas(self) -> np.ndarray:
        """float64 [L, H]: each head's share in B minus in A."""
        return self.shares_b.heads - self.shares_a.heads

    @property
    def attention_deltas(self) -> np.ndarray:
        return self.shares_b.attention - self.shares_a.attention  # [L]

    @property
    def ffn_deltas(self) -> np.ndarray:
        return self.shares_b.ffn - self.shares_a.ffn  # [L]

    def wire(self) -> dict[str, Any]:
        """The protocol's DiffResult (protocol/schemas/diff.result.schema.json)."""
        return diff_wire(self)


def _or_minus(position: int | None) -> int:
    return -1 if position is None else position


def check_same_model(a: Trace, b: Trace) -> None:
    """LmscopeError naming both models unless A and B traced the same weights."""
    ma, mb = a.data.model, b.data.model
    if ma.content_hash != mb.content_hash:
        raise LmscopeError(
            f"cannot compare traces of different models: A was traced with {ma.name} "
            f"(content hash {ma.content_hash[:12]}) and B with {mb.name} (content hash "
            f"{mb.content_hash[:12]}); a diff compares two prompts on one model"
        )


def diff_traces(
    a: Trace,
    b: Trace,
    *,
    token_a: int = defaults.TOKEN,
    token_b: int = defaults.TOKEN,
    threshold: float = defaults.THRESHOLD,
    renormalize: bool = True,
    align_last: int | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    max_edges: int | None = None,
) -> TraceDiff:
    """Compare the route of A's output `token_a` with B's `token_b` at τ (module docstring).
    The two output positions must be aligned to each other; past `max_edges` edges a route
    raises RouteTooLargeError (the daemon's bound on one answer)."""
    check_same_model(a, b)
    alignment = align(a.n_tokens, b.n_tokens, align_last, pairs)
    t_a, t_b = a.position(token_a), b.position(token_b)
    if alignment.a_to_b.get(t_a) != t_b:
        raise LmscopeError(
            f"the output tokens are not aligned to each other: A's token {t_a} and B's token "
            f"{t_b} ({alignment.describe()}); choose aligned tokens or align them"
        )
    route_a = a.route(t_a, threshold, renormalize, max_edges)
    route_b = b.route(t_b, threshold, renormalize, max_edges)
    flow_a, flow_b = route_a.flow(), route_b.flow()
    n_heads = a.data.model.n_heads
    nodes_a = {_in_a(n, alignment): flow_a.get(n, 0.0) for n in route_a.nodes}
    nodes_b = {_in_b(n, alignment): flow_b.get(n, 0.0) for n in route_b.nodes}
    edges_a = _edges(route_a, flow_a, lambda n: _in_a(n, alignment))
    edges_b = _edges(route_b, flow_b, lambda n: _in_b(n, alignment))
    node_rows = [
        NodeRow(
            node,
            nodes_a.get(node, 0.0),
            nodes_b.get(node, 0.0),
            _membership(node, nodes_a, nodes_b),
        )
        for node in sorted(nodes_a.keys() | nodes_b.keys(), key=DiffNode.sort_key)
    ]
    edge_rows = []
    for key in sorted(edges_a.keys() | edges_b.keys(), key=_edge_key):
        weight_a, share_a = edges_a.get(key, (0.0, 0.0))
        weight_b, share_b = edges_b.get(key, (0.0, 0.0))
        kind, source, target = key
        membership = _membership(key, edges_a, edges_b)
        edge_rows.append(
            EdgeRow(kind, source, target, weight_a, weight_b, share_a, share_b, membership)
        )
    return TraceDiff(
        model=a.data.model.name,
        prompt_a=a.prompt,
        prompt_b=b.prompt,
        alignment=alignment,
        token_a=t_a,
        token_b=t_b,
        threshold=float(threshold),
        mode=RENORMALIZE if renormalize else RAW,
        nodes=node_rows,
        edges=edge_rows,
        prediction=prediction_change(a, b, t_a, t_b),
        shares_a=component_shares(route_a, flow_a, n_heads),
        shares_b=component_shares(route_b, flow_b, n_heads),
    )


def _in_a(node: Node, alignment: Alignment) -> DiffNode:
    return DiffNode(node.kind, node.layer, node.position, alignment.a_to_b.get(node.position))


def _in_b(node: Node, alignment: Alignment) -> DiffNode:
    return DiffNode(node.kind, node.layer, alignment.b_to_a.get(node.position), node.position)


EdgeKey = tuple[str, DiffNode, DiffNode]  # (kind, source, target)


def _edge_key(key: EdgeKey) -> tuple[Any, ...]:
    kind, source, target = key
    return (target.sort_key(), source.sort_key(), kind)


def _edges(route: Route, flow: dict[Node, float], mapped) -> dict[EdgeKey, tuple[float, float]]:
    """(kind, source, target) -> (weight, share passed down) of each edge of `route`."""
    found = {}
    for edge in route.edges:
        found[(edge.kind, mapped(edge.source), mapped(edge.target))] = (
            float(edge.weight),
            _passed(edge, flow),
        )
    return found


def _passed(edge: Edge, flow: dict[Node, float]) -> float:
    """The share `Route.flow` passes down `edge`: an FFN node passes all it carries."""
    carried = flow.get(edge.target, 0.0)
    return carried if edge.target.kind == FFN else carried * edge.weight


def _membership(key: Any, in_a: dict, in_b: dict) -> str:
    if key in in_a:
        return BOTH if key in in_b else ONLY_A
    return ONLY_B


def prediction_change(a: Trace, b: Trace, t_a: int, t_b: int) -> PredictionChange:
    """The top-k predictions after A's token `t_a` and B's `t_b`, and each of their tokens in
    both (a token outside a trace's stored top k: None, below its k-th probability)."""
    ids_a, probs_a = a.data.predictions.ids[t_a], a.data.predictions.probs[t_a]  # [k], [k]
    ids_b, probs_b = b.data.predictions.ids[t_b], b.data.predictions.probs[t_b]
    in_a = {int(i): float(p) for i, p in zip(ids_a, probs_a)}
    in_b = {int(i): float(p) for i, p in zip(ids_b, probs_b)}
    ordered = list(dict.fromkeys([*in_a, *in_b]))  # A's list first, then B's others
    below_a, below_b = float(probs_a[-1]), float(probs_b[-1])
    tokens = [
        TokenChange(
            i,
            a.token_text(i) if i in in_a else b.token_text(i),
            in_a.get(i),
            in_b.get(i),
            below_a,
            below_b,
        )
        for i in ordered
    ]
    return PredictionChange(list(in_a.items()), list(in_b.items()), tokens)


def diff_wire(diff: TraceDiff) -> dict[str, Any]:
    """The diff as plain JSON values (protocol DiffResult; `lmscope diff --json`)."""
    return {
        "model": diff.model,
        "promptA": diff.prompt_a,
        "promptB": diff.prompt_b,
        "alignment": {"how": diff.alignment.how, "pairs": [list(p) for p in diff.alignment.pairs]},
        "tokenA": diff.token_a,
        "tokenB": diff.token_b,
        "threshold": diff.threshold,
        "mode": diff.mode,
        "nodes": [
            {
                "node": row.node.wire(),
                "shareA": row.share_a,
                "shareB": row.share_b,
                "delta": row.delta,
                "membership": row.membership,
            }
            for row in diff.nodes
        ],
        "edges": [
            {
                "kind": row.kind,
                "source": row.source.wire(),
                "target": row.target.wire(),
                "weightA": row.weight_a,
                "weightB": row.weight_b,
                "delta": row.delta,
                "shareA": row.share_a,
                "shareB": row.share_b,
                "membership": row.membership,
            }
            for row in diff.edges
        ],
        "prediction": {
            "topA": [{"id": i, "prob": p} for i, p in diff.prediction.top_a],
            "topB": [{"id": i, "prob": p} for i, p in diff.prediction.top_b],
            "tokens": [
                {
                    "id": t.token_id,
                    "text": t.text,
                    "probA": t.p_a,
                    "probB": t.p_b,
                    "belowA": t.below_a,
                    "belowB": t.below_b,
                }
                for t in diff.prediction.tokens
            ],
        },
        "shares": {
            "headsA": diff.shares_a.heads.tolist(),
            "headsB": diff.shares_b.heads.tolist(),
            "attentionA": diff.shares_a.attention.tolist(),
            "attentionB": diff.shares_b.attention.tolist(),
            "ffnA": diff.shares_a.ffn.tolist(),
            "ffnB": diff.shares_b.ffn.tolist(),
        },
    }
