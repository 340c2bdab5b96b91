"""Say what a model spec names ("default", a .gguf file, a save_pretrained folder, a PEFT
adapter folder, a hub id).

`resolve_spec` is the one place that decides; loading then reads the answer, whatever the
placement. It looks only at the text and the file system (no torch, no transformers, no
network), so a wrong spec fails fast, as one `ModelLoadError` line, before anything heavy loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmscope.errors import ModelLoadError

SPEC_HELP = (
    'expected "default", a Hugging Face hub id (org/name), a folder saved with save_pretrained, '
    "a PEFT adapter folder, or a .gguf file"
)

# What peft's save_pretrained writes: the adapter's settings (its base model among them).
ADAPTER_CONFIG = "adapter_config.json"

# The embedded default model's display name (default_model.py loads it).
DEFAULT_DISPLAY_NAME = "SmolLM2-135M-Instruct"

# A hub id is `name` or `org/name` made of letters, digits, '.', '_' and '-'.
HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")

# "adapter": a PEFT adapter folder, loaded over the base its adapter_config.json names
# (models/peft_adapters.py); every other kind is a whole model.
SpecKind = Literal["default", "gguf", "folder", "hub", "adapter"]


@dataclass(frozen=True)
class ModelSpec:
    """What a spec names.

    location: the GGUF file or the folder (absolute; the adapter folder for "adapter"), the hub
    id, or "" for the default model.
    """

    spec: str  # what the user asked for, stripped
    kind: SpecKind
    location: str
    name: str  # display name

    @property
    def path(self) -> Path:
        """The GGUF file or folder (only meaningful for those kinds)."""
        return Path(self.location)


def is_adapter_folder(folder: Path) -> bool:
    """Whether `folder` holds a PEFT adapter rather than a whole model: an adapter_config.json
    and no full model weights beside it."""
    if not (folder / ADAPTER_CONFIG).is_file():
        return False
    full = [*folder.glob("model*.safetensors"), *folder.glob("pytorch_model*.bin")]
    return not full


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~", "\\")) or "\\" in spec or spec.count("/") > 1


def resolve_spec(spec: str) -> ModelSpec:
    """Decide what `spec` names, or raise one ModelLoadError line saying why it names nothing."""
    text = str(spec).strip()
    if not text:
        raise ModelLoadError(f"no model given: {SPEC_HELP}")
    if text == "default":
        return ModelSpec(text, "default", "", DEFAULT_DISPLAY_NAME)
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {text}")
        # absolute(), not resolve(): a symlinked GGUF keeps the name the user gave it.
        return ModelSpec(text, "gguf", str(path.absolute()), path.stem)
    if path.is_dir():
        folder = path.resolve()
        kind: SpecKind = "adapter" if is_adapter_folder(folder) else "folder"
        return ModelSpec(text, kind, str(folder), folder.name)
    if path.exists():
        raise ModelLoadError(
            f"'{text}' is a file, not a model: expected a folder saved with save_pretrained "
            "or a .gguf file"
        )
    if _looks_like_path(text) or not HUB_ID.fullmatch(text) or ".." in text:
        raise ModelLoadError(f"unknown model '{text}': no such folder or file; {SPEC_HELP}")
    return ModelSpec(text, "hub", text, text)
