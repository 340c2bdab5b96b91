"""User-facing errors: each is one clear line naming the problem, never a traceback.

The CLI prints `lmscope: <message>` and exits non-zero for any `LmscopeError`; the daemon (later)
maps them to JSON-RPC errors. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class LmscopeError(Exception):
    """Base of every error caused by the user's input or environment."""


class ModelLoadError(LmscopeError):
    """A model spec that cannot be resolved or loaded (unknown name, no weights, bad file)."""


class UnsupportedModelError(ModelLoadError):
    """A model loaded, but its architecture has no adapter."""


class PromptError(LmscopeError):
    """An empty prompt, or one longer than the model's context."""


class TraceFileError(LmscopeError):
    """A `.lmtrace` file that cannot be read: truncated, corrupt, invalid, or too new."""


class NeedsModelError(LmscopeError):
    """A query that a saved trace cannot answer without the model (full neuron list, maps)."""


class ThresholdError(LmscopeError):
    """A threshold outside what the trace can answer."""


class ModelBusyError(LmscopeError):
    """A query that would wait for the model while another forward pass (a trace) holds it,
    asked not to wait: hover cards answer from what they have instead."""
