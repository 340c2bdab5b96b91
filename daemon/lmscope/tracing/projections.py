"""Vocabulary projections of graph nodes (docs/method.md, "Vocabulary projections"): the logit
lens of residual nodes with the rank change against the previous residual node, and direct logit
attribution of block updates through the final norm with its scale frozen at the residual the
update is added into.

`project_nodes` serves the engine (the nodes a trace stores detail for) and live queries (one
node, from a pass that kept only its token's row): it scores only the rows asked for.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmscope.attribution import lens, screen
from lmscope.attribution.budget import budget_for
from lmscope.graph.nodes import EMBEDDING, FFN, POST_ATTENTION, RESIDUAL, Node
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.traces.data import PROJ_ATTENTION_UPDATE, PROJ_FFN_UPDATE, PROJ_LENS, Projections
from lmscope.tracing.layers import LayerState

# Projection vectors built at once: (1 + 4 L) per position, [rows, d] float32.
VECTOR_BYTES = 16 * 2**20


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
        _ProjectionBlock(
            PROJ_LENS, EMBEDDING, 0, lens_vectors(LayerState.rows(states[0].resid_in, idx)), None
        )
    ]
    prev = 0
    for layer, state in enumerate(states):
        rows = idx.to(state.resid_in.device)
        attn, ffn_out, resid_out = (
            LayerState.rows(t, rows) for t in (state.attn_out, state.ffn_out, state.resid_out)
        )
        if adapter.parallel_blocks:
            update = frozen(attn, resid_out)
            blocks.append(_ProjectionBlock(PROJ_ATTENTION_UPDATE, RESIDUAL, layer, update, None))
        else:
            mid = LayerState.rows(state.resid_in, rows) + attn
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
    scored once each, in chunks of at most `projection_bytes` of logits, so a chunk reads the
    unembedding once for many rows and no row is scored that is not needed or scored twice.
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
    depth: list[int] = []  # per needed row: its block's number (a previous row's is lower)
    wanted: list[int] = []  # per wanted row: its index among the needed rows
    prev_of: list[int] = []  # per wanted row: the needed row of its previous lens, or -1
    for start in range(0, len(positions), vector_rows):
        where = positions[start : start + vector_rows]
        blocks = _projection_blocks(adapter, states, torch.tensor(where), lens_vectors)
        c = len(where)
        picked: dict[int, int] = {}  # row in this chunk's stack -> needed row

        def pick(row: int, lens_row: bool, picked: dict[int, int] = picked, width: int = c) -> int:
            if row not in picked:
                picked[row] = len(is_lens)
                is_lens.append(lens_row)
                depth.append(row // width)
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
        if picked:  # the picked rows of each block, in the order they were picked
            piece = torch.empty(len(picked), adapter.d_model, device=w_u.device)
            at = torch.tensor(list(picked))  # [p] row numbers number · c + offset
            for number in at.div(c, rounding_mode="floor").unique().tolist():
                mine = (at // c == number).nonzero(as_tuple=True)[0]  # places in the piece
                rows_of = (at[mine] % c).to(blocks[number].vectors.device)
                piece[mine.to(w_u.device)] = blocks[number].vectors[rows_of].to(w_u.device)
            vectors.append(piece)
    blocks = []  # the last chunk's vectors (up to VECTOR_BYTES) are not kept through pass 2

    # Pass 2: score every needed row once, a chunk at a time, deepest blocks first: a wanted
    # row's lists are then known by the time its previous row (a lower block) is scored, and
    # its ranks are counted there.
    whole_rows = max(1, budget.projection_bytes // (4 * adapter.vocab_size))  # float32 [r, V]
    rows_per_chunk = whole_rows
    needed = torch.cat(vectors) if vectors else torch.zeros(0, adapter.d_model)
    del vectors
    lens_rows = torch.tensor(is_lens, dtype=torch.bool, device=needed.device)
    shape = (len(needed), k)
    top_ids = torch.zeros(shape, dtype=torch.long, device=needed.device)
    top_logits = torch.zeros(shape, dtype=torch.float32, device=needed.device)
    bottom_ids, bottom_logits = torch.zeros_like(top_ids), torch.zeros_like(top_logits)
    ranks = torch.full((len(wanted), k), -1, dtype=torch.long, device=needed.device)
    ranked_at: dict[int, list[int]] = {}  # needed row -> the wanted entries it is previous to
    for entry, prev in enumerate(prev_of):
        if prev >= 0:
            ranked_at.setdefault(prev, []).append(entry)
    order = sorted(range(len(needed)), key=lambda row: -depth[row])
    bf16 = _bf16_unembedding(adapter) if len(needed) >= screen.MIN_ROWS else None
    if bf16 is not None:  # a screened chunk's scores are bf16: twice the rows in the budget
        rows_per_chunk = max(1, budget.projection_bytes // (2 * len(bf16[0])))
    wanted_rows = torch.tensor(wanted, dtype=torch.long, device=needed.device)
    # ranks the screen leaves to whole rows: (wanted entries [f], their needed rows [f], the
    # chosen tokens [f, k]), counted together after the loop (one read of W_U for them all)
    deferred: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    scratch = (
        None
        if bf16 is None
        else screen.ScreenScratch.for_rows(min(rows_per_chunk, len(order)), len(bf16[0]))
    )
    for start in range(0, len(order), rows_per_chunk):
        rows = order[start : start + rows_per_chunk]
        index = torch.tensor(rows, dtype=torch.long, device=needed.device)
        entries = [(entry, n) for n, row in enumerate(rows) for entry in ranked_at.get(row, [])]
        which = torch.tensor(
            [entry for entry, _ in entries], dtype=torch.long, device=needed.device
        )
        local = torch.tensor([n for _, n in entries], dtype=torch.long, device=needed.device)
        if bf16 is not None:
            screened = screen.Screen(needed[index], lens_rows[index], w_u, b_u, *bf16, scratch)
            lists = screened.lists(k)
        else:
            scores = lens.logits(needed[index], w_u, b_u, lens_rows[index])  # [r, V]
            lists = lens.token_lists(scores, k)
        top_ids[index], top_logits[index] = lists.top_ids, lists.top_logits
        bottom_ids[index], bottom_logits[index] = lists.bottom_ids, lists.bottom_logits
        if entries:  # the wanted rows' lists are known now: theirs are deeper or in this chunk
            chosen = top_ids[wanted_rows[which]]  # [m, k]
            if bf16 is not None:
                ranks[which], full = screened.screened_ranks(local, chosen)
                if len(full):
                    deferred.append((which[full], index[local[full]], chosen[full]))
            else:
                ranks[which] = lens.ranks_in_rows(scores, local, chosen)
    if deferred:
        which, at, chosen = (torch.cat(column) for column in zip(*deferred, strict=True))
        for start in range(0, len(at), whole_rows):
            part = slice(start, start + whole_rows)
            scores = lens.logits(needed[at[part]], w_u, b_u, lens_rows[at[part]])
            ranks[which[part]] = lens.ranks_in_rows(scores, torch.arange(len(scores)), chosen[part])
    keep = torch.tensor(wanted, dtype=torch.long, device=needed.device)

    def out(values: torch.Tensor, dtype: type) -> np.ndarray:
        return values.cpu().numpy().astype(dtype)

    return Projections(
        kind=[kind for kind, _ in meta],
        node_kind=[node.kind for _, node in meta],
        layer=np.asarray([node.layer for _, node in meta], dtype=np.int32),
        position=np.asarray([node.position for _, node in meta], dtype=np.int32),
        top_ids=out(top_ids[keep], np.int32),
        top_logits=out(top_logits[keep], np.float32),
        bottom_ids=out(bottom_ids[keep], np.int32),
        bottom_logits=out(bottom_logits[keep], np.float32),
        top_prev_rank=out(ranks, np.int32),
    )


# The unembedding's bf16 copy and an upper bound of its row norms, for the screen: kept with the
# model's output embedding module (V·d·2 bytes: 56 MB for SmolLM2-135M, a tenth of its float32
# weights), made on the first trace that screens.
NORM_ROWS = 8192
_BF16_COPIES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, torch.Tensor, float]] = (
    weakref.WeakKeyDictionary()
)


def _bf16_unembedding(adapter: ArchitectureAdapter) -> tuple[torch.Tensor, float] | None:
    """(W_U in bf16, max_u ‖W_u‖ rounded up) where `screen` runs on this model, else None."""
    w_u = adapter.unembedding_weight()
    if not screen.available(w_u.device):
        return None
    head = adapter.model.get_output_embeddings()
    cached = _BF16_COPIES.get(head)
    if cached is None or cached[0] != w_u.data_ptr():
        # float32 norms a block of rows at a time (no float64 or float32 copy of a big W_U),
        # rounded up by their own worst error, d·2^-23 relative
        norm = max(
            float(torch.linalg.vector_norm(block.float(), dim=1).max())
            for block in w_u.split(NORM_ROWS)
        ) * (1 + w_u.shape[1] * 2**-23)
        cached = (w_u.data_ptr(), w_u.to(torch.bfloat16), norm)
        _BF16_COPIES[head] = cached
    return cached[1], cached[2]
