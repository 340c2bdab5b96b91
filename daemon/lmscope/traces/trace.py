"""`Trace`: the Python API over one traced prompt, for experiment code and notebooks.

A trace answers routes, edge head splits, top neurons and projections from its `TraceData`
alone, so a trace loaded from a `.lmtrace` file works without the model. A trace made in this
process also keeps a handle on the model (`live`) for the few queries a file cannot answer
(complete neuron lists, full attention and contribution maps); on a loaded trace those raise
`NeedsModelError` saying so.

Every result is a plain Python or numpy value. torch is imported only by the live queries, so
reading and querying a saved trace never loads it (`lmscope show` starts fast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmscope.attribution.graph import RAW, RENORMALIZE, Node, Route
from lmscope.attribution.routes import ContributionGraph
from lmscope.errors import LmscopeError, NeedsModelError, ThresholdError
from lmscope.traces.data import (
    NODE_KINDS,
    PROJECTION_KINDS,
    Projections,
    TraceData,
    projection_applies,
)


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


@dataclass
class LiveModel:
    """The model a trace was made with, for on-demand queries (same process only)."""

    loaded: Any  # lmscope.models.loading.LoadedModel
    token_ids: list[int]


class Trace:
    """One traced prompt."""

    def __init__(self, data: TraceData, live: LiveModel | None = None) -> None:
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

    def token_text(self, token_id: int) -> str:
        token_id = int(token_id)
        text = self.data.vocabulary.get(token_id)
        if text is None and self.live is not None:  # ids found by a live projection
            text = str(self.live.loaded.tokenizer.decode([token_id], skip_special_tokens=False))
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
    def route(self, token: int = -1, threshold: float = 0.04, renormalize: bool = True) -> Route:
        """The route of output token `token` at threshold τ (renormalise or raw mode)."""
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
        return self._graph.route(self.position(token), float(threshold), mode)

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
            return self._live_edge_heads(layer, target, source)
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
        self, layer: int, position: int, offset: int = 0, limit: int = 50
    ) -> dict[str, Any]:
        """Neurons of FFN node (layer, position), strongest contribution first, paged.

        Returns {"total", "offset", "neurons": [{"neuron", "contribution", "activation"}],
        "rest"} where "rest" is the contribution of the non-neuron part. Pages beyond the
        stored top neurons need the model (NeedsModelError on a loaded trace).
        """
        layer, position = self._layer(layer), self.position(position)
        if offset < 0 or limit < 0:
            raise LmscopeError("offset and limit must be >= 0")
        total = self.data.model.d_ffn
        row = self._neuron_rows.get((layer, position))
        table = self.data.neurons
        stored = table.index.shape[1] if row is not None else 0
        # The file answers when the page lies within the stored neurons, or when it stores them all.
        if row is not None and (offset + limit <= stored or stored >= total):
            sl = slice(offset, offset + limit)
            index, contribution = table.index[row, sl], table.contribution[row, sl]
            activation, rest = table.activation[row, sl], float(table.rest_contribution[row])
        elif self.live is not None:
            index, contribution, activation, rest = self._live_neurons(layer, position)
            index, contribution = (
                index[offset : offset + limit],
                contribution[offset : offset + limit],
            )
            activation = activation[offset : offset + limit]
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
            self._live_lists.update(_live_projections(self.live, node, self.data.settings))
        return self._live_lists[key]

    def _detail_description(self) -> str:
        detail = self.data.extra.get("lmscope.detail")
        if isinstance(detail, dict) and detail.get("scope") == "route":
            return f"the nodes on the last token's route at τ = {detail.get('threshold')}"
        return f"the nodes on a route at τ ≥ {self.data.settings.min_threshold}"

    def projection(self, node: Node | tuple[str, int, int], kind: str = "lens") -> dict[str, Any]:
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
        self, node: Node | tuple[str, int, int], kind: str = "lens"
    ) -> dict[str, list[int]]:
        """The token ids behind `projection(node, kind)`'s lists, in the same order."""
        lists = self._projection_lists(node, kind)
        return {
            "top": [int(i) for i in lists.top_ids],
            "bottom": [int(i) for i in lists.bottom_ids],
        }

    # --- needs the model -----------------------------------------------------------------------
    def _need_live(self, what: str) -> LiveModel:
        if self.live is None:
            raise NeedsModelError(f"{what} needs the model: a saved trace does not store it")
        return self.live

    def attention_pattern(self, layer: int, head: int) -> np.ndarray:
        """A[h] at `layer`: [n, n] attention probabilities (needs the model)."""
        live = self._need_live("the full attention pattern")
        captured = _recapture(live, self._layer(layer))
        return captured.attn_probs[self._head(head)].cpu().numpy()

    def contribution_map(self, layer: int, head: int) -> np.ndarray:
        """c_att[layer, i, j, head] for every target i and source j: [n, n] (needs the model)."""
        live = self._need_live("the full contribution map")
        from lmscope.tracing.engine import attribute_layer

        layer, head = self._layer(layer), self._head(head)
        result = attribute_layer(_adapter(live), _recapture(live, layer), keep_above=-1.0)
        n = self.n_tokens
        out = np.zeros((n, n), dtype=np.float32)
        out[result.edge_target.cpu().numpy(), result.edge_source.cpu().numpy()] = (
            result.edge_heads[:, head].cpu().numpy()
        )
        return out

    def _live_edge_heads(self, layer: int, target: int, source: int) -> list[dict[str, float]]:
        live = self.live
        assert live is not None
        from lmscope.tracing.engine import attribute_layer

        captured = _recapture(live, layer)
        result = attribute_layer(_adapter(live), captured, keep_above=-1.0)
        hit = ((result.edge_target == target) & (result.edge_source == source)).nonzero()[0, 0]
        return _by_contribution(
            [
                {
                    "head": h,
                    "contribution": float(result.edge_heads[hit, h]),
                    "attention": float(captured.attn_probs[h, target, source]),
                }
                for h in range(result.edge_heads.shape[1])
            ]
        )

    def _live_neurons(self, layer: int, position: int):
        import torch

        from lmscope.attribution.neurons import neuron_contributions

        live = self.live
        assert live is not None
        captured = _recapture(live, layer)
        adapter = _adapter(live)
        act = captured.ffn_act[position : position + 1]
        whole = captured.resid_out[position : position + 1]
        rest = whole - captured.ffn_out[position : position + 1]
        w_out = adapter.ffn_output_weights(layer).to(whole.device)
        result = neuron_contributions(act, w_out, whole, rest)
        order = torch.sort(result.contribution[0], descending=True, stable=True).indices
        return (
            order.cpu().numpy(),
            result.contribution[0, order].cpu().numpy(),
            act[0, order].cpu().numpy(),
            float(result.rest[0]),
        )

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the trace atomically to `path` (a `.lmtrace` file)."""
        from lmscope.traces.fileformat import write_trace

        return write_trace(self.data, path)

    def __repr__(self) -> str:
        return (
            f"<Trace {self.data.model.name}: {self.n_tokens} tokens, {self.n_layers} layers, "
            f"predicts {self.predictions()[0][0]!r}>"
        )


def _by_contribution(heads: list[dict[str, float]]) -> list[dict[str, float]]:
    """Heads by contribution, largest first; equal contributions by head index."""
    return sorted(heads, key=lambda h: (-h["contribution"], h["head"]))


def _adapter(live: LiveModel):
    from lmscope.models.adapter import adapter_for

    return adapter_for(live.loaded.model)


class _StopAfterLayer(Exception):
    pass


def _live_projections(live: LiveModel, node: Node, settings: Any) -> dict[tuple, _Lists]:
    """Every projection of `node` (its kinds), computed from a fresh pass up to its layer that
    keeps only the node's token row: [1, d] per layer, whatever the prompt length."""
    from lmscope.tracing.engine import LayerState, project_nodes

    at = slice(node.position, node.position + 1)
    states: list[LayerState] = []

    def keep_row(c) -> None:
        states.append(
            LayerState(
                c.resid_in[at], c.attn_out[at], c.ffn_act[at], c.ffn_out[at], c.resid_out[at]
            )
        )

    _run_until(live, node.layer, keep_row)
    p = project_nodes(
        _adapter(live), states, {Node(node.kind, node.layer, 0)}, settings.projection_top_k
    )
    return {
        (kind, node.kind, node.layer, node.position): _Lists.of_row(p, row)
        for row, kind in enumerate(p.kind)
    }


def _run_until(live: LiveModel, layer: int, on_layer) -> None:
    """Run the model again with capture hooks, handing each layer's capture to `on_layer`, and
    stop after `layer` (the rest of the pass is not needed)."""
    import torch

    from lmscope.tracing.capture import capture_layers, run_forward

    def until(captured) -> None:
        on_layer(captured)
        if captured.layer == layer:
            raise _StopAfterLayer

    try:
        with live.loaded.lock, capture_layers(_adapter(live), until):
            run_forward(live.loaded.model, torch.tensor(live.token_ids, dtype=torch.long))
    except _StopAfterLayer:
        pass


def _recapture(live: LiveModel, layer: int):
    """Run the model again up to `layer` and return that layer's capture."""
    found: list[Any] = []
    _run_until(live, layer, found.append)
    return found[-1]
