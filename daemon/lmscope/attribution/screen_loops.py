"""The bf16 screen's loops (`screen.py`), compiled for CPUs with numba by `loops.run`: they
read the screen's bf16 product in place (as bit patterns) and find what must be scored exactly.

- `block_loop`: each block's extremes, and whether a row holds a NaN or an infinity;
- `screen_loop`: a row's list thresholds and the candidates past them;
- `select_loop`: the tokens past one threshold (a rank's candidates);
- `band_loop`: the tokens above a chosen token's band, and those within it;
- `exact_loop`: the candidates' exact float32 scores, each its own dot product.

The Python bodies below are the specification numba compiles; they are never run as Python in
a trace. Shapes: R rows, V vocabulary, P entries, k chosen tokens an entry.
"""

from __future__ import annotations

import numpy as np


def block_loop(  # pragma: no cover - numba compiles it (with fastmath: see below)
    bits, bias, with_bias, block, block_max, block_min, bad, row, start, stop
):
    """Per row in [start, stop) of a bf16 screen (`screen.Screen`): the max and min of each
    block of `block` scores s (the bf16 product, + bias where with_bias), and whether the row
    holds a NaN or an infinity (bad: the exact float32 path then takes the row).

    bits: [R, V] int16, the product's bit patterns; bias: [V] float32 (empty: none);
    with_bias: [R] bool; block_max, block_min: [R, ⌈V/block⌉] float32 (out); bad: [R] bool
    (out); row: [V] uint32 scratch.

    Compiled with fastmath, so that the max/min reductions vectorise: max and min are exact
    for finite values, and a row with a NaN or an infinity is found from its bits (exponent
    all ones), which fastmath does not touch; that row's block extremes are never read.
    """
    vocab = bits.shape[1]
    n_blocks = block_max.shape[1]
    scores = row.view(np.float32)
    for r in range(start, stop):
        exponent = np.uint32(0)
        for u in range(vocab):  # a bf16 value is the high half of a float32
            half = np.uint16(bits[r, u])
            row[u] = np.uint32(half) << np.uint32(16)
            exponent = max(exponent, np.uint32(half & np.uint16(0x7F80)))
        special = exponent == np.uint32(0x7F80)
        if len(bias) and with_bias[r]:
            exponent = np.uint32(0)
            for u in range(vocab):
                scores[u] += bias[u]
                exponent = max(exponent, row[u] & np.uint32(0x7F800000))
            special = special or exponent == np.uint32(0x7F800000)
        bad[r] = special
        for b in range(n_blocks):
            first = b * block
            high = scores[first]
            low = high
            if first + block <= vocab:  # a whole block: a fixed trip count, which vectorises
                for i in range(block):
                    x = scores[first + i]
                    high = max(high, x)
                    low = min(low, x)
            else:  # the last, shorter block
                for u in range(first, vocab):
                    x = scores[u]
                    high = max(high, x)
                    low = min(low, x)
            block_max[r, b] = high
            block_min[r, b] = low


def screen_loop(  # pragma: no cover - numba compiles it
    bits,
    bias,
    with_bias,
    bad,
    beta,
    k,
    block,
    block_max,
    block_min,
    cell,
    best,
    top_ids,
    top_count,
    bottom_ids,
    bottom_count,
    start,
    stop,
):
    """Per row in [start, stop) of a bf16 screen, after `block_loop`: the thresholds
    high = L − 2β and low = L' + 2β (L, L' the k-th largest and smallest s), and the ids u with
    s_u ≥ high and s_u ≤ low (ascending) with how many there are (a count above the buffers'
    width means some did not fit). A bad row, or one whose threshold is not finite, gets counts
    past the width (scored whole).

    bits, bias, with_bias, bad, block_*: as in `block_loop`; beta: [R] float32; cell: [block]
    uint32 and best: [k] float32 scratch; *_ids: [R, width] int64; *_count: [R] int64.

    The k-th largest s: the k blocks with the largest maxima hold the top k (`lens.extremes`),
    so with m the k-th largest block max, the values ≥ m (at least k of them, in the blocks
    whose max is ≥ m) hold it. Only those blocks and the blocks past a threshold are read. The
    k largest of a stream are kept by insertion into `best` (k is small; most values fail the
    first comparison). The smallest are the largest of −s.
    """
    vocab = bits.shape[1]
    n_blocks = block_max.shape[1]
    width = top_ids.shape[1]
    values = cell.view(np.float32)
    for r in range(start, stop):
        if bad[r]:
            top_count[r] = width + 1
            bottom_count[r] = width + 1
            continue
        biased = len(bias) > 0 and with_bias[r]
        high = np.float32(0.0)
        low = np.float32(0.0)
        for side in range(2):
            flip = np.float32(1.0) if side == 0 else np.float32(-1.0)
            extremes = block_max[r] if side == 0 else block_min[r]
            # m: the k-th largest of flip · block extremes (−inf: every block, if k ≥ blocks)
            kept = 0
            for b in range(n_blocks):
                x = flip * extremes[b]
                if kept < k or x > best[k - 1]:
                    i = min(kept, k - 1)
                    while i > 0 and best[i - 1] < x:
                        best[i] = best[i - 1]
                        i -= 1
                    best[i] = x
                    kept = min(kept + 1, k)
            least = best[k - 1] if n_blocks > k else -np.inf
            # L: the k-th largest flip · s among the values ≥ m of the blocks whose extreme is
            kept = 0
            for b in range(n_blocks):
                if not flip * extremes[b] >= least:
                    continue
                first = b * block
                for i in range(min(vocab, first + block) - first):
                    cell[i] = np.uint32(np.uint16(bits[r, first + i])) << np.uint32(16)
                    if biased:
                        values[i] += bias[first + i]
                    x = flip * values[i]
                    if kept < k or x > best[k - 1]:
                        j = min(kept, k - 1)
                        while j > 0 and best[j - 1] < x:
                            best[j] = best[j - 1]
                            j -= 1
                        best[j] = x
                        kept = min(kept + 1, k)
            if side == 0:
                high = best[k - 1] - np.float32(2.0) * beta[r]
            else:
                low = -best[k - 1] + np.float32(2.0) * beta[r]
        if not (np.isfinite(high) and np.isfinite(low)):
            top_count[r] = width + 1
            bottom_count[r] = width + 1
            continue
        n_top = 0
        n_bottom = 0
        for b in range(n_blocks):
            up = block_max[r, b] >= high
            down = block_min[r, b] <= low
            if not (up or down):
                continue
            first = b * block
            for i in range(min(vocab, first + block) - first):
                cell[i] = np.uint32(np.uint16(bits[r, first + i])) << np.uint32(16)
                if biased:
                    values[i] += bias[first + i]
                x = values[i]
                if up and x >= high:
                    if n_top < width:
                        top_ids[r, n_top] = first + i
                    n_top += 1
                if down and x <= low:
                    if n_bottom < width:
                        bottom_ids[r, n_bottom] = first + i
                    n_bottom += 1
        top_count[r] = n_top
        bottom_count[r] = n_bottom


def select_loop(  # pragma: no cover - numba compiles it
    bits, bias, with_bias, rows, block_max, block, high, cell, ids, count, start, stop
):
    """For p in [start, stop): the ids u with s[rows[p], u] ≥ high[p] (ascending) into ids[p]
    and how many there are (a count above the buffer's width means some did not fit), s the
    screen's scores as in `block_loop`. Only blocks whose max passes high are read.

    bits: [R, V] int16; bias: [V] float32 (empty: none); with_bias: [R] bool; rows: [P] int64;
    block_max: [R, ⌈V/block⌉] float32; high: [P] float32; cell: [block] uint32 scratch;
    ids: [P, width] int64; count: [P] int64.
    """
    width = ids.shape[1]
    vocab = bits.shape[1]
    n_blocks = block_max.shape[1]
    values = cell.view(np.float32)
    for p in range(start, stop):
        r = rows[p]
        threshold = high[p]
        biased = len(bias) > 0 and with_bias[r]
        n = 0
        for b in range(n_blocks):
            if not block_max[r, b] >= threshold:
                continue
            first = b * block
            for i in range(min(vocab, first + block) - first):
                cell[i] = np.uint32(np.uint16(bits[r, first + i])) << np.uint32(16)
                if biased:
                    values[i] += bias[first + i]
                if values[i] >= threshold:
                    if n < width:
                        ids[p, n] = first + i
                    n += 1
        count[p] = n


def band_loop(  # pragma: no cover - numba compiles it
    bits,
    bias,
    with_bias,
    rows,
    block_max,
    block,
    low,
    high,
    most,
    cell,
    above,
    ids,
    count,
    start,
    stop,
):
    """For p in [start, stop) and each chosen token q of it: above[p, q] = #{u: s > high[p, q]}
    and the ids u with low[p, q] ≤ s ≤ high[p, q] (ascending) into ids[p, q], with how many
    there are in count[p, q] (past the buffer's width: some did not fit; a width of 0 counts
    only), s = the screen's scores of row rows[p] as in `block_loop`. Only blocks whose max
    reaches the lowest low are read: a token of another block is neither above nor within.
    Once the bands hold more than `most` tokens in all, the loop stops there, the counts then
    partial (their sum past `most`; zero for the entries not reached): the caller would not
    score that many.

    bits: [R, V] int16; bias: [V] float32 (empty: none); with_bias: [R] bool; rows: [P] int64;
    block_max: [R, ⌈V/block⌉] float32; low, high: [P, k] float64; most: int; cell: [block]
    uint32 scratch; above: [P, k] int64; ids: [P, k, width] int64; count: [P, k] int64.
    """
    width = ids.shape[2]
    k = low.shape[1]
    vocab = bits.shape[1]
    n_blocks = block_max.shape[1]
    values = cell.view(np.float32)
    for p in range(start, stop):
        for q in range(k):
            above[p, q] = 0
            count[p, q] = 0
    total = 0
    for p in range(start, stop):
        r = rows[p]
        biased = len(bias) > 0 and with_bias[r]
        floor = low[p, 0]
        for q in range(k):
            floor = min(floor, low[p, q])
        for b in range(n_blocks):
            if total > most:
                return
            if not block_max[r, b] >= floor:
                continue
            first = b * block
            for i in range(min(vocab, first + block) - first):
                cell[i] = np.uint32(np.uint16(bits[r, first + i])) << np.uint32(16)
                if biased:
                    values[i] += bias[first + i]
                x = np.float64(values[i])
                if not x >= floor:
                    continue
                for q in range(k):
                    if x > high[p, q]:
                        above[p, q] += 1
                    elif x >= low[p, q]:
                        n = count[p, q]
                        if n < width:
                            ids[p, q, n] = first + i
                        count[p, q] = n + 1
                        total += 1


def exact_loop(  # pragma: no cover - numba compiles it (with reassociation: see below)
    normed, unembedding, bias, with_bias, rows, ids, count, out, start, stop
):
    """out[p, q] = normed[rows[p]] · unembedding[ids[p, q]] (+ bias[ids[p, q]] where
    with_bias[rows[p]]) for p in [start, stop), q < count[p]: the exact float32 scores of a
    screen's candidates, each row's own (a product over the union of a chunk's candidates
    computes rows × union, most of it never read).

    normed: [R, d] float32; unembedding: [V, d] float32; bias: [V] float32 (empty: none);
    with_bias: [R] bool; rows: [P] int64; ids: [P, c] int64; count: [P] int64; out: [P, c]
    float32. Compiled with reassociation so the dot products vectorise: every value is summed
    in the same order, so values compared with each other are computed alike.
    """
    width = normed.shape[1]
    for p in range(start, stop):
        r = rows[p]
        biased = len(bias) > 0 and with_bias[r]
        for q in range(count[p]):
            u = ids[p, q]
            total = np.float32(0.0)
            for i in range(width):
                total += normed[r, i] * unembedding[u, i]
            if biased:
                total += bias[u]
            out[p, q] = total
