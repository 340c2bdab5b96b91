"""Exact vocabulary lists and ranks from a bfloat16 screen (docs/method.md, "Vocabulary
projections": the lists are of the exact float32 scores; this only finds them with less work).

A projection row needs its top and bottom k tokens and, for a lens row's previous row, the
rank there of the row's top tokens: the whole [V] row of scores is read, but only a few dozen
of its entries matter. On CPUs with bf16 matrix units the bf16 product is ~4x cheaper than the
float32 one, and every screened score s_u is within β of the exact one e_u:

    |s_u − e_u| ≤ c · Σ_d |v_d|·|W_ud| ≤ c · ‖v‖ · max_u ‖W_u‖ = β            (`screen_error`)

So, with L the k-th largest screened score, no token below L − 2β can be in the exact top k
(k tokens score at least L − β exactly); no token below e_t − β can score above a chosen token
t (so a rank counts only tokens at or above that). Each row's candidates, the tokens past the
lower of those thresholds (and the mirror image for the bottom list), are scored exactly in
float32 and ranked among themselves: the lists and ranks are those of the exact scores.
A chosen token ranked deep in the bulk has thousands of tokens above it: its rank counts the
tokens above e_t + β from the screen and scores only those within β of e_t exactly. Rows
with more candidates than MAX_CANDIDATES are screened again with wider buffers while the
chunk's candidates stay within EXACT_ROWS whole rows' worth of dot products; past that (a
degenerate row, ranks of many deep tokens) rows are scored whole in float32.

Shapes: r rows, d width, V vocabulary, k tokens a list, m ranked entries, C candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmscope.attribution import loops
from lmscope.attribution.lens import (
    BLOCK,
    TokenLists,
    logits,
    ranks_in_rows,
    token_lists,
)

# Per row and side; a row with more is scored whole. On the embedded model at 200 tokens: no
# list row of 967 (at most 385 candidates), and 26 of 540 ranked rows (chosen tokens ranked
# hundreds to ~49,000 deep). Each whole row reads the float32 unembedding, so fewer, bigger
# passes win: the projections took 20% less with 512 than with 256.
MAX_CANDIDATES = 512
MIN_ROWS = 32  # the screen's setup pays off over this many rows (a live query scores few)
# Candidates past the buffers a chunk scores exactly rather than in whole rows, in whole rows'
# worth (V dot products each): the compiled dot products take ~0.2 µs a candidate, a pass of
# whole rows reads the float32 unembedding whatever its rows (~10 ms for SmolLM2's 113 MB, and
# as much again for the 49,152 dot products of one row). On the embedded model at 10 tokens
# this spares both whole-row passes (a list row and three deep ranks, ~5,000 candidates); at
# 200 tokens the deep ranks' bands hold ~400,000 tokens, and one shared pass stays cheaper.
EXACT_ROWS = 1.0


def screen_error(d: int) -> float:
    """c with |bf16 score − float32 score| ≤ c · Σ_d |v_d|·|W_ud| for rows of width d.

    The bf16 product rounds both inputs (2^-9 each, relative), accumulates in float32 (d·2^-24)
    and rounds its output to bf16 (2^-9 of |score| ≤ the sum); the float32 score itself is
    within d·2^-24 of the true one. 1% slack on top. (cuBLAS may reduce bf16 products in bf16,
    which this does not cover: the screen runs on CPUs only.)
    """
    return (2**-8 + 2**-9 + 2**-16 + 2 * d * 2**-24) * 1.01


def available(device: torch.device) -> bool:
    """A CPU whose bf16 matrix products are fast (oneDNN with bf16 units) and the select loop."""
    return (
        device.type == "cpu"
        and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        and loops.available()
    )


@dataclass
class ScreenScratch:
    """The buffer of a screen's bf16 product, for up to `rows` rows: one per `project_nodes`
    call, reused by each of its chunks (fresh [r, V] tensors cost more in page faults than the
    product itself: measured 80-170 ms a trace against 80 ms of products)."""

    product: torch.Tensor  # [rows, V] bfloat16

    @classmethod
    def for_rows(cls, rows: int, vocab: int) -> ScreenScratch:
        return cls(torch.empty(rows, vocab, dtype=torch.bfloat16))


class Screen:
    """One chunk of rows screened in bf16: exact lists of every row (`lists`), then exact
    ranks of chosen tokens in some rows (`ranks`).

    normed: [r, d] float32; with_bias: [r] bool (b_U applies: lens rows); unembedding: [V, d];
    bias: [V] or None; unembedding_bf16: [V, d]; max_row_norm ≥ max_u ‖W_u‖. A row with more
    candidates than MAX_CANDIDATES is screened again with wider buffers, or, past what the chunk
    scores exactly (EXACT_ROWS), scored whole in float32, as `lens` does without a screen.
    `scratch` holds the product (valid until the next screen reuses it); None: a buffer of its
    own. The screened scores s = product (+ b_U on lens rows) are read by the compiled loops
    (`screen_loops.py`) straight from the bf16 product: no float32 copy of [r, V] is made.
    """

    def __init__(
        self,
        normed: torch.Tensor,
        with_bias: torch.Tensor,
        unembedding: torch.Tensor,
        bias: torch.Tensor | None,
        unembedding_bf16: torch.Tensor,
        max_row_norm: float,
        scratch: ScreenScratch | None = None,
    ) -> None:
        self.normed = normed.float()
        self.with_bias = with_bias
        self.unembedding = unembedding
        self.bias = bias
        rows, vocab = len(self.normed), len(unembedding_bf16)
        if scratch is None or scratch.product.shape[0] < rows or scratch.product.shape[1] != vocab:
            scratch = ScreenScratch.for_rows(rows, vocab)
        product = torch.mm(
            self.normed.to(torch.bfloat16), unembedding_bf16.T, out=scratch.product[:rows]
        )
        self.bits = product.view(torch.int16).numpy()  # [r, V]: the loops read bf16 as bits
        self.bias_values = (
            np.zeros(0, dtype=np.float32) if bias is None else bias.float().contiguous().numpy()
        )
        self.biased = with_bias.contiguous().numpy()
        width = normed.shape[1]
        self.beta = (
            screen_error(width) * torch.linalg.vector_norm(self.normed, dim=1) * max_row_norm
        )  # [r]
        blocks = -(-vocab // BLOCK)
        self.block_max = np.empty((rows, blocks), dtype=np.float32)  # filled by `lists`
        self.block_min = np.empty((rows, blocks), dtype=np.float32)
        self.cell = np.empty(BLOCK, dtype=np.uint32)  # the loops' scratch
        self.bad = np.ones(rows, dtype=np.bool_)  # rows with a NaN or an infinity (`lists`)
        self.exact_left = int(EXACT_ROWS * vocab)  # candidates this chunk may still score

    def lists(self, k: int) -> TokenLists:
        """The exact top and bottom k of every row: [r, k] each. Called first (it computes
        the block extremes that `ranks` reads)."""
        rows, vocab = self.bits.shape
        k = min(k, vocab)
        top, bottom = (torch.empty(rows, MAX_CANDIDATES, dtype=torch.long) for _ in range(2))
        top_n, bottom_n = (torch.empty(rows, dtype=torch.long) for _ in range(2))
        bad = self.bad
        shared = (self.bits, self.bias_values, self.biased)
        done = loops.run(
            "blocks",
            rows,
            *shared,
            BLOCK,
            self.block_max,
            self.block_min,
            bad,
            np.empty(vocab, dtype=np.uint32),
        ) and loops.run(
            "screen",
            rows,
            *shared,
            bad,
            self.beta.float().contiguous().numpy(),
            k,
            BLOCK,
            self.block_max,
            self.block_min,
            self.cell,
            np.empty(k, dtype=np.float32),
            top.numpy(),
            top_n.numpy(),
            bottom.numpy(),
            bottom_n.numpy(),
        )
        if not done:  # no compiled loop after all: every row is scored whole
            top_n.fill_(MAX_CANDIDATES + 1)
            bottom_n.fill_(MAX_CANDIDATES + 1)
            bad.fill(True)
            self.block_max.fill(np.inf)  # `ranks` then reads every block
        # A row past the buffers (or one the bound cannot hold: a NaN, an infinity) is whole,
        # unless it is screened again below with buffers as wide as its (exact) counts.
        whole = (top_n > MAX_CANDIDATES) | (bottom_n > MAX_CANDIDATES)  # [r]
        kept = (~whole).nonzero(as_tuple=True)[0]
        out = TokenLists(
            torch.empty(rows, k, dtype=torch.long), torch.empty(rows, k),
            torch.empty(rows, k, dtype=torch.long), torch.empty(rows, k),
        )  # fmt: skip
        if len(kept):
            self._exact_lists(out, kept, top[kept], top_n[kept], bottom[kept], bottom_n[kept])
        over = (whole & ~torch.from_numpy(bad)).nonzero(as_tuple=True)[0]
        wide = self._affordable(over, top_n[over] + bottom_n[over])
        for row in wide.tolist():  # one at a time: buffers as wide as this row's counts
            width = int(max(top_n[row], bottom_n[row]))
            at = slice(row, row + 1)
            top, bottom = (torch.empty(1, width, dtype=torch.long) for _ in range(2))
            count = torch.empty(2, dtype=torch.long)
            loops.run(
                "screen",
                1,
                self.bits[at],
                self.bias_values,
                self.biased[at],
                bad[at],
                self.beta[at].float().numpy(),
                k,
                BLOCK,
                self.block_max[at],
                self.block_min[at],
                self.cell,
                np.empty(k, dtype=np.float32),
                top.numpy(),
                count[:1].numpy(),
                bottom.numpy(),
                count[1:].numpy(),
            )
            if bool((count <= width).all()):  # else a threshold was not finite: whole
                self._exact_lists(out, torch.tensor([row]), top, count[:1], bottom, count[1:])
                whole[row] = False
        full = whole.nonzero(as_tuple=True)[0]
        if len(full):
            exact = token_lists(self._whole(full), k)
            out.top_ids[full], out.top_logits[full] = exact.top_ids, exact.top_logits
            out.bottom_ids[full], out.bottom_logits[full] = exact.bottom_ids, exact.bottom_logits
        return out

    def _exact_lists(
        self,
        out: TokenLists,
        rows: torch.Tensor,
        top: torch.Tensor,
        top_n: torch.Tensor,
        bottom: torch.Tensor,
        bottom_n: torch.Tensor,
    ) -> None:
        """Fill the lists of `rows` [n] in `out` from their candidates: ids [n, w] ascending,
        the first count [n] of each row real."""
        if not len(rows):
            return
        k = out.top_ids.shape[1]
        for ids, count, largest in ((top, top_n, True), (bottom, bottom_n, False)):
            ids, values, _ = self._exact_candidates(rows, ids, count, largest)
            order = values.sort(dim=-1, descending=largest, stable=True).indices[:, :k]
            if largest:  # equal scores: the lower id first (candidates ascend)
                out.top_ids[rows] = ids.gather(1, order)
                out.top_logits[rows] = values.gather(1, order)
            else:
                out.bottom_ids[rows] = ids.gather(1, order)
                out.bottom_logits[rows] = values.gather(1, order)

    def _affordable(self, items: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        """The items [n] (ascending) whose candidates, `cost` [n] each, fit what this chunk
        may still score exactly (`EXACT_ROWS`), cheapest first; their cost is spent."""
        order = cost.argsort(stable=True)
        spent = cost[order].cumsum(0)
        within = spent <= self.exact_left
        if not bool(within.any()):
            return items[:0]
        self.exact_left -= int(spent[within][-1])
        return items[order[within]].sort().values

    def ranks(self, at_rows: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """#{u: e[row, u] > e[row, t]} for the chosen tokens t [m, k] of rows at_rows [m]."""
        ranks, full = self.screened_ranks(at_rows, chosen)
        if len(full):
            scores = self._whole(at_rows[full])
            ranks[full] = ranks_in_rows(scores, torch.arange(len(full)), chosen[full])
        return ranks

    def screened_ranks(
        self, at_rows: torch.Tensor, chosen: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`ranks` of the entries the screen resolves, and which entries [f] it leaves to be
        counted in their whole rows (their ranks are −1): a chosen token ranked deep in the
        bulk has thousands of tokens above it. A caller with many chunks scores all of those
        rows together (each whole row reads the float32 unembedding)."""
        if not len(at_rows):
            return chosen[:, :0], torch.zeros(0, dtype=torch.long)
        # No token below e_t − β can score above t: those above are the row's candidates.
        own_values = self._exact(at_rows, chosen)  # [m, k] e_t
        high = own_values.amin(1) - 1.01 * self.beta[at_rows]  # ulps apart
        top, top_n = self._select(at_rows, high)
        ranks = torch.full(chosen.shape, -1, dtype=torch.long)
        top_n[~torch.isfinite(high)] = MAX_CANDIDATES + 1  # counted in whole rows
        kept = (top_n <= MAX_CANDIDATES).nonzero(as_tuple=True)[0]
        deep = (
            (top_n > MAX_CANDIDATES)
            & torch.isfinite(own_values).all(1)
            & ~torch.from_numpy(self.bad)[at_rows]
        ).nonzero(as_tuple=True)[0]
        if len(deep):  # thousands above: counted from the screen, a band around e_t scored
            banded, resolved = self._band_ranks(at_rows[deep], chosen[deep], own_values[deep])
            ranks[deep[resolved]] = banded[resolved]
            top_n[deep[resolved]] = 0
        if len(kept):
            ids, values, valid = self._exact_candidates(at_rows[kept], top[kept], top_n[kept], True)
            # The chosen token's own value is read from the same product as the candidates'.
            is_chosen = ids[:, None, :] == chosen[kept][:, :, None]  # [e, k, c]
            own = torch.where(is_chosen, values[:, None, :], float("-inf")).amax(-1)  # [e, k]
            ranks[kept] = ((values[:, None, :] > own[:, :, None]) & valid[:, None, :]).sum(-1)
            lost = kept[(own == float("-inf")).any(1)]  # cannot happen within the bound
            top_n[lost] = MAX_CANDIDATES + 1
        return ranks, (top_n > MAX_CANDIDATES).nonzero(as_tuple=True)[0]

    def _band_ranks(
        self, rows: torch.Tensor, chosen: torch.Tensor, own_values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ranks of chosen tokens [f, k] (exact scores own_values [f, k]) in rows [f], and
        which entries [f] are resolved. #{u: e_u > e_t} = #{u: s_u > e_t + β} (each such
        e_u ≥ s_u − β > e_t) + #{u: |s_u − e_t| ≤ β, e_u > e_t} (no other u can score above t):
        only the band is scored exactly. All or none: if the bands are past what the chunk can
        afford, the entries go to the whole rows counted after the last chunk, whose one pass
        then costs about the same with them or without them."""
        f, k = chosen.shape
        ranks = torch.full((f, k), -1, dtype=torch.long)
        resolved = torch.zeros(f, dtype=torch.bool)
        margin = 1.01 * self.beta[rows].double()[:, None]  # ulps apart, as `high` above
        low = (own_values.double() - margin).numpy()
        high = (own_values.double() + margin).numpy()
        at = rows.contiguous().numpy()
        above, count = (torch.empty(f, k, dtype=torch.long) for _ in range(2))
        shared = (self.bits, self.bias_values, self.biased)
        counted = loops.run(  # how wide each band is, first (or that it is past the budget)
            "band", f, *shared, at, self.block_max, BLOCK, low, high, self.exact_left,
            self.cell, above.numpy(), np.empty((f, k, 0), dtype=np.int64), count.numpy(),
        )  # fmt: skip
        cost = int(count.sum())
        if not counted or cost > self.exact_left:
            return ranks, resolved
        self.exact_left -= cost
        for p in range(f):  # one entry at a time: its k bands in buffers as wide as its widest
            width = max(1, int(count[p].max()))
            ids = torch.empty(1, k, width, dtype=torch.long)
            band = (slice(p, p + 1),)
            loops.run(
                "band", 1, *shared, at[band], self.block_max, BLOCK, low[band], high[band],
                cost, self.cell, above[band].numpy(), ids.numpy(), count[band].numpy(),
            )  # fmt: skip
            each = rows[band].expand(k)  # one row of candidates per chosen token: [k]
            ids, values, valid = self._exact_candidates(each, ids[0], count[p], True)
            is_chosen = ids == chosen[p, :, None]  # [k, c]
            own = torch.where(is_chosen, values, float("-inf")).amax(-1)  # read like the band's
            ranks[p] = above[p] + ((values > own[:, None]) & valid).sum(-1)
            resolved[p] = bool((own > float("-inf")).all())  # within the bound: always
        return ranks, resolved

    def _select(self, rows: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate ids [n, MAX_CANDIDATES] (ascending) with s ≥ high, and how many there
        are, for `rows` [n] with thresholds high [n]."""
        n = len(rows)
        ids = torch.empty(n, MAX_CANDIDATES, dtype=torch.long)
        count = torch.empty(n, dtype=torch.long)
        done = loops.run(
            "select",
            n,
            self.bits,
            self.bias_values,
            self.biased,
            rows.contiguous().numpy(),
            self.block_max,
            BLOCK,
            high.float().contiguous().numpy(),
            self.cell,
            ids.numpy(),
            count.numpy(),
        )
        if not done:  # no compiled loop after all: every row is scored whole
            count.fill_(MAX_CANDIDATES + 1)
        return ids, count

    def _exact_candidates(
        self, rows: torch.Tensor, ids: torch.Tensor, count: torch.Tensor, largest: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidates [n, c] (padding masked to ∓inf), their exact scores, and which are real."""
        c = max(1, int(count.max()))
        valid = torch.arange(c)[None, :] < count[:, None]  # [n, c]
        ids = torch.where(valid, ids[:, :c], 0)  # padding: any id, masked below
        values = self._exact(rows, ids, count).masked_fill(
            ~valid, float("-inf") if largest else float("inf")
        )
        return ids, values, valid

    def _exact(
        self, rows: torch.Tensor, ids: torch.Tensor, count: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Float32 scores of ids [n, c] in rows [n] (only the first count[p] of row p; None:
        all), every value summed in one order: a compiled loop of dot products over a float32
        unembedding, else one product over the union of the ids."""
        n, c = ids.shape
        if count is None:
            count = torch.full((n,), c, dtype=torch.long)
        if self.unembedding.dtype == torch.float32:
            out = torch.zeros(n, c)
            if loops.run(
                "exact",
                n,
                self.normed.contiguous().numpy(),
                self.unembedding.detach().numpy(),
                self.bias_values,
                self.biased,
                rows.contiguous().numpy(),
                ids.contiguous().numpy(),
                count.contiguous().numpy(),
                out.numpy(),
            ):
                return out
        columns, where = ids.unique(return_inverse=True)  # sorted ids; ids = columns[where]
        scores = self.normed[rows] @ self.unembedding[columns].float().T  # [n, U]
        if self.bias is not None:
            scores += self.with_bias[rows, None].float() * self.bias[columns].float()[None]
        return scores.gather(1, where)

    def _whole(self, rows: torch.Tensor) -> torch.Tensor:
        """Exact float32 scores of whole rows [f] -> [f, V]."""
        return logits(self.normed[rows], self.unembedding, self.bias, self.with_bias[rows])
