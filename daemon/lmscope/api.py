"""The notebook/experiment API: `trace`, `load_trace`, `load_model`, `import_json`.

`trace(prompt, model="default")` keeps the most recently loaded model (one slot, keyed by spec,
dtype and device) so a loop over prompts loads it once; pass a `LoadedModel` from `load_model`
to manage it yourself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmscope.prompts import check_prompt
from lmscope.protocol import defaults
from lmscope.traces.lmtrace import import_json as _read_json_export
from lmscope.traces.lmtrace import read_trace
from lmscope.traces.trace import Trace

# torch and transformers load only when a model is needed: opening a saved trace stays fast.
if TYPE_CHECKING:
    from lmscope.models.loading import LoadedModel, ProgressFn

_last_model: tuple[tuple[str, str | None, str], LoadedModel] | None = None
_lock = threading.Lock()


def load_model(
    spec: str = "default",
    *,
    dtype: str | None = None,
    device: str = defaults.DEVICE,
    progress: ProgressFn | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
) -> LoadedModel:
    """Load a model ("default", a hub id, a save_pretrained folder or a .gguf file).

    `device_map` ("auto", "balanced", "sequential" or {module: device}) splits it over GPUs,
    CPU RAM and disk with accelerate, capped per device by `max_memory`; each layer is then
    traced on the device that holds it.
    """
    from lmscope.models.loading import DeviceMap
    from lmscope.models.loading import load_model as load

    global _last_model
    mapping = None if device_map is None else DeviceMap(device_map, max_memory)
    key = (spec, dtype, device if mapping is None else repr(mapping))
    with _lock:
        if _last_model is not None and _last_model[0] == key:
            return _last_model[1]
        _last_model = None  # free the previous model before loading the next
        loaded = load(spec, dtype=dtype, device=device, progress=progress, device_map=mapping)
        _last_model = (key, loaded)
        return loaded


def trace(
    prompt: str,
    model: str | LoadedModel = "default",
    *,
    dtype: str | None = None,
    device: str = defaults.DEVICE,
    prepend_bos: bool = defaults.PREPEND_BOS,
    min_threshold: float = defaults.MIN_THRESHOLD,
    detail: str = defaults.DETAIL,
    progress: ProgressFn | None = None,
) -> Trace:
    """Trace `prompt`: one forward pass, then routes, heads, neurons and projections.

    `detail` chooses which nodes' neurons and projections the trace stores (and a saved file
    keeps): "route" (the last token's renormalised route at τ = 0.04; fast) or "all" (every
    node of any route at `min_threshold`; ~45x the forward pass at 200 tokens on a CPU). While
    the model is loaded, the returned trace answers any node either way, computing the rest.
    A prompt no model can trace is refused before any model loads.
    """
    from lmscope.models.loading import LoadedModel
    from lmscope.tracing.engine import TraceOptions, run_trace
    from lmscope.tracing.live import LiveModel

    check_prompt(prompt)

    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, dtype=dtype, device=device, progress=progress)
    )
    options = TraceOptions(prepend_bos=prepend_bos, min_threshold=min_threshold, detail=detail)
    data = run_trace(loaded, prompt, options, progress=progress)
    return Trace(data, LiveModel(loaded, data.tokens.ids.tolist()))


def load_trace(path: str | Path) -> Trace:
    """Open a saved `.lmtrace` file (no model needed)."""
    return Trace(read_trace(path))


def import_json(text: str) -> Trace:
    """Open a trace from the text of its JSON export (`lmscope export --format json`)."""
    return Trace(_read_json_export(text))
