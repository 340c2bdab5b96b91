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
    targets_per_chunk: int  # attention step: target rows scored together, at most
    # attention step: fewer target rows when each chunk would hold more than this many parts
    # (rows · heads · sources): a chunk's [rows, parts] tensors then stay in cache (measured on
    # the 2-core CPU: at 200 tokens one chunk of 200 rows beats two of 128 by ~12%, at 1000
    # tokens 128 rows beat 256 by ~8%)
    parts_per_chunk: int
    nodes_per_chunk: int  # neuron step: FFN nodes scored together
    projection_bytes: int  # size of one [rows, V] float32 block of logits
    rank_rows: int  # rows ranked together (a [rows, k, V] comparison)
    correction_elements: int  # overshoot correction: elements of one [m, width] piece
    # attention and neuron steps: bytes of one chunk's [rows, parts] tensors (~BYTES_PER_PART
    # an entry). A CPU keeps them near its caches; a GPU takes thousands of parts a row at once,
    # since each chunk costs ~35 kernel launches and a host sync whatever its size (the 8B shape
    # at 4,000 tokens: 16 target rows a chunk, 8,000 chunks, with 64 MiB; 262 rows with 1 GiB)
    scratch_bytes: int


CPU = Budget(
    targets_per_chunk=512,
    parts_per_chunk=1_250_000,
    nodes_per_chunk=8,
    projection_bytes=16 * 2**20,
    rank_rows=4,
    correction_elements=4 * 2**20,
    scratch_bytes=64 * 2**20,
)
GPU = Budget(
    targets_per_chunk=512,
    parts_per_chunk=2**62,  # no cap: launches dominate small chunks
    nodes_per_chunk=256,
    projection_bytes=1024 * 2**20,
    rank_rows=256,
    correction_elements=64 * 2**20,
    scratch_bytes=2**30,
)


# What `scaled_parts_proximity` and its caller hold per part of a chunk at their peak: the
# coefficients (and the model-dtype copy they are read from), the matrix product (and its
# permuted copy) and the proximities the kernel or loop writes (~20 bytes), rounded up. The
# torch form (a GPU without triton, LMSCOPE_LOOPS=torch) adds its correction, the product's
# steps and its reach, counts and index tensors: up to ~40 bytes more per part there.
BYTES_PER_PART = 32


def budget_for(device: torch.device) -> Budget:
    return GPU if device.type == "cuda" else CPU
