"""Routes: thresholded edges reachable top-down from an output node (docs/method.md, "Threshold
τ and the route"), and the share of the prediction each node of a route carries ("Flow").

`ContributionGraph` answers "which edges enter this node at threshold τ, and with what weight"
from the contributions of a trace (dense residual/FFN values, sparse attention edges with every
head). A route expands only nodes already on it (lazy), which equals reachability in the full
thresholded graph, tested.

Renormalise mode thresholds every part (heads one by one, the residual and the FFN too) of one
target representation and divides the survivors by their own sum; raw mode sums heads into
token edges and keeps those above τ.

Torch-free (numpy only): saved traces, summaries, SVG and the command line's `show` use it
without a model. The TypeScript twin is extension/shared/graph/routes.ts (bit-identical).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from lmscope.errors import LmscopeError
from lmscope.graph.nodes import (
    ATTENTION_EDGE,
    EMBEDDING,
    FFN,
    FFN_EDGE,
    POST_ATTENTION,
    RAW,
    RENORMALIZE,
    RESIDUAL,
    RESIDUAL_EDGE,
    THRESHOLD_MODES,
    Edge,
    Node,
    previous,
)


class RouteTooLargeError(LmscopeError):
    """A route past the number of edges its caller bounded it to."""


class BlockArrays(Protocol):
    """Dense per-(layer, position) contributions (traces.data.BlockContributions)."""

    residual_attention: np.ndarray  # float32 [L, n]
    ffn: np.ndarray  # float32 [L, n]
    residual_ffn: np.ndarray | None  # float32 [L, n]; None for parallel blocks


class EdgeArrays(Protocol):
    """Sparse attention edges sorted by (layer, target, source) (traces.data.AttentionEdges)."""

    layer: np.ndarray  # int32 [E]
    target: np.ndarray  # int32 [E]
    source: np.ndarray  # int32 [E]
    head_contributions: np.ndarray  # float32 [E, H], unthresholded


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
        """Share of the output carried through each node (docs/method.md, "Flow"): 1 at the
        output node, and each node passes its share down its incoming edges in proportion to
        their weights.

        A residual or post-attention node's kept weights sum to 1 in renormalise mode, so it
        passes on all it carries. An FFN node M(l, i) has one input, the residual it reads,
        whose edge weight is c_ffn (the same number as M -> R): M computes from that input
        alone, so it passes its whole share down it. A share is then the product of weights
        summed over every path to the output, and the shares reaching a route's sources sum
        to 1: the ranking the summaries and cards use ("how much of the prediction went
        through here"). Raw weights need not sum to 1, so raw-mode flows are relative only.
        """
        incoming: dict[Node, list[Edge]] = {}
        for edge in self.edges:
            incoming.setdefault(edge.target, []).append(edge)
        share = {self.output_node: 1.0}
        # Edges always go up the stack (prev -> A -> M -> R), so descending depth is a
        # topological order.
        for node in sorted(self.nodes, key=lambda n: n.depth, reverse=True):
            carried = share.get(node, 0.0)
            for edge in incoming.get(node, []):
                passed = carried if node.kind == FFN else carried * edge.weight
                share[edge.source] = share.get(edge.source, 0.0) + passed
        return share


class ContributionGraph:
    """The information-flow graph of one trace, thresholded on demand."""

    def __init__(
        self,
        blocks: BlockArrays,
        edges: EdgeArrays,
        n_layers: int,
        n_tokens: int,
        parallel_blocks: bool,
    ) -> None:
        self.blocks = blocks
        self.edges = edges
        self.n_layers = n_layers
        self.n_tokens = n_tokens
        self.parallel_blocks = parallel_blocks
        # Edges are sorted by (layer, target, source): offsets[l*n + i] .. offsets[l*n + i + 1]
        # are the edges entering target (l, i).
        keys = edges.layer.astype(np.int64) * n_tokens + edges.target.astype(np.int64)
        self._offsets = np.searchsorted(keys, np.arange(n_layers * n_tokens + 1), side="left")
        self._edge_sums = edges.head_contributions.sum(-1) if len(keys) else np.zeros(0)

    # --- nodes -------------------------------------------------------------------------------
    def output_node(self, token: int) -> Node:
        return Node(RESIDUAL, self.n_layers - 1, token)

    def edge_range(self, layer: int, target: int) -> slice:
        """Rows of the stored attention edges entering target (layer, target)."""
        key = layer * self.n_tokens + target
        return slice(int(self._offsets[key]), int(self._offsets[key + 1]))

    # --- one target representation -----------------------------------------------------------
    def _mixing_step(
        self, layer: int, target: int, threshold: float, mode: str, extra: Iterable[float]
    ) -> tuple[list[float], list[tuple[int, float, tuple[float, ...]]]]:
        """Weights of one step with attention parts: the non-attention parts (`extra`, in
        order) and the kept attention edges as (source, weight, per-head weights)."""
        span = self.edge_range(layer, target)
        heads = self.edges.head_contributions[span]  # [e, H]
        sources = self.edges.source[span]
        extra = list(extra)
        if mode == RAW:
            kept_extra = [c if c > threshold else 0.0 for c in extra]
            sums = self._edge_sums[span]
            attention = [
                (int(j), float(s), tuple(float(h) for h in row))
                for j, s, row in zip(sources, sums, heads)
                if s > threshold
            ]
            return kept_extra, attention
        surviving = np.where(heads > threshold, heads, 0.0)
        kept_extra = [c if c > threshold else 0.0 for c in extra]
        total = float(surviving.sum(dtype=np.float64)) + sum(kept_extra)
        if total <= 0.0:
            return [0.0] * len(extra), []
        kept_extra = [c / total for c in kept_extra]
        attention = []
        for j, row in zip(sources, surviving):
            if row.any():
                per_head = tuple(float(h) / total for h in row)
                attention.append((int(j), float(sum(per_head)), per_head))
        return kept_extra, attention

    def _pair_step(self, first: float, second: float, threshold: float, mode: str):
        """A two-part step (the FFN step of a sequential block)."""
        kept = [c if c > threshold else 0.0 for c in (first, second)]
        if mode == RAW:
            return kept
        total = sum(kept)
        return [c / total for c in kept] if total > 0 else [0.0, 0.0]

    def incoming(self, node: Node, threshold: float, mode: str) -> list[Edge]:
        """The kept edges entering `node` at threshold τ in `mode`."""
        if mode not in THRESHOLD_MODES:
            raise ValueError(f"unknown threshold mode {mode!r}")
        layer, i = node.layer, node.position
        blocks = self.blocks
        found: list[Edge] = []
        if node.kind == EMBEDDING:
            return found
        if self.parallel_blocks:
            prev = previous(layer, i)
            (residual, ffn), attention = self._mixing_step(
                layer,
                i,
                threshold,
                mode,
                (float(blocks.residual_attention[layer, i]), float(blocks.ffn[layer, i])),
            )
            mid = Node(FFN, layer, i)
            if node.kind == FFN:
                return [Edge(FFN_EDGE, prev, node, ffn)] if ffn > 0 else []
            if residual > 0:
                found.append(Edge(RESIDUAL_EDGE, prev, node, residual))
            for j, weight, heads in attention:
                found.append(Edge(ATTENTION_EDGE, previous(layer, j), node, weight, heads))
            if ffn > 0:
                found.append(Edge(FFN_EDGE, mid, node, ffn))
            return found
        after_attention = Node(POST_ATTENTION, layer, i)
        if node.kind == POST_ATTENTION:
            (residual,), attention = self._mixing_step(
                layer, i, threshold, mode, (float(blocks.residual_attention[layer, i]),)
            )
            if residual > 0:
                found.append(Edge(RESIDUAL_EDGE, previous(layer, i), node, residual))
            for j, weight, heads in attention:
                found.append(Edge(ATTENTION_EDGE, previous(layer, j), node, weight, heads))
            return found
        assert blocks.residual_ffn is not None
        ffn, residual = self._pair_step(
            float(blocks.ffn[layer, i]), float(blocks.residual_ffn[layer, i]), threshold, mode
        )
        if node.kind == FFN:
            return [Edge(FFN_EDGE, after_attention, node, ffn)] if ffn > 0 else []
        if residual > 0:
            found.append(Edge(RESIDUAL_EDGE, after_attention, node, residual))
        if ffn > 0:
            found.append(Edge(FFN_EDGE, Node(FFN, layer, i), node, ffn))
        return found

    # --- routes ------------------------------------------------------------------------------
    def route(
        self, token: int, threshold: float, mode: str = RENORMALIZE, max_edges: int | None = None
    ) -> Route:
        """Edges reachable top-down from R(L-1, token), expanding only nodes on the route.
        With `max_edges`, a route that grows past it stops at once (RouteTooLargeError): the
        bound a server puts on the work of one request."""
        route = Route(
            token=token,
            threshold=threshold,
            mode=mode,
            n_layers=self.n_layers,
            n_tokens=self.n_tokens,
            parallel_blocks=self.parallel_blocks,
        )
        route.edges = self._reach([self.output_node(token)], threshold, mode, max_edges)
        return route

    def _reach(
        self, starts: list[Node], threshold: float, mode: str, max_edges: int | None = None
    ) -> list[Edge]:
        seen = set(starts)
        queue = deque(starts)
        edges: list[Edge] = []
        while queue:
            node = queue.popleft()
            found = self.incoming(node, threshold, mode)
            if max_edges is not None and len(edges) + len(found) > max_edges:
                raise RouteTooLargeError(
                    f"the route at τ = {threshold:g} ({mode}) has more than {max_edges:,} edges: "
                    "ask for a higher threshold"
                )
            for edge in found:
                edges.append(edge)
                if edge.source not in seen:
                    seen.add(edge.source)
                    queue.append(edge.source)
        return edges

    def reachable_from_outputs(self, threshold: float) -> set[Node]:
        """Nodes on the route of *some* output token at τ in either mode.

        Raw mode's graph contains renormalise mode's (a surviving head c_h > τ implies its
        edge's sum > τ; residual and FFN parts are kept by the same test), and graphs shrink
        as τ grows, so this set at min_threshold covers every route a trace can be asked for.
        """
        starts = [self.output_node(t) for t in range(self.n_tokens)]
        found = set(starts)
        for edge in self._reach(starts, threshold, RAW):
            found.add(edge.source)
        return found
