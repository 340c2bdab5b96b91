"""The live queries of a sparse (mixture-of-experts) layer, answered from one captured layer:
its nodes' experts and expert neurons, one expert or neuron across nodes, and the vectors the
expert projections read (docs/method.md, "Experts"). `tracing/live.py` runs the model and
dispatches here when the layer it captured is sparse; nothing here runs the model.

Neuron ids are flat over the layer's experts (`lmscope.traces.experts.ExpertLayout`). Shapes:
d width, F nodes.
"""

from __future__ import annotations

import torch

from lmscope.errors import LmscopeError
from lmscope.models.moe import MoeAdapter
from lmscope.traces.live import ExpertAt, ExpertList, NeuronAt, NeuronList
from lmscope.tracing.capture import LayerCapture
from lmscope.tracing.experts import MoeCapture, expert_parts, node_experts, node_neurons


def _moe(captured: LayerCapture) -> MoeCapture:
    if captured.moe is None:
        raise LmscopeError(f"layer {captured.layer} has a dense FFN: it has no experts")
    return captured.moe


def _rows(captured: LayerCapture, positions: list[int]) -> torch.Tensor:
    return torch.tensor(positions, device=captured.resid_out.device)


def neurons(adapter: MoeAdapter, captured: LayerCapture, position: int) -> NeuronList:
    """Every neuron that is a part of FFN node (layer, position), strongest first."""
    rows = _rows(captured, [position])
    with torch.inference_mode():
        found = node_neurons(
            adapter, captured.layer, _moe(captured), rows,
            captured.resid_out[rows], captured.ffn_out[rows],
        )  # fmt: skip
        order = torch.sort(found.contribution[0], descending=True, stable=True).indices
    return NeuronList(
        index=found.index[0, order].cpu().numpy(),
        contribution=found.contribution[0, order].cpu().numpy(),
        activation=found.activation[0, order].cpu().numpy(),
        rest=float(found.rest[0]),
    )


def neuron_at(
    adapter: MoeAdapter, captured: LayerCapture, neuron: int, positions: list[int]
) -> dict[int, NeuronAt]:
    """Flat neuron `neuron` at each FFN node; where its expert was not chosen it is no part:
    contribution 0 and activation 0 (nothing was sent)."""
    rows = _rows(captured, positions)
    with torch.inference_mode():
        found = node_neurons(
            adapter, captured.layer, _moe(captured), rows,
            captured.resid_out[rows], captured.ffn_out[rows],
        )  # fmt: skip
    out: dict[int, NeuronAt] = {}
    for r, p in enumerate(positions):
        hit = (found.index[r] == neuron).nonzero()
        rest = float(found.rest[r])
        if len(hit) == 0:
            out[p] = NeuronAt(0.0, 0.0, rest)
        else:
            c = int(hit[0, 0])
            out[p] = NeuronAt(float(found.contribution[r, c]), float(found.activation[r, c]), rest)
    return out


def output_row(adapter: MoeAdapter, layer: int, neuron: int) -> torch.Tensor:
    """W_out^e[k] of flat neuron `neuron`: [d] (a view of the expert's weights)."""
    layout = adapter.expert_layout
    try:
        slot, local = layout.split(neuron)
    except ValueError as e:
        raise LmscopeError(str(e)) from None
    if slot < layout.n_experts:
        return adapter.expert_weights(layer, slot)[1][local]
    return adapter.shared_expert_weights(layer, slot - layout.n_experts)[2][local]


def experts(adapter: MoeAdapter, captured: LayerCapture, position: int) -> ExpertList:
    """The chosen and shared experts of FFN node (layer, position), strongest first."""
    rows = _rows(captured, [position])
    with torch.inference_mode():
        found = node_experts(
            adapter, captured.layer, _moe(captured), rows,
            captured.resid_out[rows], captured.ffn_out[rows],
        )  # fmt: skip
        order = torch.sort(found.contribution[0], descending=True, stable=True).indices
    return ExpertList(
        slot=found.slot[0, order].cpu().numpy(),
        gate=found.gate[0, order].cpu().numpy(),
        contribution=found.contribution[0, order].cpu().numpy(),
        rest=float(found.rest[0]),
    )


def expert_at(
    adapter: MoeAdapter, captured: LayerCapture, slot: int, positions: list[int]
) -> dict[int, ExpertAt]:
    """Expert `slot` at each FFN node: 0 contribution and gate where it was not chosen."""
    _check_slot(adapter, slot)
    rows = _rows(captured, positions)
    with torch.inference_mode():
        found = node_experts(
            adapter, captured.layer, _moe(captured), rows,
            captured.resid_out[rows], captured.ffn_out[rows],
        )  # fmt: skip
    out: dict[int, ExpertAt] = {}
    for r, p in enumerate(positions):
        hit = (found.slot[r] == slot).nonzero()
        rest = float(found.rest[r])
        if len(hit) == 0:
            out[p] = ExpertAt(0.0, 0.0, rest)
        else:
            col = int(hit[0, 0])
            out[p] = ExpertAt(float(found.contribution[r, col]), float(found.gate[r, col]), rest)
    return out


def expert_update(
    adapter: MoeAdapter, captured: LayerCapture, slot: int, position: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The expert's part q[e,i] at `position` ([d], gate included) and the residual x'_i its
    projection freezes the final norm at ([d])."""
    _check_slot(adapter, slot)
    layout = adapter.expert_layout
    rows = _rows(captured, [position])
    with torch.inference_mode():
        parts = expert_parts(adapter, captured.layer, _moe(captured), rows)
        if slot >= layout.n_experts:
            shared = parts.shared[slot - layout.n_experts]
            update = shared.gate[0] * (shared.activation[0] @ shared.w_out)
        else:
            hit = (parts.chosen[0] == slot).nonzero()
            if len(hit) == 0:
                raise LmscopeError(
                    f"L{captured.layer}.{layout.slot_name(slot)} was not chosen at token "
                    f"{position}: it sent nothing there"
                )
            j = int(hit[0, 0])
            update = parts.gates[0, j] * (parts.activation[0, j] @ parts.w_out[slot])
    return update, captured.resid_out[position]


def _check_slot(adapter: MoeAdapter, slot: int) -> None:
    layout = adapter.expert_layout
    if not 0 <= slot < layout.n_slots:
        raise LmscopeError(
            f"the model has {layout.n_experts} experts and {layout.n_shared} shared experts "
            f"per layer; there is no slot {slot}"
        )
