"""Loops compiled for CPUs with numba: the steps of a trace that torch can only express as
gathers and comparisons over temporaries many times the data they read.

- `overshoot_loop`: the overshoot correction of scaled parts (`overshoot.correction`);
- `rank_loop`: the rank of chosen tokens within rows of logits (`lens.ranks_in_rows`);
- `select_loop`: the tokens of rows of screened logits past two thresholds (`screen.py`).

Each has a torch form next to its caller, used on GPUs, where numba cannot be imported, or
when LMSCOPE_LOOPS=torch (the tests run both and compare). A loop is compiled on first use
and cached on disk by numba (compiling takes ~1 s once; a later process loads them in ~0.5 s,
numba's import included).
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
_broken: set[str] = set()  # loops numba could not compile on this machine


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
        _compiled[name] = numba.njit(cache=True, nogil=True)(_LOOPS[name])  # type: ignore[type-var]
    return _compiled[name]


def overshoot_loop(  # pragma: no cover - numba compiles it; this Python form is the spec
    table, used, coef, part_max, row_max, sorted_mag, sorted_sign, order, out, start, stop
):
    """For each row in [start, stop) and each part p = g · used + j: the sum of
    relu(w_q − |y|_q) over the coordinates q, smallest |y| first, while |y|_q < reach.

    The walk stops at the first coordinate past the part's reach, so the count and the sum are
    one pass (a binary search for the count cost more than the short sums themselves: most
    parts are corrected on a handful of coordinates). Nested loops over g and j, not p // used:
    an integer division per part cost a third of the time.
    """
    width = sorted_mag.shape[1]
    groups = table.shape[0]
    for r in range(start, stop):
        smallest = sorted_mag[r, 0]
        scale = row_max[r]
        for g in range(groups):
            for j in range(used):
                c = coef[r, g * used + j]
                reach = abs(c) * part_max[g, j] * scale  # float32, as the torch form computes
                if not reach > smallest:
                    continue  # no coordinate can overshoot (zero weights, masked sources)
                total = 0.0
                for q in range(width):
                    magnitude = sorted_mag[r, q]
                    if not magnitude < reach:
                        break
                    over = table[g, j, order[r, q]] * (c * sorted_sign[r, q]) - magnitude
                    if over > 0.0:
                        total += over
                out[r, g * used + j] = total


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


def select_loop(  # pragma: no cover - numba compiles it
    screen,
    block_max,
    block_min,
    block,
    high,
    low,
    top_ids,
    top_count,
    bottom_ids,
    bottom_count,
    start,
    stop,
):
    """For rows in [start, stop): the ids u with screen[r, u] ≥ high[r] (ascending) into
    top_ids[r], those with screen[r, u] ≤ low[r] into bottom_ids[r], and how many there are
    (a count above the buffers' width means some did not fit). Only blocks of `block` scores
    whose max (block_max) or min (block_min) passes a threshold are read: a few per row.

    screen: [R, V] float32; block_max, block_min: [R, ⌈V/block⌉] float32; high, low: [R]
    float32; *_ids: [R, width] int64; *_count: [R] int64.
    """
    width = top_ids.shape[1]
    vocab = screen.shape[1]
    n_blocks = block_max.shape[1]
    for r in range(start, stop):
        high_r = high[r]
        low_r = low[r]
        n_top = 0
        n_bottom = 0
        for b in range(n_blocks):
            up = block_max[r, b] >= high_r
            down = block_min[r, b] <= low_r
            if not (up or down):
                continue
            for u in range(b * block, min(vocab, (b + 1) * block)):
                x = screen[r, u]
                if up and x >= high_r:
                    if n_top < width:
                        top_ids[r, n_top] = u
                    n_top += 1
                if down and x <= low_r:
                    if n_bottom < width:
                        bottom_ids[r, n_bottom] = u
                    n_bottom += 1
        top_count[r] = n_top
        bottom_count[r] = n_bottom


_LOOPS = {"overshoot": overshoot_loop, "rank": rank_loop, "select": select_loop}
