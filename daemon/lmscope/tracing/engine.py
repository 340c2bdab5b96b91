"""Trace one prompt: one hooked forward pass, then everything a `.lmtrace` holds.

Stages (each reported through `progress`):
1. tokenize (BOS prepended once when the tokenizer defines one, method.md "BOS");
2. capture + attribute layer by layer (attention edges, residual and FFN contributions), with a
   cancellation check between layers;
3. choose the nodes that get detail in the file (`TraceOptions.detail`): by default the nodes
   of the last token's route at the display threshold, or every node that can lie on a route at
   `min_threshold` (the union over output tokens);
4. neuron detail and vocabulary projections for those nodes only. Any other node's detail is
   computed on demand by `Trace` while the model is loaded (`traces/trace.py`), so a trace pays
   for the detail of one route, not of every node, and still answers every query in the daemon.

This module only orchestrates: the maths is in `lmscope.attribution`, the hooks in `capture`.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import transformers

from lmscope.__about__ import __version__
from lmscope.attribution import decompose, lens, neurons
from lmscope.attribution.budget import budget_for
from lmscope.attribution.graph import RENORMALIZE, Node
from lmscope.attribution.routes import ContributionGraph
from lmscope.errors import LmscopeError, PromptError
from lmscope.models.adapter import ArchitectureAdapter, adapter_for
from lmscope.models.loading import LoadedModel
from lmscope.traces.data import (
    EMBEDDING,
    FFN,
    POST_ATTENTION,
    PROJ_ATTENTION_UPDATE,
    PROJ_FFN_UPDATE,
    PROJ_LENS,
    RESIDUAL,
    AttentionEdges,
    BlockContributions,
    Environment,
    ModelFacts,
    NeuronTable,
    Predictions,
    Projections,
    Settings,
    Tokens,
    TraceData,
)
from lmscope.tracing.capture import LayerCapture, capture_layers, run_forward

ProgressFn = Callable[[str, float | None], None]


class TraceCancelled(LmscopeError):
    """The caller asked to stop; nothing of the trace is kept."""


DETAIL_ROUTE = "route"  # the last token's renormalised route at `detail_threshold`
DETAIL_ALL = "all"  # every node that can be on a route of any token at `min_threshold`
DETAIL_SCOPES = (DETAIL_ROUTE, DETAIL_ALL)
# Recorded in TraceData.extra (old readers ignore it; they already treat a missing projection or
# neuron row as "not stored in this file").
DETAIL_EXTRA_KEY = "lmscope.detail"


@dataclass(frozen=True)
class TraceOptions:
    prepend_bos: bool = True
    min_threshold: float = 0.01  # routes answerable for every τ >= this
    top_neurons: int = 64  # neurons stored per FFN node (at least 50 wanted)
    projection_top_k: int = 10
    prediction_top_k: int = 10
    # Which nodes get neuron lists and vocabulary projections in the file. Each projection is a
    # product with the whole unembedding: on the embedded model at 200 tokens on 2 CPU threads
    # "all" costs ~45x the forward pass, "route" ~1.5x; a live trace computes the rest when asked.
    detail: str = DETAIL_ROUTE
    detail_threshold: float = 0.04  # the display default of the CLI and the extension

    def __post_init__(self) -> None:
        if self.detail not in DETAIL_SCOPES:
            raise LmscopeError(
                f"detail must be one of {', '.join(DETAIL_SCOPES)}, not {self.detail!r}"
            )

    @property
    def detail_route_threshold(self) -> float:
        """τ of the stored route: no route exists below the trace's smallest threshold."""
        return max(self.detail_threshold, self.min_threshold)


@dataclass
class LayerState:
    """What later stages need from one layer (float32, on the layer's device)."""

    resid_in: torch.Tensor  # [n, d]
    attn_out: torch.Tensor  # [n, d]
    ffn_act: torch.Tensor  # [n, d_ffn]
    ffn_out: torch.Tensor  # [n, d]
    resid_out: torch.Tensor  # [n, d]


# --- tokens ----------------------------------------------------------------------------------
def tokenize(loaded: LoadedModel, prompt: str, prepend_bos: bool, context: int) -> list[int]:
    """Prompt -> token ids, BOS prepended exactly once when asked and defined."""
    if not prompt or not prompt.strip("\x00"):
        raise PromptError("empty prompt: there is nothing to trace")
    ids = list(loaded.tokenizer.encode(prompt, add_special_tokens=False))
    bos = loaded.tokenizer.bos_token_id
    if prepend_bos and bos is not None:
        ids = [bos, *ids]
    if not ids:
        raise PromptError("the prompt tokenizes to no tokens")
    if len(ids) > context:
        raise PromptError(
            f"prompt too long: {len(ids)} tokens, but the model's context is {context} tokens"
        )
    return ids


def display_strings(loaded: LoadedModel, ids: list[int]) -> list[str]:
    """Each token decoded alone (spaces kept; partial UTF-8 shows as U+FFFD)."""
    return [str(loaded.tokenizer.decode([i], skip_special_tokens=False)) for i in ids]


# --- the trace -------------------------------------------------------------------------------
class StageTimes:
    """Seconds spent per stage of one trace, for the benchmark (`lmscope bench`).

    Stages: "forward" (the hooked pass, attention attribution excluded), "attention" (per-layer
    contributions), "routes" (choosing the detailed nodes), "neurons", "projections",
    "finish" (predictions, vocabulary). On a GPU each boundary synchronises, so the split is
    honest at a small cost; without a `StageTimes` nothing is timed or synchronised.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._last = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        """Charge the time since the previous mark to `stage`."""
        now = self._now()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def run_trace(
    loaded: LoadedModel,
    prompt: str,
    options: TraceOptions | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    times: StageTimes | None = None,
) -> TraceData:
    """Trace `prompt` on a loaded model and return the complete `TraceData`."""
    options = options or TraceOptions()
    report = progress or (lambda _message, _fraction: None)
    mark = times.mark if times is not None else (lambda _stage: None)
    adapter = adapter_for(loaded.model)
    ids = tokenize(loaded, prompt, options.prepend_bos, adapter.context_length)
    input_ids = torch.tensor(ids, dtype=torch.long)

    states: list[LayerState] = []
    contributions: list[decompose.LayerContributions] = []
    attention_weights: list[np.ndarray] = []

    def on_layer(captured: LayerCapture) -> None:
        if should_cancel is not None and should_cancel():
            raise TraceCancelled("trace cancelled")
        mark("forward")
        result = attribute_layer(adapter, captured, options.min_threshold)
        contributions.append(result)
        weights = captured.attn_probs[:, result.edge_target, result.edge_source]  # [H, e]
        attention_weights.append(weights.T.cpu().numpy())
        states.append(
            LayerState(
                captured.resid_in,
                captured.attn_out,
                captured.ffn_act,
                captured.ffn_out,
                captured.resid_out,
            )
        )
        report(f"layer {captured.layer + 1}/{adapter.n_layers}", len(states) / adapter.n_layers)
        mark("attention")

    with loaded.lock, capture_layers(adapter, on_layer):
        logits = run_forward(loaded.model, input_ids)  # [n, V]
    mark("forward")

    blocks, edges = _stack_contributions(contributions, attention_weights)
    mark("attention")
    graph = ContributionGraph(blocks, edges, adapter.n_layers, len(ids), adapter.parallel_blocks)
    report("finding route nodes", None)
    detailed = detail_nodes(graph, options)
    mark("routes")
    report("neurons", None)
    neuron_table = _neuron_table(adapter, states, detailed, options.top_neurons)
    mark("neurons")
    report("vocabulary projections", None)
    projections = project_nodes(adapter, states, detailed, options.projection_top_k)
    mark("projections")
    predictions = _predictions(logits, options.prediction_top_k)

    data = TraceData(
        model=model_facts(loaded, adapter),
        settings=Settings(
            bos_prepended=options.prepend_bos and loaded.tokenizer.bos_token_id is not None,
            min_threshold=options.min_threshold,
            top_neurons=int(neuron_table.index.shape[1]),
            projection_top_k=int(projections.top_ids.shape[1]),
            prediction_top_k=int(predictions.ids.shape[1]),
        ),
        environment=environment(loaded),
        tokens=Tokens(prompt, np.asarray(ids, dtype=np.int32), display_strings(loaded, ids)),
        predictions=predictions,
        blocks=blocks,
        edges=edges,
        neurons=neuron_table,
        projections=projections,
    )
    data.vocabulary = _vocabulary(loaded, data)
    data.extra[DETAIL_EXTRA_KEY] = {
        "scope": options.detail,
        "token": len(ids) - 1,
        "threshold": options.detail_route_threshold,
    }
    mark("finish")
    return data


def detail_nodes(graph: ContributionGraph, options: TraceOptions) -> set[Node]:
    """The nodes whose neurons and projections the file stores (see `TraceOptions.detail`)."""
    if options.detail == DETAIL_ALL:
        return graph.reachable_from_outputs(options.min_threshold)
    # The renormalised route only: the raw-mode route is the larger (twice at 200 tokens on the
    # embedded model) and its extra nodes are computed on demand like any other.
    return graph.route(graph.n_tokens - 1, options.detail_route_threshold, RENORMALIZE).nodes


def attribute_layer(
    adapter: ArchitectureAdapter, captured: LayerCapture, keep_above: float
) -> decompose.LayerContributions:
    """The contributions of one captured layer (edges kept above `keep_above`)."""
    layer = captured.layer
    kv_of_head = torch.tensor(
        [adapter.kv_head_of(h) for h in range(adapter.n_heads)], device=captured.values.device
    )
    w_o = adapter.head_output_weights(layer).to(captured.values.device)
    source_outputs = decompose.head_source_outputs(captured.values, w_o, kv_of_head)
    if adapter.parallel_blocks:
        return decompose.attribute_parallel(
            layer,
            captured.resid_in,
            captured.attn_probs,
            source_outputs,
            captured.ffn_out,
            captured.resid_out,
            keep_above,
        )
    return decompose.attribute_sequential(
        layer,
        captured.resid_in,
        captured.attn_out,
        captured.attn_probs,
        source_outputs,
        captured.ffn_out,
        captured.resid_out,
        keep_above,
    )


def _stack_contributions(
    layers: list[decompose.LayerContributions], attention: list[np.ndarray]
) -> tuple[BlockContributions, AttentionEdges]:
    """Per-layer results -> the trace's dense block arrays and sorted sparse edge arrays."""
    blocks = BlockContributions(
        residual_attention=np.stack([c.residual_attention.cpu().numpy() for c in layers]),
        ffn=np.stack([c.ffn.cpu().numpy() for c in layers]),
        residual_ffn=None
        if layers[0].residual_ffn is None
        else np.stack([c.residual_ffn.cpu().numpy() for c in layers]),  # type: ignore[union-attr]
    )
    edges = AttentionEdges(
        layer=np.concatenate(
            [np.full(len(c.edge_target), c.layer, dtype=np.int32) for c in layers]
        ),
        target=np.concatenate([c.edge_target.cpu().numpy() for c in layers]).astype(np.int32),
        source=np.concatenate([c.edge_source.cpu().numpy() for c in layers]).astype(np.int32),
        head_contributions=np.concatenate([c.edge_heads.cpu().numpy() for c in layers]).astype(
            np.float32
        ),
        head_attention=np.concatenate(attention).astype(np.float32),
    )
    return blocks, edges


# --- neurons ---------------------------------------------------------------------------------
def _nodes_by_layer(reachable: set[Node], kind: str, n_layers: int) -> list[list[int]]:
    positions: list[list[int]] = [[] for _ in range(n_layers)]
    for node in reachable:
        if node.kind == kind:
            positions[node.layer].append(node.position)
    return [sorted(p) for p in positions]


def _neuron_table(
    adapter: ArchitectureAdapter, states: list[LayerState], reachable: set[Node], k: int
) -> NeuronTable:
    """Top-k neurons of every FFN node that can be on a route."""
    layers, positions, index, contribution, activation, rest = [], [], [], [], [], []
    for layer, where in enumerate(_nodes_by_layer(reachable, FFN, adapter.n_layers)):
        if not where:
            continue
        state = states[layer]
        rows = torch.tensor(where, device=state.resid_out.device)
        act = state.ffn_act[rows]
        whole = state.resid_out[rows]
        w_out = adapter.ffn_output_weights(layer).to(whole.device)
        result = neurons.neuron_contributions(act, w_out, whole, whole - state.ffn_out[rows])
        top_index, top_c, top_a = neurons.top_neurons(result.contribution, act, k)
        layers.append(np.full(len(where), layer, dtype=np.int32))
        positions.append(np.asarray(where, dtype=np.int32))
        index.append(top_index.cpu().numpy().astype(np.int32))
        contribution.append(top_c.cpu().numpy())
        activation.append(top_a.cpu().numpy())
        rest.append(result.rest.cpu().numpy())
    width = min(k, adapter.d_ffn)
    if not layers:
        empty_i = np.zeros((0, width), dtype=np.int32)
        empty_f = np.zeros((0, width), dtype=np.float32)
        return NeuronTable(
            np.zeros(0, np.int32), np.zeros(0, np.int32), empty_i, empty_f, empty_f.copy(),
            np.zeros(0, np.float32),
        )  # fmt: skip
    return NeuronTable(
        layer=np.concatenate(layers),
        position=np.concatenate(positions),
        index=np.concatenate(index),
        contribution=np.concatenate(contribution).astype(np.float32),
        activation=np.concatenate(activation).astype(np.float32),
        rest_contribution=np.concatenate(rest).astype(np.float32),
    )


# --- projections -----------------------------------------------------------------------------
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


# --- predictions, facts ----------------------------------------------------------------------
def _predictions(logits: torch.Tensor, k: int) -> Predictions:
    probs = torch.softmax(logits, dim=-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return Predictions(
        ids=top.indices.cpu().numpy().astype(np.int32),
        probs=top.values.cpu().numpy().astype(np.float32),
    )


def _vocabulary(loaded: LoadedModel, data: TraceData) -> dict[int, str]:
    ids: set[int] = set(int(i) for i in data.tokens.ids)
    ids.update(int(i) for i in data.predictions.ids.ravel())
    ids.update(int(i) for i in data.projections.top_ids.ravel())
    ids.update(int(i) for i in data.projections.bottom_ids.ravel())
    ordered = sorted(ids)
    return dict(zip(ordered, display_strings(loaded, ordered)))


def model_facts(loaded: LoadedModel, adapter: ArchitectureAdapter) -> ModelFacts:
    return ModelFacts(
        spec=loaded.spec,
        name=loaded.name,
        source=loaded.source,
        content_hash=loaded.content_hash,
        family=adapter.family,
        model_type=adapter.model_type,
        n_layers=adapter.n_layers,
        n_heads=adapter.n_heads,
        n_kv_heads=adapter.n_kv_heads,
        d_model=adapter.d_model,
        d_head=adapter.d_head,
        d_ffn=adapter.d_ffn,
        vocab_size=adapter.vocab_size,
        context_length=adapter.context_length,
        parallel_blocks=adapter.parallel_blocks,
    )


def environment(loaded: LoadedModel) -> Environment:
    return Environment(
        lmscope_version=__version__,
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        python_version=platform.python_version(),
        dtype=str(loaded.dtype).removeprefix("torch."),
        device=loaded.device,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
