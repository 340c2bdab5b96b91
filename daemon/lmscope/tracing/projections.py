"""Vocabulary projections of graph nodes (docs/method.md, "Vocabulary projections"): the logit
lens of residual nodes with the rank change against the previous residual node, and direct logit
attribution of block updates through the final norm with its scale frozen at the residual the
update is added into.

`project_nodes` serves the engine (the nodes a trace stores detail for) and live queries (one
node, from a pass that kept only its token's row): it scores only the rows asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmscope.attribution import lens
from lmscope.attribution.budget import budget_for
from lmscope.graph.nodes import EMBEDDING, FFN, POST_ATTENTION, RESIDUAL, Node
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.traces.data import PROJ_ATTENTION_UPDATE, PROJ_FFN_UPDATE, PROJ_LENS, Projections
from lmscope.tracing.layers import LayerState

# Projection vectors built at once: (1 + 4 L) per position, [rows, d] float32.
VECTOR_BYTES = 64 * 2**20


@dataclass
class _ProjectionBlock:
    """One projection kind of one node kind at one layer, for a chunk of positions."""

    kind: str  # PROJECTION_KINDS
    node_kind: str  # NODE_KINDS
    layer: int
    vectors: torch.Tensor  # [c, d] after the final norm (lens) or its frozen scale (updates)
    prev: int | None  # index of the block holding the previous residual node's lens


def _projection_blocks(
    adapter: ArchitectureAdapter,
    states: list[LayerState],
    idx: torch.Tensor,
    lens_vectors: Callable[[torch.Tensor], torch.Tensor],
) -> list[_ProjectionBlock]:
    """Every projection of the positions `idx` [c], all layers, bottom to top, batched."""
    frozen = adapter.frozen_final_norm
    blocks = [
        _ProjectionBlock(PROJ_LENS, EMBEDDING, 0, lens_vectors(states[0].resid_in[idx]), None)
    ]
    prev = 0
    for layer, state in enumerate(states):
        rows = idx.to(state.resid_in.device)
        attn, ffn_out, resid_out = state.attn_out[rows], state.ffn_out[rows], state.resid_out[rows]
        if adapter.parallel_blocks:
            update = frozen(attn, resid_out)
            blocks.append(_ProjectionBlock(PROJ_ATTENTION_UPDATE, RESIDUAL, layer, update, None))
        else:
            mid = state.resid_in[rows] + attn
            update = frozen(attn, mid)
            blocks.append(
                _ProjectionBlock(PROJ_ATTENTION_UPDATE, POST_ATTENTION, layer, update, None)
            )
            blocks.append(
                _ProjectionBlock(PROJ_LENS, POST_ATTENTION, layer, lens_vectors(mid), prev)
            )
            prev = len(blocks) - 1
        update = frozen(ffn_out, resid_out)
        blocks.append(_ProjectionBlock(PROJ_FFN_UPDATE, FFN, layer, update, None))
        blocks.append(_ProjectionBlock(PROJ_LENS, RESIDUAL, layer, lens_vectors(resid_out), prev))
        prev = len(blocks) - 1
    return blocks


def project_nodes(
    adapter: ArchitectureAdapter, states: list[LayerState], nodes: set[Node], k: int
) -> Projections:
    """Logit lens of residual nodes (with rank change) and DLA of block updates, for `nodes`.

    `states` holds layers 0..m (m the highest layer asked for) and may hold only some token
    rows, as long as node positions index those rows.

    Two passes. (1) Chunks of positions build every projection vector of those positions (the
    final norm applied per layer in one batch) and keep only the rows asked for plus, for each
    lens row, its previous residual node's lens (for the rank change). (2) Those rows are
    scored in chunks of at most `projection_bytes` of logits: each chunk holds its wanted rows
    and their previous rows, so a chunk reads the unembedding once for many rows and no row is
    scored that is not needed.
    """
    w_u = adapter.unembedding_weight()
    b_u = adapter.unembedding_bias()
    norm = adapter.final_norm()
    k = min(k, adapter.vocab_size)
    positions = sorted({node.position for node in nodes})
    budget = budget_for(w_u.device)
    vector_rows = max(1, VECTOR_BYTES // (4 * adapter.d_model * (1 + 4 * adapter.n_layers)))

    def lens_vectors(v: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return norm(v.to(w_u.device, w_u.dtype)).float()

    # Pass 1: the vectors of the needed rows.
    meta: list[tuple[str, Node]] = []  # one per wanted row, in output order
    vectors: list[torch.Tensor] = []  # [?, d] pieces of the needed rows
    is_lens: list[bool] = []  # per needed row: the unembedding bias applies
    wanted: list[int] = []  # per wanted row: its index among the needed rows
    prev_of: list[int] = []  # per wanted row: the needed row of its previous lens, or -1
    for start in range(0, len(positions), vector_rows):
        where = positions[start : start + vector_rows]
        blocks = _projection_blocks(adapter, states, torch.tensor(where), lens_vectors)
        c = len(where)
        picked: dict[int, int] = {}  # row in this chunk's stack -> needed row

        def pick(row: int, lens_row: bool, picked: dict[int, int] = picked) -> int:
            if row not in picked:
                picked[row] = len(is_lens)
                is_lens.append(lens_row)
            return picked[row]

        for number, block in enumerate(blocks):
            for offset, i in enumerate(where):
                node = Node(block.node_kind, block.layer, i)
                if node in nodes:
                    meta.append((block.kind, node))
                    wanted.append(pick(number * c + offset, block.kind == PROJ_LENS))
                    prev_of.append(
                        -1 if block.prev is None else pick(block.prev * c + offset, True)
                    )
        if picked:
            stack = torch.cat([b.vectors.to(w_u.device) for b in blocks])
            vectors.append(stack[torch.tensor(list(picked), device=stack.device)])

    # Pass 2: score wanted rows with their previous rows, a chunk at a time.
    rows_per_chunk = max(2, budget.projection_bytes // (4 * adapter.vocab_size))
    needed = torch.cat(vectors) if vectors else torch.zeros(0, adapter.d_model)
    lens_rows = torch.tensor(is_lens, dtype=torch.bool, device=needed.device)
    chunks: list[tuple[lens.TokenLists, torch.Tensor]] = []
    for start in range(0, len(wanted), rows_per_chunk // 2):
        mine = wanted[start : start + rows_per_chunk // 2]
        prevs = prev_of[start : start + rows_per_chunk // 2]
        rows = sorted(set(mine) | {p for p in prevs if p >= 0})
        local = {row: n for n, row in enumerate(rows)}
        index = torch.tensor(rows, device=needed.device)
        scores = lens.logits(needed[index], w_u, None)  # [r, V]
        if b_u is not None:  # the unembedding bias belongs to the lens, not to updates
            scores[lens_rows[index]] += b_u.float()
        # Rank and list every row in place, then keep the wanted ones (copying [r, V] score
        # rows would cost more than the extra top-k on the few previous rows).
        all_lists = lens.token_lists(scores, k)
        keep = torch.tensor([local[row] for row in mine], device=scores.device)
        lists = lens.TokenLists(
            all_lists.top_ids[keep],
            all_lists.top_logits[keep],
            all_lists.bottom_ids[keep],
            all_lists.bottom_logits[keep],
        )
        prev = torch.tensor([local.get(p, -1) for p in prevs], device=scores.device)
        chunks.append((lists, lens.ranks_in_rows(scores, prev, lists.top_ids)))

    def cat(values: list[torch.Tensor], dtype: type) -> np.ndarray:
        if not values:
            return np.zeros((0, k), dtype=dtype)
        return torch.cat(values).cpu().numpy().astype(dtype)

    return Projections(
        kind=[kind for kind, _ in meta],
        node_kind=[node.kind for _, node in meta],
        layer=np.asarray([node.layer for _, node in meta], dtype=np.int32),
        position=np.asarray([node.position for _, node in meta], dtype=np.int32),
        top_ids=cat([c[0].top_ids for c in chunks], np.int32),
        top_logits=cat([c[0].top_logits for c in chunks], np.float32),
        bottom_ids=cat([c[0].bottom_ids for c in chunks], np.int32),
        bottom_logits=cat([c[0].bottom_logits for c in chunks], np.float32),
        top_prev_rank=cat([c[1] for c in chunks], np.int32),
    )
