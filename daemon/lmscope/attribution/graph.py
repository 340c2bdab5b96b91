"""Node and edge identities of the information-flow graph, and a route (a set of kept edges).

Ids are structured values, never strings to parse (method.md, "Nodes of the graph"):
a node is (kind, layer, position); an attention edge also names its source position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmscope.traces.data import EMBEDDING, FFN, POST_ATTENTION, RESIDUAL

# Edge kinds, as on the wire.
ATTENTION_EDGE = "attention"  # prev(l, j) -> A(l, i)   (parallel blocks: -> R(l, i))
RESIDUAL_EDGE = "residual"  # prev(l, i) -> A(l, i), A(l, i) -> R(l, i) (parallel: prev -> R)
FFN_EDGE = "ffn"  # A(l, i) -> M(l, i) and M(l, i) -> R(l, i)  (parallel: prev -> M -> R)
EDGE_KINDS = (ATTENTION_EDGE, RESIDUAL_EDGE, FFN_EDGE)

RENORMALIZE = "renormalize"
RAW = "raw"
THRESHOLD_MODES = (RENORMALIZE, RAW)


@dataclass(frozen=True, order=True)
class Node:
    """A node of the graph: `kind` in NODE_KINDS; embeddings have layer 0."""

    kind: str
    layer: int
    position: int

    def label(self) -> str:
        """Short human label (display only; never parsed back)."""
        short = {EMBEDDING: "X", POST_ATTENTION: "A", FFN: "M", RESIDUAL: "R"}[self.kind]
        if self.kind == EMBEDDING:
            return f"X{self.position}"
        return f"{short}{self.layer}.{self.position}"


@dataclass(frozen=True)
class Edge:
    """A kept edge. `weight` is after thresholding (renormalised in that mode).

    For attention edges `heads` holds the per-head weights in the same mode (renormalised,
    thresholded heads are 0; raw: the unthresholded head contributions); otherwise empty.
    """

    kind: str
    source: Node
    target: Node
    weight: float
    heads: tuple[float, ...] = ()


@dataclass
class Route:
    """The edges reachable top-down from the output node of one token, at one threshold."""

    token: int  # output position t
    threshold: float
    mode: str  # RENORMALIZE | RAW
    n_layers: int
    n_tokens: int
    parallel_blocks: bool
    edges: list[Edge] = field(default_factory=list)

    @property
    def output_node(self) -> Node:
        return Node(RESIDUAL, self.n_layers - 1, self.token)

    @property
    def nodes(self) -> set[Node]:
        """Every node touched by an edge, plus the output node."""
        found = {self.output_node}
        for edge in self.edges:
            found.add(edge.source)
            found.add(edge.target)
        return found

    def edges_of_kind(self, kind: str) -> list[Edge]:
        return [e for e in self.edges if e.kind == kind]

    def flow(self) -> dict[Node, float]:
        """Share of the output carried through each node: 1 at the output node, and each
        node passes its share down its incoming edges in proportion to their weights.

        In renormalise mode a target's kept weights sum to 1, so this is the product of
        weights summed over every path to the output: the ranking the summaries use
        ("how much of the prediction went through here"). Raw weights need not sum to 1,
        so raw-mode flows are relative only.
        """
        incoming: dict[Node, list[Edge]] = {}
        for edge in self.edges:
            incoming.setdefault(edge.target, []).append(edge)
        share = {self.output_node: 1.0}
        # Edges always go up the stack (prev -> A -> M -> R), so descending depth is a
        # topological order.
        for node in sorted(self.nodes, key=_depth, reverse=True):
            carried = share.get(node, 0.0)
            for edge in incoming.get(node, []):
                share[edge.source] = share.get(edge.source, 0.0) + carried * edge.weight
        return share


_KIND_DEPTH = {EMBEDDING: 0, POST_ATTENTION: 1, FFN: 2, RESIDUAL: 3}


def _depth(node: Node) -> tuple[int, int]:
    """Position of a node in the residual stack: embeddings lowest, then per layer A, M, R."""
    return (-1 if node.kind == EMBEDDING else node.layer, _KIND_DEPTH[node.kind])
