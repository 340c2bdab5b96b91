"""Node and edge identities of the information-flow graph: kinds, `Node`, `Edge`.

Ids are structured values, never strings to parse (docs/method.md, "Nodes of the graph"): a node
is (kind, layer, position); an attention edge also names its source position. The kinds are
spelled as on the wire (protocol/schemas/common.schema.json: NodeKind, EdgeKind, ThresholdMode).
"""

from __future__ import annotations

from dataclasses import dataclass

from lmscope.protocol.vocabulary import node_label

# Node kinds. See docs/method.md "Nodes of the graph".
EMBEDDING = "embedding"  # X(i), layer 0 by convention
POST_ATTENTION = "post_attention"  # A(l,i): residual after the attention block (sequential only)
FFN = "ffn"  # M(l,i): the FFN block
RESIDUAL = "residual"  # R(l,i): residual after layer l
NODE_KINDS = (EMBEDDING, POST_ATTENTION, FFN, RESIDUAL)

# Edge kinds.
ATTENTION_EDGE = "attention"  # prev(l, j) -> A(l, i)   (parallel blocks: -> R(l, i))
RESIDUAL_EDGE = "residual"  # prev(l, i) -> A(l, i), A(l, i) -> R(l, i) (parallel: prev -> R)
FFN_EDGE = "ffn"  # A(l, i) -> M(l, i) and M(l, i) -> R(l, i)  (parallel: prev -> M -> R)
EDGE_KINDS = (ATTENTION_EDGE, RESIDUAL_EDGE, FFN_EDGE)

# Threshold modes.
RENORMALIZE = "renormalize"
RAW = "raw"
THRESHOLD_MODES = (RENORMALIZE, RAW)

_KIND_DEPTH = {EMBEDDING: 0, POST_ATTENTION: 1, FFN: 2, RESIDUAL: 3}


@dataclass(frozen=True, order=True)
class Node:
    """A node of the graph: `kind` in NODE_KINDS; embeddings have layer 0."""

    kind: str
    layer: int
    position: int

    def label(self) -> str:
        """Short human label in the display vocabulary's letters (X3, A23.14, M29.14, R22.2;
        protocol/vocabulary.json); display only, never parsed back."""
        return node_label(self.kind, self.layer, self.position)

    @property
    def depth(self) -> tuple[int, int]:
        """Position in the residual stack: embeddings lowest, then per layer A, M, R. Edges
        always go up the stack, so descending depth is a topological order."""
        return (-1 if self.kind == EMBEDDING else self.layer, _KIND_DEPTH[self.kind])


def previous(layer: int, position: int) -> Node:
    """prev(l, i): the residual entering layer l at position i."""
    if layer == 0:
        return Node(EMBEDDING, 0, position)
    return Node(RESIDUAL, layer - 1, position)


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
