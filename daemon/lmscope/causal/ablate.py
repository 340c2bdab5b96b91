"""Ablated forward passes of the real model: zero, mean or patch heads, attention edges, FFN
nodes and neurons (docs/method.md, "Causal checks").

A `Plan` says what is ablated, as masks per layer; `ablated_logits` runs the unmodified model
once with hooks that overwrite exactly those entries, and returns the logits. Where a
replacement comes from:

- zero: 0;
- mean: the component's mean over the prompt's positions in a clean pass on the same prompt;
- patch: the component's value at the same position in a clean pass on a second prompt of the
  same token count (activation patching).

A clean reference pass (`record`) captures what the replacements need. Components and where
they are overwritten (module hooks, except edges):

| target       | overwritten                                                  |
|--------------|--------------------------------------------------------------|
| head h       | head h's slice of the output projection's input [n, dh]      |
| edge (h,i,j) | the term A[h,i,j]·v[j,g(h)] inside attention (causal/attention.py) |
| FFN (l,i)    | row i of the FFN update (after a post-norm: what x receives)  |
| neuron (k,i) | a[i,k], the output projection's input of the FFN             |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lmscope.causal.attention import EdgeEdit, edited_attention
from lmscope.causal.targets import (
    AblationError,
    AblationKind,
    EdgeTarget,
    FfnTarget,
    HeadEdgeTarget,
    HeadTarget,
    NeuronTarget,
    Target,
)
from lmscope.errors import LmscopeError
from lmscope.models.adapter import ArchitectureAdapter
from lmscope.models.devices import input_device


class AblationCancelled(LmscopeError):
    """The causal check was cancelled between layers."""


@dataclass
class Plan:
    """What one ablated pass removes, per layer. n tokens, H heads."""

    n_tokens: int
    heads: dict[int, list[int]] = field(default_factory=dict)  # heads ablated everywhere
    edges: dict[int, torch.Tensor] = field(default_factory=dict)  # bool [H, n, n] (h, i, j)
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)  # bool [n] positions
    neurons: dict[int, list[tuple[int, int | None]]] = field(default_factory=dict)

    @classmethod
    def of_targets(cls, targets: list[Target], n_tokens: int, n_heads: int) -> Plan:
        plan = cls(n_tokens)
        for target in targets:
            layer = target.layer
            if isinstance(target, HeadTarget):
                plan.heads.setdefault(layer, []).append(target.head)
            elif isinstance(target, (HeadEdgeTarget, EdgeTarget)):
                mask = plan.edge_mask(layer, n_heads)
                heads = [target.head] if isinstance(target, HeadEdgeTarget) else slice(None)
                mask[heads, target.target, target.source] = True
            elif isinstance(target, FfnTarget):
                positions = plan.ffn.setdefault(layer, torch.zeros(n_tokens, dtype=torch.bool))
                positions[slice(None) if target.position is None else target.position] = True
            elif isinstance(target, NeuronTarget):
                plan.neurons.setdefault(layer, []).append((target.neuron, target.position))
        return plan

    def edge_mask(self, layer: int, n_heads: int) -> torch.Tensor:
        n = self.n_tokens
        return self.edges.setdefault(layer, torch.zeros(n_heads, n, n, dtype=torch.bool))


@dataclass
class Reference:
    """A clean pass's values of the planned components, per layer (float32, on the layer's
    device): what mean and patch replacements are made of."""

    head_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # [n, H·dh]
    probs: dict[int, torch.Tensor] = field(default_factory=dict)  # [H, n, n]
    values: dict[int, torch.Tensor] = field(default_factory=dict)  # [H, n, dh], bias included
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)  # [n, d]
    activations: dict[int, torch.Tensor] = field(default_factory=dict)  # [n, d_ffn]


def output_projection(adapter: ArchitectureAdapter, layer: int) -> nn.Module:
    """The attention's output projection (its input is the heads' outputs side by side)."""
    attention = adapter.attention(layer)
    for name in ("o_proj", "out_proj", "c_proj", "dense"):
        module = getattr(attention, name, None)
        if isinstance(module, nn.Module):
            return module
    raise AblationError(f"{adapter.model_type}: no output projection found in layer {layer}")


def ffn_update_module(adapter: ArchitectureAdapter, layer: int) -> nn.Module:
    """The module whose output is the FFN update the residual receives."""
    norm = adapter.post_ffn_norm(layer)
    return adapter.ffn(layer) if norm is None else norm


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """[1, n, *] or [n, *] (OPT flattens the batch) -> a [n, *] view."""
    return tensor if tensor.dim() == 2 else tensor[0]


def _with_first(output: Any, first: torch.Tensor) -> Any:
    """`output` with its first tensor replaced (modules return a tensor or a tuple)."""
    if isinstance(output, torch.Tensor):
        return first
    return (first, *output[1:])


def _first(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def forward_logits(model: Any, ids: list[int]) -> torch.Tensor:
    """One forward pass of a batch of one: logits [n, V] float32 (hooks installed apply)."""
    tokens = torch.tensor(ids, dtype=torch.long, device=input_device(model))[None, :]
    with torch.inference_mode():
        return model(input_ids=tokens, use_cache=False).logits[0].float()


@contextmanager
def _cancellable(
    adapter: ArchitectureAdapter, should_cancel: Callable[[], bool] | None
) -> Iterator[None]:
    """Check `should_cancel` before every layer; AblationCancelled aborts the pass."""
    with ExitStack() as stack:
        if should_cancel is not None:

            def check(_module, _args):
                if should_cancel():
                    raise AblationCancelled("causal check cancelled")

            for layer in adapter.layers():
                stack.callback(layer.register_forward_pre_hook(check).remove)
        yield


def record(adapter: ArchitectureAdapter, ids: list[int], plan: Plan, patch: bool) -> Reference:
    """A clean pass on `ids` keeping the planned components' values (probabilities only for
    patching: a mean replacement needs the values alone)."""
    reference = Reference()

    def recorder(layer: int) -> EdgeEdit:
        def edit(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            reference.values[layer] = values.float()
            if patch:
                reference.probs[layer] = probs.float()
            return torch.matmul(probs, values).transpose(0, 1)  # eager's own output [n, H, dh]

        return edit

    with ExitStack() as stack:
        for layer in plan.heads:

            def keep_heads(_module, args, layer=layer):
                reference.head_inputs[layer] = _rows(args[0]).float()

            projection = output_projection(adapter, layer)
            stack.callback(projection.register_forward_pre_hook(keep_heads).remove)
        for layer in plan.ffn:

            def keep_ffn(_module, _args, output, layer=layer):
                reference.ffn[layer] = _rows(_first(output)).float()

            module = ffn_update_module(adapter, layer)
            stack.callback(module.register_forward_hook(keep_ffn).remove)
        for layer in plan.neurons:

            def keep_activations(_module, args, layer=layer):
                reference.activations[layer] = _rows(args[0]).float()

            down = adapter.ffn_down(layer)
            stack.callback(down.register_forward_pre_hook(keep_activations).remove)
        stack.enter_context(
            edited_attention(adapter, {layer: recorder(layer) for layer in plan.edges})
        )
        forward_logits(adapter.model, ids)
    return reference


def _replacement(kind: AblationKind, recorded: torch.Tensor | None) -> torch.Tensor | None:
    """What a component becomes at each position: None for zero, else [n, *] (the mean is
    broadcast over positions)."""
    if kind == "zero" or recorded is None:
        return None
    if kind == "mean":
        return recorded.mean(0, keepdim=True).expand_as(recorded)
    return recorded


def _edge_edit(mask: torch.Tensor, kind: AblationKind, reference: Reference, layer: int):
    """The attention edit of one layer: ablated entries M [H, n, n] replaced per `kind`."""

    def edit(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        ablated = mask.to(probs.device)
        kept = torch.where(ablated, torch.zeros_like(probs), probs)  # A·(1 − M), no renorm
        out = torch.matmul(kept, values)  # [H, n, dh]
        if kind == "mean":
            mean_values = reference.values[layer].mean(1, keepdim=True).to(values.dtype)  # [H,1,dh]
            weight = (probs - kept).sum(-1, keepdim=True)  # Σ_j A·M  [H, n, 1]
            out = out + weight * mean_values
        elif kind == "patch":
            other = torch.where(ablated, reference.probs[layer], 0.0).to(probs.dtype)
            out = out + torch.matmul(other, reference.values[layer].to(values.dtype))
        return out.transpose(0, 1)  # [n, H, dh]

    return edit


def ablated_logits(
    adapter: ArchitectureAdapter,
    ids: list[int],
    plan: Plan,
    kind: AblationKind,
    reference: Reference | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Logits [n, V] of the model on `ids` with `plan` ablated. `reference` (from `record`) is
    required for mean (recorded on `ids`) and patch (on the other prompt)."""
    if kind != "zero" and reference is None:
        raise AblationError(f"a {kind} ablation needs a reference pass")
    reference = reference or Reference()
    d_head = adapter.d_head
    with ExitStack() as stack:
        for layer, heads in plan.heads.items():
            replaced = _replacement(kind, reference.head_inputs.get(layer))

            def edit_heads(_module, args, heads=heads, replaced=replaced):
                inputs = args[0].clone()
                rows = _rows(inputs)  # [n, H·dh], a view of `inputs`
                for head in heads:
                    part = slice(head * d_head, (head + 1) * d_head)
                    rows[:, part] = 0 if replaced is None else replaced[:, part].to(rows.dtype)
                return (inputs, *args[1:])

            module = output_projection(adapter, layer)
            stack.callback(module.register_forward_pre_hook(edit_heads).remove)
        for layer, positions in plan.ffn.items():
            replaced = _replacement(kind, reference.ffn.get(layer))

            def edit_ffn(_module, _args, output, positions=positions, replaced=replaced):
                first = _first(output).clone()
                rows = _rows(first)  # [n, d]
                where = positions.to(rows.device)
                rows[where] = 0 if replaced is None else replaced[where].to(rows.dtype)
                return _with_first(output, first)

            module = ffn_update_module(adapter, layer)
            stack.callback(module.register_forward_hook(edit_ffn).remove)
        for layer, neurons in plan.neurons.items():
            if adapter.moe_layer(layer) is not None:
                raise AblationError(
                    f"layer {layer} is a mixture of experts: neuron ablations are not supported "
                    "there (ablate the FFN node instead)"
                )
            replaced = _replacement(kind, reference.activations.get(layer))

            def edit_neurons(_module, args, neurons=neurons, replaced=replaced):
                inputs = args[0].clone()
                rows = _rows(inputs)  # [n, d_ffn]
                for neuron, position in neurons:
                    at = slice(None) if position is None else position
                    rows[at, neuron] = (
                        0 if replaced is None else replaced[at, neuron].to(rows.dtype)
                    )
                return (inputs, *args[1:])

            down = adapter.ffn_down(layer)
            stack.callback(down.register_forward_pre_hook(edit_neurons).remove)
        edits = {
            layer: _edge_edit(mask, kind, reference, layer) for layer, mask in plan.edges.items()
        }
        stack.enter_context(edited_attention(adapter, edits))
        stack.enter_context(_cancellable(adapter, should_cancel))
        return forward_logits(adapter.model, ids)
