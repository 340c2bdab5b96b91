"""Every live query in one place: what a trace asks the model again (`traces.live.LiveQueries`).

A trace stores what the method needs for every route at τ ≥ its minimum threshold, and detail
(neurons, projections) for some nodes. Everything else is computed here, from the model and the
prompt, on demand: the neurons past the stored ones, an edge below the stored threshold, the
projections of a node off the stored route, a head's full attention and contribution maps, the
tokens a head, a block or a neuron promotes. Each query runs the model again with the capture
hooks up to the layer it needs, under the model's lock (one hooked pass at a time), and stops
there; `batch()` gives a view that runs each layer at most once for queries made together (one
hover card), and, with `wait=False`, raises `ModelBusyError` at once instead of waiting while a
trace holds the model (a hover answers from what it has during a trace).

`LiveModel(loaded, None)` has no prompt: it answers only what the weights alone say (a neuron's
output-row tokens) and the model's facts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lmscope.attribution.neurons import neuron_contributions
from lmscope.causal.run import run_ablation
from lmscope.causal.targets import check_kind, parse_targets
from lmscope.causal.verify import route_faithfulness
from lmscope.errors import LmscopeError, ModelBusyError, NeedsModelError
from lmscope.graph.nodes import Node
from lmscope.models.adapter import ArchitectureAdapter, adapter_for
from lmscope.models.loading import LoadedModel
from lmscope.models.moe import MoeAdapter
from lmscope.traces.causal import AblationResult, Faithfulness, RouteKeep
from lmscope.traces.data import ModelFacts, Projections, TraceData
from lmscope.traces.experts import ExpertLayout
from lmscope.traces.live import ExpertAt, ExpertList, NeuronAt, NeuronList, TokenScores
from lmscope.tracing import live_experts
from lmscope.tracing.capture import LayerCapture, capture_layers, run_forward
from lmscope.tracing.layers import LayerState, attribute_layer
from lmscope.tracing.projections import project_nodes
from lmscope.tracing.tokens import display_strings, tokenize


class _StopAfterLayer(Exception):
    pass


class LiveModel:
    """The model a trace was made with (or that matches it), for on-demand queries."""

    def __init__(
        self, loaded: LoadedModel, token_ids: list[int] | None, *, wait: bool = True
    ) -> None:
        self.loaded = loaded
        self.token_ids = token_ids  # None: no prompt (weights only)
        self.wait = wait  # False: ModelBusyError instead of waiting for the model's lock
        self._adapter: ArchitectureAdapter | None = None
        self._memo: dict[int, LayerCapture] | None = None  # only in a batch() view

    # --- identity ------------------------------------------------------------------------------
    @property
    def adapter(self) -> ArchitectureAdapter:
        if self._adapter is None:
            self._adapter = adapter_for(self.loaded.model)
        return self._adapter

    @property
    def facts(self) -> ModelFacts:
        return self.loaded.facts

    @property
    def has_prompt(self) -> bool:
        return self.token_ids is not None

    def batch(self, *, wait: bool = True) -> LiveModel:
        view = LiveModel(self.loaded, self.token_ids, wait=wait)
        view._adapter = self._adapter
        view._memo = {}
        return view

    def token_text(self, token_id: int) -> str:
        return display_strings(self.loaded, [int(token_id)])[0]

    # --- running the model again ---------------------------------------------------------------
    def _prompt(self) -> list[int]:
        if self.token_ids is None:
            raise NeedsModelError("this query needs a traced prompt, not only the model")
        return self.token_ids

    def _run_until(self, layer: int, on_layer: Callable[[LayerCapture], None]) -> None:
        """Run the model again with capture hooks, handing each layer's capture to `on_layer`,
        and stop after `layer` (the rest of the pass is not needed)."""
        ids = torch.tensor(self._prompt(), dtype=torch.long)

        def until(captured: LayerCapture) -> None:
            on_layer(captured)
            if captured.layer == layer:
                raise _StopAfterLayer

        if not self.loaded.lock.acquire(blocking=self.wait):
            raise ModelBusyError("the model is busy with another forward pass (a trace)")
        try:
            with capture_layers(self.adapter, until):
                run_forward(self.loaded.model, ids)
        except _StopAfterLayer:
            pass
        finally:
            self.loaded.lock.release()

    def layer(self, layer: int) -> LayerCapture:
        """What `layer` computed on the prompt (runs the model up to that layer)."""
        if self._memo is not None and layer in self._memo:
            return self._memo[layer]
        found: list[LayerCapture] = []
        self._run_until(layer, found.append)
        if self._memo is not None:
            self._memo[layer] = found[-1]
        return found[-1]

    # --- attention ------------------------------------------------------------------------------
    def edge_heads(self, layer: int, target: int, source: int) -> list[dict[str, float]]:
        captured = self.layer(layer)
        result = attribute_layer(self.adapter, captured, keep_above=-1.0)
        hit = ((result.edge_target == target) & (result.edge_source == source)).nonzero()[0, 0]
        return [
            {
                "head": h,
                "contribution": float(result.edge_heads[hit, h]),
                "attention": float(captured.attn_probs[h, target, source]),
            }
            for h in range(result.edge_heads.shape[1])
        ]

    def attention_pattern(self, layer: int, head: int) -> np.ndarray:
        return self.layer(layer).attn_probs[head].float().cpu().numpy()

    def contribution_map(self, layer: int, head: int) -> np.ndarray:
        result = attribute_layer(self.adapter, self.layer(layer), keep_above=-1.0)
        n = len(self._prompt())
        out = np.zeros((n, n), dtype=np.float32)
        out[result.edge_target.cpu().numpy(), result.edge_source.cpu().numpy()] = (
            result.edge_heads[:, head].cpu().numpy()
        )
        return out

    def head_output(
        self, layer: int, head: int, position: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Head `head`'s output at `position`, Σ_j A[h,i,j] · v_j · W_O[h] ([d], value bias
        excluded as in the attention parts; behind a post-norm times its frozen D_i, as the
        residual receives it), and the residual its norm scale is frozen at ([d]): the one the
        attention update is added into."""
        captured = self.layer(layer)
        adapter = self.adapter
        with torch.inference_mode():
            values = captured.values[:, adapter.kv_head_of(head), :]  # [n, dh]
            w_o = adapter.head_output_weights(layer)[head].to(values.device).float()  # [dh, d]
            output = captured.attn_probs[head, position].float() @ values @ w_o  # [d]
            if captured.attn_scale is not None:
                output = output * captured.attn_scale[position]
            if adapter.parallel_blocks:
                residual = captured.resid_out[position]
            else:
                residual = captured.resid_in[position] + captured.attn_out[position]
        return output, residual

    def head_tokens(
        self, layer: int, head: int, position: int, k: int
    ) -> tuple[TokenScores, TokenScores]:
        """The head's output at `position` projected with the final norm's scale frozen at the
        residual it is added into."""
        output, residual = self.head_output(layer, head, position)
        with torch.inference_mode():
            return self._token_lists(self.adapter.frozen_final_norm(output, residual), k)

    # --- blocks and neurons ---------------------------------------------------------------------
    def block_tokens(
        self, layer: int, block: str, position: int, k: int
    ) -> tuple[TokenScores, TokenScores]:
        captured = self.layer(layer)
        t = position
        with torch.inference_mode():
            if block == "attention":
                update = captured.attn_out[t]
                parallel = self.adapter.parallel_blocks
                residual = captured.resid_out[t] if parallel else captured.resid_in[t] + update
            else:
                update, residual = captured.ffn_out[t], captured.resid_out[t]
            return self._token_lists(self.adapter.frozen_final_norm(update, residual), k)

    def neuron_tokens(self, layer: int, neuron: int, k: int) -> tuple[TokenScores, TokenScores]:
        """W_U · norm_final(W_out[k]) with the norm's scale frozen at the row itself and no
        bias: a positive multiple of the row's direction (docs/method.md, "Vocabulary
        projections"). Behind an FFN output norm the row is γ'_post ⊙ W_out[k]: the neuron
        writes D^ffn_i ⊙ W_out[k] = γ'_post ⊙ W_out[k] / rms_i, the same direction at every
        position."""
        with torch.inference_mode():
            if self._sparse(layer):  # a flat id: its expert's W_out^e[k]
                row = live_experts.output_row(self._moe_adapter, layer, neuron).float()
                return self._token_lists(self.adapter.frozen_final_norm(row, row), k)
            row = self.adapter.ffn_output_weights(layer)[neuron].float()  # [d]
            post_norm = self.adapter.post_ffn_norm(layer)
            if post_norm is not None:
                row = row * self.adapter.post_norm_gain(post_norm).to(row.device)
            return self._token_lists(self.adapter.frozen_final_norm(row, row), k)

    def neurons(self, layer: int, position: int) -> NeuronList:
        captured = self.layer(layer)
        if captured.moe is not None:
            return live_experts.neurons(self._moe_adapter, captured, position)
        act = captured.ffn_act[position : position + 1]
        whole = captured.resid_out[position : position + 1]
        rest = whole - captured.ffn_out[position : position + 1]
        w_out = self.adapter.ffn_output_weights(layer).to(whole.device)
        scale = None if captured.ffn_scale is None else captured.ffn_scale[position : position + 1]
        result = neuron_contributions(act, w_out, whole, rest, scale)
        order = torch.sort(result.contribution[0], descending=True, stable=True).indices
        return NeuronList(
            index=order.cpu().numpy(),
            contribution=result.contribution[0, order].cpu().numpy(),
            activation=act[0, order].cpu().numpy(),
            rest=float(result.rest[0]),
        )

    def neuron_at(self, layer: int, neuron: int, positions: list[int]) -> dict[int, NeuronAt]:
        captured = self.layer(layer)
        if captured.moe is not None:
            return live_experts.neuron_at(self._moe_adapter, captured, neuron, positions)
        with torch.inference_mode():
            rows = torch.tensor(positions, device=captured.resid_out.device)
            act, whole = captured.ffn_act[rows], captured.resid_out[rows]
            w_out = self.adapter.ffn_output_weights(layer).to(whole.device)
            scale = None if captured.ffn_scale is None else captured.ffn_scale[rows]  # [F, d]
            result = neuron_contributions(act, w_out, whole, whole - captured.ffn_out[rows], scale)
        return {
            p: NeuronAt(
                float(result.contribution[r, neuron]), float(act[r, neuron]), float(result.rest[r])
            )
            for r, p in enumerate(positions)
        }

    # --- experts (docs/method.md, "Experts") -----------------------------------------------------
    @property
    def expert_layout(self) -> ExpertLayout | None:
        return getattr(self.adapter, "expert_layout", None)

    @property
    def _moe_adapter(self) -> MoeAdapter:
        if not isinstance(self.adapter, MoeAdapter):
            raise LmscopeError(f"{self.loaded.name} is a dense model: it has no experts")
        return self.adapter

    def _sparse(self, layer: int) -> bool:
        layout = self.expert_layout
        return layout is not None and layout.is_sparse(layer)

    def experts(self, layer: int, position: int) -> ExpertList:
        return live_experts.experts(self._moe_adapter, self.layer(layer), position)

    def expert_at(self, layer: int, slot: int, positions: list[int]) -> dict[int, ExpertAt]:
        return live_experts.expert_at(self._moe_adapter, self.layer(layer), slot, positions)

    def expert_tokens(
        self, layer: int, slot: int, position: int, k: int
    ) -> tuple[TokenScores, TokenScores]:
        """W_U · N_frozen(q[e,i]; x'_i): the expert's part through the final norm frozen at the
        layer output it is added into (docs/method.md, "Experts")."""
        captured = self.layer(layer)
        update, residual = live_experts.expert_update(self._moe_adapter, captured, slot, position)
        with torch.inference_mode():
            return self._token_lists(self.adapter.frozen_final_norm(update, residual), k)

    # --- projections -----------------------------------------------------------------------------
    def projections(self, node: Node, top_k: int) -> Projections:
        """Every projection of `node`, from a fresh pass up to its layer that keeps only the
        node's token row: [1, d] per layer, whatever the prompt length."""
        at = slice(node.position, node.position + 1)
        states: list[LayerState] = []

        def keep_row(c: LayerCapture) -> None:
            states.append(
                LayerState(
                    c.resid_in[at], c.attn_out[at], None, c.ffn_out[at], c.resid_out[at],
                    attn_scale=None if c.attn_scale is None else c.attn_scale[at],
                    ffn_scale=None if c.ffn_scale is None else c.ffn_scale[at],
                )
            )  # fmt: skip

        self._run_until(node.layer, keep_row)
        found = project_nodes(self.adapter, states, {Node(node.kind, node.layer, 0)}, top_k)
        found.position[:] = node.position  # rows were scored as position 0 of the kept row
        return found

    # --- causal checks (lmscope.causal) -----------------------------------------------------------
    def _locked(self, run: Callable[[], Any]) -> Any:
        """`run` (whole forward passes with ablation hooks) under the model's lock."""
        if not self.loaded.lock.acquire(blocking=self.wait):
            raise ModelBusyError("the model is busy with another forward pass (a trace)")
        try:
            return run()
        finally:
            self.loaded.lock.release()

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
        ids = self._prompt()
        parsed, checked = parse_targets(targets), check_kind(kind)
        patch_ids = None
        if patch_prompt is not None:
            context = self.adapter.context_length
            patch_ids = tokenize(self.loaded, patch_prompt, prepend_bos, context)
        return self._locked(
            lambda: run_ablation(
                self.adapter, ids, parsed, checked, position, token_id, self.token_text,
                patch_ids, should_cancel,
            )
        )  # fmt: skip

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
        ids, checked = self._prompt(), check_kind(kind)
        return self._locked(
            lambda: route_faithfulness(
                self.adapter, ids, keep, threshold, checked, position, token_id, self.token_text,
                n_random, seed, should_cancel, progress,
            )
        )  # fmt: skip

    def _token_lists(self, vector: torch.Tensor, k: int) -> tuple[TokenScores, TokenScores]:
        """Top and bottom tokens of W_U · vector ([d], already through the frozen norm)."""
        w_u = self.adapter.unembedding_weight()
        scores = w_u.float() @ vector.to(w_u.device).float()  # [V]
        k = min(k, scores.shape[0])
        top = scores.topk(k)
        bottom = scores.topk(k, largest=False)
        ids = [int(i) for i in top.indices] + [int(i) for i in bottom.indices]
        texts = display_strings(self.loaded, ids)
        values = [float(v) for v in top.values] + [float(v) for v in bottom.values]
        rows: list[dict[str, Any]] = [
            {"token": s, "id": i, "score": v} for s, i, v in zip(texts, ids, values)
        ]
        return rows[:k], rows[k:]


def queries_for(
    loaded: LoadedModel | None, data: TraceData | None
) -> tuple[LiveModel | None, list[str]]:
    """The loaded model as the live queries of a saved trace (`data`), when it is the model
    that made it (same weights and shape), or with no prompt when there is no trace; and notes
    saying why the loaded model is not used."""
    if loaded is None:
        return None, []
    if data is None:
        return LiveModel(loaded, None), []
    live = LiveModel(loaded, [int(i) for i in data.tokens.ids])
    facts, mine = data.model, live.facts
    same = (
        loaded.content_hash == facts.content_hash
        and mine.model_type == facts.model_type
        and (mine.n_layers, mine.d_model, mine.vocab_size)
        == (facts.n_layers, facts.d_model, facts.vocab_size)
    )
    if same:
        return live, []
    return None, [
        f"the loaded model ({loaded.name}) is not this trace's model ({facts.name}): it is not used"
    ]
