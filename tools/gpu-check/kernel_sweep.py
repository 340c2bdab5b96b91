"""Time the attention kernel's block shapes on one chunk of a real model shape, for tuning.

GPU time is scarce, so `run.sh` runs this beside the bench: one chunk of the attention step of
a Llama-3-8B-shaped layer (32 heads, width 4096, the rows a chunk takes under the GPU budget)
at each prompt length, with inputs shaped like a real layer's (softmax attention over the causal
sources with a sink on the first token, source outputs and a residual of realistic spread),
through every (BLOCK_J, BLOCK_Q, num_warps) in the grid. Every configuration must write what
the shipped one writes (the same sums, summed in another order: 1e-5 relative); the table
says which is fastest, in milliseconds per chunk (CUDA events, median of the repeats).

    python3 tools/gpu-check/kernel_sweep.py --lengths 1000,4000 --json out.json
    TRITON_INTERPRET=1 python3 tools/gpu-check/kernel_sweep.py --smoke   # CPU, tiny: CI's check

Shapes: b rows, H heads, m sources, d width.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "daemon"))

from lmscope.attribution import budget, kernels
from lmscope.attribution.proximity import EPSILON

LLAMA3_8B = {"heads": 32, "width": 4096}
TINY = {"heads": 2, "width": 24}
BLOCKS_J = (32, 64, 128)
BLOCKS_Q = (8, 16, 32)
WARPS = (2, 4, 8)


def chunk_inputs(
    rows: int, sources: int, heads: int, width: int, device: str, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """The arguments of `kernels.proximities` for the last chunk of a layer: rows [b] are the
    targets sources − b .. sources − 1, reading every source up to their own (causal)."""
    g = torch.Generator(device=device).manual_seed(seed)
    first_row = sources - rows

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=g, device=device)

    logits = randn(heads, rows, sources) * 2.0
    logits[:, :, 0] += 6.0  # an attention sink on the first token, as real models have
    targets = torch.arange(first_row, sources, device=device)
    future = torch.arange(sources, device=device)[None, :] > targets[:, None]  # [b, m]
    probs = logits.masked_fill(future[None], float("-inf")).softmax(-1)  # [H, b, m]
    coef = probs.permute(1, 0, 2).reshape(rows, -1)  # [b, H·m]
    spread = torch.logspace(-2, 1, width, device=device)
    whole = randn(rows, width) * spread[torch.randperm(width, generator=g, device=device)]
    # source outputs laid out sources-fastest, as `decompose.head_parts` lays them for the kernel
    table = (randn(heads, width, sources) * 0.5).transpose(1, 2)  # [H, m, d]
    sign = torch.where(whole >= 0, 1.0, -1.0)
    linear = torch.einsum("bd,hjd->bhj", sign, table).reshape(rows, -1)
    magnitude, order = whole.abs().sort(dim=1)
    part_max = table.abs().amax(-1)  # [H, m]
    row_max = torch.ones(rows, device=device)
    sorted_sign = sign.gather(1, order)
    return table, sources, coef, linear, part_max, row_max, magnitude, sorted_sign, order, first_row


def launch(args: tuple, block_j: int, block_q: int, warps: int) -> torch.Tensor:
    """One launch of the kernel with these block shapes (what `kernels.proximities` does with
    its own)."""
    table, used, coef, linear, part_max, row_max, magnitude, sign, order, first_row = args
    rows, width = magnitude.shape
    out = torch.empty(coef.shape, dtype=torch.float32, device=coef.device)
    grid = (rows, table.shape[0], math.ceil(used / block_j))
    kernels._proximities[grid](
        table,
        table.stride(0),
        table.stride(1),
        table.stride(2),
        coef,
        linear,
        part_max,
        row_max,
        magnitude,
        sign,
        order,
        out,
        used,
        width,
        EPSILON,
        first_row,
        CAUSAL=True,
        SAMPLES=kernels.SAMPLES,
        STRIDE=kernels.sample_stride(width),
        BLOCK_J=block_j,
        BLOCK_Q=block_q,
        num_warps=warps,
        enable_fp_fusion=False,
    )
    return out


def time_ms(run, repeats: int, device: str) -> float:
    """Median milliseconds of `run` (CUDA events on a GPU, the wall clock elsewhere)."""
    import time

    run()  # compile, warm up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            began = time.perf_counter()
            run()
            times.append((time.perf_counter() - began) * 1e3)
    return sorted(times)[len(times) // 2]


def sweep(
    lengths: list[int],
    shape: dict,
    grid: list[tuple[int, int, int]],
    device: str,
    repeats: int,
    rows_cap: int | None = None,
) -> list[dict]:
    results = []
    for sources in lengths:
        # the rows a chunk takes under the GPU budget (decompose._attention_edges' rule)
        per_chunk = budget.GPU.scratch_bytes // (shape["heads"] * sources * budget.BYTES_PER_PART)
        rows = max(1, min(budget.GPU.targets_per_chunk, per_chunk, sources))
        rows = min(rows, rows_cap or rows)
        args = chunk_inputs(rows, sources, shape["heads"], shape["width"], device)
        shipped = launch(args, kernels.BLOCK_J, kernels.BLOCK_Q, 4)
        for block_j, block_q, warps in grid:
            out = launch(args, block_j, block_q, warps)
            scale = float(shipped.abs().max())
            same = bool(torch.allclose(out, shipped, rtol=1e-5, atol=1e-5 * scale))
            ms = time_ms(
                lambda a=args, j=block_j, q=block_q, w=warps: launch(a, j, q, w), repeats, device
            )
            row = {
                "sources": sources,
                "rows": rows,
                "block_j": block_j,
                "block_q": block_q,
                "warps": warps,
                "ms": round(ms, 3),
                "same": same,
            }
            results.append(row)
            print(
                f"{sources:>6} tokens  {rows:>4} rows  BLOCK_J {block_j:>3}  BLOCK_Q {block_q:>2}"
                f"  warps {warps}  {ms:9.3f} ms{'' if same else '  DIFFERS'}",
                flush=True,
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="4000", help="prompt lengths in tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows as JSON here")
    parser.add_argument("--smoke", action="store_true", help="tiny, on the CPU: checks the tool")
    options = parser.parse_args()
    if options.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--smoke runs under Triton's interpreter: set TRITON_INTERPRET=1")
        lengths, shape, device, repeats, cap = [40], TINY, "cpu", 1, 3
        grid = [(32, 8, 4), (64, 16, 4)]
    else:
        if not torch.cuda.is_available():
            parser.error("no GPU here (--smoke checks the tool on a CPU)")
        lengths = [int(x) for x in options.lengths.split(",")]
        shape, device, repeats, cap = LLAMA3_8B, "cuda", options.repeats, None
        grid = list(itertools.product(BLOCKS_J, BLOCKS_Q, WARPS))
    results = sweep(lengths, shape, grid, device, repeats, cap)
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=1))
    differs = [r for r in results if not r["same"]]
    for sources in lengths:
        mine = [r for r in results if r["sources"] == sources and r["same"]]
        if mine:
            best = min(mine, key=lambda r: r["ms"])
            shipped = [
                r
                for r in mine
                if (r["block_j"], r["block_q"], r["warps"]) == (kernels.BLOCK_J, kernels.BLOCK_Q, 4)
            ]
            now = f"{shipped[0]['ms']:.3f} ms" if shipped else "not in the grid"
            print(
                f"{sources} tokens: fastest BLOCK_J {best['block_j']} BLOCK_Q {best['block_q']} "
                f"warps {best['warps']} at {best['ms']:.3f} ms; shipped: {now}"
            )
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
