"""Experts of a mixture-of-experts layer: capture what routing decided, recompute each chosen
expert, and score experts and expert neurons (docs/method.md, "Experts (mixture of experts)").

transformers keeps every routed expert of a layer in ONE module (`experts`, 3-D parameters), so
no hook can see one expert's activations. What the forward pass decided is captured instead,
from the experts module's *inputs* (a pre-hook): the normed input x̂ [n, d], the chosen experts
[n, k] and their gates [n, k], exactly as the forward multiplies them. Each chosen expert's
activations a_e = act(x̂ W_gate^e) ⊙ (x̂ W_up^e) are then recomputed from its own weights, in
float32: the expert's FFN, not a forward pass of the model. A shared expert is a real module,
so its activations are captured (its `down_proj` input), and so is its gate's logit.

The invariant Σ_e g·a_e·W_out^e + Σ_s g_s·a_s·W_out^s = f_i (the captured block output) is
tested on every MoE family. Shapes: n tokens, d width, k chosen, S shared, d_e / d_s widths,
F nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmscope.attribution import experts as maths
from lmscope.graph.nodes import FFN, Node
from lmscope.models.moe import MoeAdapter, MoeLayer
from lmscope.traces.experts import ExpertLayout, ExpertTable, to_extra


@dataclass
class MoeCapture:
    """What routing decided in one sparse layer (float32 / long, on the layer's device)."""

    normed: torch.Tensor  # [n, d]          x̂, the experts' (and router's) input
    chosen: torch.Tensor  # [n, k] long      the experts chosen per token, router order
    gates: torch.Tensor  # [n, k]            g[i, e] as the forward multiplied
    shared_gates: torch.Tensor  # [n, S]     sigmoid(gate logit), or 1 without a gate
    shared_act: list[torch.Tensor]  # S x [n, d_s] shared experts' activations
    routed_out: torch.Tensor  # [n, d]       the experts module's output Σ_e g·E_e(x̂)

    def rows(self, at: torch.Tensor | slice) -> MoeCapture:
        """The capture of some token rows only."""
        return MoeCapture(
            self.normed[at],
            self.chosen[at],
            self.gates[at],
            self.shared_gates[at],
            [a[at] for a in self.shared_act],
            self.routed_out[at],
        )


def _f32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float()


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """[1, n, *] or [n, *] -> [n, *] (the blocks flatten batch and tokens themselves)."""
    return tensor.reshape(-1, tensor.shape[-1])


def hook_moe(moe: MoeLayer, parts: dict[str, object]) -> list[torch.utils.hooks.RemovableHandle]:
    """Read-only hooks on one sparse layer; they fill `parts["moe"]` by the time the block's
    output exists. Hooks return None, so nothing the model computes changes."""
    seen: dict[str, object] = {}

    def block_input(_module, _args):
        seen.clear()  # the shared expert may run before the routed ones (Qwen2-MoE)
        seen["shared_act"], seen["shared_logit"] = [], []

    def experts_input(_module, args, kwargs):
        names = ("hidden_states", "top_k_index", "top_k_weights")
        values = list(args) + [kwargs[name] for name in names[len(args) :]]
        seen["normed"], seen["chosen"], seen["gates"] = values[:3]

    def experts_output(_module, _args, output):
        seen["routed_out"] = output

    def shared_act(_module, args):
        seen["shared_act"].append(_f32(_rows(args[0])))  # type: ignore[attr-defined]

    def shared_gate(_module, _args, output):
        seen["shared_logit"].append(_f32(_rows(output)))  # type: ignore[attr-defined]

    def block_output(_module, _args, _output):
        n = seen["normed"].shape[0]  # type: ignore[attr-defined]
        logits: list[torch.Tensor] = seen["shared_logit"]  # type: ignore[assignment]
        gates = [torch.sigmoid(logit[:, 0]) for logit in logits]
        ones = [torch.ones(n) for _ in range(len(moe.shared) - len(gates))]
        device = seen["normed"].device  # type: ignore[attr-defined]
        parts["moe"] = MoeCapture(
            normed=_f32(_rows(seen["normed"])),  # type: ignore[arg-type]
            chosen=_rows(seen["chosen"]).long(),  # type: ignore[arg-type]
            gates=_f32(_rows(seen["gates"])),  # type: ignore[arg-type]
            shared_gates=torch.stack([*gates, *(o.to(device) for o in ones)], dim=1)
            if moe.shared
            else torch.zeros(n, 0, device=device),
            shared_act=list(seen["shared_act"]),  # type: ignore[call-overload]
            routed_out=_f32(_rows(seen["routed_out"])),  # type: ignore[arg-type]
        )
        seen.clear()

    handles = [
        moe.block.register_forward_pre_hook(block_input),
        moe.experts.register_forward_pre_hook(experts_input, with_kwargs=True),
        moe.experts.register_forward_hook(experts_output),
        moe.block.register_forward_hook(block_output),
    ]
    for shared in moe.shared:
        handles.append(shared.down_proj.register_forward_pre_hook(shared_act))
        if shared.gate is not None:
            handles.append(shared.gate.register_forward_hook(shared_gate))
    return handles


# --- recomputing experts ------------------------------------------------------------------------
def expert_activations(
    adapter: MoeAdapter, layer: int, expert: int, normed: torch.Tensor
) -> torch.Tensor:
    """a_e = act(x̂ W_gate^e) ⊙ (x̂ W_up^e) of routed expert `expert`: normed [r, d] -> [r, d_e]
    float32 (the expert's FFN on the rows given, from its own weights)."""
    gate_up, _ = adapter.expert_weights(layer, expert)  # [2·d_e, d]
    gate, up = (normed @ gate_up.to(normed.device).float().T).chunk(2, dim=-1)  # [r, d_e] each
    return adapter.expert_activation(layer)(gate) * up


def expert_parts(
    adapter: MoeAdapter, layer: int, moe: MoeCapture, rows: torch.Tensor
) -> maths.ExpertParts:
    """The parts of FFN nodes `rows` [F] of a sparse layer: every chosen expert's and every
    shared expert's gate, activations and output rows (see `attribution.experts`)."""
    layout: ExpertLayout = adapter.expert_layout
    normed = moe.normed[rows]  # [F, d]
    chosen = moe.chosen[rows]  # [F, k]
    gates = moe.gates[rows]  # [F, k]
    activation = torch.zeros(
        len(rows), layout.top_k, layout.d_expert, dtype=torch.float32, device=normed.device
    )  # [F, k, d_e]
    for expert in chosen.unique().tolist():
        node, slot = (chosen == expert).nonzero(as_tuple=True)
        activation[node, slot] = expert_activations(adapter, layer, expert, normed[node])
    w_out = [
        adapter.expert_weights(layer, e)[1].to(normed.device).float()
        for e in range(layout.n_experts)
    ]  # E x [d_e, d] (views, float32 copies of float32 weights are the weights themselves)
    shared = [
        maths.SharedPart(
            gate=moe.shared_gates[rows, s],
            activation=moe.shared_act[s][rows],
            w_out=adapter.shared_expert_weights(layer, s)[2].to(normed.device).float(),
        )
        for s in range(layout.n_shared)
    ]
    return maths.ExpertParts(chosen, gates, activation, w_out, shared)


def node_neuron_width(adapter: object, k: int) -> int:
    """Neurons per FFN node a neuron table can hold: `k`, or fewer where a sparse layer's node
    has fewer parts (k chosen and S shared experts' neurons) or a dense layer is narrower."""
    width = min(k, int(getattr(adapter, "d_ffn")))  # noqa: B009
    if not isinstance(adapter, MoeAdapter):
        return width
    dense = adapter.dense_width or width  # the narrowest dense layer of a mixed model
    return min(width, adapter.expert_layout.node_neurons, dense)


# --- the steps on captured layers ---------------------------------------------------------------
@dataclass
class NodeNeurons:
    """Every neuron that is a part of F nodes of a sparse layer, in flat ids (P = k·d_e + S·d_s
    per node: the chosen and the shared experts' neurons)."""

    index: torch.Tensor  # [F, P] long   flat neuron ids (ExpertLayout.flat_id)
    contribution: torch.Tensor  # [F, P]  c at the neuron step
    activation: torch.Tensor  # [F, P]    a_e[i, k], signed, gate not folded in
    rest: torch.Tensor  # [F]


def node_neurons(
    adapter: MoeAdapter,
    layer: int,
    moe: MoeCapture,
    rows: torch.Tensor,
    whole: torch.Tensor,
    ffn_out: torch.Tensor,
) -> NodeNeurons:
    """The neuron step of FFN nodes `rows` [F] (whole x' [F, d], ffn_out f [F, d])."""
    layout: ExpertLayout = adapter.expert_layout
    parts = expert_parts(adapter, layer, moe, rows)
    step = maths.expert_neuron_step(whole, parts, whole - ffn_out)
    n_nodes, _, d_e = parts.activation.shape
    local = torch.arange(d_e, device=whole.device)
    index = [(parts.chosen * d_e)[:, :, None] + local]  # [F, k, d_e]
    contribution = [step.routed]
    activation = [parts.activation]
    for s, shared in enumerate(parts.shared):
        start = layout.slot_start(layout.n_experts + s)
        ids = start + torch.arange(layout.d_shared, device=whole.device)
        index.append(ids.expand(n_nodes, 1, -1))
        contribution.append(step.shared[s][:, None])
        activation.append(shared.activation[:, None])
    return NodeNeurons(
        index=torch.cat([i.reshape(n_nodes, -1) for i in index], dim=1),
        contribution=torch.cat([c.reshape(n_nodes, -1) for c in contribution], dim=1),
        activation=torch.cat([a.reshape(n_nodes, -1) for a in activation], dim=1),
        rest=step.rest,
    )


@dataclass
class NodeExperts:
    """The expert step of F nodes: k chosen then S shared slots per node, router order."""

    slot: torch.Tensor  # [F, k+S] long  expert slots (shared expert s is slot E + s)
    gate: torch.Tensor  # [F, k+S]
    contribution: torch.Tensor  # [F, k+S]
    rest: torch.Tensor  # [F]


def node_experts(
    adapter: MoeAdapter,
    layer: int,
    moe: MoeCapture,
    rows: torch.Tensor,
    whole: torch.Tensor,
    ffn_out: torch.Tensor,
) -> NodeExperts:
    """The expert step of FFN nodes `rows` [F] (whole x' [F, d], ffn_out f [F, d])."""
    layout: ExpertLayout = adapter.expert_layout
    parts = expert_parts(adapter, layer, moe, rows)
    step = maths.expert_step(whole, parts, whole - ffn_out)
    n_nodes = len(rows)
    shared_slots = torch.arange(layout.n_experts, layout.n_slots, device=whole.device)
    return NodeExperts(
        slot=torch.cat([parts.chosen, shared_slots.expand(n_nodes, -1)], dim=1),
        gate=torch.cat([parts.gates, moe.shared_gates[rows]], dim=1),
        contribution=torch.cat([step.routed, step.shared], dim=1),
        rest=step.rest,
    )


def expert_table(
    adapter: object, states: Sequence[Any], detailed: set[Node], positions: np.ndarray
) -> dict[str, Any] | None:
    """The `extra["lmscope.experts"]` value of a trace: the expert step of every detailed FFN
    node of a sparse layer (`states`: the engine's LayerStates, narrowed to some token rows;
    node positions index those rows and `positions` [p] maps them to token positions), or None
    for a dense model."""
    if not isinstance(adapter, MoeAdapter):
        return None
    layout: ExpertLayout = adapter.expert_layout
    columns: dict[str, list[np.ndarray]] = {key: [] for key in ExpertTable.__annotations__}
    for layer, state in enumerate(states):
        where = sorted(n.position for n in detailed if n.kind == FFN and n.layer == layer)
        if state.moe is None or not where:
            continue
        rows = torch.tensor(where, device=state.resid_out.device)
        found = node_experts(
            adapter,
            layer,
            state.moe,
            rows,
            state.resid_out[rows].float(),
            state.ffn_out[rows].float(),
        )
        # Strongest contribution first, ties by slot (the order cards and tables show).
        order = torch.sort(found.contribution, dim=1, descending=True, stable=True).indices
        columns["layer"].append(np.full(len(where), layer, dtype=np.int32))
        columns["position"].append(positions[where].astype(np.int32))
        for key in ("slot", "gate", "contribution"):
            column = "expert" if key == "slot" else key
            columns[column].append(getattr(found, key).gather(1, order).cpu().numpy())
        columns["rest"].append(found.rest.cpu().numpy())
    width = layout.top_k + layout.n_shared
    table = ExpertTable(
        **{
            key: np.concatenate(parts)
            if parts
            else np.zeros((0, width) if key in ("expert", "gate", "contribution") else 0)
            for key, parts in columns.items()
        }
    )
    return to_extra(layout, table)


def reconstruct_ffn(adapter: MoeAdapter, layer: int, moe: MoeCapture) -> torch.Tensor:
    """Σ_e q[e,i] + Σ_s g_s · E_s(x̂_i) at every token: [n, d]. Equals the captured FFN update
    (the adapter invariant of an MoE layer, tested on every MoE family)."""
    parts = expert_parts(adapter, layer, moe, torch.arange(moe.normed.shape[0]))
    return maths.routed_updates(parts).sum(1) + maths.shared_updates(parts).sum(1)
