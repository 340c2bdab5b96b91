"""Route faithfulness (docs/method.md, "Causal checks"): keep only a route, ablate the rest,
and compare the prediction's probability with the full model's and with random sets.

Kept: the attention terms (layer, head, i←j) on the route (renormalise mode: the heads that
survived τ on each route edge; raw mode: every head of a kept edge) and the route's FFN nodes.
Ablated (zero or mean): every other attention term with j ≤ i ≤ t and every other FFN node
(layer, i ≤ t), t the output position; positions after t cannot reach its prediction and are
left alone. Residual connections are never ablated. The baseline keeps as many attention terms
and FFN nodes, drawn uniformly from the same candidates with `numpy.random.default_rng(seed)`,
and averages the kept probability over `n_random` draws; the seed is reported so the figure can
be reproduced.

Cost: one plain pass, one reference pass for mean, one pass for the route, one per random set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lmscope.causal.ablate import Plan, ablated_logits, forward_logits, record
from lmscope.causal.targets import AblationError, AblationKind
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.traces.causal import Faithfulness, RouteKeep

ProgressFn = Callable[[str, float | None], None]


def _candidates(n_layers: int, n_heads: int, position: int) -> np.ndarray:
    """Every attention term (layer, head, i, j) with j ≤ i ≤ position: int [E, 4]."""
    i, j = np.tril_indices(position + 1)
    layer, head, pair = np.meshgrid(
        np.arange(n_layers), np.arange(n_heads), np.arange(len(i)), indexing="ij"
    )
    return np.stack(
        [layer.ravel(), head.ravel(), i[pair.ravel()], j[pair.ravel()]], axis=1
    )  # [L·H·P, 4]


def _plan_keeping(
    heads: np.ndarray, ffn: np.ndarray, n_layers: int, n_heads: int, n: int, position: int
) -> Plan:
    """A plan ablating every attention term and FFN node up to `position` except the kept
    `heads` [k, 4] (layer, head, i, j) and `ffn` [m, 2] (layer, i)."""
    plan = Plan(n)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    causal[position + 1 :] = False  # targets after t cannot reach its prediction
    kept = torch.zeros(n_layers, n_heads, n, n, dtype=torch.bool)
    if len(heads):
        index = torch.as_tensor(heads, dtype=torch.long)
        kept[index[:, 0], index[:, 1], index[:, 2], index[:, 3]] = True
    ffn_kept = torch.zeros(n_layers, n, dtype=torch.bool)
    if len(ffn):
        index = torch.as_tensor(ffn, dtype=torch.long)
        ffn_kept[index[:, 0], index[:, 1]] = True
    ffn_candidates = torch.zeros(n, dtype=torch.bool)
    ffn_candidates[: position + 1] = True
    for layer in range(n_layers):
        plan.edges[layer] = causal & ~kept[layer]  # [H, n, n]
        plan.ffn[layer] = ffn_candidates & ~ffn_kept[layer]
    return plan


def route_faithfulness(
    adapter: ArchitectureAdapter,
    ids: list[int],
    keep: RouteKeep,
    threshold: float,
    kind: AblationKind,
    position: int,
    token_id: int,
    token_text: Callable[[int], str],
    n_random: int = 5,
    seed: int = 0,
    should_cancel: Callable[[], bool] | None = None,
    progress: ProgressFn | None = None,
) -> Faithfulness:
    """Verify a route (see the module docstring)."""
    if kind not in ("zero", "mean"):
        raise AblationError(f"a route is verified with kind 'zero' or 'mean', not {kind!r}")
    if n_random < 0:
        raise AblationError(f"n_random must be >= 0, got {n_random}")
    n, n_layers, n_heads = len(ids), adapter.n_layers, adapter.n_heads
    heads = np.array(sorted(h for h in keep.heads if h[2] <= position), dtype=np.int64)
    ffn = np.array(sorted(f for f in keep.ffn if f[1] <= position), dtype=np.int64)
    heads, ffn = heads.reshape(-1, 4), ffn.reshape(-1, 2)
    candidates = _candidates(n_layers, n_heads, position)
    ffn_candidates = np.stack(
        np.meshgrid(np.arange(n_layers), np.arange(position + 1), indexing="ij"), -1
    ).reshape(-1, 2)
    passes = 2 + n_random + (kind == "mean")
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if progress is not None:
            progress(what, done / passes)
        done += 1

    def probability(plan: Plan, reference) -> float:
        logits = ablated_logits(adapter, ids, plan, kind, reference, should_cancel)
        return float(torch.softmax(logits[position], -1)[token_id])

    step("full model")
    full = float(torch.softmax(forward_logits(adapter.model, ids)[position], -1)[token_id])
    route_plan = _plan_keeping(heads, ffn, n_layers, n_heads, n, position)
    reference = None
    if kind == "mean":
        step("mean reference")
        reference = record(adapter, ids, route_plan, patch=False)
    step("route")
    route = probability(route_plan, reference)
    generator = np.random.default_rng(seed)
    random_probs = []
    for draw in range(n_random):
        step(f"random set {draw + 1}/{n_random}")
        pick = generator.choice(len(candidates), size=len(heads), replace=False)
        pick_ffn = generator.choice(len(ffn_candidates), size=len(ffn), replace=False)
        plan = _plan_keeping(
            candidates[pick], ffn_candidates[pick_ffn], n_layers, n_heads, n, position
        )
        random_probs.append(probability(plan, reference))
    return Faithfulness(
        threshold=threshold,
        kind=kind,
        position=position,
        token=token_text(token_id),
        token_id=token_id,
        full_prob=full,
        route_prob=route,
        kept_edges=len(heads),
        total_edges=len(candidates),
        kept_ffn=len(ffn),
        total_ffn=len(ffn_candidates),
        random_probs=random_probs,
        seed=seed,
    )
