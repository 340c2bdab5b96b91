"""The information-flow graph, torch-free: node and edge ids, thresholds, routes and flow.

Everything that reads a trace without the model (saved traces, the file format's checks,
`lmscope show`/`export`, summaries, SVG, cards) works on this layer; it imports numpy only.
"""

from lmscope.graph.nodes import (
    ATTENTION_EDGE,
    EDGE_KINDS,
    EMBEDDING,
    FFN,
    FFN_EDGE,
    NODE_KINDS,
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
from lmscope.graph.routes import ContributionGraph, Route

__all__ = [
    "ATTENTION_EDGE",
    "EDGE_KINDS",
    "EMBEDDING",
    "FFN",
    "FFN_EDGE",
    "NODE_KINDS",
    "POST_ATTENTION",
    "RAW",
    "RENORMALIZE",
    "RESIDUAL",
    "RESIDUAL_EDGE",
    "THRESHOLD_MODES",
    "ContributionGraph",
    "Edge",
    "Node",
    "Route",
    "previous",
]
