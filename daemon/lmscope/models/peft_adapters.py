"""PEFT/LoRA adapters: read an adapter folder (adapter_config.json + adapter_model.safetensors,
as peft's save_pretrained writes it), find its base model, and merge it into the loaded base.

Adapters are merged before tracing because the method reads weights: the family adapters and
the tracing hooks read `o_proj.weight`, `down_proj.weight`, ... directly, and a peft-wrapped
LoRA Linear's `.weight` is the base weight alone (the low-rank update runs beside it). Merged
(`merge_and_unload`), the traced model is exactly the fine-tuned one, with plain Linear
modules, and every family adapter works unchanged (docs/method.md, "Adapters").

Supported: peft's LORA type, plain, rsLoRA or DoRA, and whatever else of it merges into the
weights (modules_to_save, trainable tokens, LoRA biases). Refused: other peft types, and the
LoRA variants whose update depends on the input or changes the architecture (activated LoRA,
Arrow routing, layer replication), which no merge can express.

`read_adapter` and `base_spec` look only at the file system (no torch, no peft): a wrong
adapter fails fast, as one ModelLoadError line, before the base loads. peft is imported only
when an adapter is merged, so a start without one stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmscope.errors import ModelLoadError
from lmscope.models.sources import ProgressFn, first_line, load_errors, quiet_transformers, report
from lmscope.models.specs import (
    ADAPTER_CONFIG,
    DEFAULT_DISPLAY_NAME,
    SPEC_HELP,
    ModelSpec,
    resolve_spec,
)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
SUPPORTED_TYPES = ("LORA",)

# adapter_config.json keys of LoRA variants a merge cannot express, and why.
UNMERGEABLE = {
    "alora_invocation_tokens": "activated LoRA (its update depends on where invocation tokens are)",
    "arrow_config": "Arrow routing (it picks LoRA experts per token)",
    "layer_replication": "layer replication (it changes the number of layers)",
}

# The hub id of the model the embedded default model is a copy of: an adapter trained on it is
# pointed at `--model default` when the hub copy is not at hand.
DEFAULT_HUB_ID = f"HuggingFaceTB/{DEFAULT_DISPLAY_NAME}"


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter folder, checked, and what its adapter_config.json says."""

    folder: Path  # absolute
    peft_type: str  # "LORA"
    dora: bool
    rank: int
    alpha: float
    target_modules: list[str]  # module names, or one regex
    base: str | None  # base_model_name_or_path, if the config names one

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def files(self) -> list[Path]:
        """What the adapter's content hash covers: the config (its alpha scales the update)
        and the weights."""
        return [self.folder / ADAPTER_CONFIG, self.folder / ADAPTER_WEIGHTS]


def read_adapter(text: str) -> AdapterSpec:
    """Check the adapter folder `text` names and read its adapter_config.json; one
    ModelLoadError line for anything that keeps it from being merged."""
    folder = Path(str(text).strip()).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"adapter folder not found: {text}")
    if not folder.is_dir():
        raise ModelLoadError(
            f"adapter '{text}' is a file: expected a PEFT adapter folder "
            f"({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}, as peft's save_pretrained writes)"
        )
    folder = folder.resolve()
    config_file = folder / ADAPTER_CONFIG
    if not config_file.is_file():
        if (folder / "config.json").is_file():
            raise ModelLoadError(
                f"{folder} holds a whole model, not a PEFT adapter (no {ADAPTER_CONFIG}): "
                "load it as the model, without --adapter"
            )
        raise ModelLoadError(
            f"no {ADAPTER_CONFIG} in {folder}: expected a PEFT adapter folder "
            f"({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}, as peft's save_pretrained writes)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {first_line(exc)}") from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise ModelLoadError(f"{config_file} is not a PEFT adapter config (no peft_type)")
    peft_type = config["peft_type"]
    if peft_type not in SUPPORTED_TYPES:
        raise ModelLoadError(
            f"unsupported adapter type {peft_type} in {folder}: lmscope merges LoRA adapters "
            "(LoRA, rsLoRA, DoRA) into the base weights before tracing"
        )
    for key, what in UNMERGEABLE.items():
        if config.get(key):
            raise ModelLoadError(
                f"unsupported LoRA variant in {folder}: {what} cannot be merged into the base "
                "weights, and lmscope traces merged weights"
            )
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise ModelLoadError(
                f"{folder} holds adapter_model.bin: lmscope reads adapter weights only from "
                f"{ADAPTER_WEIGHTS} (pickles can run code); re-save it with peft's "
                "save_pretrained(safe_serialization=True) where you trust it"
            )
        raise ModelLoadError(f"no adapter weights in {folder}: expected {ADAPTER_WEIGHTS}")
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ModelLoadError(f"{config_file} has no valid LoRA rank (r: a whole number >= 1)")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise ModelLoadError(f"{config_file} has no valid lora_alpha (a number)")
    targets = config.get("target_modules")
    target_modules = [targets] if isinstance(targets, str) else sorted(map(str, targets or ()))
    base = config.get("base_model_name_or_path")
    return AdapterSpec(
        folder=folder,
        peft_type=peft_type,
        dora=bool(config.get("use_dora")),
        rank=rank,
        alpha=float(alpha),
        target_modules=target_modules,
        base=base.strip() if isinstance(base, str) and base.strip() else None,
    )


def base_spec(adapter: AdapterSpec) -> ModelSpec:
    """The base model adapter_config.json names, resolved by the same rules as any model spec;
    one ModelLoadError line naming it, and how to load the adapter over a local base, when it
    names nothing loadable here."""
    if adapter.base is None:
        raise ModelLoadError(
            f"{adapter.folder / ADAPTER_CONFIG} names no base model (base_model_name_or_path): "
            f"load the adapter over its base with --model BASE --adapter {adapter.folder}"
        )
    try:
        resolved = resolve_spec(adapter.base)
    except ModelLoadError as exc:
        raise missing_base(adapter, exc) from None
    if resolved.kind == "adapter":
        raise ModelLoadError(
            f"the base of adapter {adapter.folder} ({adapter.base}) is itself an adapter: "
            "lmscope merges one adapter over a whole model"
        )
    return resolved


def missing_base(adapter: AdapterSpec, exc: BaseException) -> ModelLoadError:
    """The error for an adapter whose configured base cannot be found or loaded."""
    hint = f"--model BASE_FOLDER --adapter {adapter.folder}"
    if adapter.base == DEFAULT_HUB_ID:
        hint = f"--model default --adapter {adapter.folder} (its embedded GGUF copy), or {hint}"
    reason = str(exc).removesuffix(f"; {SPEC_HELP}")  # the user gave no spec to correct
    return ModelLoadError(
        f"cannot find the base model of adapter {adapter.folder}: {ADAPTER_CONFIG} names "
        f"'{adapter.base}' ({reason}); load the adapter over a local copy of its base: {hint}"
    )


def merge_adapter(model: Any, adapter: AdapterSpec, progress: ProgressFn | None = None) -> Any:
    """`model` with `adapter` merged into its weights (a plain transformers model again), or
    one ModelLoadError line when the adapter does not fit it."""
    import torch

    if any(p.device.type == "meta" for p in model.parameters()):
        raise ModelLoadError(
            f"cannot merge adapter {adapter.folder}: the device map offloaded part of the base "
            "model (its weights are read in only for each forward pass), and a merge changes "
            "the weights in place; give the GPUs more max_memory, or load on one device"
        )
    report(progress, f"merging adapter {adapter.name}")
    from peft import LoraConfig, PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    where = f"adapter {adapter.folder}"
    with quiet_transformers(progress, "merging adapter"), torch.no_grad():
        try:
            config = LoraConfig.from_pretrained(str(adapter.folder))
            config.inference_mode = True
            wrapped = PeftModel(model, config)
        except load_errors() as exc:  # NoMatchingPeftModuleError is a ValueError
            raise _mismatch(where, exc) from None
        try:
            state = load_file(str(adapter.folder / ADAPTER_WEIGHTS))
            result: Any = set_peft_model_state_dict(wrapped, state)
        except load_errors() as exc:  # size mismatches are RuntimeErrors
            raise _mismatch(where, exc) from None
        # load_state_dict(strict=False) reports every base weight as missing: only the
        # adapter's own keys (under the "default" adapter name peft gives it) tell.
        missing = [k for k in result.missing_keys if ".default" in k or "lora_" in k]
        stray = list(result.unexpected_keys)
        if stray or missing:
            example = (stray or missing)[0]
            what = "weights for modules the base lacks" if stray else "no weights for"
            raise ModelLoadError(
                f"{where} does not fit the base model: {what} {len(stray or missing)} "
                f"parameter(s) (e.g. {example}); it was trained on another base"
            )
        merged = wrapped.merge_and_unload()
    merged.eval()
    merged.requires_grad_(False)
    return merged


def _mismatch(where: str, exc: BaseException) -> ModelLoadError:
    # torch's load_state_dict error heads many lines with "Error(s) in loading state_dict":
    # the first size mismatch says what does not fit.
    lines = [line.strip() for line in str(exc).splitlines()]
    reason = next((line for line in lines if line.startswith("size mismatch")), first_line(exc))
    return ModelLoadError(
        f"{where} does not fit the base model: {reason} (it was trained on another base)"
    )
