"""The overshoot correction of scaled parts: the only non-linear term of the L1 proximity.

For a whole y [d] and a part z = coef · (s ⊙ D) ⊙ v, the term Σ_d relu(w_d − |y_d|) with
w_d = z_d · sign(y_d) is non-zero only on coordinates where the part overshoots the whole,
|z_d| > |y_d|, which needs |y_d| < reach = |coef| · max|v| · max|D|. With each row's coordinates
sorted by ascending |y| (`sorted_mag`, `order`, and `sorted_sign` = the signs, times D, in that
order), a part is corrected on the first `count` coordinates only, count = #{q: |y|_q < reach}
(docs/method.md, "Importance of a part"; `proximity.scaled_parts_proximity` holds the rest).

`proximities` returns each part's floored proximity, the correction subtracted from the
matrix product's term (and a causal mask applied), in one of three implementations:
- on a GPU, one Triton kernel (`kernels.py`): a program per row, head and block of parts
  walks the coordinates in registers and writes the proximities; no index tensors;
- on a CPU, one compiled loop (`loops.overshoot_loop`, numba) that walks each part's
  coordinates in ascending |y| until one is past its reach, summing in float64: count, sum and
  proximity in one pass, no index tensors, no padding;
- elsewhere (a GPU without triton, a CPU without numba, or LMSCOPE_LOOPS=torch), the torch
  form (`torch_proximities`): parts bucketed by count and their coordinates gathered in
  pieces of a fixed size, then the product, correction, floor and mask as torch steps.

All return the same values up to float32 rounding (tests/test_compiled_loops.py and
tests/test_triton_kernel.py hold them to each other and to a float64 dense reference).

Shapes: b rows, d width, parts p = g · used + j of a table [G, N, d] (j < used ≤ N): heads g
and source tokens j for attention, one group of neurons for an FFN node.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

import numpy as np
import torch

from lmscope.attribution import loops
from lmscope.attribution.budget import budget_for


def proximities(
    table: torch.Tensor,
    used: int,
    coef: torch.Tensor,
    linear: torch.Tensor,
    part_max: torch.Tensor,
    row_max: torch.Tensor,
    sorted_mag: torch.Tensor,
    sorted_sign: torch.Tensor,
    order: torch.Tensor,
    epsilon: float,
    first_row: int | None = None,
) -> torch.Tensor:
    """The floored proximities max(coef · linear − 2 · correction, epsilon) of every part of
    every row -> [b, G·used] float32, with 0 for the parts (g, j) with j > first_row + r when
    first_row is given (the attention step's causal mask: row r is target first_row + r).

    table: [G, N, d] float32 part vectors; coef, linear: [b, G·used] float32 (linear: the
    matrix product Σ_d s_d · vectors[p, d]); part_max: [G, used] max_d |table|; row_max: [b]
    max_d |D_b| (ones without a row scale); sorted_mag, sorted_sign: [b, d] float32; order:
    [b, d] long. The kernel and the compiled loop write the proximities themselves (one pass);
    the torch form adds its correction to the product as separate steps.
    """
    args = (table, used, coef, linear, part_max, row_max, sorted_mag, sorted_sign, order)
    kernels = _kernels(table.device)
    if kernels is not None:
        try:
            return kernels.proximities(*args, epsilon, first_row)
        except Exception as error:  # Triton could not build it here: the torch form from now on
            if not kernels.is_triton_error(error):
                raise
            global _triton_missing
            _triton_missing = True
            warnings.warn(
                f"the Triton kernel of the overshoot correction failed ({error!r:.200}); "
                "using the torch form",
                RuntimeWarning,
                stacklevel=2,
            )
    masked_after = used if first_row is None else first_row  # j > first_row + r: masked
    if table.device.type == "cpu":
        out = torch.empty(coef.shape, dtype=torch.float32)
        if loops.run(
            "overshoot",
            len(coef),
            table.numpy(),  # strided is fine (a transposed W_out is read in place)
            used,
            coef.contiguous().numpy(),
            linear.contiguous().numpy(),
            part_max.contiguous().numpy(),
            row_max.contiguous().numpy(),
            sorted_mag.contiguous().numpy(),
            sorted_sign.contiguous().numpy(),
            order.contiguous().numpy(),
            np.float32(epsilon),
            masked_after,
            out.numpy(),
        ):
            return out
    return torch_proximities(*args, epsilon, first_row)


def torch_proximities(
    table: torch.Tensor,
    used: int,
    coef: torch.Tensor,
    linear: torch.Tensor,
    part_max: torch.Tensor,
    row_max: torch.Tensor,
    sorted_mag: torch.Tensor,
    sorted_sign: torch.Tensor,
    order: torch.Tensor,
    epsilon: float,
    first_row: int | None = None,
) -> torch.Tensor:
    """`proximities` as torch steps: the product, the doubled correction subtracted, the
    floor, the causal mask. The specification the kernel and the compiled loop are held to."""
    prox = coef * linear  # [b, P]
    prox -= 2.0 * _torch_correction(
        table, used, coef, part_max, row_max, sorted_mag, sorted_sign, order
    )
    prox = prox.clamp_min(epsilon)
    if first_row is not None:
        rows = torch.arange(first_row, first_row + len(prox), device=prox.device)
        causal = torch.arange(used, device=prox.device)[None, :] <= rows[:, None]  # [b, used]
        groups = prox.shape[1] // used
        prox = (prox.view(len(prox), groups, used) * causal[:, None, :]).view(len(prox), -1)
    return prox


_triton_missing = False


def _kernels(device: torch.device) -> ModuleType | None:
    """The Triton kernel's module where it runs: a GPU with triton, or the CPU under Triton's
    interpreter (TRITON_INTERPRET=1, how the tests check it without a GPU). None elsewhere,
    where triton cannot be imported, and under LMSCOPE_LOOPS=torch."""
    global _triton_missing
    if os.environ.get(loops.FORCE_TORCH_ENV) == "torch" or _triton_missing:
        return None
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return None
    try:  # imported here: triton is heavy, and only GPUs (or the interpreter's tests) want it
        from lmscope.attribution import kernels
    except ImportError:
        _triton_missing = True
        return None
    return kernels


def kernel_runs(device: torch.device) -> bool:
    """Whether the correction on `device` runs the Triton kernel (see `_kernels`)."""
    return _kernels(device) is not None


def _torch_correction(
    table: torch.Tensor,
    used: int,
    coef: torch.Tensor,
    part_max: torch.Tensor,
    row_max: torch.Tensor,
    sorted_mag: torch.Tensor,
    sorted_sign: torch.Tensor,
    order: torch.Tensor,
) -> torch.Tensor:
    """The same sums with torch ops: parts bucketed by count, coordinates gathered in pieces."""
    n_groups, _, width = table.shape
    vectors = table[:, :used].reshape(n_groups * used, width)  # [P, d]
    reach = coef.abs() * part_max.reshape(1, -1) * row_max[:, None]  # [b, P]
    counts = torch.searchsorted(sorted_mag, reach.contiguous())  # [b, P]
    out = torch.zeros(coef.shape, dtype=torch.float32, device=coef.device)
    rows, parts = counts.nonzero(as_tuple=True)
    if not len(rows):
        return out
    needed = counts[rows, parts]
    sums = torch.zeros(len(rows), dtype=torch.float32, device=coef.device)
    elements = budget_for(coef.device).correction_elements
    low = 0
    # Buckets of doubling width keep the padding (columns beyond a part's own count, where the
    # relu is 0 anyway) under 2x while the loop stays short.
    for high in _bucket_widths(width):
        in_bucket = ((needed > low) & (needed <= high)).nonzero(as_tuple=True)[0]
        low = high
        for piece in in_bucket.split(max(1, elements // high)):
            r, p = rows[piece], parts[piece]
            cols = order[r, :high]  # [m, high] coordinates of the smallest |y| first
            w = vectors[p.unsqueeze(1), cols] * (coef[r, p].unsqueeze(1) * sorted_sign[r, :high])
            sums[piece] = (w - sorted_mag[r, :high]).clamp_min(0.0).sum(1)
    out[rows, parts] = sums
    return out


def _bucket_widths(width: int) -> list[int]:
    widths, w = [], 4
    while w < width:
        widths.append(w)
        w *= 2
    return [*widths, width]
