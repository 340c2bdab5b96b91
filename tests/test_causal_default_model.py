"""Causal checks on the embedded default model (SmolLM2-135M-Instruct): on the IOI prompt, the
heads the trace credits with the L23 " Mary" → " to" edge matter more to p(" Mary") than as
many random heads on that edge (docs/method.md, "Causal checks")."""

from __future__ import annotations

import numpy as np
import pytest

import lmscope
from lmscope.api import load_model

pytestmark = pytest.mark.default_model

IOI = "When Mary and John went to the store, John gave a drink to"
MARY, TOP_HEADS, SEEDS = 2, 3, 8


def test_the_top_heads_of_the_mary_edge_matter_more_than_random_heads():
    trace = lmscope.trace(IOI, model=load_model("default"))
    last = trace.n_tokens - 1
    assert trace.predictions()[0][0] == " Mary"
    heads = [h["head"] for h in trace.edge_heads(23, last, MARY)]
    top = trace.ablate([f"L23H{h}:{last}<-{MARY}" for h in heads[:TOP_HEADS]])
    random_deltas = []
    for seed in range(SEEDS):
        drawn = np.random.default_rng(seed).choice(len(heads), TOP_HEADS, replace=False)
        result = trace.ablate([f"L23H{h}:{last}<-{MARY}" for h in drawn])
        random_deltas.append(result.delta_logprob)
    print(
        f"\nIOI, L23 ' Mary'->' to', top {TOP_HEADS} heads {heads[:TOP_HEADS]}: "
        f"Δ log p(' Mary') = {top.delta_logprob:.4f} (p {np.exp(top.logprob):.4f} -> "
        f"{np.exp(top.ablated_logprob):.4f}); {TOP_HEADS} random heads of that edge, "
        f"{SEEDS} seeds: mean Δ = {np.mean(random_deltas):.4f} {np.round(random_deltas, 4)}"
    )
    assert top.delta_logprob < np.mean(random_deltas) < 0.05
