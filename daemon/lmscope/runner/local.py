"""Trace a run's prompts in this process, the model loaded once."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from typing import Any

from lmscope.__about__ import __version__
from lmscope.errors import LmscopeError
from lmscope.models.loading import LoadedModel
from lmscope.runner.corpus import TraceResult
from lmscope.runs.folder import model_wire
from lmscope.runs.sources import RunPrompt
from lmscope.tracing.engine import TraceOptions, run_trace
from lmscope.tracing.inputs import TraceSource


def source_of(prompt: RunPrompt) -> TraceSource:
    """What `run_trace` takes for a prompt: its text, or its conversation."""
    if prompt.messages is None:
        return prompt.prompt
    return list(prompt.messages)  # checked when the file was read


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "lmscope": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def trace_one(loaded: LoadedModel, prompt: RunPrompt, options: TraceOptions) -> TraceResult:
    """One prompt traced and timed; a prompt the model cannot trace gives its error."""
    started = time.perf_counter()
    try:
        data = run_trace(loaded, source_of(prompt), options)
    except LmscopeError as exc:
        return TraceResult(prompt, None, time.perf_counter() - started, str(exc))
    return TraceResult(prompt, data, time.perf_counter() - started)


class LocalBackend:
    """This process: one loaded model, prompts traced one after another."""

    def __init__(self, loaded: LoadedModel, prepend_bos: bool = True) -> None:
        self.loaded = loaded
        self.options = TraceOptions(prepend_bos=prepend_bos)

    def facts(self) -> tuple[dict[str, Any], dict[str, str]]:
        return model_wire(self.loaded.facts), versions()

    def trace_all(self, prompts: list[RunPrompt]) -> Iterator[TraceResult]:
        for prompt in prompts:
            yield trace_one(self.loaded, prompt, self.options)

    def close(self) -> None:
        pass
