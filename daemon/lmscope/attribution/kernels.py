"""The overshoot correction, and the floored proximities it completes, as one Triton kernel
for GPUs (`overshoot.proximities` picks it).

The torch form of the correction (`overshoot._torch_correction`) needs a searchsorted, a
nonzero, and gathers bucketed by count: a dozen launches and index tensors many times the
parts per chunk. Here one program takes one target row, one group (a head) and a block of
BLOCK_J parts (source tokens) and does the whole sum in registers:

1. reach_j = |coef_j| · part_max_j · row_max (as every form computes it, in float32);
2. count = #{q: |y|_q < max_j reach_j} in the row's ascending magnitudes, by two dependent
   vector loads: SAMPLES magnitudes STRIDE apart find the stretch where the count ends, then
   that stretch's STRIDE magnitudes give it exactly (a binary search is log2(d) dependent
   scalar loads, 12 on a 4096-wide model, each a round trip to L2, in every program);
3. for the first `count` coordinates, BLOCK_Q at a time: w = table[g, j, order_q] · coef_j ·
   sign_q, and Σ relu(w − |y|_q) over the q with |y|_q < reach_j, summed in float32;
4. the part's floored proximity max(coef_j · linear_j − 2 · sum, ε), or 0 past the causal
   bound (j > first_row + r), written in place of the sum: the torch form's product, doubled
   correction, difference, floor and mask are five passes over [rows, parts] more.

No part vector, index tensor or padding exists outside the program. The numba loop
(`loops.overshoot_loop`) is the specification; tests/test_triton_kernel.py holds this kernel to
it, to the torch form and to the literal float64 sum, under Triton's interpreter on CPUs (so CI
checks it) and compiled where a GPU is present.

This module imports triton; it is imported only where triton is wanted.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_J = 64  # parts per program
BLOCK_Q = 16  # coordinates per step of a program's walk
SAMPLES = 64  # magnitudes of the count's first load (a power of two)


def _proximity_kernel(  # pragma: no cover - Triton compiles (or interprets) it
    table_ptr,
    table_stride_g,
    table_stride_n,
    table_stride_d,
    coef_ptr,
    linear_ptr,
    part_max_ptr,
    row_max_ptr,
    mag_ptr,
    sign_ptr,
    order_ptr,
    out_ptr,
    used,
    width,
    epsilon,
    first_row,
    CAUSAL: tl.constexpr,
    SAMPLES: tl.constexpr,
    STRIDE: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    """One (row r, group g, block of parts j) program. coef, linear, out: [b, G·used];
    part_max: [G, used]; mag, sign, order: [b, width]; all contiguous; table: [G, N, width]
    strided. SAMPLES · STRIDE ≥ width, both powers of two. CAUSAL: mask j > first_row + r."""
    r = tl.program_id(0)
    g = tl.program_id(1)
    j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)  # [BLOCK_J]
    in_j = j < used
    row_parts = r.to(tl.int64) * tl.num_programs(1) * used + g * used
    c = tl.load(coef_ptr + row_parts + j, mask=in_j, other=0.0)
    reach = tl.abs(c) * tl.load(part_max_ptr + g * used + j, mask=in_j, other=0.0)
    reach = reach * tl.load(row_max_ptr + r)
    top = tl.max(reach, 0)
    row = r.to(tl.int64) * width
    # lo = count = #{q: mag[q] < top}; mag ascends, so "below top" holds on a prefix. With
    # `sampled` of the samples q = s · STRIDE below top, the prefix covers sample sampled − 1
    # but not sample `sampled`: it ends within the STRIDE magnitudes from the last covered
    # sample (from q = 0 when none is), and counting those below top completes it.
    at = tl.arange(0, SAMPLES) * STRIDE
    samples = tl.load(mag_ptr + row + at, mask=at < width, other=float("inf"))
    sampled = tl.sum((samples < top).to(tl.int32), 0)
    base = tl.maximum(sampled - 1, 0) * STRIDE
    at = base + tl.arange(0, STRIDE)
    stretch = tl.load(mag_ptr + row + at, mask=at < width, other=float("inf"))
    lo = base + tl.sum((stretch < top).to(tl.int32), 0)
    total = tl.zeros([BLOCK_J], dtype=tl.float32)
    parts = table_ptr + g * table_stride_g + j.to(tl.int64) * table_stride_n  # [BLOCK_J]
    for start in range(0, lo, BLOCK_Q):
        q = start + tl.arange(0, BLOCK_Q)  # [BLOCK_Q]
        in_q = q < lo
        magnitude = tl.load(mag_ptr + row + q, mask=in_q, other=float("inf"))
        sign = tl.load(sign_ptr + row + q, mask=in_q, other=0.0)
        coordinate = tl.load(order_ptr + row + q, mask=in_q, other=0)
        corrected = (magnitude[:, None] < reach[None, :]) & in_j[None, :]  # [BLOCK_Q, BLOCK_J]
        values = tl.load(
            parts[None, :] + coordinate[:, None] * table_stride_d, mask=corrected, other=0.0
        )
        over = values * (c[None, :] * sign[:, None]) - magnitude[:, None]
        total += tl.sum(tl.where(corrected & (over > 0.0), over, 0.0), 0)
    # rounded as the torch form rounds: the product, the doubled sum, the difference, the floor
    value = c * tl.load(linear_ptr + row_parts + j, mask=in_j, other=0.0) - 2.0 * total
    value = tl.where(value < epsilon, epsilon, value)  # a NaN stays NaN, as in clamp_min
    if CAUSAL:
        value = tl.where(j <= first_row + r, value, 0.0)
    tl.store(out_ptr + row_parts + j, value, mask=in_j)


# Compiled for the GPU, or, under TRITON_INTERPRET=1 (set before triton is imported: the
# interpreter replaces triton.language's functions then), run by Triton's interpreter on CPU
# tensors, which is how CI checks it. Triton specialises integer arguments by value (1, or a
# multiple of 16): first_row, a new value each chunk, would compile up to three variants.
_proximities = triton.jit(_proximity_kernel, do_not_specialize=["first_row"])


def is_triton_error(error: Exception) -> bool:
    """Whether `error` is Triton failing to build or run the kernel (not a CUDA error)."""
    from triton.errors import TritonError

    return isinstance(error, TritonError)


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter here (TRITON_INTERPRET=1)."""
    return bool(triton.knobs.runtime.interpret)


def sample_stride(width: int) -> int:
    """The power of two STRIDE with SAMPLES · STRIDE ≥ width: the kernel's second load."""
    return triton.next_power_of_2(max(1, -(-width // SAMPLES)))


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
    """The floored (and causally masked) proximities of every part of every row -> [b, G·used]
    float32: the arguments of `overshoot.proximities`, on a GPU (or on the CPU under the
    interpreter)."""
    rows, width = sorted_mag.shape
    groups = table.shape[0]
    out = torch.empty(coef.shape, dtype=torch.float32, device=coef.device)
    if out.numel() == 0:
        return out
    table = table.float()
    grid = (rows, groups, triton.cdiv(used, BLOCK_J))
    _proximities[grid](
        table,
        table.stride(0),
        table.stride(1),
        table.stride(2),
        coef.float().contiguous(),
        linear.float().contiguous(),
        part_max[:, :used].float().contiguous(),
        row_max.float().contiguous(),
        sorted_mag.float().contiguous(),
        sorted_sign.float().contiguous(),
        order.contiguous(),
        out,
        used,
        width,
        epsilon,
        0 if first_row is None else first_row,
        CAUSAL=first_row is not None,
        SAMPLES=SAMPLES,
        STRIDE=sample_stride(width),
        BLOCK_J=BLOCK_J,
        BLOCK_Q=BLOCK_Q,
        # no fused multiply-adds: each term rounds as the numba loop and the torch form round
        enable_fp_fusion=False,
    )
    return out
