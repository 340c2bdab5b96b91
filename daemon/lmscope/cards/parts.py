"""Pieces every kind of card uses (`cards.card`, `cards.experts`): the busy note, the wire
context of a component on a route, and a neuron as a saved trace's neuron table knows it.
Torch-free, like every card."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmscope.graph import RENORMALIZE
from lmscope.traces.live import NeuronAt
from lmscope.traces.trace import Trace

BUSY = (
    "the model is busy with a trace: this card shows what the trace stores; hover again when "
    "the trace is done for what needs the model"
)


def context(
    share: float,
    edges: list[dict[str, Any]],
    activation: float | None,
    *,
    expert: bool = False,
    gate: float | None = None,
) -> dict[str, Any]:
    """The wire CardContext (route fields filled in later by `component_card`); experts and
    expert neurons add the router's `gate`."""
    wire = {
        "handle": None,
        "token": 0,
        "threshold": 0.0,
        "mode": RENORMALIZE,
        "share": float(share),
        "edges": edges,
        "activation": activation,
    }
    if expert:
        wire["gate"] = gate
    return wire


def stored_neuron(trace: Trace, layer: int, k: int, positions: list[int]) -> dict[int, NeuronAt]:
    """Neuron `k` (a flat id in a sparse layer) at the FFN nodes of `layer` among `positions`
    where the trace's neuron table stores it among the top neurons."""
    table = trace.data.neurons
    found = {}
    for row in np.nonzero(table.layer == layer)[0]:
        position = int(table.position[row])
        hit = np.nonzero(table.index[row] == k)[0]
        if position in positions and len(hit):
            col = int(hit[0])
            found[position] = NeuronAt(
                float(table.contribution[row, col]),
                float(table.activation[row, col]),
                float(table.rest_contribution[row]),
            )
    return found
