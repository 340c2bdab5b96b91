"""One captured layer -> what the trace keeps of it: contributions, and the per-layer states the
later stages read (neurons, projections).

`attribute_layer` runs the attention and FFN steps of `attribution.decompose` on a layer's
capture (docs/method.md, "Splitting each block's update"); `stack_contributions` turns the
per-layer results into the trace's dense block arrays and sorted sparse edges; `neuron_table`
ranks the neurons of chosen FFN nodes ("Neuron step").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmscope.attribution import decompose, neurons, overshoot
from lmscope.graph.nodes import FFN, Node
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.traces.data import AttentionEdges, BlockContributions, NeuronTable
from lmscope.tracing.capture import CaptureError, LayerCapture, recompute_activations
from lmscope.tracing.experts import MoeCapture, node_neuron_width, node_neurons


@dataclass
class LayerState:
    """What later stages need from one layer, on the layer's device. The tensors may be kept in
    the model's dtype (`compact`); readers take rows and convert them to float32 (`rows`).

    The neuron activations are kept as themselves (`ffn_act`) or, where the FFN can recompute
    them and its input is the narrower (d < d_ffn), as that input x̂ (`ffn_input`): only the
    detailed nodes' rows are ever read (`activations`), so [n, d] is kept instead of
    [n, d_ffn], 2.7x less on SmolLM2 and 3.5x on Llama-3-8B."""

    resid_in: torch.Tensor  # [n, d]
    attn_out: torch.Tensor  # [n, d]
    ffn_act: torch.Tensor | None  # [n, d_ffn]; None when ffn_input is kept instead
    ffn_out: torch.Tensor  # [n, d]
    resid_out: torch.Tensor  # [n, d]
    # Post-norm blocks: the output norms' frozen scales D [n, d] (LayerCapture); else None.
    attn_scale: torch.Tensor | None = None
    ffn_scale: torch.Tensor | None = None
    moe: MoeCapture | None = None  # a mixture-of-experts layer (then ffn_act is [n, 0])
    ffn_input: torch.Tensor | None = None  # [n, d] x̂ as the FFN received it (LayerCapture)
    # A GPU layer's state held in host memory until the routes are known (`to_host`): `home`
    # is the GPU, `copied` the CUDA event after which the host copies hold its values (the
    # copies run on the GPU's stream, behind the layer's own work). None, None: not moved.
    home: torch.device | None = None
    copied: torch.cuda.Event | None = None

    @staticmethod
    def rows(tensor: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """tensor[at] in float32: [n, *] -> [len(at), *] (every reader of a state goes here, or
        to `stacked_rows` for single rows of many tensors)."""
        return tensor[at].float()

    @staticmethod
    def stacked_rows(picks: list[tuple[torch.Tensor, int]], device: torch.device) -> torch.Tensor:
        """Each (tensor, row) of `picks` (one or more) as tensor[row], stacked on `device` in
        float32: [len(picks), d].

        One copy per device the rows live on rather than one per row: many scattered rows (the
        projections read a few of every layer) cost a handful of GPU launches, not hundreds."""
        by_device: dict[torch.device, list[int]] = {}
        for slot, (tensor, _) in enumerate(picks):
            by_device.setdefault(tensor.device, []).append(slot)

        def stack(slots: list[int]) -> torch.Tensor:
            views = [picks[slot][0][picks[slot][1]] for slot in slots]
            return torch.stack(views).to(device).float()

        if len(by_device) == 1:
            return stack(list(range(len(picks))))
        first, at = picks[0]
        stacked = torch.empty((len(picks), *first[at].shape), device=device)
        for slots in by_device.values():  # layers spread over devices (a device map)
            stacked[torch.tensor(slots, device=device)] = stack(slots)
        return stacked

    def keep_rows(self, at: torch.Tensor) -> LayerState:
        """The state of token rows `at` [p] only (copies: the whole tensors can be freed), on
        the layer's own device (back on its GPU if the state was held on the host)."""
        if self.copied is not None:
            self.copied.synchronize()  # the host copies hold the layer's values from here on
        home = self.home

        def take(tensor: torch.Tensor) -> torch.Tensor:
            rows = tensor[at.to(tensor.device)]
            return rows if home is None else rows.to(home)

        moe = None if self.moe is None else self.moe.rows(at.to(self.moe.normed.device))
        return self._with_tensors(take, moe)

    def _with_tensors(
        self, move: Callable[[torch.Tensor], torch.Tensor], moe: MoeCapture | None
    ) -> LayerState:
        """A state of `move` applied to every tensor this one holds (None stays None), with
        `moe` for its mixture-of-experts capture: the one list of the state's tensors."""

        def optional(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else move(tensor)

        return LayerState(
            move(self.resid_in),
            move(self.attn_out),
            optional(self.ffn_act),
            move(self.ffn_out),
            move(self.resid_out),
            attn_scale=optional(self.attn_scale),
            ffn_scale=optional(self.ffn_scale),
            moe=moe,
            ffn_input=optional(self.ffn_input),
        )

    def to_host(
        self, shared: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[LayerState, tuple[torch.Tensor, torch.Tensor] | None]:
        """This state held in pinned host memory if it is on a GPU (else itself), and the pair
        (GPU output, its host copy) for the next layer's call: its input is that output, so
        the next state shares the host copy (`shared`) as it shared the GPU tensor.

        Until the routes are known every layer's state is kept, b · n · 4d bytes a layer (4.2
        GB for the Llama-3-8B shape in bf16 at 4,000 tokens), but read only at the few detailed
        positions (`keep_rows`). The copies are queued on the GPU's stream, not waited for: the
        forward goes on while they run. Where pinned memory cannot be had the state stays."""
        device = self.resid_out.device
        if not _waits_on_host(device):
            return self, None
        copies: dict[int, torch.Tensor] = {}  # one copy of a tensor the state holds twice
        pinned = device.type == "cuda"  # page-locked: the GPU copies into it asynchronously

        def host(tensor: torch.Tensor) -> torch.Tensor:
            if shared is not None and tensor is shared[0]:
                return shared[1]
            if id(tensor) not in copies:
                copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pinned)
                copies[id(tensor)] = copy.copy_(tensor, non_blocking=True)
            return copies[id(tensor)]

        try:
            moved = self._with_tensors(host, self.moe)  # routing, expert rows: kept where they are
            moved.home = device
            moved.copied = _copies_queued(device)  # behind every copy queued above
        except RuntimeError:  # no pinned memory to be had: the state stays on its GPU
            return self, None
        return moved, (self.resid_out, moved.resid_out)

    @classmethod
    def compact(
        cls, captured: LayerCapture, dtype: torch.dtype, previous: LayerState | None = None
    ) -> LayerState:
        """The state of a captured layer, its activations kept in `dtype` (the model's) where
        that loses nothing: the captured float32 copies of a bf16 model's activations hold bf16
        values, so half the memory holds the same numbers. A tensor that does not round-trip
        (an output norm's scale lmscope computed in float32) stays float32. The layer's input
        is the `previous` layer's kept output where the two are equal (a float32 model's are
        one tensor already; a bf16 model's are two copies of it), so it is kept once."""

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            if dtype == torch.float32 or tensor.dtype != torch.float32:
                return tensor
            narrow = tensor.to(dtype)
            return narrow if torch.equal(narrow.float(), tensor) else tensor

        recomputable = (
            captured.moe is None
            and captured.ffn_input is not None
            and captured.ffn_input.shape[-1] < captured.ffn_act.shape[-1]
        )
        resid_in = keep(captured.resid_in)
        if previous is not None and _same_values(previous.resid_out, resid_in):
            resid_in = previous.resid_out
        return cls(
            resid_in,
            keep(captured.attn_out),
            None if recomputable else keep(captured.ffn_act),
            keep(captured.ffn_out),
            keep(captured.resid_out),
            attn_scale=captured.attn_scale,
            ffn_scale=captured.ffn_scale,
            moe=captured.moe,
            ffn_input=captured.ffn_input if recomputable else None,
        )


def _waits_on_host(device: torch.device) -> bool:
    """Whether a layer state on `device` waits in host memory for the routes (a GPU's)."""
    return device.type == "cuda"


def _copies_queued(device: torch.device) -> torch.cuda.Event:
    """An event on `device`'s stream behind the copies queued so far: once it has happened,
    their host memory holds the values."""
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _same_values(kept: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Whether `tensor` holds exactly `kept`'s values (the same memory, or equal copies)."""
    if (kept.shape, kept.dtype, kept.device) != (tensor.shape, tensor.dtype, tensor.device):
        return False
    same_memory = kept.data_ptr() == tensor.data_ptr() and kept.stride() == tensor.stride()
    return same_memory or torch.equal(kept, tensor)


@dataclass
class DetailRows:
    """The layer states narrowed to the token rows the detail stages read (`narrow_states`)."""

    states: list[LayerState]  # every tensor [p, *]: row r is token position `positions[r]`
    nodes: set[Node]  # the detailed nodes, their positions renumbered to those rows
    positions: np.ndarray  # int32 [p] ascending: the token position of each kept row

    def token_positions(self, rows: np.ndarray) -> np.ndarray:
        """Row numbers of the narrowed states -> the token positions they hold (int32)."""
        return self.positions[rows].astype(np.int32)


def narrow_states(states: list[LayerState], nodes: set[Node]) -> DetailRows:
    """Keep of every layer's state only the token rows of `nodes` (the detail stages read
    nothing else), and free the rest: a route touches few positions (24 of 200 and 18 of 1000
    on the embedded model), so the states shrink ~10x before the projections' scratch is made.
    `states` is emptied as each layer is narrowed, so the whole and the narrowed copy of all
    layers never exist at once."""
    kept = sorted({node.position for node in nodes})
    row_of = {position: row for row, position in enumerate(kept)}
    at = torch.tensor(kept, dtype=torch.long)
    narrowed = []
    while states:
        narrowed.append(states.pop(0).keep_rows(at))
    return DetailRows(
        narrowed,
        {Node(node.kind, node.layer, row_of[node.position]) for node in nodes},
        np.asarray(kept, dtype=np.int32),
    )


def activations(
    adapter: ArchitectureAdapter, layer: int, state: LayerState, at: torch.Tensor
) -> torch.Tensor:
    """The neuron activations of rows `at` of a dense layer: [len(at), d_ffn] float32, kept or
    recomputed from the kept FFN input (`capture.recompute_activations`)."""
    if state.ffn_act is not None:
        return LayerState.rows(state.ffn_act, at)
    if state.ffn_input is None:
        raise CaptureError(f"layer {layer} kept neither its activations nor its FFN input")
    return recompute_activations(adapter, layer, state.ffn_input[at])


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
            act = activations(adapter, layer, state, rows)
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
