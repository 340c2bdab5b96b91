"""Experts in a trace: how a mixture-of-experts layer's neurons are numbered, and the experts
table of the detailed FFN nodes (docs/method.md, "Experts (mixture of experts)").

A trace of an MoE model stores, in `extra["lmscope.experts"]` (the format's place for additions
older readers may ignore, protocol/README.md "Versioning", so format 1 is unchanged and older
files load as before):

    {"layout": {"nExperts": E, "topK": k, "dExpert": d_e, "nShared": S, "dShared": d_s,
                "dDense": d_ffn of the dense layers (0: none), "sparseLayers": [layer, ...]},
     "nodes": {"layer": [F'], "position": [F'], "expert": [F'][k+S], "gate": [F'][k+S],
               "contribution": [F'][k+S], "rest": [F']}}

`nodes` has one row per detailed FFN node of a sparse layer: its k chosen experts and its
shared experts as *slots* (routed expert e is slot e, shared expert s is slot E + s), strongest
contribution first; the gate the forward pass multiplied each by (the shared gate is
sigmoid(...) or 1); their contributions `c_e` at the expert step and `c_rest` of the non-FFN
part. Neurons of sparse layers are in the ordinary neuron table with *flat* ids over the layer's
experts, expert-major (`ExpertLayout.flat_id`), so a dense-only reader still reads them as
neurons. Torch-free, like every `lmscope.traces` module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

EXPERTS_KEY = "lmscope.experts"
_WHERE = f"extra.{EXPERTS_KEY}"
MAX_EXPERTS = 65_536  # far above any released model (DeepSeek-V3: 256 routed)
MAX_WIDTH = 2**24  # an expert's neurons
SHARE_SLACK = 1.001  # one step's shares sum to 1 up to float32 rounding


@dataclass(frozen=True)
class ExpertLayout:
    """How a model's sparse layers are numbered: experts, slots and flat neuron ids."""

    n_experts: int  # routed experts per sparse layer (E)
    top_k: int  # experts chosen per token (k)
    d_expert: int  # neurons per routed expert (d_e)
    n_shared: int  # shared experts per sparse layer (S)
    d_shared: int  # neurons per shared expert (d_s; 0 without shared experts)
    sparse_layers: tuple[int, ...]  # the layers whose FFN is a mixture
    d_dense: int = 0  # neurons of the dense layers between sparse ones (Qwen-MoE), else 0

    @property
    def n_slots(self) -> int:
        return self.n_experts + self.n_shared

    @property
    def flat_width(self) -> int:
        """Flat neuron ids of a sparse layer: E·d_e + S·d_s."""
        return self.n_experts * self.d_expert + self.n_shared * self.d_shared

    @property
    def node_neurons(self) -> int:
        """Neurons that are parts at one FFN node: those of the k chosen and the S shared."""
        return self.top_k * self.d_expert + self.n_shared * self.d_shared

    def is_sparse(self, layer: int) -> bool:
        return layer in self.sparse_layers

    def ffn_width(self, layer: int) -> int:
        """Neurons that are parts at one FFN node of `layer` (sparse: `node_neurons`)."""
        return self.node_neurons if self.is_sparse(layer) else self.d_dense

    def neuron_range(self, layer: int) -> int:
        """Neuron ids of `layer`: flat ids of a sparse layer, or a dense layer's width."""
        return self.flat_width if self.is_sparse(layer) else self.d_dense

    def slot_width(self, slot: int) -> int:
        return self.d_expert if slot < self.n_experts else self.d_shared

    def slot_start(self, slot: int) -> int:
        """The first flat neuron id of `slot`."""
        if slot < self.n_experts:
            return slot * self.d_expert
        return self.n_experts * self.d_expert + (slot - self.n_experts) * self.d_shared

    def flat_id(self, slot: int, neuron: int) -> int:
        if not 0 <= slot < self.n_slots:
            raise ValueError(f"expert slot {slot} is outside 0..{self.n_slots - 1}")
        if not 0 <= neuron < self.slot_width(slot):
            raise ValueError(
                f"{self.slot_name(slot)} has {self.slot_width(slot)} neurons (0-"
                f"{self.slot_width(slot) - 1}), not {neuron}"
            )
        return self.slot_start(slot) + neuron

    def split(self, flat: int) -> tuple[int, int]:
        """A flat neuron id -> (slot, neuron within the expert)."""
        routed = self.n_experts * self.d_expert
        if not 0 <= flat < self.flat_width:
            raise ValueError(f"neuron {flat} is outside the {self.flat_width} of a sparse layer")
        if flat < routed:
            return flat // self.d_expert, flat % self.d_expert
        return self.n_experts + (flat - routed) // self.d_shared, (flat - routed) % self.d_shared

    def slot_name(self, slot: int) -> str:
        """ "E3" for routed expert 3, "S0" for shared expert 0."""
        return f"E{slot}" if slot < self.n_experts else f"S{slot - self.n_experts}"

    def neuron_label(self, layer: int, flat: int) -> str:
        """ "L5.E3.N120" for a neuron of a sparse layer, "L5.N120" for a dense layer's."""
        if not self.is_sparse(layer):
            return f"L{layer}.N{flat}"
        slot, neuron = self.split(flat)
        return f"L{layer}.{self.slot_name(slot)}.N{neuron}"

    def to_wire(self) -> dict[str, Any]:
        return {
            "nExperts": self.n_experts,
            "topK": self.top_k,
            "dExpert": self.d_expert,
            "nShared": self.n_shared,
            "dShared": self.d_shared,
            "dDense": self.d_dense,
            "sparseLayers": list(self.sparse_layers),
        }


@dataclass
class ExpertTable:
    """The experts of detailed FFN nodes of sparse layers (F' rows, k + S slots each)."""

    layer: np.ndarray  # int32 [F']
    position: np.ndarray  # int32 [F']
    expert: np.ndarray  # int32 [F', k+S] slots, strongest contribution first
    gate: np.ndarray  # float32 [F', k+S]  g[i,e] (shared: its gate, 1 without one)
    contribution: np.ndarray  # float32 [F', k+S]  c_e at the expert step
    rest: np.ndarray  # float32 [F']  c_rest of the non-FFN part x'_i − f_i

    def row(self, layer: int, position: int) -> int | None:
        hit = np.nonzero((self.layer == layer) & (self.position == position))[0]
        return int(hit[0]) if len(hit) else None


@dataclass(frozen=True)
class StoredExperts:
    layout: ExpertLayout
    table: ExpertTable


def to_extra(layout: ExpertLayout, table: ExpertTable) -> dict[str, Any]:
    """The `extra` value (plain lists: the same in msgpack and in the JSON export)."""
    return {
        "layout": layout.to_wire(),
        "nodes": {
            "layer": [int(v) for v in table.layer],
            "position": [int(v) for v in table.position],
            "expert": table.expert.astype(int).tolist(),
            "gate": table.gate.astype(np.float32).tolist(),
            "contribution": table.contribution.astype(np.float32).tolist(),
            "rest": table.rest.astype(np.float32).tolist(),
        },
    }


def _count(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _layout(value: Any, n_layers: int) -> ExpertLayout | str:
    keys = {"nExperts", "topK", "dExpert", "nShared", "dShared", "dDense", "sparseLayers"}
    if not isinstance(value, dict) or set(value) != keys:
        return f"{_WHERE}.layout: not a map of {', '.join(sorted(keys))}"
    e, k = value["nExperts"], value["topK"]
    if not _count(e, 1, MAX_EXPERTS) or not _count(k, 1, e if type(e) is int else 0):
        return f"{_WHERE}.layout: nExperts must be 1..{MAX_EXPERTS} and topK 1..nExperts"
    if not _count(value["dExpert"], 1, MAX_WIDTH) or not _count(value["nShared"], 0, 64):
        return f"{_WHERE}.layout: dExpert must be 1..{MAX_WIDTH} and nShared 0..64"
    if not _count(value["dShared"], 1 if value["nShared"] else 0, MAX_WIDTH):
        return f"{_WHERE}.layout: dShared must be 1..{MAX_WIDTH} with shared experts, else 0"
    if not _count(value["dDense"], 0, MAX_WIDTH):
        return f"{_WHERE}.layout: dDense must be 0..{MAX_WIDTH}"
    layers = value["sparseLayers"]
    if (
        not isinstance(layers, list)
        or not all(_count(v, 0, n_layers - 1) for v in layers)
        or layers != sorted(set(layers))
    ):
        return f"{_WHERE}.layout.sparseLayers: not increasing layers below model.nLayers"
    return ExpertLayout(
        e, k, value["dExpert"], value["nShared"], value["dShared"], tuple(layers), value["dDense"]
    )


def _matrix(value: Any, rows: int, width: int, path: str) -> np.ndarray | str:
    if not isinstance(value, list) or len(value) != rows:
        return f"{path}: not a list of {rows} rows"
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != width:
            return f"{path}[{i}]: not a list of {width} numbers"
        if not all(type(v) in (int, float) and math.isfinite(v) for v in row):
            return f"{path}[{i}]: holds something other than finite numbers"
    return np.array(value, dtype=np.float64).reshape(rows, width)


def read(extra: dict[str, Any], n_layers: int, n_tokens: int) -> StoredExperts | str | None:
    """The experts a trace stores (None when it stores none), or what is wrong with them."""
    if EXPERTS_KEY not in extra:
        return None
    value = extra[EXPERTS_KEY]
    if not isinstance(value, dict) or set(value) != {"layout", "nodes"}:
        return f"{_WHERE}: not a map of `layout` and `nodes`"
    layout = _layout(value["layout"], n_layers)
    if isinstance(layout, str):
        return layout
    nodes = value["nodes"]
    names = ("layer", "position", "expert", "gate", "contribution", "rest")
    if not isinstance(nodes, dict) or set(nodes) != set(names):
        return f"{_WHERE}.nodes: not a map of {', '.join(names)}"
    rows = len(nodes["layer"]) if isinstance(nodes["layer"], list) else -1
    width = layout.top_k + layout.n_shared
    where = f"{_WHERE}.nodes"
    columns: dict[str, np.ndarray] = {}
    for name in ("layer", "position", "rest"):
        got = _matrix([[v] for v in nodes[name]] if isinstance(nodes[name], list) else None,
                      rows, 1, f"{where}.{name}")  # fmt: skip
        if isinstance(got, str):
            return got
        columns[name] = got[:, 0]
    for name in ("expert", "gate", "contribution"):
        got = _matrix(nodes[name], rows, width, f"{where}.{name}")
        if isinstance(got, str):
            return got
        columns[name] = got
    problem = _check_rows(layout, columns, n_tokens, where)
    if problem is not None:
        return problem
    table = ExpertTable(
        layer=columns["layer"].astype(np.int32),
        position=columns["position"].astype(np.int32),
        expert=columns["expert"].astype(np.int32),
        gate=columns["gate"].astype(np.float32),
        contribution=columns["contribution"].astype(np.float32),
        rest=columns["rest"].astype(np.float32),
    )
    return StoredExperts(layout, table)


def _check_rows(
    layout: ExpertLayout, c: dict[str, np.ndarray], n_tokens: int, where: str
) -> str | None:
    for name in ("layer", "position", "expert"):
        if (c[name] != np.trunc(c[name])).any():
            return f"{where}.{name}: holds numbers that are not integers"
    sparse = np.array(layout.sparse_layers)
    if not np.isin(c["layer"], sparse).all():
        return f"{where}.layer: a layer that is not in layout.sparseLayers"
    if ((c["position"] < 0) | (c["position"] >= n_tokens)).any():
        return f"{where}.position: outside the token positions"
    keys = c["layer"] * n_tokens + c["position"]
    if np.unique(keys).size != keys.size:
        return f"{where}: two rows for the same (layer, position)"
    slots = c["expert"]
    if ((slots < 0) | (slots >= layout.n_slots)).any():
        return f"{where}.expert: a slot outside 0..{layout.n_slots - 1}"
    routed = np.sort(np.where(slots < layout.n_experts, slots, -1), axis=1)[:, layout.n_shared :]
    shared = np.sort(np.where(slots >= layout.n_experts, slots, -1), axis=1)[:, layout.top_k :]
    if len(slots) and (
        (routed < 0).any()
        or (np.diff(routed, axis=1) == 0).any()
        or (shared != np.arange(layout.n_experts, layout.n_slots)).any()
    ):
        return f"{where}.expert: each row needs topK distinct experts and every shared slot"
    if ((c["gate"] < 0) | (c["gate"] > 1)).any():
        return f"{where}.gate: a gate outside [0, 1]"
    if ((c["contribution"] < 0) | (c["contribution"] > 1)).any() or (
        (c["rest"] < 0) | (c["rest"] > 1)
    ).any():
        return f"{where}: a contribution outside [0, 1]"
    if (c["contribution"].sum(axis=1) + c["rest"] > SHARE_SLACK).any():
        return f"{where}: a row's contributions sum to more than 1"
    return None


def stored(extra: dict[str, Any], n_layers: int, n_tokens: int) -> StoredExperts | None:
    """The experts of a trace already checked when it was read (None when none are stored)."""
    found = read(extra, n_layers, n_tokens)
    return found if isinstance(found, StoredExperts) else None
