"""Proximity of parts to a whole, and contributions (docs/method.md, "Importance of a part").

    prox_k = max(Σ_d (|y_d| − |y_d − z_k,d|), ε)          (p = 1, the product's choice)
    c_k    = prox_k / Σ_m prox_m

For p = 1 the sum runs coordinate by coordinate in float32: subtracting two float32 norms
instead loses up to 1e-4 on models whose residual coordinates reach ~25,000 (SmolLM2 at BOS).
Other p (the reference test vectors use p = 2) use the difference of p-norms.
"""

from __future__ import annotations

import numpy as np
import torch

from lmscope.attribution.budget import budget_for

EPSILON = 1e-5


def proximity(whole: torch.Tensor, parts: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """Floored proximity of each part to the whole.

    whole: [..., d]; parts: [..., K, d] (broadcastable batch dims) -> [..., K] float32.
    """
    whole = whole.float().unsqueeze(-2)
    parts = parts.float()
    if p == 1.0:
        raw = (whole.abs() - (whole - parts).abs()).sum(-1)
    else:
        raw = torch.linalg.vector_norm(whole, ord=p, dim=-1) - torch.linalg.vector_norm(
            whole - parts, ord=p, dim=-1
        )
    return raw.clamp_min(EPSILON)


def normalize(prox: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Contributions from floored proximities: sums to 1 along `dim`."""
    return prox / prox.sum(dim, keepdim=True)


def contributions(whole: torch.Tensor, parts: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """c_k of each part: whole [..., d], parts [..., K, d] -> [..., K], summing to 1."""
    return normalize(proximity(whole, parts, p))


def scaled_parts_proximity(
    whole: torch.Tensor,
    coef: torch.Tensor,
    vectors: torch.Tensor,
    row_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Floored L1 proximity of the parts z[b,p] = coef[b,p] · vectors[p] to whole[b].

    whole: [b, d]; coef: [b, P]; vectors: [P, d] -> [b, P] float32. Head parts
    (coef = attention weights, vectors = per-source head outputs) and neuron parts
    (coef = activations, vectors = W_out rows) both have this shape.

    row_scale [b, d], when given, is a per-row diagonal applied to every part of the row:
    z[b,p] = coef[b,p] · (row_scale[b] ⊙ vectors[p]). It is a post-norm block's frozen output
    norm D_b (docs/method.md, "Post-norm blocks"), which differs per target row, so it cannot be
    folded into `vectors`. None is the plain form (every other family), computed exactly as
    before.

    Exact rewrite of the coordinate-wise sum that never builds [b, P, d]: with s = sign(y)
    (+1 at 0) and w_d = z_d·s_d, each term is |y_d| − |y_d − z_d| = min(w_d, 2|y_d| − w_d)
    = w_d − 2·relu(w_d − |y_d|). Σ_d w_d is one matrix product. The relu term is non-zero only
    where the part overshoots the whole, |z_d| > |y_d|, which needs |y_d| < max_d|z_d|; so each
    part is corrected on the coordinates of the smallest |y| only, as many as are below its own
    max|z| (most parts are small: attention weights and activations are mostly tiny). Each term
    is computed without cancellation against |y_d|, so this is at least as accurate as the
    literal form (checked against a float64 dense reference in the tests).
    """
    whole = whole.float()
    coef = coef.float()
    vectors = vectors.float()
    sign = torch.where(whole >= 0, 1.0, -1.0)  # [b, d]
    reach = coef.abs() * vectors.abs().amax(1).unsqueeze(0)  # [b, P]: max_d |z[b,p,d]|
    if row_scale is not None:
        # s ⊙ D folds the scale into the one matrix product and, sorted like s below, into the
        # correction. The reach bound max_d|D_b,d|·max_d|vectors[p,d]| ≥ max_d|D_b,d·vectors[p,d]|
        # may be loose (it only widens the corrected prefix, where relu is 0 beyond the true
        # reach); |D| because a gain γ' may be negative in some coordinates.
        row_scale = row_scale.float()
        sign = sign * row_scale  # [b, d]
        reach = reach * row_scale.abs().amax(1, keepdim=True)
    prox = coef * (sign @ vectors.T)  # [b, P]
    sorted_magnitude, order = _ascending(whole.abs())  # [b, d] each
    # How many coordinates each part may overshoot: those with |y_d| < its max |z_d|.
    counts = torch.searchsorted(sorted_magnitude, reach.contiguous())  # [b, P]
    rows, parts = counts.nonzero(as_tuple=True)
    if len(rows):
        needed = counts[rows, parts]
        correction = torch.zeros(len(rows), dtype=torch.float32, device=whole.device)
        width = whole.shape[1]
        elements = budget_for(whole.device).correction_elements
        # Each row's sign (times its scale, if any) in the same ascending-|y| order, so a piece
        # reads magnitudes and signs as row slices; only the vectors' coordinates need a
        # scattered gather.
        sorted_sign = sign.gather(1, order)  # [b, d]
        low = 0
        # Buckets of doubling width keep the padding (columns beyond a part's own count, where
        # the relu is 0 anyway) under 2x while the loop stays short.
        for high in _bucket_widths(width):
            in_bucket = ((needed > low) & (needed <= high)).nonzero(as_tuple=True)[0]
            low = high
            for piece in in_bucket.split(max(1, elements // high)):
                r, p = rows[piece], parts[piece]
                cols = order[r, :high]  # [m, high] coordinates of the smallest |y| first
                w = vectors[p.unsqueeze(1), cols] * (
                    coef[r, p].unsqueeze(1) * sorted_sign[r, :high]
                )
                over = (w - sorted_magnitude[r, :high]).clamp_min(0.0)
                correction[piece] = over.sum(1)
        prox[rows, parts] -= 2.0 * correction
    return prox.clamp_min(EPSILON)


def _ascending(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted ascending, and the order: [b, d] -> ([b, d], [b, d] long).

    On a CPU numpy's vectorised argsort is ~3x faster than torch.sort at these widths; ties
    may order differently, which no result depends on (equal |y| give equal terms)."""
    if values.device.type != "cpu":
        return values.sort(dim=1)
    order = torch.from_numpy(np.argsort(values.numpy(), axis=1)).long()
    return values.gather(1, order), order


def _bucket_widths(width: int) -> list[int]:
    widths, w = [], 4
    while w < width:
        widths.append(w)
        w *= 2
    return [*widths, width]
