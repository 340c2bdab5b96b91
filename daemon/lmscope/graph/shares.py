"""Each component's share of one route's prediction: every head, attention block and FFN block.

The same sums the cards show for one component (docs/method.md, "Flow": `cards.card` sums them
for the one component a card is about), for every component at once, so two routes can be
compared block by block (`traces.diff`). One path to the output crosses a layer's attention once
and its FFN at most once, so the terms add up:

    attention block l : Σ over route attention edges e into layer l of flow(e.target) · e.weight
    head (l, h)       : the same with the head's own weight e.heads[h]   (Σ_h = the block's)
    FFN block l       : Σ over route nodes M(l, i) of flow(M(l, i))

In raw mode weights need not sum to 1, so shares are relative only. Torch-free.
TypeScript twin: extension/shared/diff/diff.ts (`componentShares`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmscope.graph.nodes import ATTENTION_EDGE, FFN, Node
from lmscope.graph.routes import Route


@dataclass(frozen=True)
class ComponentShares:
    """Shares of the output of one route, per component."""

    heads: np.ndarray  # float64 [L, H]
    attention: np.ndarray  # float64 [L]: per attention block, Σ_h heads[l]
    ffn: np.ndarray  # float64 [L]: per FFN block


def component_shares(route: Route, flow: dict[Node, float], n_heads: int) -> ComponentShares:
    """Every head's, attention block's and FFN block's share of `route`'s output, from the
    route's `flow()` (given, as callers already hold it)."""
    heads = np.zeros((route.n_layers, n_heads))  # [L, H]
    attention = np.zeros(route.n_layers)  # [L]
    ffn = np.zeros(route.n_layers)  # [L]
    for edge in route.edges:
        if edge.kind != ATTENTION_EDGE:
            continue
        carried = flow.get(edge.target, 0.0)
        attention[edge.target.layer] += carried * edge.weight
        heads[edge.target.layer, : len(edge.heads)] += carried * np.asarray(edge.heads)
    for node in route.nodes:
        if node.kind == FFN:
            ffn[node.layer] += flow.get(node, 0.0)
    return ComponentShares(heads, attention, ffn)
