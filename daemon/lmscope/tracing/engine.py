"""Trace one prompt: one hooked forward pass, then everything a `.lmtrace` holds.

Stages (each reported through `progress`):
1. tokenize (BOS prepended once when the tokenizer defines one, method.md "BOS");
2. capture + attribute layer by layer (attention edges, residual and FFN contributions), with a
   cancellation check between layers;
3. find the nodes that can lie on a route at `min_threshold` (the union over output tokens);
4. neuron detail and vocabulary projections for those nodes only.

This module only orchestrates: the maths is in `lmscope.attribution`, the hooks in `capture`.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import transformers

from lmscope.__about__ import __version__
from lmscope.attribution import decompose, lens, neurons
from lmscope.attribution.budget import budget_for
from lmscope.attribution.graph import Node
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


@dataclass(frozen=True)
class TraceOptions:
    prepend_bos: bool = True
    min_threshold: float = 0.01  # routes answerable for every τ >= this
    top_neurons: int = 64  # neurons stored per FFN node (at least 50 wanted)
    projection_top_k: int = 10
    prediction_top_k: int = 10


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
def run_trace(
    loaded: LoadedModel,
    prompt: str,
    options: TraceOptions | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TraceData:
    """Trace `prompt` on a loaded model and return the complete `TraceData`."""
    options = options or TraceOptions()
    report = progress or (lambda _message, _fraction: None)
    adapter = adapter_for(loaded.model)
    ids = tokenize(loaded, prompt, options.prepend_bos, adapter.context_length)
    input_ids = torch.tensor(ids, dtype=torch.long)

    states: list[LayerState] = []
    contributions: list[decompose.LayerContributions] = []
    attention_weights: list[np.ndarray] = []

    def on_layer(captured: LayerCapture) -> None:
        if should_cancel is not None and should_cancel():
            raise TraceCancelled("trace cancelled")
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

    with loaded.lock, capture_layers(adapter, on_layer):
        logits = run_forward(loaded.model, input_ids)  # [n, V]

    blocks, edges = _stack_contributions(contributions, attention_weights)
    graph = ContributionGraph(blocks, edges, adapter.n_layers, len(ids), adapter.parallel_blocks)
    report("finding route nodes", None)
    reachable = graph.reachable_from_outputs(options.min_threshold)
    report("neurons", None)
    neuron_table = _neuron_table(adapter, states, reachable, options.top_neurons)
    report("vocabulary projections", None)
    projections = _projections(adapter, states, reachable, options.projection_top_k)
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
    return data


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


def _projections(
    adapter: ArchitectureAdapter, states: list[LayerState], reachable: set[Node], k: int
) -> Projections:
    """Logit lens of residual nodes (with rank change) and DLA of block updates, for the nodes
    that can be on a route.

    Work goes by chunks of positions: every vector of those positions (all layers) is stacked
    and projected in one matrix product, so the unembedding is read once per chunk rather than
    once per layer (reading it dominates at these sizes), and each lens row finds the full
    logits of its previous residual node in the same chunk for the rank change.
    """
    w_u = adapter.unembedding_weight()
    b_u = adapter.unembedding_bias()
    norm = adapter.final_norm()
    k = min(k, adapter.vocab_size)
    positions = sorted({node.position for node in reachable})
    rows = budget_for(w_u.device).projection_bytes // (4 * adapter.vocab_size)
    per_chunk = max(1, rows // (1 + 4 * adapter.n_layers))

    def lens_vectors(v: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return norm(v.to(w_u.device, w_u.dtype)).float()

    meta: list[tuple[str, Node]] = []
    chunks: list[tuple[lens.TokenLists, torch.Tensor]] = []
    for start in range(0, len(positions), per_chunk):
        where = positions[start : start + per_chunk]
        blocks = _projection_blocks(adapter, states, torch.tensor(where), lens_vectors)
        c = len(where)
        scores = lens.logits(torch.cat([b.vectors.to(w_u.device) for b in blocks]), w_u, None)
        if b_u is not None:  # the unembedding bias belongs to the lens, not to updates
            for number, block in enumerate(blocks):
                if block.kind == PROJ_LENS:
                    scores[number * c : (number + 1) * c] += b_u.float()
        wanted, prev_rows = [], []
        for number, block in enumerate(blocks):
            for offset, i in enumerate(where):
                node = Node(block.node_kind, block.layer, i)
                if node in reachable:
                    wanted.append(number * c + offset)
                    prev_rows.append(-1 if block.prev is None else block.prev * c + offset)
                    meta.append((block.kind, node))
        if not wanted:
            continue
        # Nearly every row is wanted: rank and list all rows in place, then keep the wanted
        # ones (copying [R, V] score rows would cost more than the extra top-k).
        all_lists = lens.token_lists(scores, k)
        keep = torch.tensor(wanted, device=scores.device)
        lists = lens.TokenLists(
            all_lists.top_ids[keep],
            all_lists.top_logits[keep],
            all_lists.bottom_ids[keep],
            all_lists.bottom_logits[keep],
        )
        prev = torch.tensor(prev_rows, device=scores.device)
        ranks = lens.ranks_in_rows(scores, prev, lists.top_ids)
        chunks.append((lists, ranks))

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
