"""One captured layer -> what the trace keeps of it: contributions, and the per-layer states the
later stages read (neurons, projections).

`attribute_layer` runs the attention and FFN steps of `attribution.decompose` on a layer's
capture (docs/method.md, "Splitting each block's update"); `stack_contributions` turns the
per-layer results into the trace's dense block arrays and sorted sparse edges; `neuron_table`
ranks the neurons of chosen FFN nodes ("Neuron step").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmscope.attribution import decompose, neurons, overshoot
from lmscope.graph.nodes import FFN, Node
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.traces.data import AttentionEdges, BlockContributions, NeuronTable
from lmscope.tracing.capture import LayerCapture
from lmscope.tracing.experts import MoeCapture, node_neuron_width, node_neurons


@dataclass
class LayerState:
    """What later stages need from one layer, on the layer's device. The tensors may be kept in
    the model's dtype (`compact`); readers take rows and convert them to float32 (`rows`)."""

    resid_in: torch.Tensor  # [n, d]
    attn_out: torch.Tensor  # [n, d]
    ffn_act: torch.Tensor  # [n, d_ffn]
    ffn_out: torch.Tensor  # [n, d]
    resid_out: torch.Tensor  # [n, d]
    # Post-norm blocks: the output norms' frozen scales D [n, d] (LayerCapture); else None.
    attn_scale: torch.Tensor | None = None
    ffn_scale: torch.Tensor | None = None
    moe: MoeCapture | None = None  # a mixture-of-experts layer (then ffn_act is [n, 0])

    @staticmethod
    def rows(tensor: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """tensor[at] in float32: [n, *] -> [len(at), *] (every reader of a state goes here)."""
        return tensor[at].float()

    @classmethod
    def compact(cls, captured: LayerCapture, dtype: torch.dtype) -> LayerState:
        """The state of a captured layer, its activations kept in `dtype` (the model's) where
        that loses nothing: the captured float32 copies of a bf16 model's activations hold bf16
        values, so half the memory holds the same numbers. A tensor that does not round-trip
        (an output norm's scale lmscope computed in float32) stays float32."""

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            if dtype == torch.float32 or tensor.dtype != torch.float32:
                return tensor
            narrow = tensor.to(dtype)
            return narrow if torch.equal(narrow.float(), tensor) else tensor

        return cls(
            keep(captured.resid_in),
            keep(captured.attn_out),
            keep(captured.ffn_act),
            keep(captured.ffn_out),
            keep(captured.resid_out),
            attn_scale=captured.attn_scale,
            ffn_scale=captured.ffn_scale,
            moe=captured.moe,
        )


def attribute_layer(
    adapter: ArchitectureAdapter, captured: LayerCapture, keep_above: float
) -> decompose.LayerContributions:
    """The contributions of one captured layer (edges kept above `keep_above`)."""
    layer = captured.layer
    kv_of_head = torch.tensor(
        [adapter.kv_head_of(h) for h in range(adapter.n_heads)], device=captured.values.device
    )
    w_o = adapter.head_output_weights(layer).to(captured.values.device)
    device = captured.values.device
    heads = decompose.head_parts(captured.values, w_o, kv_of_head, overshoot.kernel_runs(device))
    if adapter.parallel_blocks:
        return decompose.attribute_parallel(
            layer,
            captured.resid_in,
            captured.attn_probs,
            heads,
            captured.ffn_out,
            captured.resid_out,
            keep_above,
            captured.attn_scale,
        )
    return decompose.attribute_sequential(
        layer,
        captured.resid_in,
        captured.attn_out,
        captured.attn_probs,
        heads,
        captured.ffn_out,
        captured.resid_out,
        keep_above,
        captured.attn_scale,
    )


def stack_contributions(
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


def nodes_by_layer(reachable: set[Node], kind: str, n_layers: int) -> list[list[int]]:
    positions: list[list[int]] = [[] for _ in range(n_layers)]
    for node in reachable:
        if node.kind == kind:
            positions[node.layer].append(node.position)
    return [sorted(p) for p in positions]


def neuron_table(
    adapter: ArchitectureAdapter, states: list[LayerState], reachable: set[Node], k: int
) -> NeuronTable:
    """Top-k neurons of every FFN node that can be on a route."""
    layers, positions, index, contribution, activation, rest = [], [], [], [], [], []
    k = node_neuron_width(adapter, k)  # min(k, d_ffn); fewer where an MoE node has fewer
    for layer, where in enumerate(nodes_by_layer(reachable, FFN, adapter.n_layers)):
        if not where:
            continue
        state = states[layer]
        rows = torch.tensor(where, device=state.resid_out.device)
        whole = LayerState.rows(state.resid_out, rows)
        ffn_out = LayerState.rows(state.ffn_out, rows)
        if state.moe is not None:  # the experts' neurons, flat ids (docs/method.md, "Experts")
            found = node_neurons(adapter, layer, state.moe, rows, whole, ffn_out)  # type: ignore[arg-type]
            order, top_c, top_a = neurons.top_neurons(found.contribution, found.activation, k)
            top_index, result = found.index.gather(1, order), found
        else:
            act = LayerState.rows(state.ffn_act, rows)
            w_out = adapter.ffn_output_weights(layer).to(whole.device)
            scale = None if state.ffn_scale is None else state.ffn_scale[rows]  # [F, d]
            result = neurons.neuron_contributions(  # type: ignore[assignment]
                act, w_out, whole, whole - ffn_out, scale
            )
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
