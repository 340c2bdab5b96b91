"""The five numeric test vectors of shared/method.md (from LM-TT's unit tests), to 1e-4."""

import numpy as np
import pytest
import torch

from lmscope.attribution.proximity import contributions
from lmscope.attribution.thresholds import renormalize


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


def test_renormalising_threshold_drops_small_parts_and_rescales_per_target():
    blocks = np.array([[0.05, 0.15], [0.05, 0.05]], dtype=np.float32)
    residual = np.array([0.8, 0.9], dtype=np.float32)
    out = renormalize(np.concatenate([blocks, residual[:, None]], axis=1), 0.1)
    np.testing.assert_allclose(out[:, :2], [[0, 0.1578947], [0, 0]], atol=1e-4)
    np.testing.assert_allclose(out[:, 2], [0.8421053, 1.0], atol=1e-4)


def test_renormalising_when_nothing_survives_gives_zeros_not_nan():
    out = renormalize(np.array([[0.01, 0.02]], dtype=np.float32), 0.5)
    assert out.tolist() == [[0.0, 0.0]]
