"""The expert step and the neuron step of a mixture-of-experts FFN node (docs/method.md,
"Experts (mixture of experts)").

With the router's gates frozen at their forward values, the FFN update is an exact sum

    f_i = Σ_{e chosen at i} q[e,i] + Σ_s g_s[i] · E_s(x̂_i),   q[e,i] = g[i,e] · a_e[i] · W_out^e

- expert step: whole x'_i; parts q[e,i] of the k chosen experts, one part per shared expert,
  and the non-FFN part x'_i − f_i; an unchosen expert is no part (no ε in the denominator);
- neuron step: whole x'_i; parts g[i,e] · a_e[i,k] · W_out^e[k] of every neuron of every chosen
  and shared expert, and x'_i − f_i.

Pure tensor maths, float32, proximities summed coordinate by coordinate. Shapes: F nodes, d
width, k chosen experts, E experts, S shared experts, d_e / d_s expert widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.attribution.proximity import EPSILON, proximity, scaled_parts_proximity


@dataclass
class SharedPart:
    """One shared expert at F nodes."""

    gate: torch.Tensor  # [F]        g_s[i] (1 where the family has no shared gate)
    activation: torch.Tensor  # [F, d_s]   a_s[i]
    w_out: torch.Tensor  # [d_s, d]  W_out^s


@dataclass
class ExpertParts:
    """Everything the two steps need about F nodes of one sparse layer."""

    chosen: torch.Tensor  # [F, k] long   expert ids, router order
    gates: torch.Tensor  # [F, k]          g[i, e]
    activation: torch.Tensor  # [F, k, d_e] a_e[i] of each chosen expert (signed)
    w_out: list[torch.Tensor]  # E x [d_e, d] W_out^e of every routed expert
    shared: list[SharedPart]  # S


@dataclass
class ExpertStep:
    """c_e of every chosen and shared expert, and c_rest; each row sums to 1."""

    routed: torch.Tensor  # [F, k]  in the order of ExpertParts.chosen
    shared: torch.Tensor  # [F, S]
    rest: torch.Tensor  # [F]


@dataclass
class ExpertNeuronStep:
    """c of every neuron of every chosen and shared expert, and c_rest; each row sums to 1."""

    routed: torch.Tensor  # [F, k, d_e]
    shared: list[torch.Tensor]  # S x [F, d_s]
    rest: torch.Tensor  # [F]


def routed_updates(parts: ExpertParts) -> torch.Tensor:
    """q[e,i] = g[i,e] · a_e[i] · W_out^e for every chosen expert: [F, k, d]."""
    n_nodes, k, _ = parts.activation.shape
    d = parts.w_out[0].shape[1]
    out = torch.zeros(n_nodes, k, d, dtype=torch.float32, device=parts.activation.device)
    for expert in parts.chosen.unique().tolist():
        node, slot = (parts.chosen == expert).nonzero(as_tuple=True)
        written = parts.activation[node, slot] @ parts.w_out[expert]  # [r, d]
        out[node, slot] = parts.gates[node, slot, None] * written
    return out


def shared_updates(parts: ExpertParts) -> torch.Tensor:
    """g_s[i] · a_s[i] · W_out^s for every shared expert: [F, S, d]."""
    n_nodes = parts.chosen.shape[0]
    d = parts.w_out[0].shape[1]
    if not parts.shared:
        return torch.zeros(n_nodes, 0, d, dtype=torch.float32, device=parts.chosen.device)
    return torch.stack([s.gate[:, None] * (s.activation @ s.w_out) for s in parts.shared], dim=1)


def _rest_proximity(whole: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Floored proximity of the non-FFN part x'_i − f_i: [F]."""
    return (whole.abs() - (whole - rest).abs()).sum(-1).clamp_min(EPSILON)


def expert_step(whole: torch.Tensor, parts: ExpertParts, rest: torch.Tensor) -> ExpertStep:
    """whole x' [F, d]; rest x' − f [F, d] -> c_e of the chosen and shared experts, c_rest."""
    updates = torch.cat([routed_updates(parts), shared_updates(parts)], dim=1)  # [F, k+S, d]
    prox = proximity(whole, updates)  # [F, k+S]
    rest_prox = _rest_proximity(whole, rest)
    total = prox.sum(-1) + rest_prox
    c = prox / total[:, None]
    k = parts.chosen.shape[1]
    return ExpertStep(routed=c[:, :k], shared=c[:, k:], rest=rest_prox / total)


def expert_neuron_step(
    whole: torch.Tensor, parts: ExpertParts, rest: torch.Tensor
) -> ExpertNeuronStep:
    """whole x' [F, d]; rest x' − f [F, d] -> c of every neuron of the chosen and shared
    experts (gate folded into each part), and c_rest.

    Nodes are grouped by expert, so each routed expert's rows W_out^e are read once for all the
    nodes that chose it (the overshoot-split kernel, as for dense neurons).
    """
    n_nodes, k, d_e = parts.activation.shape
    routed = torch.zeros(n_nodes, k, d_e, dtype=torch.float32, device=whole.device)
    for expert in parts.chosen.unique().tolist():
        node, slot = (parts.chosen == expert).nonzero(as_tuple=True)
        coef = parts.gates[node, slot, None] * parts.activation[node, slot]  # [r, d_e]
        routed[node, slot] = scaled_parts_proximity(whole[node], coef, parts.w_out[expert])
    shared = [
        scaled_parts_proximity(whole, s.gate[:, None] * s.activation, s.w_out)  # [F, d_s]
        for s in parts.shared
    ]
    rest_prox = _rest_proximity(whole, rest)
    total = routed.sum((1, 2)) + rest_prox
    for prox in shared:
        total = total + prox.sum(-1)
    return ExpertNeuronStep(
        routed=routed / total[:, None, None],
        shared=[prox / total[:, None] for prox in shared],
        rest=rest_prox / total,
    )
