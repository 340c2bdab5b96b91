"""Trace one prompt: one hooked forward pass, then everything a `.lmtrace` holds.

Stages (each reported through `progress`):
1. tokenize (BOS prepended once when the tokenizer defines one, docs/method.md "BOS");
2. capture + attribute layer by layer (attention edges, residual and FFN contributions), with a
   cancellation check between layers;
3. choose the nodes that get detail in the file (`TraceOptions.detail`): by default the nodes
   of the last token's route at the display threshold, or every node that can lie on a route at
   `min_threshold` (the union over output tokens);
4. neuron detail and vocabulary projections for those nodes only. Any other node's detail is
   computed on demand while the model is loaded (`tracing/live.py`), so a trace pays
   for the detail of one route, not of every node, and still answers every query in the daemon.

This module only orchestrates: the maths is in `lmscope.attribution`, the hooks in `capture`,
the per-layer steps in `layers`, the projections in `projections`, the tokens in `tokens`; what a
trace asks the model later is in `live`.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import transformers

from lmscope.__about__ import __version__
from lmscope.attribution import decompose
from lmscope.attribution.budget import budget_for
from lmscope.errors import LmscopeError
from lmscope.graph import RENORMALIZE, ContributionGraph, Node
from lmscope.models.adapter import adapter_for, param
from lmscope.models.loading import LoadedModel
from lmscope.protocol import defaults
from lmscope.traces.data import (
    LOGIT_SOFTCAP_KEY,
    Environment,
    Predictions,
    Settings,
    Tokens,
    TraceData,
)
from lmscope.traces.experts import EXPERTS_KEY
from lmscope.tracing.capture import (
    CaptureError,
    LayerCapture,
    capture_layers,
    last_logits_only,
    run_forward,
)
from lmscope.tracing.experts import expert_table
from lmscope.tracing.inputs import TraceSource, prepare_input
from lmscope.tracing.layers import (
    LayerState,
    attribute_layer,
    narrow_states,
    neuron_table,
    stack_contributions,
)
from lmscope.tracing.projections import project_nodes
from lmscope.tracing.tokens import add_token_bytes, display_strings

ProgressFn = Callable[[str, float | None], None]


class TraceCancelled(LmscopeError):
    """The caller asked to stop; nothing of the trace is kept."""


DETAIL_ROUTE = "route"  # the last token's renormalised route at `detail_threshold`
DETAIL_ALL = "all"  # every node that can be on a route of any token at `min_threshold`
DETAIL_SCOPES = (DETAIL_ROUTE, DETAIL_ALL)  # protocol/schemas/common.schema.json DetailScope
# Recorded in TraceData.extra (old readers ignore it; they already treat a missing projection or
# neuron row as "not stored in this file").
DETAIL_EXTRA_KEY = "lmscope.detail"


@dataclass(frozen=True)
class TraceOptions:
    """How to trace; every default is the protocol's (`protocol.defaults`)."""

    prepend_bos: bool = defaults.PREPEND_BOS
    min_threshold: float = defaults.MIN_THRESHOLD  # routes answerable for every τ >= this
    top_neurons: int = 64  # neurons stored per FFN node (at least 50 wanted)
    projection_top_k: int = 10
    prediction_top_k: int = 10
    # Which nodes get neuron lists and vocabulary projections in the file. Each projection is a
    # product with the whole unembedding: on the embedded model at 200 tokens on 2 CPU threads
    # "all" costs ~45x the forward pass, "route" ~1.5x; a live trace computes the rest when asked.
    detail: str = defaults.DETAIL
    detail_threshold: float = defaults.THRESHOLD  # the threshold routes are shown at
    generate: int = 0  # tokens generated after the prompt, then traced with it (generation.py)
    seed: int | None = None  # None: greedy; else sampled at temperature 1 with this seed

    def __post_init__(self) -> None:
        if self.detail not in DETAIL_SCOPES:
            raise LmscopeError(
                f"detail must be one of {', '.join(DETAIL_SCOPES)}, not {self.detail!r}"
            )

    @property
    def detail_route_threshold(self) -> float:
        """τ of the stored route: no route exists below the trace's smallest threshold."""
        return max(self.detail_threshold, self.min_threshold)


# --- the trace -------------------------------------------------------------------------------
class StageTimes:
    """Seconds spent per stage of one trace, for the benchmark (`lmscope bench`).

    Stages: "forward" (the hooked pass, attention attribution excluded), "attention" (per-layer
    contributions), "routes" (choosing the detailed nodes), "neurons", "projections",
    "finish" (predictions, vocabulary). On a GPU each boundary synchronises, so the split is
    honest at a small cost; without a `StageTimes` nothing is timed or synchronised.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self._last = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        """Charge the time since the previous mark to `stage`."""
        now = self._now()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def run_trace(
    loaded: LoadedModel,
    prompt: TraceSource,
    options: TraceOptions | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    times: StageTimes | None = None,
) -> TraceData:
    """Trace `prompt` (text, or a conversation through the chat template), after generating
    `options.generate` tokens, on a loaded model and return the complete `TraceData`."""
    options = options or TraceOptions()
    report = progress or (lambda _message, _fraction: None)
    mark = times.mark if times is not None else (lambda _stage: None)
    adapter = adapter_for(loaded.model)

    def stop_if_cancelled() -> None:
        if should_cancel is not None and should_cancel():
            raise TraceCancelled("trace cancelled")

    traced = prepare_input(
        loaded,
        prompt,
        options.prepend_bos,
        adapter.context_length,
        options.generate,
        options.seed,
        stop_if_cancelled,
        report,
    )
    ids = traced.ids
    input_ids = torch.tensor(ids, dtype=torch.long)

    states: list[LayerState] = []
    contributions: list[decompose.LayerContributions] = []
    attention_weights: list[np.ndarray] = []
    # a GPU layer's state goes to host memory once the next layer's input was compared with
    # its output (`LayerState.to_host`); this is the last one moved: (GPU output, host copy)
    moved: list[tuple[torch.Tensor, torch.Tensor] | None] = [None]

    def on_layer(captured: LayerCapture) -> None:
        if should_cancel is not None and should_cancel():
            raise TraceCancelled("trace cancelled")
        mark("forward")
        result = attribute_layer(adapter, captured, options.min_threshold)
        contributions.append(result)
        weights = captured.attn_probs[:, result.edge_target, result.edge_source].float()  # [H, e]
        attention_weights.append(weights.T.cpu().numpy())
        previous = states[-1] if states else None
        states.append(LayerState.compact(captured, loaded.dtype, previous))  # bf16: half size
        if previous is not None:
            states[-2], moved[0] = previous.to_host(moved[0])
        report(f"layer {captured.layer + 1}/{adapter.n_layers}", len(states) / adapter.n_layers)
        mark("attention")

    with loaded.lock, capture_layers(adapter, on_layer), last_logits_only(loaded.model) as final:
        run_forward(loaded.model, input_ids)  # the last position's logits only
    if states:
        states[-1], _ = states[-1].to_host(moved[0])
    moved.clear()
    mark("forward")
    if final.hidden is None:
        raise CaptureError("the model's output embeddings never ran")
    head = loaded.model.get_output_embeddings()  # what the hook saw the input of
    with loaded.lock:
        predictions = _predictions(
            final.hidden,
            param(head),  # the module's own weights (not the adapter's W_U: OPT's project_out)
            param(head, "bias") if hasattr(head, "bias") else None,
            adapter.final_logit_softcap,
            options.prediction_top_k,
        )
    del final
    mark("finish")

    blocks, edges = stack_contributions(contributions, attention_weights)
    mark("attention")
    graph = ContributionGraph(blocks, edges, adapter.n_layers, len(ids), adapter.parallel_blocks)
    report("finding route nodes", None)
    detailed = detail_nodes(graph, options)
    detail = narrow_states(states, detailed)  # frees the other token rows of every layer
    mark("routes")
    report("neurons", None)
    with loaded.lock:  # activations are recomputed by the model's FFN modules: no other pass
        neurons = neuron_table(adapter, detail.states, detail.nodes, options.top_neurons)
    neurons.position = detail.token_positions(neurons.position)
    mark("neurons")
    report("vocabulary projections", None)
    projections = project_nodes(adapter, detail.states, detail.nodes, options.projection_top_k)
    projections.position = detail.token_positions(projections.position)
    mark("projections")

    data = TraceData(
        model=loaded.facts,
        settings=Settings(
            bos_prepended=traced.bos_prepended,
            min_threshold=options.min_threshold,
            top_neurons=int(neurons.index.shape[1]),
            projection_top_k=int(projections.top_ids.shape[1]),
            prediction_top_k=int(predictions.ids.shape[1]),
        ),
        environment=environment(loaded),
        tokens=Tokens(traced.text, np.asarray(ids, dtype=np.int32), display_strings(loaded, ids)),
        predictions=predictions,
        blocks=blocks,
        edges=edges,
        neurons=neurons,
        projections=projections,
    )
    experts = expert_table(adapter, detail.states, detail.nodes, detail.positions)
    if experts is not None:
        data.extra[EXPERTS_KEY] = experts
    data.vocabulary = _vocabulary(loaded, data)
    data.extra.update(traced.extra)
    add_token_bytes(loaded, data)
    data.extra[DETAIL_EXTRA_KEY] = {
        "scope": options.detail,
        "token": len(ids) - 1,
        "threshold": options.detail_route_threshold,
    }
    if adapter.final_logit_softcap is not None:  # predictions capped, projections pre-cap
        data.extra[LOGIT_SOFTCAP_KEY] = float(adapter.final_logit_softcap)
    mark("finish")
    return data


def detail_nodes(graph: ContributionGraph, options: TraceOptions) -> set[Node]:
    """The nodes whose neurons and projections the file stores (see `TraceOptions.detail`)."""
    if options.detail == DETAIL_ALL:
        return graph.reachable_from_outputs(options.min_threshold)
    # The renormalised route only: the raw-mode route is the larger (twice at 200 tokens on the
    # embedded model) and its extra nodes are computed on demand like any other.
    return graph.route(graph.n_tokens - 1, options.detail_route_threshold, RENORMALIZE).nodes


# --- predictions, facts ----------------------------------------------------------------------


def _predictions(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    softcap: float | None,
    k: int,
) -> Predictions:
    """The k most probable next tokens at every position, from the final normed states
    hidden [n, d] (`capture.last_logits_only`) and the unembedding W_U [V, d] (+ b_U [V]) ->
    [n, k] each.

    A block of the vocabulary at a time: the block's logits [n, c] are made as the model's
    unembedding makes them (its dtype; soft-capped as Gemma 2/3's forward caps them), merged
    into the running top k, and folded into a running log-sum-exp (p = exp(logit − lse)). W_U
    is read once and no [n, V] tensor is made (the projection budget bounds a block)."""
    n, vocab = len(hidden), int(weight.shape[0])
    k = min(k, vocab)
    hidden = hidden.to(weight.device)
    # A block's logits [n, c] float32 (exp is taken in place) and the copy of its W_U rows
    # [c, d] a CPU matrix product may pack: half the budget together.
    d = int(weight.shape[1])
    columns = max(k, budget_for(weight.device).projection_bytes // (8 * (max(1, n) + d)))
    top_values = torch.empty(n, 0, device=weight.device)
    top_ids = torch.empty(n, 0, dtype=torch.long, device=weight.device)
    largest = torch.full((n, 1), float("-inf"), device=weight.device)  # running max
    total = torch.zeros(n, 1, dtype=torch.float64, device=weight.device)  # Σ exp(x − largest)
    with torch.inference_mode():
        for start in range(0, vocab, columns):
            stop = min(vocab, start + columns)
            piece_bias = None if bias is None else bias[start:stop]
            logits = torch.nn.functional.linear(hidden, weight[start:stop], piece_bias)
            if softcap is not None:  # the model's own order of operations
                logits = torch.tanh(logits / softcap) * softcap
            logits = logits.float()  # [n, c]
            block = logits.topk(min(k, stop - start), dim=-1)
            merged = torch.cat([top_values, block.values], 1).topk(k, dim=-1)
            top_ids = torch.cat([top_ids, block.indices + start], 1).gather(1, merged.indices)
            top_values = merged.values
            new_largest = torch.maximum(largest, logits.amax(1, keepdim=True))
            block_total = logits.sub_(new_largest).exp_().sum(1, keepdim=True, dtype=torch.float64)
            total = total * torch.exp(largest - new_largest).double() + block_total
            largest = new_largest
    log_total = (largest.double() + torch.log(total)).float()  # [n, 1] log-sum-exp
    return Predictions(
        ids=top_ids.cpu().numpy().astype(np.int32),
        probs=torch.exp(top_values - log_total).cpu().numpy().astype(np.float32),
    )


def _vocabulary(loaded: LoadedModel, data: TraceData) -> dict[int, str]:
    ids: set[int] = set(int(i) for i in data.tokens.ids)
    ids.update(int(i) for i in data.predictions.ids.ravel())
    ids.update(int(i) for i in data.projections.top_ids.ravel())
    ids.update(int(i) for i in data.projections.bottom_ids.ravel())
    ordered = sorted(ids)
    return dict(zip(ordered, display_strings(loaded, ordered)))


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
