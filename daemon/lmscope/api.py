"""The notebook/experiment API: `trace`, `load_trace`, `load_model`, `import_json`, `load_run`.

`trace(prompt, model="default")` keeps the most recently loaded model (one slot, keyed by spec,
dtype and device) so a loop over prompts loads it once; pass a `LoadedModel` from `load_model`
to manage it yourself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmscope.chats import check_generate, check_messages
from lmscope.errors import PromptError
from lmscope.prompts import check_prompt
from lmscope.protocol import defaults
from lmscope.traces.lmtrace import import_json as _read_json_export
from lmscope.traces.lmtrace import read_trace
from lmscope.traces.trace import Trace

# torch and transformers load only when a model is needed: opening a saved trace stays fast.
if TYPE_CHECKING:
    from lmscope.models.loading import LoadedModel, ProgressFn
    from lmscope.runs.table import RunTable

_last_model: tuple[tuple[str, str | None, str, str | None], LoadedModel] | None = None
_lock = threading.Lock()


def load_model(
    spec: str = "default",
    *,
    dtype: str | None = None,
    device: str = defaults.DEVICE,
    progress: ProgressFn | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    adapter: str | None = None,
) -> LoadedModel:
    """Load a model ("default", a hub id, a save_pretrained folder, a PEFT adapter folder or a
    .gguf file).

    `adapter` names a PEFT/LoRA adapter folder to merge into that model before tracing (an
    adapter folder given as the model loads over the base its adapter_config.json names).

    `device_map` ("auto", "balanced", "sequential" or {module: device}) splits it over GPUs,
    CPU RAM and disk with accelerate, capped per device by `max_memory`; each layer is then
    traced on the device that holds it.
    """
    from lmscope.models.loading import DeviceMap
    from lmscope.models.loading import load_model as load

    global _last_model
    mapping = None if device_map is None else DeviceMap(device_map, max_memory)
    key = (spec, dtype, device if mapping is None else repr(mapping), adapter)
    with _lock:
        if _last_model is not None and _last_model[0] == key:
            return _last_model[1]
        _last_model = None  # free the previous model before loading the next
        loaded = load(
            spec,
            dtype=dtype,
            device=device,
            progress=progress,
            device_map=mapping,
            adapter=adapter,
        )
        _last_model = (key, loaded)
        return loaded


def trace(
    prompt: str | None = None,
    model: str | LoadedModel = "default",
    *,
    messages: list[dict[str, str]] | None = None,
    generate: int = 0,
    seed: int | None = None,
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

    Exactly one of `prompt` (text) and `messages` (a conversation: [{"role": "system" | "user"
    | "assistant", "content": ...}]) is traced; messages go through the model's chat template
    with the generation prompt added, and the trace records which tokens the template added
    (`Trace.chat`). `generate=N` first generates up to N tokens (greedy, or sampled at
    temperature 1 with `seed`; stopping at end-of-sequence) and traces prompt + generation in
    one pass (`Trace.generation`).
    """
    from lmscope.models.loading import LoadedModel
    from lmscope.tracing.engine import TraceOptions, run_trace
    from lmscope.tracing.live import LiveModel

    if (prompt is None) == (messages is None):
        raise PromptError("give exactly one of prompt (text) and messages (a conversation)")
    source = check_messages(messages) if prompt is None else prompt
    if isinstance(source, str):
        check_prompt(source)
    check_generate(generate, seed)

    loaded = (
        model
        if isinstance(model, LoadedModel)
        else load_model(model, dtype=dtype, device=device, progress=progress)
    )
    options = TraceOptions(
        prepend_bos=prepend_bos,
        min_threshold=min_threshold,
        detail=detail,
        generate=generate,
        seed=seed,
    )
    data = run_trace(loaded, source, options, progress=progress)
    return Trace(data, LiveModel(loaded, data.tokens.ids.tolist()))


def load_trace(path: str | Path) -> Trace:
    """Open a saved `.lmtrace` file (no model needed)."""
    return Trace(read_trace(path))


def load_run(path: str | Path) -> RunTable:
    """Open a corpus run folder (`lmscope run`; no model needed): `.summary()`,
    `.component_stats(...)`, `.head_matrix(...)`, the tables as pyarrow (`.components`,
    `.prompts`, `.neurons`) or pandas (`.to_pandas(...)`)."""
    from lmscope.runs.table import load_run as read_run  # pyarrow only when a run is read

    return read_run(path)


def import_json(text: str) -> Trace:
    """Open a trace from the text of its JSON export (`lmscope export --format json`)."""
    return Trace(_read_json_export(text))
