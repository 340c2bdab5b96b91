"""The one interface through which a trace, and the cards, ask the model what a file cannot
answer.

A trace made in this process keeps a `LiveQueries` (implemented by `tracing.live.LiveModel`,
which runs the model again); a trace loaded from a file has none, and every query below is then
a `NeedsModelError` with a message saying what the file stores. This module defines only the
interface and its plain result types: it imports neither torch nor the engine, so saved traces
and cards stay torch-free.

Shapes: n prompt tokens, d_ffn neurons, k tokens per list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lmscope.graph.nodes import Node
from lmscope.traces.causal import AblationResult, Faithfulness, RouteKeep
from lmscope.traces.data import ModelFacts, Projections
from lmscope.traces.experts import ExpertLayout

TOP_TOKENS = 8  # promoted / suppressed tokens per card and per head map

TokenScores = list[dict[str, Any]]
"""Wire `TokenScore`s ({"token", "id", "score"}), strongest first."""


@dataclass(frozen=True)
class NeuronList:
    """Every neuron of one FFN node, strongest contribution first."""

    index: np.ndarray  # int [d_ffn] neuron ids
    contribution: np.ndarray  # float32 [d_ffn] c_k at the neuron step
    activation: np.ndarray  # float32 [d_ffn] a[i, k], signed
    rest: float  # c of the non-neuron part (x'_i - f_i)


@dataclass(frozen=True)
class NeuronAt:
    """One neuron at one FFN node: its contribution c_k, activation a[i, k], and the
    contribution of the node's non-neuron part c_rest."""

    contribution: float
    activation: float
    rest: float


@dataclass(frozen=True)
class ExpertList:
    """The experts of one FFN node of a sparse layer (docs/method.md, "Experts"): the k chosen
    and the S shared ones as slots (shared expert s is slot E + s), strongest contribution
    first, ties by slot."""

    slot: np.ndarray  # int [k+S]
    gate: np.ndarray  # float32 [k+S]  g[i,e] as the forward pass multiplied (shared: its gate)
    contribution: np.ndarray  # float32 [k+S]  c_e at the expert step
    rest: float  # c_rest of the non-FFN part x'_i − f_i


@dataclass(frozen=True)
class ExpertAt:
    """One expert at one FFN node: c_e (0 where the router did not choose it: no part), its
    gate there (0 when unchosen), and the node's c_rest."""

    contribution: float
    gate: float
    rest: float


class LiveQueries(Protocol):
    """What the model answers about one prompt (`token_ids`), or about its weights alone when
    there is no prompt (`has_prompt` False: only `neuron_tokens` and `facts` then)."""

    @property
    def facts(self) -> ModelFacts:
        """The model's identity and sizes."""
        ...

    @property
    def has_prompt(self) -> bool: ...

    def batch(self, *, wait: bool = True) -> LiveQueries:
        """A view for queries made together (one card): each layer is run at most once. With
        `wait=False` a query that needs a forward pass while another one (a trace) holds the
        model raises `ModelBusyError` at once instead of waiting."""
        ...

    def token_text(self, token_id: int) -> str:
        """A token id decoded alone, as the trace shows tokens."""
        ...

    def edge_heads(self, layer: int, target: int, source: int) -> list[dict[str, float]]:
        """Every head's {"head", "contribution", "attention"} for edge source -> target, in head
        order (unthresholded, also below the trace's min_threshold)."""
        ...

    def neurons(self, layer: int, position: int) -> NeuronList:
        """Every neuron of FFN node (layer, position)."""
        ...

    def neuron_at(self, layer: int, neuron: int, positions: list[int]) -> dict[int, NeuronAt]:
        """Neuron `neuron` of layer `layer` at each FFN node (layer, position)."""
        ...

    def projections(self, node: Node, top_k: int) -> Projections:
        """Every projection kind that applies to `node` (rows in any order), `top_k` tokens."""
        ...

    def attention_pattern(self, layer: int, head: int) -> np.ndarray:
        """A[h] at `layer`: [n, n] attention probabilities."""
        ...

    def contribution_map(self, layer: int, head: int) -> np.ndarray:
        """c_att[layer, i, j, head] for every target i and source j: [n, n]."""
        ...

    def head_tokens(
        self, layer: int, head: int, position: int, k: int
    ) -> tuple[TokenScores, TokenScores]:
        """Tokens head `head`'s output at `position` promotes and suppresses (frozen-norm DLA)."""
        ...

    def block_tokens(
        self, layer: int, block: str, position: int, k: int
    ) -> tuple[TokenScores, TokenScores]:
        """Tokens the `block` ("attention" | "ffn") update at `position` promotes/suppresses."""
        ...

    def neuron_tokens(self, layer: int, neuron: int, k: int) -> tuple[TokenScores, TokenScores]:
        """Tokens neuron `neuron`'s output row W_out[k] promotes and suppresses (weights only:
        it does not depend on the prompt). In a sparse layer `neuron` is a flat id
        (`ExpertLayout.flat_id`) and the row is its expert's W_out^e[k]."""
        ...

    # --- mixtures of experts (None / UnsupportedModelError on dense models) ----------------------
    @property
    def expert_layout(self) -> ExpertLayout | None:
        """How the model's experts are numbered, or None for a dense model."""
        ...

    def experts(self, layer: int, position: int) -> ExpertList:
        """The chosen and shared experts of FFN node (layer, position) of a sparse layer."""
        ...

    def expert_at(self, layer: int, slot: int, positions: list[int]) -> dict[int, ExpertAt]:
        """Expert `slot` of `layer` at each FFN node (layer, position)."""
        ...

    def expert_tokens(
        self, layer: int, slot: int, position: int, k: int
    ) -> tuple[TokenScores, TokenScores]:
        """Tokens the expert's part q[e,i] promotes and suppresses: W_U · N_frozen(q; x'_i)."""
        ...

    # --- causal checks (docs/method.md, "Causal checks"; lmscope.causal) -------------------------
    def ablate(
        self,
        targets: Sequence[Any],
        kind: str,
        position: int,
        token_id: int,
        patch_prompt: str | None = None,
        prepend_bos: bool = True,
        should_cancel: Callable[[], bool] | None = None,
    ) -> AblationResult:
        """Ablate `targets` (written forms or `lmscope.causal.targets` values) and report
        log p(token_id) at `position` before and after; "patch" takes the values of a clean
        pass on `patch_prompt` (tokenized like the trace: `prepend_bos`)."""
        ...

    def verify_route(
        self,
        keep: RouteKeep,
        threshold: float,
        kind: str,
        position: int,
        token_id: int,
        n_random: int,
        seed: int,
        should_cancel: Callable[[], bool] | None = None,
        progress: Callable[[str, float | None], None] | None = None,
    ) -> Faithfulness:
        """p(token_id) at `position` keeping only `keep`, against the full model and random
        sets of the same size."""
        ...
