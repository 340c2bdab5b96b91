"""Models: spec resolution, placement, loading (default, hub id, folder, GGUF) and one adapter
per architecture family.

The names below load on first use, so that `lmscope.models.specs` (which needs no torch) can be
imported without importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmscope.models.adapter import ArchitectureAdapter, adapter_for, supported_model_types
    from lmscope.models.loading import LoadedModel, load_model

_HOMES = {
    "ArchitectureAdapter": "lmscope.models.adapter",
    "adapter_for": "lmscope.models.adapter",
    "supported_model_types": "lmscope.models.adapter",
    "LoadedModel": "lmscope.models.loading",
    "load_model": "lmscope.models.loading",
}

__all__ = [
    "ArchitectureAdapter",
    "LoadedModel",
    "adapter_for",
    "load_model",
    "supported_model_types",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lmscope.models' has no attribute '{name}'")
    return getattr(importlib.import_module(home), name)
