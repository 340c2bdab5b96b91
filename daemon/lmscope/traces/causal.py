"""Results of causal checks (docs/method.md, "Causal checks"), as plain values: what an
ablation did to the traced prediction, and how faithful a route is. Torch-free, so a `Trace`
and the server hand them on without the model's code; `lmscope.causal` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmscope.errors import NeedsModelError
from lmscope.graph import ATTENTION_EDGE, FFN, Route

if TYPE_CHECKING:
    from lmscope.traces.live import LiveQueries
    from lmscope.traces.trace import Trace


@dataclass(frozen=True)
class TokenProb:
    """One next token and its probability."""

    token: str
    id: int
    prob: float

    def to_wire(self) -> dict[str, Any]:
        return {"token": self.token, "id": self.id, "prob": self.prob}


@dataclass(frozen=True)
class AblationResult:
    """The prediction at `position` with `targets` ablated (`kind`): the log-probability of
    the traced prediction `token` before and after, and the new top tokens."""

    targets: list[str]  # canonical labels (L23H0, L23H0:14<-2, ...)
    kind: str  # zero | mean | patch
    position: int
    token: str
    token_id: int
    logprob: float  # log p(token) of the plain forward pass
    ablated_logprob: float  # log p(token) with the targets ablated
    top: list[TokenProb] = field(default_factory=list)  # new top tokens, most probable first

    @property
    def delta_logprob(self) -> float:
        return self.ablated_logprob - self.logprob

    def to_wire(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "kind": self.kind,
            "position": self.position,
            "token": self.token,
            "tokenId": self.token_id,
            "logprob": self.logprob,
            "ablatedLogprob": self.ablated_logprob,
            "deltaLogprob": self.delta_logprob,
            "top": [t.to_wire() for t in self.top],
        }


@dataclass(frozen=True)
class RouteKeep:
    """What a route keeps: attention edges per head (layer, head, target i, source j) and FFN
    nodes (layer, position). Everything else is ablated when the route is verified."""

    heads: frozenset[tuple[int, int, int, int]]
    ffn: frozenset[tuple[int, int]]


@dataclass(frozen=True)
class Faithfulness:
    """How much of the prediction a route keeps: p(token) with every attention edge (per
    head) and FFN node off the route ablated, relative to the full model; and the same for
    random edge and FFN sets of the route's size (the baseline, seeded)."""

    threshold: float
    kind: str  # zero | mean
    position: int
    token: str
    token_id: int
    full_prob: float
    route_prob: float
    kept_edges: int  # (head, i←j) terms kept, layers and heads together
    total_edges: int  # every (layer, head, i←j) with j ≤ i ≤ position
    kept_ffn: int
    total_ffn: int
    random_probs: list[float]  # one per random set
    seed: int

    @property
    def kept(self) -> float:
        """route_prob / full_prob: 1 when the route alone carries the prediction."""
        return self.route_prob / self.full_prob if self.full_prob > 0 else 0.0

    @property
    def random_kept(self) -> float:
        """The baseline: the mean over the random sets of their probability / full_prob."""
        if not self.random_probs or self.full_prob <= 0:
            return 0.0
        return sum(self.random_probs) / len(self.random_probs) / self.full_prob

    def to_wire(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "kind": self.kind,
            "position": self.position,
            "token": self.token,
            "tokenId": self.token_id,
            "fullProb": self.full_prob,
            "routeProb": self.route_prob,
            "kept": self.kept,
            "keptEdges": self.kept_edges,
            "totalEdges": self.total_edges,
            "keptFfn": self.kept_ffn,
            "totalFfn": self.total_ffn,
            "randomProbs": list(self.random_probs),
            "randomKept": self.random_kept,
            "seed": self.seed,
        }


def _live(trace: Trace, what: str) -> LiveQueries:
    if trace.live is None:
        raise NeedsModelError(
            f"{what} needs the model: open the trace with its model loaded "
            f"({trace.data.model.name}), or trace the prompt again"
        )
    return trace.live


def route_keep(route: Route, renormalize: bool) -> RouteKeep:
    """What `route` keeps: per attention edge the heads with a positive weight (renormalise
    mode; raw mode keeps every head of a kept edge), and its FFN nodes."""
    heads: set[tuple[int, int, int, int]] = set()
    for edge in route.edges_of_kind(ATTENTION_EDGE):
        layer, i, j = edge.target.layer, edge.target.position, edge.source.position
        heads.update((layer, h, i, j) for h, w in enumerate(edge.heads) if w > 0 or not renormalize)
    ffn = {(node.layer, node.position) for node in route.nodes if node.kind == FFN}
    return RouteKeep(frozenset(heads), frozenset(ffn))


def keep_everything(n_layers: int, n_heads: int, position: int) -> RouteKeep:
    """The route at τ = 0: every part has c > 0 (the proximity's floor ε), so every attention
    term (layer, head, i←j) with j ≤ i ≤ position and every FFN node up to it is kept."""
    pairs = [(i, j) for i in range(position + 1) for j in range(i + 1)]
    return RouteKeep(
        frozenset(
            (layer, h, i, j) for layer in range(n_layers) for h in range(n_heads) for i, j in pairs
        ),
        frozenset((layer, i) for layer in range(n_layers) for i in range(position + 1)),
    )


def verify_trace(
    trace: Trace,
    threshold: float,
    kind: str,
    *,
    token: int = -1,
    renormalize: bool = True,
    n_random: int = 5,
    seed: int = 0,
    **run: Any,
) -> Faithfulness:
    """`Trace.verify_route`: the route at τ (τ = 0: everything) checked on the live model."""
    live = _live(trace, "verifying a route")
    position = trace.position(token)
    if threshold == 0:
        keep = keep_everything(trace.n_layers, trace.data.model.n_heads, position)
    else:
        keep = route_keep(trace.route(position, threshold, renormalize), renormalize)
    token_id = int(trace.data.predictions.ids[position][0])
    return live.verify_route(
        keep, float(threshold), kind, position, token_id, n_random, seed, **run
    )


def ablate_trace(
    trace: Trace, targets: Any, kind: str, *, token: int = -1, patch: str | None = None, **run: Any
) -> AblationResult:
    """`Trace.ablate`: ablate on the live model, measured on the traced prediction."""
    live = _live(trace, "an ablation")
    position = trace.position(token)
    token_id = int(trace.data.predictions.ids[position][0])
    bos = trace.data.settings.bos_prepended
    return live.ablate(targets, kind, position, token_id, patch, bos, **run)
