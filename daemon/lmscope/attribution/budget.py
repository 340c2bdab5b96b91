"""How much work each attribution step batches, by device.

On a CPU small blocks win: the [rows, k, V] and [b, P, c] temporaries stay in cache (measured:
ranking 4 rows at a time is ~6x faster than 512). On a GPU kernel launches dominate small
blocks, so the same steps take thousands of rows at once. Memory bounds hold either way: every
step also caps its scratch in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Budget:
    targets_per_chunk: int  # attention step: target rows scored together
    nodes_per_chunk: int  # neuron step: FFN nodes scored together
    projection_bytes: int  # size of one [rows, V] float32 block of logits
    rank_rows: int  # rows ranked together (a [rows, k, V] comparison)
    correction_elements: int  # overshoot correction: elements of one [m, width] piece


CPU = Budget(
    targets_per_chunk=128,
    nodes_per_chunk=8,
    projection_bytes=16 * 2**20,
    rank_rows=4,
    correction_elements=4 * 2**20,
)
GPU = Budget(
    targets_per_chunk=512,
    nodes_per_chunk=256,
    projection_bytes=1024 * 2**20,
    rank_rows=256,
    correction_elements=64 * 2**20,
)


def budget_for(device: torch.device) -> Budget:
    return GPU if device.type == "cuda" else CPU
