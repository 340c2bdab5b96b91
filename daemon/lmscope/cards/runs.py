"""The run line of a card: what a corpus run (`lmscope run`) says of a head or an FFN block.

"across run ioi: on the route in 73% of 200 prompts, mean share 4.1%": of the run's prompts, the
fraction whose last token's route (τ 0.04, renormalised) has the component, and its mean share
of the prediction there (the run's components table; docs/method.md "Flow"). The line is only
said on a card of the run's own model (the same `contentHash`): another model's heads are other
heads, so its card says the run is of another model instead. Neurons, attention blocks and
experts get no line (a run records heads and FFN blocks only).

Cards sit below `lmscope.runs` in the layers, so this module never imports it: the server hands
in the loaded run table, anything with the reader's `info` and `component_stats` (`RunStats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError
from lmscope.traces.live import LiveQueries
from lmscope.traces.trace import Trace

_CITED_KINDS = ("head", "ffn")


class RunStats(Protocol):
    """What a card needs of a run: `lmscope.runs.table.RunTable`'s reader interface."""

    @property
    def info(self) -> Mapping[str, Any]: ...

    def component_stats(
        self, kind: str, layer: int, head: int | None = None, tag: str | None = None
    ) -> Any: ...


def run_line(
    ref: ComponentRef, run: RunStats | None, trace: Trace | None, live: LiveQueries | None
) -> str | None:
    """The run's line for `ref` on a card of `trace`'s model (else the loaded model's, `live`),
    as plain text; None when there is no run, the component is not a head or an FFN block, or
    the card's model is unknown (no trace, no model: nothing to match the run against)."""
    if run is None or ref.kind not in _CITED_KINDS:
        return None
    facts = trace.data.model if trace is not None else live.facts if live is not None else None
    if facts is None:
        return None
    info = run.info
    name, model = str(info.get("name", "?")), info.get("model") or {}
    if model.get("contentHash") != facts.content_hash:
        return f"run {name} is of another model ({model.get('name', '?')}): no statistics here"
    try:
        stats = run.component_stats(ref.kind, ref.layer, ref.index if ref.kind == "head" else None)
    except LmscopeError as exc:  # a run folder gone or broken since it was chosen
        return f"run {name}: {exc}"
    if stats.n_prompts == 0:
        return f"across run {name}: no prompt traced yet"
    return (
        f"across run {name}: on the route in {100 * stats.on_route_fraction:.0f}% of "
        f"{stats.n_prompts} prompts, mean share {100 * stats.mean_share:.1f}%"
    )
