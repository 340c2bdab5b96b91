"""Turn a model spec into a ready model + tokenizer (`load_model`), and say what was loaded
(`LoadedModel`, with its `facts`).

Every model lmscope traces comes through `load_model`: the spec is resolved once (specs.py),
its weights placed on one device or over an accelerate device map (devices.py), and read by
the source the spec names (sources.py, hub.py, default_model.py): eval mode, gradients off,
eager attention, never any remote code. A PEFT adapter (the spec names its folder, or
`adapter=` names it over the spec's base) is merged into the base weights right after the base
loads (peft_adapters.py). Everything the user can get wrong ends as one `ModelLoadError` (or
other `LmscopeError`) line.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lmscope.errors import ModelLoadError
from lmscope.models import default_model, hub, peft_adapters, sources
from lmscope.models.adapter import adapter_for
from lmscope.models.devices import (
    PLANS,
    DeviceMap,
    Placement,
    resolve_device,
    resolve_dtype,
)
from lmscope.models.hashing import merged_hash, weights_hash
from lmscope.models.peft_adapters import AdapterSpec
from lmscope.models.sources import ProgressFn, report
from lmscope.models.specs import ModelSpec, resolve_spec
from lmscope.traces.data import AdapterFacts, ModelFacts

if TYPE_CHECKING:
    import transformers

# Callers import these from here (api.py, session.py, the tests); they live where they belong.
__all__ = [
    "PLANS",
    "DeviceMap",
    "LoadedModel",
    "ProgressFn",
    "check_loadable",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]


@dataclass
class LoadedModel:
    """A model ready for tracing, and where it came from."""

    model: transformers.PreTrainedModel  # eval mode, eager attention, requires_grad off
    tokenizer: transformers.PreTrainedTokenizerBase
    spec: str  # what the user asked for (an adapter folder, or the base with an adapter)
    name: str  # display name ("base + adapter" with an adapter)
    source: str  # the base's: "default" | "hub" | "folder" | "gguf"
    # "sha256:<hex>", "sha256-sampled:<hex>" or "revision:<sha>"; with an adapter, the merged
    # model's (hashing.merged_hash; the base's own is adapter.base_hash)
    content_hash: str
    dtype: torch.dtype
    device: str  # "cpu", "cuda:0", ...: where token ids go (the first shard under a map)
    # Held for every forward pass with hooks (a trace, a live query's recapture): hooks are
    # per module, so two hooked passes at once would see each other's layers.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    # Under a device map: module name -> device ("cuda:1", "cpu", "disk"), as accelerate placed it.
    device_map: dict[str, str] | None = None
    # Keeps the folder of disk-offloaded weights alive as long as the model.
    offload_dir: Any = field(default=None, repr=False, compare=False)
    # The PEFT adapter merged into the weights, as the trace records it; None: the base alone.
    adapter: AdapterFacts | None = None

    @property
    def facts(self) -> ModelFacts:
        """Identity and architecture, as a trace records them (UnsupportedModelError for an
        architecture lmscope has no adapter for)."""
        adapter = adapter_for(self.model)
        return ModelFacts(
            spec=self.spec,
            name=self.name,
            source=self.source,
            content_hash=self.content_hash,
            family=adapter.family,
            model_type=adapter.model_type,
            n_layers=adapter.n_layers,
            n_heads=adapter.n_heads,
            n_kv_heads=adapter.n_kv_heads,
            d_model=adapter.d_model,
            d_head=adapter.d_head,
            d_ffn=adapter.d_ffn,
            vocab_size=adapter.vocab_size,
            context_length=adapter.context_length,
            parallel_blocks=adapter.parallel_blocks,
            adapter=self.adapter,
        )

    @property
    def parameter_bytes(self) -> int:
        """Bytes of all parameters in the loaded dtype, wherever they are (offloaded too)."""
        return int(sum(p.numel() * p.element_size() for p in self.model.parameters()))


def load_model(
    spec: str = "default",
    *,
    dtype: str | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    device_map: DeviceMap | None = None,
    adapter: str | None = None,
) -> LoadedModel:
    """Load the model `spec` names, ready for tracing.

    spec: "default" (the embedded SmolLM2-135M-Instruct), a path to a .gguf file, a folder saved
    with save_pretrained, a PEFT adapter folder (loaded over the base its adapter_config.json
    names), or a Hugging Face hub id (`org/name`). `adapter`: a PEFT adapter folder to merge
    into the model `spec` names. With `device_map` the model is split over devices by
    accelerate (`device` is then unused); see DeviceMap. Raises ModelLoadError (or another
    LmscopeError) with one line for anything the user can get wrong.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    base, lora = _check(spec, dtype, device, device_map, adapter)
    torch_dtype = resolve_dtype(dtype)
    one_device = resolve_device(device)
    placement = Placement(one_device) if device_map is None else Placement.mapped(device_map)
    report(progress, "resolving model")
    model, tokenizer, content_hash = _read(base, torch_dtype, placement, progress)
    name, facts = base.name, None
    if lora is not None:
        model = peft_adapters.merge_adapter(model, lora, progress)
        report(progress, "hashing adapter weights")
        facts = _adapter_facts(lora, base, content_hash)
        name, content_hash = (
            f"{base.name} + {lora.name}",
            merged_hash(content_hash, facts.content_hash),
        )
    where, mapping = placement.where(model)
    return LoadedModel(
        model, tokenizer, str(spec).strip(), name, base.kind, content_hash,
        torch_dtype, where, device_map=mapping, offload_dir=placement.offload, adapter=facts,
    )  # fmt: skip


def _adapter_facts(lora: AdapterSpec, base: ModelSpec, base_hash: str) -> AdapterFacts:
    return AdapterFacts(
        spec=str(lora.folder),
        name=lora.name,
        content_hash=weights_hash(lora.files),
        peft_type=lora.peft_type,
        dora=lora.dora,
        rank=lora.rank,
        alpha=lora.alpha,
        target_modules=list(lora.target_modules),
        base_spec=base.spec,
        base_hash=base_hash,
    )


def check_loadable(
    spec: str,
    *,
    dtype: str | None = None,
    device: str = "cpu",
    device_map: DeviceMap | None = None,
    adapter: str | None = None,
) -> ModelSpec:
    """Everything about a load that can be known without reading weights, checked: the dtype,
    the device, the device map's plan, what the spec names, and that it looks like a model (a
    folder's config, weights and tokenizer; a GGUF's magic; the embedded model installed; a hub
    id cached or, online, known to the hub), and an adapter's folder, config and base. One
    ModelLoadError (or LmscopeError) line otherwise. The daemon checks this before it lets the
    loaded model go, so a mistyped spec never costs the model the user has. Returns the spec of
    the whole model that loads (an adapter's base)."""
    return _check(spec, dtype, device, device_map, adapter)[0]


def _check(
    spec: str,
    dtype: str | None,
    device: str,
    device_map: DeviceMap | None,
    adapter: str | None,
) -> tuple[ModelSpec, AdapterSpec | None]:
    """check_loadable's checks; the base model's spec, and the adapter's when there is one."""
    resolve_dtype(dtype)
    resolve_device(device)
    if device_map is not None and isinstance(device_map.plan, str) and device_map.plan not in PLANS:
        raise ModelLoadError(
            f"unknown device map '{device_map.plan}': expected one of {', '.join(PLANS)}"
        )
    resolved = resolve_spec(spec)
    lora = None if adapter is None else peft_adapters.read_adapter(adapter)
    if resolved.kind == "adapter":
        if lora is not None:
            raise ModelLoadError(
                f"the model {resolved.location} is itself a PEFT adapter: give its base as the "
                "model with --adapter, or drop --adapter (lmscope merges one adapter)"
            )
        lora = peft_adapters.read_adapter(resolved.location)
        resolved = peft_adapters.base_spec(lora)
        if device_map is not None and resolved.kind == "gguf":
            raise ModelLoadError(GGUF_UNMAPPED)
        try:
            _check_base(resolved)
        except ModelLoadError as exc:  # the config's base, not one the user named
            raise peft_adapters.missing_base(lora, exc) from None
        return resolved, lora
    if device_map is not None and resolved.kind == "gguf":
        raise ModelLoadError(GGUF_UNMAPPED)
    _check_base(resolved)
    return resolved, lora


def _check_base(resolved: ModelSpec) -> None:
    """That the whole model `resolved` names looks loadable (see check_loadable)."""
    if resolved.kind == "folder":
        sources.inspect_folder(resolved.path, str(resolved.path))
    elif resolved.kind == "gguf":
        sources.inspect_gguf(resolved.path)
    elif resolved.kind == "default":
        default_model.gguf_path()  # installed, or one line saying how to install it
    else:
        hub.check_hub(resolved.location)


GGUF_UNMAPPED = (
    "a device map is not supported for .gguf files (they are dequantised in CPU RAM first); "
    "save the model with save_pretrained and map that folder"
)


def _read(
    resolved: ModelSpec, dtype: torch.dtype, placement: Placement, progress: ProgressFn | None
) -> tuple[Any, Any, str]:
    """Model, tokenizer and content hash from the source `resolved` names."""
    if resolved.kind == "default":
        return default_model.read_default(dtype=dtype, placement=placement, progress=progress)
    if resolved.kind == "hub":
        return hub.load_hub(resolved.location, dtype=dtype, placement=placement, progress=progress)
    if resolved.kind == "gguf":
        model, tokenizer = sources.read_gguf(resolved.path, dtype=dtype, progress=progress)
        model = sources.finish(model, dtype, placement, progress, memory_mapped=False)
        report(progress, "hashing weights")
        return model, tokenizer, weights_hash([resolved.path])
    model, tokenizer, weights = sources.load_folder(
        resolved.path, dtype=dtype, placement=placement, progress=progress
    )
    report(progress, "hashing weights")
    return model, tokenizer, weights_hash(weights)
