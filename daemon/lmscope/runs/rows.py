"""The rows one traced prompt adds to a run's tables, computed from its trace alone.

For the last token's renormalised route (docs/method.md, "Flow" and "Threshold τ and the
route"):
- share: each head's and FFN block's share of the prediction at τ = SHARE_THRESHOLD, the sums
  `graph.shares` computes (and the hover cards show);
- on_route_001/004/010: whether the component has a part on the route at τ 0.01 / 0.04 / 0.1 (a
  head: one of its edge heads carries a non-zero share; an FFN block: one of its FFN nodes is on
  the route);
- neurons: the stored top neurons of the FFN nodes of the route at SHARE_THRESHOLD (the engine
  stores that route's neurons), at most `top_neurons` a node.
Torch-free: it reads a `Trace`, so a resumed run derives the rows of a saved file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lmscope.graph import Route
from lmscope.graph.nodes import ATTENTION_EDGE, FFN
from lmscope.graph.shares import component_shares
from lmscope.runs.parquet import COMPONENTS, NEURONS, PROMPTS, to_table
from lmscope.runs.sources import RunPrompt
from lmscope.traces.trace import Trace

ROUTE_THRESHOLDS = (0.01, 0.04, 0.1)  # the on_route_001 / _004 / _010 columns
ON_ROUTE_COLUMNS = ("on_route_001", "on_route_004", "on_route_010")
SHARE_THRESHOLD = 0.04  # τ of the share column and of the neurons


@dataclass(frozen=True)
class PromptRows:
    """One prompt's rows of each table."""

    prompts: pa.Table
    components: pa.Table
    neurons: pa.Table

    def by_name(self) -> dict[str, pa.Table]:
        return {PROMPTS: self.prompts, COMPONENTS: self.components, NEURONS: self.neurons}


def on_route(
    trace: Trace, threshold: float, route: Route | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(heads bool [L, H], ffn bool [L]): which heads and FFN blocks have a part on the last
    token's renormalised route at `threshold` (`route`: that route, when already built)."""
    n_layers, n_heads = trace.n_layers, trace.data.model.n_heads
    route = trace.route(-1, threshold) if route is None else route
    flow = route.flow()
    heads = np.zeros((n_layers, n_heads), dtype=bool)  # [L, H]
    ffn = np.zeros(n_layers, dtype=bool)  # [L]
    for edge in route.edges:
        if edge.kind == ATTENTION_EDGE:
            carried = flow.get(edge.target, 0.0) * np.asarray(edge.heads)  # [H]
            heads[edge.target.layer, : len(carried)] |= carried != 0
    for node in route.nodes:
        if node.kind == FFN:
            ffn[node.layer] = True
    return heads, ffn


def prompt_rows(
    trace: Trace, prompt: RunPrompt, trace_relpath: str, seconds: float, top_neurons: int
) -> PromptRows:
    """The rows of `prompt`, traced as `trace` and saved at `trace_relpath`."""
    n_layers, n_heads = trace.n_layers, trace.data.model.n_heads
    route = trace.route(-1, SHARE_THRESHOLD)
    shares = component_shares(route, route.flow(), n_heads)
    flags = [
        on_route(trace, threshold, route if threshold == SHARE_THRESHOLD else None)
        for threshold in ROUTE_THRESHOLDS
    ]

    # Components: the L·H heads (layer-major), then the L FFN blocks.
    layers = np.concatenate([np.repeat(np.arange(n_layers), n_heads), np.arange(n_layers)])
    components: dict[str, Any] = {
        "index": np.full(layers.shape, prompt.index, dtype=np.int32),
        "kind": ["head"] * (n_layers * n_heads) + ["ffn"] * n_layers,
        "layer": layers.astype(np.int32),
        "head": np.concatenate(
            [np.tile(np.arange(n_heads), n_layers), np.full(n_layers, -1)]
        ).astype(np.int32),
        "share": np.concatenate([shares.heads.ravel(), shares.ffn]).astype(np.float32),
    }
    for column, (heads_on, ffn_on) in zip(ON_ROUTE_COLUMNS, flags):
        components[column] = np.concatenate([heads_on.ravel(), ffn_on])

    predicted, probability = trace.predictions(-1)[0]
    prompts = {
        "index": [prompt.index],
        "id": [prompt.id],
        "line": [prompt.line],
        "tags": [list(prompt.tags)],
        "text": [trace.prompt],
        "trace": [trace_relpath],
        "n_tokens": [trace.n_tokens],
        "prediction": [predicted],
        "probability": [probability],
        "seconds": [seconds],
    }
    return PromptRows(
        to_table(PROMPTS, prompts),
        to_table(COMPONENTS, components),
        to_table(NEURONS, _neuron_columns(trace, prompt.index, route.nodes, top_neurons)),
    )


def _neuron_columns(trace: Trace, index: int, nodes: Any, top_neurons: int) -> dict[str, Any]:
    table = trace.data.neurons
    on_route = {(node.layer, node.position) for node in nodes if node.kind == FFN}
    rows = [
        row
        for row, key in enumerate(zip(table.layer.tolist(), table.position.tolist()))
        if key in on_route
    ]
    k = min(top_neurons, table.index.shape[1])
    picked = np.asarray(rows, dtype=np.int64)  # [F']
    count = len(rows) * k
    return {
        "index": np.full(count, index, dtype=np.int32),
        "layer": np.repeat(table.layer[picked], k).astype(np.int32),
        "position": np.repeat(table.position[picked], k).astype(np.int32),
        "neuron": table.index[picked, :k].ravel().astype(np.int32),  # [F'·k]
        "contribution": table.contribution[picked, :k].ravel().astype(np.float32),
        "activation": table.activation[picked, :k].ravel().astype(np.float32),
    }
