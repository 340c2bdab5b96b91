"""Proximity of parts to a whole, and contributions (docs/method.md, "Importance of a part").

    prox_k = max(Σ_d (|y_d| − |y_d − z_k,d|), ε)          (p = 1, the product's choice)
    c_k    = prox_k / Σ_m prox_m

For p = 1 the sum runs coordinate by coordinate in float32: subtracting two float32 norms
instead loses up to 1e-4 on models whose residual coordinates reach ~25,000 (SmolLM2 at BOS).
Other p (the reference test vectors use p = 2) use the difference of p-norms.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lmscope.attribution import overshoot

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
    *,
    used: int | None = None,
    signed_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
    part_max: torch.Tensor | None = None,
    first_row: int | None = None,
) -> torch.Tensor:
    """Floored L1 proximity of the parts z[b,p] = coef[b,p] · vectors[p] to whole[b].

    whole: [b, d]; coef: [b, P]; vectors: [P, d] -> [b, P] float32. Head parts
    (coef = attention weights, vectors = per-source head outputs) and neuron parts
    (coef = activations, vectors = W_out rows) both have this shape. Grouped vectors
    [G, N, d] with `used` ≤ N name the parts p = g · used + j (j < used) without copying a
    slice: the attention step passes every head's source outputs and the sources it reads.

    row_scale [b, d], when given, is a per-row diagonal applied to every part of the row:
    z[b,p] = coef[b,p] · (row_scale[b] ⊙ vectors[p]). It is a post-norm block's frozen output
    norm D_b (docs/method.md, "Post-norm blocks"), which differs per target row, so it cannot be
    folded into `vectors`. None is the plain form (every other family), computed exactly as
    before.

    `signed_sum`, when given, computes sign @ vectors.T ([b, d] -> [b, P]) some cheaper way
    (the attention step factors it through W_O: see `decompose.HeadParts`); `part_max`
    [G, ≥ used], when given, is max_d |vectors[p, d]| computed once for many calls.
    `first_row`, when given, masks the grouped parts causally: row b is target first_row + b
    and reads sources j ≤ first_row + b; the others' proximities are 0 (not floored).

    Exact rewrite of the coordinate-wise sum that never builds [b, P, d]: with s = sign(y)
    (+1 at 0) and w_d = z_d·s_d, each term is |y_d| − |y_d − z_d| = min(w_d, 2|y_d| − w_d)
    = w_d − 2·relu(w_d − |y_d|). Σ_d w_d is one matrix product. The relu term is non-zero only
    where the part overshoots the whole, |z_d| > |y_d|, which needs |y_d| < max_d|z_d|; so each
    part is corrected on the coordinates of the smallest |y| only, as many as are below its own
    max|z| (most parts are small: attention weights and activations are mostly tiny; the sum
    is the overshoot correction, subtracted where `overshoot.proximities` floors the result).
    Each term is computed without cancellation against |y_d|, so this is at least as accurate
    as the literal form (checked against a float64 dense reference in the tests).
    """
    whole = whole.float()
    coef = coef.float()
    table = vectors.float()
    if table.dim() == 2:
        table, used = table.unsqueeze(0), table.shape[0]
    assert used is not None, "grouped vectors [G, N, d] need `used`"
    sign = torch.where(whole >= 0, 1.0, -1.0)  # [b, d]
    row_max = torch.ones(whole.shape[0], dtype=torch.float32, device=whole.device)  # [b]
    if row_scale is not None:
        # s ⊙ D folds the scale into the one matrix product and, sorted like s below, into the
        # correction. The reach bound max_d|D_b,d|·max_d|vectors[p,d]| ≥ max_d|D_b,d·vectors[p,d]|
        # may be loose (it only widens the corrected prefix, where relu is 0 beyond the true
        # reach); |D| because a gain γ' may be negative in some coordinates.
        row_scale = row_scale.float()
        sign = sign * row_scale  # [b, d]
        row_max = row_scale.abs().amax(1)
    if signed_sum is None:
        linear = torch.einsum("bd,gjd->bgj", sign, table[:, :used]).reshape(len(sign), -1)
    else:
        linear = signed_sum(sign)
    sorted_magnitude, order = _ascending(whole.abs())  # [b, d] each
    # Each row's sign (times its scale, if any) in the same ascending-|y| order, so the
    # correction reads magnitudes and signs as row slices.
    sorted_sign = sign.gather(1, order)  # [b, d]
    if part_max is None:
        part_max = table[:, :used].abs().amax(-1)  # [G, used]: max_d |vectors[p, d]|
    part_max = part_max[:, :used].float()
    # max(coef · linear − 2 · correction, ε), in one pass where a kernel or loop runs
    return overshoot.proximities(
        table,
        used,
        coef,
        linear,
        part_max,
        row_max,
        sorted_magnitude,
        sorted_sign,
        order,
        EPSILON,
        first_row,
    )


def _ascending(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted ascending, and the order: [b, d] -> ([b, d], [b, d] long).

    On a CPU numpy's vectorised argsort is ~3x faster than torch.sort at these widths; ties
    may order differently, which no result depends on (equal |y| give equal terms)."""
    if values.device.type != "cpu":
        return values.sort(dim=1)
    order = torch.from_numpy(np.argsort(values.numpy(), axis=1)).long()
    return values.gather(1, order), order
