"""The fast proximity kernel equals the literal coordinate-wise formula of docs/method.md."""

import pytest
import torch

from lmscope.attribution.proximity import EPSILON, scaled_parts_proximity


def literal(whole, coef, vectors):
    parts = coef.double()[:, :, None] * vectors.double()[None]  # [b, P, d]
    y = whole.double()[:, None, :]
    return (y.abs() - (y - parts).abs()).sum(-1).clamp_min(EPSILON)


@pytest.mark.parametrize("seed", range(4))
def test_scaled_parts_proximity_equals_the_literal_sum(seed):
    g = torch.Generator().manual_seed(seed)
    b, p, d = 7, 50, 64
    whole = (
        torch.randn(b, d, generator=g) * torch.logspace(-3, 2, d)[torch.randperm(d, generator=g)]
    )
    whole[0, :5] = 0.0  # exact zeros take the sign +1 path
    coef = torch.rand(b, p, generator=g) ** 4  # mostly tiny, a few large (like attention)
    coef[:, ::7] *= -3.0  # signed, like activations
    vectors = torch.randn(p, d, generator=g) * 2.0
    got = scaled_parts_proximity(whole, coef, vectors).double()
    expected = literal(whole, coef, vectors)
    scale = whole.abs().sum(-1, keepdim=True).double()
    assert ((got - expected).abs() / scale).max() < 1e-6


def test_parts_larger_than_the_whole_everywhere_are_floored():
    whole = torch.tensor([[1.0, -1.0, 0.5]])
    vectors = torch.tensor([[-10.0, 10.0, -10.0], [1.0, -1.0, 0.5]])
    got = scaled_parts_proximity(whole, torch.tensor([[1.0, 1.0]]), vectors)
    assert got[0, 0].item() == pytest.approx(EPSILON)
    assert got[0, 1].item() == pytest.approx(2.5)
