"""Neuron-level attribution of an FFN node (docs/method.md, "Neuron step").

For FFN node (l, i) the parts are every neuron's write a[i,k] · W_out[k] plus the non-neuron
part x'_i − f_i (the residual the FFN update is added to); the whole is x'_i. The output bias
b_out belongs to no part. Behind a post-norm (Gemma 2/3, OLMo-2) a neuron writes
D^ffn_i ⊙ a[i,k] · W_out[k], with D^ffn_i the output norm's frozen scale at the node's
position (docs/method.md, "Post-norm blocks"). Shapes: F nodes, d_ffn neurons, d width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmscope.attribution.budget import BYTES_PER_PART, budget_for
from lmscope.attribution.proximity import EPSILON, scaled_parts_proximity


@dataclass
class NeuronContributions:
    contribution: torch.Tensor  # [F, d_ffn] normalised with the rest part
    rest: torch.Tensor  # [F]


def neuron_contributions(
    activations: torch.Tensor,
    output_weights: torch.Tensor,
    whole: torch.Tensor,
    rest: torch.Tensor,
    ffn_scale: torch.Tensor | None = None,
) -> NeuronContributions:
    """activations: [F, d_ffn]; output_weights W_out: [d_ffn, d]; whole x': [F, d];
    rest x' − f: [F, d]; ffn_scale: [F, d] the FFN output norm's frozen D^ffn per node, or None
    (no output norm) -> contributions of every neuron and of the rest part."""
    n_nodes, d_ffn = activations.shape
    output_weights = output_weights.float()  # often a transposed view: read in place
    reach = output_weights.abs().amax(1)[None]  # [1, d_ffn] once for every chunk
    prox = torch.empty(n_nodes, d_ffn, dtype=torch.float32, device=activations.device)
    budget = budget_for(activations.device)
    # a node's parts are its d_ffn neurons: [nodes, d_ffn] tensors, never [nodes, d_ffn, d]
    chunk = max(
        1, min(budget.nodes_per_chunk, budget.scratch_bytes // max(1, d_ffn * BYTES_PER_PART))
    )
    for start in range(0, n_nodes, chunk):
        stop = min(n_nodes, start + chunk)
        scale = None if ffn_scale is None else ffn_scale[start:stop]  # [c, d]
        prox[start:stop] = scaled_parts_proximity(
            whole[start:stop], activations[start:stop], output_weights, scale, part_max=reach
        )
    rest_prox = (whole.abs() - (whole - rest).abs()).sum(-1).clamp_min(EPSILON)  # [F]
    total = prox.sum(-1) + rest_prox
    return NeuronContributions(contribution=prox / total[:, None], rest=rest_prox / total)


def top_neurons(
    contribution: torch.Tensor, activations: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k strongest neurons per node, strongest first: (index, contribution, activation),
    each [F, k]. Ties break by neuron index so results are deterministic."""
    k = min(k, contribution.shape[-1])
    # A stable sort on descending contribution keeps lower neuron ids first among equals.
    order = torch.sort(contribution, dim=-1, descending=True, stable=True).indices[:, :k]
    return order, contribution.gather(1, order), activations.gather(1, order)
