"""Loops compiled for CPUs with numba: the two steps of a trace that torch can only express
as gathers and comparisons over temporaries many times the data they read.

- `overshoot_loop`: the overshoot correction of scaled parts (`overshoot.correction`);
- `rank_loop`: the rank of chosen tokens within rows of logits (`lens.ranks_in_rows`).

Each has a torch form next to its caller, used on GPUs, where numba cannot be imported, or
when LMSCOPE_LOOPS=torch (the tests run both and compare). A loop is compiled on first use
and cached on disk by numba (compiling takes ~1 s once; a later process loads it in ~0.1 s).
The compiled loops release the GIL (`nogil`), so the daemon answers other requests while one
runs. The Python bodies below are the specification numba compiles; they are never run as
Python in a trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# LMSCOPE_LOOPS=torch: the torch forms everywhere (tests compare the two with it).
FORCE_TORCH_ENV = "LMSCOPE_LOOPS"

_compiled: dict[str, Callable[..., Any]] = {}
_numba_missing = False


def run(name: str, n_rows: int, *args: Any) -> bool:
    """Run the compiled loop `name` ("overshoot", "rank") over rows [0, n_rows). False: no
    compiled loop here (the caller uses its torch form). One thread: splitting the rows over
    two threads measured no faster on the 2-core machine (the loops are bound by memory)."""
    loop = _loop(name)
    if loop is None:
        return False
    loop(*args, 0, n_rows)
    return True


def available() -> bool:
    """Whether the compiled loops are in use (numba importable, not switched off)."""
    return _loop("rank") is not None


def _loop(name: str) -> Callable[..., Any] | None:
    """The compiled loop, compiled on first use, or None."""
    global _numba_missing
    if os.environ.get(FORCE_TORCH_ENV) == "torch" or _numba_missing:
        return None
    if name not in _compiled:
        try:  # imported here: numba costs ~0.3 s to import, and a CLI that never traces skips it
            import numba
        except ImportError:  # a platform without numba wheels: the torch forms, a little slower
            _numba_missing = True
            return None
        _compiled[name] = numba.njit(cache=True, nogil=True)(_LOOPS[name])  # type: ignore[type-var]
    return _compiled[name]


def overshoot_loop(  # pragma: no cover - numba compiles it; this Python form is the spec
    table, used, coef, part_max, row_max, sorted_mag, sorted_sign, order, out, start, stop
):
    """For each row in [start, stop) and each part: binary-search the count, then sum."""
    width = sorted_mag.shape[1]
    n_parts = coef.shape[1]
    for r in range(start, stop):
        smallest = sorted_mag[r, 0]
        scale = row_max[r]
        for p in range(n_parts):
            c = coef[r, p]
            g = p // used
            j = p - g * used
            reach = abs(c) * part_max[g, j] * scale  # float32, as the torch form computes it
            if not reach > smallest:
                continue  # count 0: no coordinate can overshoot
            lo = 0
            hi = width
            while lo < hi:  # count = #{q: sorted_mag[r, q] < reach} (searchsorted, left)
                mid = (lo + hi) // 2
                if sorted_mag[r, mid] < reach:
                    lo = mid + 1
                else:
                    hi = mid
            total = 0.0
            for q in range(lo):
                w = table[g, j, order[r, q]] * (c * sorted_sign[r, q])
                over = w - sorted_mag[r, q]
                if over > 0.0:
                    total += over
            out[r, p] = total


def rank_loop(scores, rows, chosen, out, start, stop):  # pragma: no cover
    """out[p, q] = #{u: scores[rows[p], u] > chosen[p, q]} for p in [start, stop), or -1
    where rows[p] is -1.

    scores: [R, V] float32; rows: [P] int64; chosen: [P, k] float32; out: [P, k] int64.
    One pass over a row per chosen value: the comparison loop vectorises, and a row of scores
    (V floats) stays in cache across its k passes.
    """
    k = chosen.shape[1]
    vocab = scores.shape[1]
    for p in range(start, stop):
        r = rows[p]
        for q in range(k):
            if r < 0:
                out[p, q] = -1
                continue
            threshold = chosen[p, q]
            count = 0
            for u in range(vocab):
                if scores[r, u] > threshold:
                    count += 1
            out[p, q] = count


_LOOPS = {"overshoot": overshoot_loop, "rank": rank_loop}
