"""What the trace file's schema cannot say: sizes agree with the model, indices are in range,
edges are ordered, every token id used is in the vocabulary, projections describe nodes that have
them, and the shares of one step sum to at most the schema's share maximum. `check_invariants`
runs on every trace read or written (`traces.lmtrace`). TypeScript twin:
extension/shared/traces/invariants.ts (same messages).
"""

from __future__ import annotations

import numpy as np

from lmscope.graph.nodes import EMBEDDING, FFN, POST_ATTENTION, RESIDUAL
from lmscope.traces import data as D
from lmscope.traces.wire import Invalid, camel, limits


def _length(path: str, arr: np.ndarray) -> int:
    """Length of a 1-D array that sets a count (n, E, F, P)."""
    if arr.ndim != 1:
        raise Invalid(f"{path} has shape {list(arr.shape)}, expected one dimension")
    return int(arr.shape[0])


def _shape(path: str, arr: np.ndarray, expected: tuple[int, ...], names: str) -> None:
    if arr.shape != expected:
        raise Invalid(f"{path} has shape {list(arr.shape)}, expected {list(expected)} {names}")


def _within(path: str, arr: np.ndarray, low: int, high: int, what: str) -> None:
    """Every value in [low, high)."""
    if arr.size and (arr.min() < low or arr.max() >= high):
        bad = arr[(arr < low) | (arr >= high)].flat[0]
        raise Invalid(f"{path} holds {bad}, outside [{low}, {high}) ({what})")


def check_invariants(t: D.TraceData) -> None:
    """What the schema cannot say: sizes agree with the model, indices are in range."""
    m, s = t.model, t.settings
    L, H, V = m.n_layers, m.n_heads, m.vocab_size
    if m.n_heads % m.n_kv_heads:
        raise Invalid(f"model.nHeads {m.n_heads} is not a multiple of nKvHeads {m.n_kv_heads}")
    n = _length("tokens.ids", t.tokens.ids)
    if n == 0:
        raise Invalid("tokens.ids is empty")
    if len(t.tokens.strings) != n:
        raise Invalid(f"tokens.strings has {len(t.tokens.strings)} items, expected {n} [n]")
    _within("tokens.ids", t.tokens.ids, 0, V, "model.vocabSize")

    k_pred = min(s.prediction_top_k, V)
    _shape("predictions.ids", t.predictions.ids, (n, k_pred), "[n, kPred]")
    _shape("predictions.probs", t.predictions.probs, (n, k_pred), "[n, kPred]")
    _within("predictions.ids", t.predictions.ids, 0, V, "model.vocabSize")

    b = t.blocks
    _shape("blocks.residualAttention", b.residual_attention, (L, n), "[L, n]")
    _shape("blocks.ffn", b.ffn, (L, n), "[L, n]")
    if m.parallel_blocks != (b.residual_ffn is None):
        raise Invalid("blocks.residualFfn must be null exactly when model.parallelBlocks")
    if b.residual_ffn is not None:
        _shape("blocks.residualFfn", b.residual_ffn, (L, n), "[L, n]")

    e = t.edges
    E = _length("edges.layer", e.layer)
    for key, arr in (("target", e.target), ("source", e.source)):
        _shape(f"edges.{key}", arr, (E,), "[E]")
        _within(f"edges.{key}", arr, 0, n, "token positions")
    _shape("edges.headContributions", e.head_contributions, (E, H), "[E, H]")
    _shape("edges.headAttention", e.head_attention, (E, H), "[E, H]")
    _within("edges.layer", e.layer, 0, L, "model.nLayers")
    if (e.source > e.target).any():
        raise Invalid(f"edges row {int(np.argmax(e.source > e.target))}: source > target")
    order = (e.layer.astype(np.int64) * n + e.target) * n + e.source  # lexicographic key
    if (np.diff(order) <= 0).any():
        row = int(np.argmax(np.diff(order) <= 0)) + 1
        raise Invalid(f"edges row {row} is out of (layer, target, source) order or repeated")

    u = t.neurons
    F = _length("neurons.layer", u.layer)
    K = min(s.top_neurons, m.d_ffn)
    for key, arr, shape, names in (
        ("position", u.position, (F,), "[F]"),
        ("index", u.index, (F, K), "[F, K]"),
        ("contribution", u.contribution, (F, K), "[F, K]"),
        ("activation", u.activation, (F, K), "[F, K]"),
        ("restContribution", u.rest_contribution, (F,), "[F]"),
    ):
        _shape(f"neurons.{key}", arr, shape, names)
    _within("neurons.layer", u.layer, 0, L, "model.nLayers")
    _within("neurons.position", u.position, 0, n, "token positions")
    _within("neurons.index", u.index, 0, m.d_ffn, "model.dFfn")
    if np.unique(u.layer.astype(np.int64) * n + u.position).size != F:
        raise Invalid("neurons has two rows for the same (layer, position)")

    _check_projections(t, L, n, V)

    vocab = np.array(sorted(t.vocabulary), dtype=np.int64)
    _within("vocabulary.ids", vocab, 0, V, "model.vocabSize")
    for path, ids in (
        ("tokens.ids", t.tokens.ids),
        ("predictions.ids", t.predictions.ids),
        ("projections.topIds", t.projections.top_ids),
        ("projections.bottomIds", t.projections.bottom_ids),
    ):
        missing = np.setdiff1d(ids, vocab)
        if missing.size:
            raise Invalid(f"vocabulary lacks token id {int(missing[0])} used in {path}")

    _check_sums(t, L, n)


def _first_over(sums: np.ndarray, most: float) -> int | None:
    over = sums > most
    return int(np.argmax(over)) if over.any() else None


def _check_sums(t: D.TraceData, L: int, n: int) -> None:
    """The parts of one step are normalised to sum to 1 (docs/method.md), so the stored ones sum
    to at most that, give or take rounding: the schema's share maximum. This keeps every weight,
    flow and share the queries compute finite and at most about 1, also in raw mode. Sums are
    float64, in the order the TypeScript twin adds them."""
    most = limits().share_max
    row = _first_over(t.predictions.probs.astype(np.float64).sum(axis=1), most)
    if row is not None:
        raise Invalid(f"predictions.probs row {row} sums to more than {most!r}")
    b, e = t.blocks, t.edges
    heads = e.head_contributions.astype(np.float64).sum(axis=1)
    keys = e.layer.astype(np.int64) * n + e.target
    step = np.bincount(keys, weights=heads, minlength=L * n).astype(np.float64)
    step = step + b.residual_attention.astype(np.float64).ravel()
    if b.residual_ffn is None:  # parallel blocks: one step holds every part
        step = step + b.ffn.astype(np.float64).ravel()
    at = _first_over(step, most)
    if at is not None:
        what = "attention step" if b.residual_ffn is not None else "block step"
        raise Invalid(
            f"the {what} of layer {at // n} at token {at % n} has shares summing to more than "
            f"{most!r}"
        )
    if b.residual_ffn is not None:
        ffn_step = b.ffn.astype(np.float64) + b.residual_ffn.astype(np.float64)
        at = _first_over(ffn_step.ravel(), most)
        if at is not None:
            raise Invalid(
                f"the FFN step of layer {at // n} at token {at % n} has shares summing to more "
                f"than {most!r}"
            )
    u = t.neurons
    neuron_rows = u.contribution.astype(np.float64).sum(axis=1) + u.rest_contribution
    row = _first_over(neuron_rows, most)
    if row is not None:
        raise Invalid(f"neurons row {row}: its shares sum to more than {most!r}")


# Which node each projection kind may describe (docs/method.md, "Vocabulary projections").
_PROJECTION_NODES = {
    D.PROJ_LENS: {EMBEDDING, POST_ATTENTION, RESIDUAL},
    D.PROJ_ATTENTION_UPDATE: {POST_ATTENTION, RESIDUAL},  # residual: parallel blocks
    D.PROJ_FFN_UPDATE: {FFN},
}


def _check_projections(t: D.TraceData, L: int, n: int, V: int) -> None:
    p = t.projections
    P = _length("projections.layer", p.layer)
    k = min(t.settings.projection_top_k, V)
    _shape("projections.position", p.position, (P,), "[P]")
    for key in ("kind", "node_kind"):
        if len(getattr(p, key)) != P:
            raise Invalid(f"projections.{camel(key)} has {len(getattr(p, key))} items, not {P}")
    for key in ("top_ids", "top_logits", "bottom_ids", "bottom_logits", "top_prev_rank"):
        _shape(f"projections.{camel(key)}", getattr(p, key), (P, k), "[P, k]")
    _within("projections.layer", p.layer, 0, L, "model.nLayers")
    _within("projections.position", p.position, 0, n, "token positions")
    _within("projections.topIds", p.top_ids, 0, V, "model.vocabSize")
    _within("projections.bottomIds", p.bottom_ids, 0, V, "model.vocabSize")
    _within("projections.topPrevRank", p.top_prev_rank, -1, V, "-1 or a rank")
    for row, (kind, node) in enumerate(zip(p.kind, p.node_kind, strict=True)):
        if node not in _PROJECTION_NODES[kind]:
            raise Invalid(f"projections row {row}: a {kind} projection of a {node} node")
        if node == POST_ATTENTION and t.model.parallel_blocks:
            raise Invalid(f"projections row {row}: post_attention node with parallel blocks")
        if node == EMBEDDING and p.layer[row] != 0:
            raise Invalid(f"projections row {row}: embedding node at layer {p.layer[row]}")
        if (kind != D.PROJ_LENS or node == EMBEDDING) and (p.top_prev_rank[row] != -1).any():
            raise Invalid(f"projections row {row}: topPrevRank must be -1 (no previous lens)")
