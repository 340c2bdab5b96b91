"""Models: loading (default, hub id, folder, GGUF) and one adapter per architecture family."""

from lmscope.models.adapter import ArchitectureAdapter, adapter_for, supported_model_types
from lmscope.models.loading import LoadedModel, load_model

__all__ = [
    "ArchitectureAdapter",
    "LoadedModel",
    "adapter_for",
    "load_model",
    "supported_model_types",
]
