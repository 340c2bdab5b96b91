"""`Trace`: the Python API over one traced prompt, for experiment code and notebooks.

A trace answers routes, edge head splits, top neurons and projections from its `TraceData`
alone, so a trace loaded from a `.lmtrace` file works without the model. A trace made in this
process also keeps the model's `LiveQueries` (`live`, see `traces.live`) for what a file cannot
answer (neurons past the stored ones, edges below the stored threshold, projections of nodes off
the stored route, full attention and contribution maps, a head's tokens); on a loaded trace
those raise `NeedsModelError` saying what the file stores.

Every result is a plain Python or numpy value. This module never imports torch: reading and
querying a saved trace never loads it (`lmscope show` starts fast). TypeScript twin:
extension/shared/traces/trace.ts (`TraceQueries`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmscope.chats import ChatRecord, GenerationRecord, chat_of, generation_of
from lmscope.errors import LmscopeError, NeedsModelError, ThresholdError
from lmscope.graph import NODE_KINDS, RAW, RENORMALIZE, ContributionGraph, Node, Route
from lmscope.protocol import defaults
from lmscope.traces.causal import AblationResult, Faithfulness, ablate_trace, verify_trace
from lmscope.traces.data import PROJECTION_KINDS, Projections, TraceData, projection_applies
from lmscope.traces.experts import ExpertLayout
from lmscope.traces.experts import stored as stored_experts
from lmscope.traces.live import TOP_TOKENS, LiveQueries, TokenScores
from lmscope.traces.lmtrace import write_trace

if TYPE_CHECKING:
    from lmscope.traces.diff import TraceDiff


@dataclass
class _Lists:
    """One projection's token lists (each [k]); prev ranks are -1 where there is none."""

    top_ids: np.ndarray
    top_logits: np.ndarray
    top_prev_rank: np.ndarray
    bottom_ids: np.ndarray
    bottom_logits: np.ndarray

    @classmethod
    def of_row(cls, p: Projections, row: int) -> _Lists:
        return cls(
            p.top_ids[row],
            p.top_logits[row],
            p.top_prev_rank[row],
            p.bottom_ids[row],
            p.bottom_logits[row],
        )


class Trace:
    """One traced prompt."""

    def __init__(self, data: TraceData, live: LiveQueries | None = None) -> None:
        self.data = data
        self.live = live
        self._graph = ContributionGraph(
            data.blocks,
            data.edges,
            data.model.n_layers,
            data.n_tokens,
            data.model.parallel_blocks,
        )
        self._projection_rows = {
            (kind, node_kind, int(layer), int(pos)): row
            for row, (kind, node_kind, layer, pos) in enumerate(
                zip(
                    data.projections.kind,
                    data.projections.node_kind,
                    data.projections.layer,
                    data.projections.position,
                )
            )
        }
        self._live_lists: dict[tuple[str, str, int, int], _Lists] = {}
        self._neuron_rows = {
            (int(layer), int(pos)): row
            for row, (layer, pos) in enumerate(zip(data.neurons.layer, data.neurons.position))
        }
        # Mixtures of experts: the layout and experts table the file stores (None: dense).
        self._experts = stored_experts(data.extra, data.model.n_layers, data.n_tokens)

    # --- basic facts -------------------------------------------------------------------------
    @property
    def prompt(self) -> str:
        return self.data.tokens.prompt

    @property
    def tokens(self) -> list[str]:
        """Display strings of the prompt tokens (BOS included when prepended)."""
        return list(self.data.tokens.strings)

    @property
    def n_tokens(self) -> int:
        return self.data.n_tokens

    @property
    def n_layers(self) -> int:
        return self.data.model.n_layers

    @property
    def chat(self) -> ChatRecord | None:
        """The conversation traced and which tokens its chat template added (None: a prompt)."""
        return chat_of(self.data.extra, self.n_tokens)

    @property
    def generation(self) -> GenerationRecord | None:
        """Which tokens were generated before the trace (None: none were)."""
        return generation_of(self.data.extra, self.n_tokens)

    def token_text(self, token_id: int) -> str:
        token_id = int(token_id)
        text = self.data.vocabulary.get(token_id)
        if text is None and self.live is not None:  # ids found by a live projection
            text = self.live.token_text(token_id)
        return f"<id {token_id}>" if text is None else text

    def position(self, token: int) -> int:
        """A token position, negative values counting from the end."""
        n = self.n_tokens
        if not -n <= token < n:
            raise LmscopeError(f"token position {token} is out of range: the trace has {n} tokens")
        return token % n

    def _layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise LmscopeError(f"layer {layer} is out of range: the model has {self.n_layers}")
        return layer

    def _head(self, head: int) -> int:
        n_heads = self.data.model.n_heads
        if not 0 <= head < n_heads:
            raise LmscopeError(f"head {head} is out of range: the model has {n_heads} heads")
        return head

    def predictions(self, token: int = -1) -> list[tuple[str, float]]:
        """The model's top next tokens after position `token`: (display string, probability)."""
        row = self.position(token)
        preds = self.data.predictions
        return [(self.token_text(i), float(p)) for i, p in zip(preds.ids[row], preds.probs[row])]

    # --- routes ------------------------------------------------------------------------------
    def route(
        self,
        token: int = defaults.TOKEN,
        threshold: float = defaults.THRESHOLD,
        renormalize: bool = True,
        max_edges: int | None = None,
    ) -> Route:
        """The route of output token `token` at threshold τ (renormalise or raw mode); past
        `max_edges` edges, RouteTooLargeError (the daemon bounds each answer so)."""
        if isinstance(threshold, bool) or not (
            isinstance(threshold, (int, float)) and math.isfinite(threshold)
        ):
            raise ThresholdError(f"threshold must be a number, got {threshold!r}")
        minimum = self.data.settings.min_threshold
        if threshold < minimum - 1e-12:
            raise ThresholdError(
                f"threshold {threshold} is below {minimum}, the smallest this trace answers "
                f"(trace again with a lower min_threshold)"
            )
        mode = RENORMALIZE if renormalize else RAW
        return self._graph.route(self.position(token), float(threshold), mode, max_edges)

    def diff(self, other: Trace, **options: Any) -> TraceDiff:
        """Compare this trace (A) with `other` (B), a trace of the same model: both routes,
        per node and edge A, B and Δ, the prediction change and per-head/FFN share changes.
        Options: token_a, token_b, threshold, renormalize, align_last, pairs (`traces.diff`)."""
        from lmscope.traces.diff import diff_traces

        return diff_traces(self, other, **options)

    # --- drill-down ----------------------------------------------------------------------------
    def edge_heads(self, layer: int, target: int, source: int) -> list[dict[str, float]]:
        """Every head's unthresholded contribution c_att[l,i,j,h] and attention A[h,i,j] for
        the attention edge source -> target at `layer`: strongest contribution first, equal
        contributions in head order (the order the editor shows them in)."""
        layer, target, source = self._layer(layer), self.position(target), self.position(source)
        if source > target:
            raise LmscopeError(f"no attention edge {source} -> {target}: the model is causal")
        edges = self.data.edges
        span = self._graph.edge_range(layer, target)
        match = np.nonzero(edges.source[span] == source)[0]
        if len(match) == 0:
            if self.live is None:
                raise NeedsModelError(
                    f"edge L{layer} {source} -> {target} contributes at most "
                    f"{self.data.settings.min_threshold}; its heads are not stored in this file"
                )
            return _by_contribution(self.live.edge_heads(layer, target, source))
        row = span.start + int(match[0])
        return _by_contribution(
            [
                {"head": h, "contribution": float(c), "attention": float(a)}
                for h, (c, a) in enumerate(
                    zip(edges.head_contributions[row], edges.head_attention[row])
                )
            ]
        )

    def ffn_neurons(
        self, layer: int, position: int, offset: int = 0, limit: int = defaults.NEURON_PAGE
    ) -> dict[str, Any]:
        """Neurons of FFN node (layer, position), strongest contribution first, paged.

        Returns {"total", "offset", "neurons": [{"neuron", "contribution", "activation"}],
        "rest"} where "rest" is the contribution of the non-neuron part. Pages beyond the
        stored top neurons need the model (NeedsModelError on a loaded trace).
        """
        layer, position = self._layer(layer), self.position(position)
        if offset < 0 or limit < 0:
            raise LmscopeError("offset and limit must be >= 0")
        total = self.ffn_width(layer)
        row = self._neuron_rows.get((layer, position))
        table = self.data.neurons
        stored = table.index.shape[1] if row is not None else 0
        # The file answers when the page lies within the stored neurons, or when it stores them all.
        if row is not None and (offset + limit <= stored or stored >= total):
            sl = slice(offset, offset + limit)
            index, contribution = table.index[row, sl], table.contribution[row, sl]
            activation, rest = table.activation[row, sl], float(table.rest_contribution[row])
        elif self.live is not None:
            every = self.live.neurons(layer, position)
            sl = slice(offset, offset + limit)
            index, contribution = every.index[sl], every.contribution[sl]
            activation, rest = every.activation[sl], every.rest
        elif row is None:
            raise NeedsModelError(
                f"FFN node L{layer} at token {position} is on no route at τ ≥ "
                f"{self.data.settings.min_threshold}; its neurons are not stored in this file"
            )
        else:
            raise NeedsModelError(
                f"this file stores the top {stored} neurons of each FFN node; neurons "
                f"{offset}..{offset + limit} need the model (open the trace with the model loaded)"
            )
        return {
            "total": total,
            "offset": offset,
            "rest": rest,
            "neurons": [
                {"neuron": int(k), "contribution": float(c), "activation": float(a)}
                for k, c, a in zip(index, contribution, activation)
            ],
        }

    # --- experts (docs/method.md, "Experts"; traces/experts.py) ---------------------------------
    @property
    def expert_layout(self) -> ExpertLayout | None:
        """How the model's experts are numbered (None: a dense model)."""
        if self._experts is not None:
            return self._experts.layout
        return None if self.live is None else self.live.expert_layout

    def ffn_width(self, layer: int) -> int:
        """Neurons that are parts at an FFN node of `layer`: d_ffn, or for a sparse layer the
        chosen and shared experts' neurons (their ids are flat, `ExpertLayout.flat_id`)."""
        layout = self.expert_layout
        return self.data.model.d_ffn if layout is None else layout.ffn_width(layer)

    def neuron_label(self, layer: int, neuron: int) -> str:
        """`L5.N120`, or `L5.E3.N120` / `L5.S0.N120` for a neuron of a sparse layer."""
        layout = self.expert_layout
        return f"L{layer}.N{neuron}" if layout is None else layout.neuron_label(layer, neuron)

    def ffn_experts(self, layer: int, position: int) -> dict[str, Any]:
        """The experts of FFN node (layer, position) of a sparse layer, strongest first:
        {"total": k + S, "experts": [{"expert", "label", "gate", "contribution"}], "rest",
        "stored"}, where "expert" is the slot (shared expert s is slot E + s), "rest" c_rest and
        "stored" whether the file's table answered (else the model did)."""
        layer, position = self._layer(layer), self.position(position)
        layout = self.expert_layout
        if layout is None or not layout.is_sparse(layer):
            raise LmscopeError(f"layer {layer} has a dense FFN: it has no experts")
        row = None if self._experts is None else self._experts.table.row(layer, position)
        if row is not None:
            table = self._experts.table  # type: ignore[union-attr]
            slots, gates = table.expert[row], table.gate[row]
            contributions, rest = table.contribution[row], float(table.rest[row])
        elif self.live is not None:
            found = self.live.experts(layer, position)
            slots, gates, contributions = found.slot, found.gate, found.contribution
            rest = found.rest
        else:
            raise NeedsModelError(
                f"FFN node L{layer} at token {position}: this file stores the experts of "
                f"{self._detail_description()}; the others need the model"
            )
        return {
            "total": len(slots),
            "rest": rest,
            "stored": row is not None,
            "experts": [
                {
                    "expert": int(e),
                    "label": layout.slot_name(int(e)),
                    "gate": float(g),
                    "contribution": float(c),
                }
                for e, g, c in zip(slots, gates, contributions)
            ],
        }

    def _projection_lists(self, node: Node | tuple[str, int, int], kind: str) -> _Lists:
        """The projection lists of (node, kind): the stored row, or computed now on a live
        trace (then kept). The checks and errors of both projection queries."""
        node = node if isinstance(node, Node) else Node(*node)
        if node.kind not in NODE_KINDS or kind not in PROJECTION_KINDS:
            raise LmscopeError(f"unknown node kind {node.kind!r} or projection kind {kind!r}")
        node = Node(node.kind, self._layer(node.layer), self.position(node.position))
        if not projection_applies(kind, node.kind, self.data.model.parallel_blocks):
            raise LmscopeError(f"a {kind} projection does not apply to {node.label()}")
        key = (kind, node.kind, node.layer, node.position)
        row = self._projection_rows.get(key)
        if row is not None:
            return _Lists.of_row(self.data.projections, row)
        if self.live is None:
            raise NeedsModelError(
                f"no {kind} projection of {node.label()} in this trace: the file stores "
                f"projections of {self._detail_description()}; trace it again with the model "
                f"loaded to see any node"
            )
        if key not in self._live_lists:
            computed = self.live.projections(node, self.data.settings.projection_top_k)
            for row, computed_kind in enumerate(computed.kind):
                found = (computed_kind, node.kind, node.layer, node.position)
                self._live_lists[found] = _Lists.of_row(computed, row)
        return self._live_lists[key]

    def _detail_description(self) -> str:
        detail = self.data.extra.get("lmscope.detail")
        if isinstance(detail, dict) and detail.get("scope") == "route":
            return f"the nodes on the last token's route at τ = {detail.get('threshold')}"
        return f"the nodes on a route at τ ≥ {self.data.settings.min_threshold}"

    def has_projection(self, node: Node, kind: str) -> bool:
        """Whether the (kind) projection of `node` is at hand: stored in the trace, or already
        computed by its live model (so asking for it costs no forward pass)."""
        key = (kind, node.kind, node.layer, node.position)
        return key in self._projection_rows or key in self._live_lists

    def projection(
        self, node: Node | tuple[str, int, int], kind: str = defaults.PROJECTION_KIND
    ) -> dict[str, Any]:
        """Vocabulary projection of a node: kind "lens" (residual nodes), "attention_update" or
        "ffn_update". Returns {"top": [(token, logit, prev_rank)], "bottom": [(token, logit)]};
        prev_rank is the token's rank in the previous residual node's lens (None if none)."""
        lists = self._projection_lists(node, kind)
        return {
            "top": [
                (self.token_text(i), float(v), None if r < 0 else int(r))
                for i, v, r in zip(lists.top_ids, lists.top_logits, lists.top_prev_rank)
            ],
            "bottom": [
                (self.token_text(i), float(v))
                for i, v in zip(lists.bottom_ids, lists.bottom_logits)
            ],
        }

    def projection_ids(
        self, node: Node | tuple[str, int, int], kind: str = defaults.PROJECTION_KIND
    ) -> dict[str, list[int]]:
        """The token ids behind `projection(node, kind)`'s lists, in the same order."""
        lists = self._projection_lists(node, kind)
        return {
            "top": [int(i) for i in lists.top_ids],
            "bottom": [int(i) for i in lists.bottom_ids],
        }

    # --- needs the model -----------------------------------------------------------------------
    def _need_live(self, what: str) -> LiveQueries:
        if self.live is None:
            raise NeedsModelError(f"{what} needs the model: a saved trace does not store it")
        return self.live

    def attention_pattern(self, layer: int, head: int) -> np.ndarray:
        """A[h] at `layer`: [n, n] attention probabilities (needs the model)."""
        live = self._need_live("the full attention pattern")
        return live.attention_pattern(self._layer(layer), self._head(head))

    def contribution_map(self, layer: int, head: int) -> np.ndarray:
        """c_att[layer, i, j, head] for every target i and source j: [n, n] (needs the model)."""
        live = self._need_live("the full contribution map")
        return live.contribution_map(self._layer(layer), self._head(head))

    def head_tokens(
        self, layer: int, head: int, position: int = defaults.TOKEN, k: int = TOP_TOKENS
    ) -> tuple[TokenScores, TokenScores]:
        """Tokens head `head` of `layer` promotes and suppresses with its output at `position`
        (wire `TokenScore` lists, strongest first; needs the model: a file stores projections
        of whole blocks only)."""
        layer, head, position = self._layer(layer), self._head(head), self.position(position)
        if self.live is None:
            raise NeedsModelError(
                f"the tokens L{layer}H{head} promotes need the model: a saved trace stores "
                "projections of whole blocks only"
            )
        return self.live.head_tokens(layer, head, position, k)

    # --- causal checks (docs/method.md, "Causal checks"; need the model) --------------------------
    def ablate(self, targets: Any, kind: str = "zero", **options: Any) -> AblationResult:
        """Ablate `targets` ("L23H0,L5.ffn@14": lmscope.causal.targets) by `kind`: zero, mean or
        patch (from the prompt `patch=`); Δ log p of the prediction after `token=` (last)."""
        return ablate_trace(self, targets, kind, **options)

    def verify_route(
        self, threshold: float = defaults.THRESHOLD, kind: str = "zero", **options: Any
    ) -> Faithfulness:
        """Keep only the route at τ and ablate the rest (zero or mean): the kept probability and
        a random baseline. Options: token, renormalize, n_random (5), seed (0)."""
        return verify_trace(self, threshold, kind, **options)

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the trace atomically to `path` (a `.lmtrace` file)."""
        return write_trace(self.data, path)

    def __repr__(self) -> str:
        return (
            f"<Trace {self.data.model.name}: {self.n_tokens} tokens, {self.n_layers} layers, "
            f"predicts {self.predictions()[0][0]!r}>"
        )


def _by_contribution(heads: list[dict[str, float]]) -> list[dict[str, float]]:
    """Heads by contribution, largest first; equal contributions by head index."""
    return sorted(heads, key=lambda h: (-h["contribution"], h["head"]))
