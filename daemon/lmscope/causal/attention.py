"""Attention edges ablated inside the real attention: a wrapper around the family's own eager
attention function, registered in transformers' attention-function registry.

transformers' attention modules call `ALL_ATTENTION_FUNCTIONS.get_interface(
config._attn_implementation, eager_attention_forward)`. For the ablated pass the wrapper is
registered under `WRAPPER_NAME` (with the eager mask function under the same name, so the masks
are eager's), every config the attention modules read is switched to it, and switched back in a
`finally`. The wrapper calls the family's `eager_attention_forward` unchanged, then, only in a
layer that has an edit, rewrites the output from the probabilities the model computed:

    out[h,i] = Σ_j A[h,i,j]·(1 − M[h,i,j])·v[j,g(h)]  +  replacement[h,i]          [n, H, dh]

where M marks the ablated entries (no renormalisation of A) and the replacement is given by the
caller (`EdgeEdit`): 0 (zero), Σ_j A·M · mean_j' v[j'] (mean), Σ_j A'·M·v'[j] (patch, the other
prompt's A' and v'). v here is what the model multiplies A by: the value bias included.

Families whose attention does not call the registry (GPT-Neo, GPT-J, BLOOM in transformers 5)
and GPT-2 with `reorder_and_upcast_attn` are refused for edge ablations (`edges_supported`);
heads, FFN nodes and neurons use module hooks (`ablate.py`) and work everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lmscope.causal.targets import AblationError
from lmscope.models.adapter import ArchitectureAdapter

WRAPPER_NAME = "lmscope_causal"

# What a layer's edit sees: probs [H, n, n] as the model computed them and the values [H, n, dh]
# (repeated per query head, value bias included); it returns the new output [n, H, dh].
EdgeEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# id(attention module) -> its edit, while an ablated or recording pass runs. Modules belong to
# one model, and the model's lock allows one pass at a time, so one table serves every model.
_EDITS: dict[int, EdgeEdit] = {}
_SEEN: set[int] = set()


def _family_eager(module: Any) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return sys.modules[type(module).__module__].eager_attention_forward


def _wrapper(module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: the family's eager attention, then the layer's edit.

    Shapes (batch of one): value [1, H_kv, n, dh]; out [1, n, H, dh]; probs [1, H, n, n].
    """
    out, probs = _family_eager(module)(module, query, key, value, attention_mask, **kwargs)
    edit = _EDITS.get(id(module))
    if edit is None:
        return out, probs
    _SEEN.add(id(module))
    repeat = probs.shape[1] // value.shape[1]  # transformers' repeat_kv: g(h) = h // repeat
    values = value[0].repeat_interleave(repeat, dim=0)  # [H, n, dh]
    new_out = edit(probs[0], values)  # [n, H, dh]
    return new_out[None].to(out.dtype), probs


def edges_supported(adapter: ArchitectureAdapter) -> str | None:
    """None when `adapter`'s attention calls the registry; else why edges cannot be ablated."""
    module = adapter.attention(0)
    source = sys.modules[type(module).__module__]
    if not hasattr(source, "ALL_ATTENTION_FUNCTIONS") or not hasattr(
        source, "eager_attention_forward"
    ):
        return (
            f"attention-edge ablations are not supported for {adapter.model_type}: its attention "
            "does not call transformers' attention-function registry (ablate whole heads, FFN "
            "nodes or neurons instead)"
        )
    if getattr(module, "reorder_and_upcast_attn", False):
        return (
            f"attention-edge ablations are not supported for {adapter.model_type} with "
            "reorder_and_upcast_attn: that path bypasses the attention-function registry"
        )
    return None


def _configs(adapter: ArchitectureAdapter) -> list[Any]:
    """Every distinct config object the model and its attention modules read."""
    found: dict[int, Any] = {id(adapter.model.config): adapter.model.config}
    for layer in range(adapter.n_layers):
        config = getattr(adapter.attention(layer), "config", None)
        if config is not None:
            found.setdefault(id(config), config)
    return list(found.values())


@contextmanager
def edited_attention(adapter: ArchitectureAdapter, edits: dict[int, EdgeEdit]) -> Iterator[None]:
    """Run the `with` block's forward pass through the wrapper, with `edits` per layer.

    The wrapper is installed even with no edit (an unedited layer returns eager's own output),
    so an empty ablation exercises the same path. After the block, a layer whose edit never ran
    is an error: the family did not call the registry after all.
    """
    reason = edges_supported(adapter)
    if reason is not None:
        if edits:
            raise AblationError(reason)
        yield
        return
    ALL_ATTENTION_FUNCTIONS.register(WRAPPER_NAME, _wrapper)
    ALL_MASK_ATTENTION_FUNCTIONS.register(WRAPPER_NAME, eager_mask)
    configs = _configs(adapter)
    previous = [config._attn_implementation for config in configs]
    if any(name != "eager" for name in previous):
        raise AblationError(
            f"causal checks need the model loaded with eager attention, not {previous[0]!r}"
        )
    modules = {layer: id(adapter.attention(layer)) for layer in edits}
    _SEEN.clear()
    try:
        for config in configs:
            config._attn_implementation = WRAPPER_NAME
        for layer, edit in edits.items():
            _EDITS[modules[layer]] = edit
        yield
        missed = sorted(layer for layer, key in modules.items() if key not in _SEEN)
        if missed:
            raise AblationError(
                f"{adapter.model_type}: layers {missed} did not run the attention wrapper; "
                "attention-edge ablations are not supported for this model"
            )
    finally:
        for config, name in zip(configs, previous):
            config._attn_implementation = name
        for key in modules.values():
            _EDITS.pop(key, None)
        _SEEN.clear()
