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

# Projection vectors built at once: each needed row with the state rows it reads (up to two,
# and a post-attention residual), its norm's temporaries and itself, [rows, d] float32.
VECTOR_BYTES = 16 * 2**20
ROW_COPIES = 6  # [d] float32 vectors held per needed row while its group is built

# The state rows a projection vector is made from: a LayerState field, or the residual after
# the attention block of a sequential layer (resid_in + attn_out).
MID = "mid"


@dataclass(frozen=True)
class _Block:
    """One projection kind of one node kind at one layer (every position has one): its vector
    is the lens of the state row `source`, or for an update the update `source` through the
    final norm frozen at the residual `frozen_at`."""

    kind: str  # PROJECTION_KINDS
    node_kind: str  # NODE_KINDS
    layer: int
    source: str  # "resid_in", "attn_out", "ffn_out", "resid_out" or MID
    frozen_at: str | None  # updates: the residual the norm's scale is frozen at
    prev: int | None  # lens blocks: the block of the previous residual node's lens


def _blocks(adapter: ArchitectureAdapter, layers: int) -> list[_Block]:
    """Every projection block of layers 0..layers-1, bottom to top (a lower block first)."""
    blocks = [_Block(PROJ_LENS, EMBEDDING, 0, "resid_in", None, None)]
    prev = 0
    for layer in range(layers):
        if adapter.parallel_blocks:
            blocks.append(
                _Block(PROJ_ATTENTION_UPDATE, RESIDUAL, layer, "attn_out", "resid_out", None)
            )
        else:
            blocks.append(
                _Block(PROJ_ATTENTION_UPDATE, POST_ATTENTION, layer, "attn_out", MID, None)
            )
            blocks.append(_Block(PROJ_LENS, POST_ATTENTION, layer, MID, None, prev))
            prev = len(blocks) - 1
        blocks.append(_Block(PROJ_FFN_UPDATE, FFN, layer, "ffn_out", "resid_out", None))
        blocks.append(_Block(PROJ_LENS, RESIDUAL, layer, "resid_out", None, prev))
        prev = len(blocks) - 1
    return blocks


def _vectors(
    adapter: ArchitectureAdapter,
    states: list[LayerState],
    rows: list[tuple[_Block, int]],
    lens_vectors: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """The projection vectors of `rows` (block, state row) -> [len(rows), d] float32, after
    the final norm (lens) or its frozen scale (updates).

    Built in a fixed number of batched steps whatever the rows (what a GPU wants: launches,
    not arithmetic, cost here): the state rows read, stacked once; the post-attention
    residuals they need, one sum; the lens rows through the norm together, the update rows
    through the frozen norm together."""
    reads: dict[tuple[str, int, int], None] = {}  # (source, layer, row), an ordered set

    def read(block: _Block, row: int, source: str | None = None) -> tuple[str, int, int]:
        key = (source or block.source, block.layer, row)
        if key[0] == MID:  # resid_in + attn_out
            reads.setdefault(("resid_in", block.layer, row))
            reads.setdefault(("attn_out", block.layer, row))
        reads.setdefault(key)
        return key

    lens_at = [i for i, (block, _) in enumerate(rows) if block.kind == PROJ_LENS]
    update_at = [i for i, (block, _) in enumerate(rows) if block.kind != PROJ_LENS]
    lens_in = [read(*rows[i]) for i in lens_at]
    update_in = [read(*rows[i]) for i in update_at]
    update_base = [read(*rows[i], source=rows[i][0].frozen_at) for i in update_at]
    fields = [key for key in reads if key[0] != MID]
    mids = [key for key in reads if key[0] == MID]
    number = {key: n for n, key in enumerate(fields + mids)}  # the table's rows: fields, mids
    table = LayerState.stacked_rows(
        [(getattr(states[layer], source), row) for source, layer, row in fields], device
    )  # [f, d]

    def take(keys: list[tuple[str, int, int]]) -> torch.Tensor:
        return table[torch.tensor([number[key] for key in keys], device=device)]

    if mids:
        resid_in = take([("resid_in", layer, row) for _, layer, row in mids])
        table = torch.cat(
            [table, resid_in + take([("attn_out", layer, row) for _, layer, row in mids])]
        )
    parts, order = [], []
    if lens_at:
        parts.append(lens_vectors(take(lens_in)))
        order.extend(lens_at)
    if update_at:
        parts.append(adapter.frozen_final_norm(take(update_in), take(update_base)))
        order.extend(update_at)
    vectors = parts[0] if len(parts) == 1 else torch.cat(parts)
    if order == sorted(order):
        return vectors
    return vectors[torch.tensor(order, device=device).argsort()]


def project_nodes(
    adapter: ArchitectureAdapter, states: list[LayerState], nodes: set[Node], k: int
) -> Projections:
    """Logit lens of residual nodes (with rank change) and DLA of block updates, for `nodes`.

    `states` holds layers 0..m (m the highest layer asked for) and may hold only some token
    rows, as long as node positions index those rows.

    Two passes. (1) The rows needed are the rows asked for plus, for each lens row, its
    previous residual node's lens (for the rank change); only their vectors are built, in
    groups of a few batched steps each (`_vectors`). (2) Those rows are
    scored once each, in chunks of at most `projection_bytes` of logits, so a chunk reads the
    unembedding once for many rows and no row is scored that is not needed or scored twice.
    """
    w_u = adapter.unembedding_weight()
    b_u = adapter.unembedding_bias()
    norm = adapter.final_norm()
    k = min(k, adapter.vocab_size)
    positions = sorted({node.position for node in nodes})
    budget = budget_for(w_u.device)

    def lens_vectors(v: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return norm(v.to(w_u.device, w_u.dtype)).float()

    # Pass 1: which rows are needed (on the host), then their vectors, a group at a time.
    blocks = _blocks(adapter, len(states))
    meta: list[tuple[str, Node]] = []  # one per wanted row, in output order
    needed_rows: list[tuple[_Block, int]] = []  # per needed row: its block and state row
    depth: list[int] = []  # per needed row: its block's number (a previous row's is lower)
    wanted: list[int] = []  # per wanted row: its index among the needed rows
    prev_of: list[int] = []  # per wanted row: the needed row of its previous lens, or -1
    picked: dict[tuple[int, int], int] = {}  # (block number, position) -> needed row

    def pick(number: int, position: int) -> int:
        if (number, position) not in picked:
            picked[number, position] = len(needed_rows)
            needed_rows.append((blocks[number], position))
            depth.append(number)
        return picked[number, position]

    for number, block in enumerate(blocks):
        for position in positions:
            node = Node(block.node_kind, block.layer, position)
            if node in nodes:
                meta.append((block.kind, node))
                wanted.append(pick(number, position))
                prev_of.append(-1 if block.prev is None else pick(block.prev, position))
    is_lens = [block.kind == PROJ_LENS for block, _ in needed_rows]
    group = max(1, VECTOR_BYTES // (4 * adapter.d_model * ROW_COPIES))
    vectors = [
        _vectors(adapter, states, needed_rows[start : start + group], lens_vectors, w_u.device)
        for start in range(0, len(needed_rows), group)
    ]

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
