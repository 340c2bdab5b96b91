"""Capture, with forward hooks on the real transformers modules, what the method needs per layer.

One forward pass of the unmodified model; hooks only *read* (they return None, so outputs are
untouched) and are always removed, even when the pass fails or is cancelled. When a layer's
output hook fires, its `LayerCapture` is complete and handed to `on_layer`, so attribution can
run layer by layer and the big per-layer tensors (attention probabilities) are dropped as soon as
they are used.

Batch size is 1. The captured tensors are float32 (copies where the model's dtype is another:
attribution sums in float32 whatever the model dtype), except the attention probabilities and
the FFN input, kept as the model made them; all on the device of the layer that produced them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from lmscope.models.adapter import ArchitectureAdapter
from lmscope.models.devices import input_device
from lmscope.tracing.experts import MoeCapture, hook_moe


@dataclass
class LayerCapture:
    """What one layer computed. Shapes: n tokens, d width, H heads, H_kv value heads."""

    layer: int
    resid_in: torch.Tensor  # [n, d]       x_i, the layer input
    attn_out: torch.Tensor  # [n, d]       the attention block's update (b_attn included)
    # A[h, i, j] in the model's dtype, not a float32 copy: the biggest capture (2 GB more at
    # 4,000 tokens on Llama-3-8B in bf16), read a chunk of rows at a time; readers convert what
    # they read (`.float()`).
    attn_probs: torch.Tensor  # [H, n, n]
    values: torch.Tensor  # [n, H_kv, dh]  value vectors, value bias removed
    ffn_act: torch.Tensor  # [n, d_ffn]    neuron activations (input of the output projection)
    ffn_out: torch.Tensor  # [n, d]        the FFN update f_i (b_out included)
    resid_out: torch.Tensor  # [n, d]      x'_i, the layer output
    # A mixture-of-experts layer: what routing decided (tracing/experts.py); its `ffn_act` is
    # then [n, 0] (no dense neurons: each expert's are recomputed from x̂ and its weights).
    moe: MoeCapture | None = None
    # Post-norm blocks only (adapter.post_attention_norm / post_ffn_norm; None elsewhere): the
    # output norm's scale frozen at the block's raw output, D_i [n, d] (docs/method.md,
    # "Post-norm blocks"). attn_out and ffn_out are then the normed updates, D_i ⊙ raw.
    attn_scale: torch.Tensor | None = None  # [n, d]
    ffn_scale: torch.Tensor | None = None  # [n, d]
    # The dense FFN's input x̂ [n, d] as the block received it (its dtype, not a float32 copy),
    # where the activations can be recomputed from it (`adapter.ffn_block`); a trace keeps it
    # instead of ffn_act when it is the narrower (layers.LayerState.compact).
    ffn_input: torch.Tensor | None = None


LayerCallback = Callable[[LayerCapture], None]


class CaptureError(RuntimeError):
    """The model did not produce what the adapter promised (a bug or an unsupported variant)."""


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise CaptureError(f"expected a tensor output, got {type(value).__name__}")


def _f32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float()


def _token_rows(tensor: torch.Tensor) -> torch.Tensor:
    """[1, n, *] -> [n, *]. A 2-D tensor is already one row per token: OPT flattens batch and
    tokens into one axis before its FFN, so its FFN tensors arrive as [1·n, *]."""
    return tensor if tensor.dim() == 2 else tensor[0]


@contextmanager
def capture_layers(adapter: ArchitectureAdapter, on_layer: LayerCallback) -> Iterator[None]:
    """Install read-only hooks for every layer for the duration of the `with` block.

    `on_layer` runs inside the forward pass, right after each layer finishes; exceptions it
    raises (e.g. cancellation) abort the pass, and the hooks are removed regardless.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    parts: dict[str, Any] = {}

    def hook_layer(index: int) -> None:
        layer = adapter.layers()[index]

        def layer_input(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            parts.clear()
            parts["resid_in"] = _f32(hidden[0])

        def values(_module, _args, output):
            parts["values"] = _f32(adapter.values_from_output(index, output))

        attention_module = adapter.attention(index)
        update_module = adapter.attention_update(index)
        attention_norm = adapter.post_attention_norm(index)  # None: no output norm
        ffn_norm = adapter.post_ffn_norm(index)

        def attention(_module, _args, output):
            if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                raise CaptureError(
                    "the attention block returned no attention probabilities "
                    "(the model must be loaded with attn_implementation='eager')"
                )
            if update_module is attention_module and attention_norm is None:
                parts["attn_out"] = _f32(output[0][0])
            parts["attn_probs"] = output[1][0].detach()  # the model's dtype: see LayerCapture

        def attention_update(_module, _args, output):
            parts["attn_out"] = _f32(_token_rows(_first_tensor(output)))

        def ffn_input(_module, args):
            parts["ffn_act"] = _f32(_token_rows(args[0]))

        def ffn(_module, _args, output):
            parts["ffn_out"] = _f32(_token_rows(_first_tensor(output)))

        def post_norm(update: str, scale: str):
            """A block's output norm: its input is the raw update y, its output the update the
            residual receives; the scale is frozen at y."""

            def hook(module, args, output):
                raw = _token_rows(args[0])  # [n, d]
                parts[scale] = _f32(adapter.frozen_post_norm_scale(module, raw))
                parts[update] = _f32(_token_rows(_first_tensor(output)))

            return hook

        moe = adapter.moe_layer(index)
        ffn_block = adapter.ffn_block(index)

        def ffn_block_input(_module, args):
            if args and isinstance(args[0], torch.Tensor):  # else the activations are kept
                parts["ffn_input"] = _token_rows(args[0]).detach()

        def layer_output(_module, _args, output):
            if moe is not None and "moe" in parts:  # no dense neurons (see LayerCapture.moe)
                parts["ffn_act"] = parts["ffn_out"].new_zeros(parts["ffn_out"].shape[0], 0)
            wanted = {"resid_in", "values", "attn_out", "attn_probs", "ffn_act", "ffn_out"}
            missing = wanted - parts.keys()
            if missing:
                raise CaptureError(f"layer {index}: hooks did not see {sorted(missing)}")
            captured = LayerCapture(layer=index, resid_out=_f32(_first_tensor(output)[0]), **parts)
            parts.clear()
            on_layer(captured)

        handles.append(layer.register_forward_pre_hook(layer_input, with_kwargs=True))
        handles.append(adapter.value_module(index).register_forward_hook(values))
        handles.append(attention_module.register_forward_hook(attention))
        if attention_norm is not None:
            handles.append(
                attention_norm.register_forward_hook(post_norm("attn_out", "attn_scale"))
            )
        elif update_module is not attention_module:  # BLOOM: the block adds the residual itself
            handles.append(update_module.register_forward_hook(attention_update))
        if moe is None:
            handles.append(adapter.ffn_down(index).register_forward_pre_hook(ffn_input))
            if ffn_block is not None:
                handles.append(ffn_block.register_forward_pre_hook(ffn_block_input))
        else:
            handles.extend(hook_moe(moe, parts))
        if ffn_norm is not None:
            handles.append(ffn_norm.register_forward_hook(post_norm("ffn_out", "ffn_scale")))
        else:
            handles.append(adapter.ffn(index).register_forward_hook(ffn))
        handles.append(layer.register_forward_hook(layer_output))

    try:
        for index in range(adapter.n_layers):
            hook_layer(index)
        yield
    finally:
        for handle in handles:
            handle.remove()
        parts.clear()


def recompute_activations(
    adapter: ArchitectureAdapter, layer: int, normed: torch.Tensor
) -> torch.Tensor:
    """The neuron activations [r, d_ffn] (float32) of some rows, from their FFN input x̂
    normed [r, d] (`LayerCapture.ffn_input`, in the dtype the block received): the layer's own
    FFN module (`adapter.ffn_block`) runs on those rows and its output projection's input is
    read. This is the forward's arithmetic on fewer rows; a matrix product over fewer rows may
    take another kernel, so the result can differ from the forward's activations in the last
    bits (tested: within 1e-6 of the largest activation; all rows at once: identical)."""
    block = adapter.ffn_block(layer)
    if block is None:
        raise CaptureError(f"layer {layer} has no FFN module to recompute activations with")
    seen: list[torch.Tensor] = []

    def keep(_module: Any, args: tuple[Any, ...]) -> None:
        seen.append(_f32(_token_rows(args[0])))
        raise _Seen  # the output projection itself is not needed: a third of the block's work

    handle = adapter.ffn_down(layer).register_forward_pre_hook(keep)
    try:
        with torch.inference_mode():
            block(normed[None])
    except _Seen:
        pass
    finally:
        handle.remove()
    if len(seen) != 1:
        raise CaptureError(f"layer {layer}: the FFN never ran its output projection")
    return seen[0]


class _Seen(Exception):
    """Raised by `recompute_activations`' hook once the activations are seen. Device-map hooks
    (accelerate) sit on the modules holding weights, so the projections that ran were complete
    and the one skipped never loaded its weights."""


class FinalRows:
    """What `last_logits_only` saw: the unembedding's input, the final normed states."""

    hidden: torch.Tensor | None = None  # [n, d] in the model's dtype


@contextmanager
def last_logits_only(model: Any) -> Iterator[FinalRows]:
    """Within the block, the model's unembedding (its output embeddings) keeps its input, the
    final normed states [n, d], and computes logits for the last position only: a trace takes
    its predictions from those states a block of the vocabulary at a time
    (`engine._predictions`), so the forward's [n, V] logits (n · V · 4 bytes: 39 MB for
    SmolLM2 at 200 tokens, 2 GB for Llama-3-8B at 4,000) never exist. The only change to what
    the model computes is which rows of the unembedding it evaluates; the hook is always
    removed.
    """
    head = model.get_output_embeddings()
    seen = FinalRows()

    def keep_last(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]  # [1, n, d]
        seen.hidden = hidden[0]
        return (hidden[:, -1:], *args[1:])

    handle = head.register_forward_pre_hook(keep_last)
    try:
        yield seen
    finally:
        handle.remove()


def run_forward(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """One forward pass of a batch of one: input_ids [n] -> logits [n, V] in float32.

    No KV cache, no gradients; `capture_layers` hooks (if installed) see every layer.
    """
    with torch.inference_mode():
        output = model(input_ids=input_ids.to(input_device(model))[None, :], use_cache=False)
    return output.logits[0].float()
