"""Loops compiled for CPUs with numba: the steps of a trace that torch can only express as
gathers and comparisons over temporaries many times the data they read.

- `overshoot_loop`: the floored proximities of scaled parts, their overshoot correction
  included (`overshoot.proximities`);
- `rank_loop`: the rank of chosen tokens within rows of logits (`lens.ranks_in_rows`);
- the bf16 screen's loops (`screen_loops.py`: block extremes, thresholds, the tokens past
  them or within a band, read straight from the bf16 product, and candidates' exact scores).

The first two have a torch form next to their caller, used on GPUs, where numba cannot be
imported, or when LMSCOPE_LOOPS=torch (the tests run both and compare); without the screen's
loops the screen is not used (`screen.available`), and rows are scored in float32. A loop is
compiled on first use and cached on disk by numba (compiling them all takes ~3.5 s once; a
later process loads them in ~0.4 s, numba's import included).
The compiled loops release the GIL (`nogil`), so the daemon answers other requests while one
runs. The Python bodies below are the specification numba compiles; they are never run as
Python in a trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from lmscope.attribution import screen_loops

# LMSCOPE_LOOPS=torch: the torch forms everywhere (tests compare the two with it).
FORCE_TORCH_ENV = "LMSCOPE_LOOPS"

_compiled: dict[str, Callable[..., Any]] = {}
_numba_missing = False
_broken: set[str] = set()  # loops numba could not compile on this machine
# Compiled with fastmath flags (each loop's docstring says why its results stay exact).
_FASTMATH: dict[str, Any] = {"blocks": True, "exact": {"reassoc", "contract"}}


def run(name: str, n_rows: int, *args: Any) -> bool:
    """Run the compiled loop `name` (`_LOOPS`) over rows [0, n_rows). False: no compiled loop
    here (the caller uses its torch form). One thread: splitting the rows over two threads
    measured no faster within a whole trace on the 2-core machine."""
    loop = _loop(name)
    if loop is None:
        return False
    try:
        loop(*args, 0, n_rows)
    except Exception as error:  # numba failed to compile it here: the torch form from now on
        if not _is_numba_error(error):
            raise
        _broken.add(name)
        return False
    return True


def _is_numba_error(error: Exception) -> bool:
    import numba.core.errors

    return isinstance(error, numba.core.errors.NumbaError)


def available() -> bool:
    """Whether the compiled loops are in use (numba importable, not switched off)."""
    return _loop("rank") is not None


def _loop(name: str) -> Callable[..., Any] | None:
    """The compiled loop, compiled on first use, or None."""
    global _numba_missing
    if os.environ.get(FORCE_TORCH_ENV) == "torch" or _numba_missing or name in _broken:
        return None
    if name not in _compiled:
        try:  # imported here: numba costs ~0.3 s to import, and a CLI that never traces skips it
            import numba
        except ImportError:  # a platform without numba wheels: the torch forms, a little slower
            _numba_missing = True
            return None
        fastmath = _FASTMATH.get(name, False)
        _compiled[name] = numba.njit(cache=True, nogil=True, fastmath=fastmath)(_LOOPS[name])  # type: ignore[type-var]
    return _compiled[name]


def overshoot_loop(  # pragma: no cover - numba compiles it; this Python form is the spec
    table,
    used,
    coef,
    linear,
    part_max,
    row_max,
    sorted_mag,
    sorted_sign,
    order,
    epsilon,
    first_row,
    out,
    start,
    stop,
):
    """For each row r in [start, stop) and each part p = g · used + j: its floored proximity
    max(coef · linear − 2 · Σ relu(w_q − |y|_q), epsilon), the sum over the coordinates q,
    smallest |y| first, while |y|_q < reach; 0 where j > first_row + r (a causal mask: row r
    is target first_row + r; a first_row ≥ used masks nothing).

    Each value is rounded as the torch form rounds it (float32 product, the float64 sum taken
    to float32, doubled, subtracted, floored). The walk stops at the first coordinate past the
    part's reach, so the count and the sum are one pass (a binary search for the count cost
    more than the short sums themselves: most parts are corrected on a handful of coordinates).
    Nested loops over g and j, not p // used: an integer division per part cost a third of the
    time. Writing the proximities here, not the correction, spares the torch form's five
    passes over [rows, parts] (product, doubled correction, difference, floor, mask).
    """
    width = sorted_mag.shape[1]
    groups = table.shape[0]
    two = np.float32(2.0)
    for r in range(start, stop):
        smallest = sorted_mag[r, 0]
        scale = row_max[r]
        last = first_row + r  # the last source a causal row reads
        for g in range(groups):
            for j in range(used):
                p = g * used + j
                if j > last:
                    out[r, p] = np.float32(0.0)
                    continue
                c = coef[r, p]
                value = c * linear[r, p]  # float32
                reach = abs(c) * part_max[g, j] * scale  # float32, as the torch form computes
                if reach > smallest:  # else no coordinate can overshoot (zero weights)
                    total = 0.0
                    for q in range(width):
                        magnitude = sorted_mag[r, q]
                        if not magnitude < reach:
                            break
                        over = table[g, j, order[r, q]] * (c * sorted_sign[r, q]) - magnitude
                        if over > 0.0:
                            total += over
                    value = value - two * np.float32(total)
                if value < epsilon:  # a NaN stays NaN, as in clamp_min
                    value = epsilon
                out[r, p] = value


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


_LOOPS = {
    "overshoot": overshoot_loop,
    "rank": rank_loop,
    "blocks": screen_loops.block_loop,
    "screen": screen_loops.screen_loop,
    "select": screen_loops.select_loop,
    "band": screen_loops.band_loop,
    "exact": screen_loops.exact_loop,
}
