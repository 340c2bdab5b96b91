"""Vocabulary projections (docs/method.md, "Vocabulary projections").

lens(v) = W_U · norm_final(v) (+ b_U) for residual nodes; for block updates the norm's scale
is frozen at the residual the update produced and neither its bias nor b_U is added (direct
logit attribution), so a LayerNorm bias does not shift the promoted/suppressed lists.
Shapes: P rows, d width, V vocabulary, k tokens per list.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.attribution.budget import budget_for


@dataclass
class TokenLists:
    top_ids: torch.Tensor  # [P, k]
    top_logits: torch.Tensor  # [P, k]
    bottom_ids: torch.Tensor  # [P, k]
    bottom_logits: torch.Tensor  # [P, k]


def logits(
    normed: torch.Tensor, unembedding: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """normed: [P, d] (already through the final norm) -> [P, V] float32."""
    out = normed.float() @ unembedding.float().T
    return out if bias is None else out + bias.float()


def token_lists(scores: torch.Tensor, k: int) -> TokenLists:
    """Top and bottom k of scores [P, V]; ties resolved by torch.topk (deterministic on CPU)."""
    k = min(k, scores.shape[-1])
    top = scores.topk(k, dim=-1)
    bottom = scores.topk(k, dim=-1, largest=False)
    return TokenLists(top.indices, top.values, bottom.indices, bottom.values)


def ranks_in_rows(
    scores: torch.Tensor, rows: torch.Tensor, token_ids: torch.Tensor
) -> torch.Tensor:
    """0-based rank of token_ids[p, r] within scores[rows[p]]; -1 where rows[p] is -1.

    scores: [R, V]; rows: [P] long; token_ids: [P, k] -> [P, k] long.
    """
    ranks = torch.full(token_ids.shape, -1, dtype=torch.long, device=scores.device)
    present = (rows >= 0).nonzero(as_tuple=True)[0]
    # A few rows at a time (budget.rank_rows): on a CPU the [rows, k, V] comparison then stays
    # in cache (~6x faster than one pass per list entry), and no [P, V] copy is made.
    for piece in present.split(budget_for(scores.device).rank_rows):
        block = scores[rows[piece]]  # [b, V]
        chosen = block.gather(1, token_ids[piece])  # [b, k]
        ranks[piece] = (block.unsqueeze(1) > chosen.unsqueeze(-1)).sum(-1)
    return ranks
