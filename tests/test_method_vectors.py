"""The five numeric test vectors of docs/method.md ("Numeric test vectors", from LM-TT's unit
tests), to 1e-4, each through the code the product runs: the proximity and contributions of
`attribution.proximity`, and the renormalising threshold of the route graph."""

import numpy as np
import pytest
import torch

from lmscope.attribution.proximity import contributions
from lmscope.graph import (
    ATTENTION_EDGE,
    POST_ATTENTION,
    RENORMALIZE,
    RESIDUAL_EDGE,
    ContributionGraph,
    Node,
)
from lmscope.traces.data import AttentionEdges, BlockContributions


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def test_ffn_step_gives_all_credit_to_the_ffn_when_the_residual_is_zero():
    c = contributions(t([1.0, 1.0]), t([[1.0, 1.0], [0.0, 0.0]]), p=1)
    assert c[0].item() == pytest.approx(1.0, abs=1e-4)
    assert c[1].item() == pytest.approx(0.0, abs=1e-4)


def test_attention_step_with_two_heads_matches_reference_vector():
    # x = [2, 1], x~ = [2, 2], head parts [1, 1] and [-1, 0]; p = 2.
    c = contributions(t([2.0, 2.0]), t([[1.0, 1.0], [-1.0, 0.0], [2.0, 1.0]]), p=2)
    assert c.tolist() == pytest.approx([0.43613, 0.0, 0.56387], abs=1e-4)


def test_neuron_step_credits_only_the_neuron_moving_towards_the_whole():
    # before [10, 10], after [-10, 10]; neuron parts [0, 1], [1, 0], [-21, -1]; p = 2.
    c = contributions(t([-10.0, 10.0]), t([[0, 1], [1, 0], [-21, -1], [10, 10]]), p=2)
    assert c.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-4)


def test_collinear_neurons_share_credit_by_size():
    c = contributions(t([4.0, 4.0]), t([[1, 1], [2, 2], [1, 1]]), p=2)
    assert c.tolist() == pytest.approx([0.25, 0.5, 0.25], abs=1e-4)


def one_layer_graph(heads: list[list[float]], residual: list[float]) -> ContributionGraph:
    """One sequential layer over len(residual) tokens: target i's parts are the heads of its
    self-attention edge i <- i (`heads[i]`, one value per head) and its residual."""
    n = len(residual)
    blocks = BlockContributions(
        residual_attention=np.array([residual], dtype=np.float32),
        ffn=np.full((1, n), 0.5, dtype=np.float32),
        residual_ffn=np.full((1, n), 0.5, dtype=np.float32),
    )
    edges = AttentionEdges(
        layer=np.zeros(n, dtype=np.int32),
        target=np.arange(n, dtype=np.int32),
        source=np.arange(n, dtype=np.int32),
        head_contributions=np.array(heads, dtype=np.float32),
        head_attention=np.ones((n, len(heads[0])), dtype=np.float32),
    )
    return ContributionGraph(blocks, edges, n_layers=1, n_tokens=n, parallel_blocks=False)


def test_renormalising_threshold_drops_small_parts_and_rescales_per_target():
    # Block contributions [[0.05, 0.15], [0.05, 0.05]] and residual [0.8, 0.9], one row per
    # target, at τ = 0.1 -> blocks [[0, 0.1578947], [0, 0]], residual [0.8421053, 1.0].
    graph = one_layer_graph([[0.05, 0.15], [0.05, 0.05]], [0.8, 0.9])
    first = graph.incoming(Node(POST_ATTENTION, 0, 0), 0.1, RENORMALIZE)
    assert [e.kind for e in first] == [RESIDUAL_EDGE, ATTENTION_EDGE]
    assert first[0].weight == pytest.approx(0.8421053, abs=1e-4)
    assert first[1].heads == pytest.approx((0.0, 0.1578947), abs=1e-4)
    assert first[1].weight == pytest.approx(0.1578947, abs=1e-4)
    second = graph.incoming(Node(POST_ATTENTION, 0, 1), 0.1, RENORMALIZE)
    assert [(e.kind, e.weight) for e in second] == [(RESIDUAL_EDGE, 1.0)]


def test_renormalising_when_nothing_survives_gives_no_edge_not_nan():
    graph = one_layer_graph([[0.01, 0.02]], [0.03])
    assert graph.incoming(Node(POST_ATTENTION, 0, 0), 0.5, RENORMALIZE) == []
