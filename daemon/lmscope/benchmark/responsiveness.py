"""Responsiveness for the benchmark: how fast the daemon answers hovers and status while a long
trace runs, over the real protocol.

A spawned daemon loads the model and traces a short prompt (the context hover cards use), then
starts a trace of `tokens` tokens; once it has started, 7 hovers on `L0H0` and 2 status requests
are sent at once, and each answer's latency is taken as it arrives. Before lmscope answered
hovers from what a trace stores (and read its input on threads no handler can hold), each of
them waited for the whole trace.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lmscope.benchmark.client import Daemon, now
from lmscope.benchmark.coldstart import load_params

HOVERS = 7
STATUSES = 2


@dataclass
class Responsiveness:
    tokens: int
    trace_s: float
    hover_ms: list[float]
    status_ms: list[float]

    def line(self) -> str:
        def spread(values: list[float]) -> str:
            return f"median {statistics.median(values):,.0f} ms, max {max(values):,.0f} ms"

        return (
            f"during a {self.tokens}-token trace ({self.trace_s:.1f} s): hover "
            f"{spread(self.hover_ms)}; status {spread(self.status_ms)}"
        )


def responsiveness(
    spec: str, device: str, dtype: str | None, prompt: str, tokens: int
) -> Responsiveness:
    """Hover and status latencies while `prompt` (of `tokens` tokens) is traced."""
    daemon = Daemon()
    try:
        daemon.initialize()
        daemon.result(daemon.send("lmscope/loadModel", load_params(spec, device, dtype)))
        daemon.result(daemon.send("lmscope/trace", {"prompt": "the first context"}))
        with tempfile.TemporaryDirectory(prefix="lmscope-bench-") as tmp:
            uri = (Path(tmp) / "notes.md").as_uri()
            document = {"uri": uri, "languageId": "markdown", "version": 1, "text": "L0H0\n"}
            daemon.send("textDocument/didOpen", {"textDocument": document}, request=False)
            started = now()
            trace_id = daemon.send("lmscope/trace", {"prompt": prompt})
            while True:  # the trace has started once the daemon says so
                message = daemon.receive()
                params = message.get("params") or {}
                if message.get("method") == "lmscope/traceChanged" and (
                    params.get("state") == "started"
                ):
                    break
            hover = {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}}
            sent = {
                daemon.send("textDocument/hover", hover): ("hover", now()) for _ in range(HOVERS)
            }
            sent |= {daemon.send("lmscope/status", {}): ("status", now()) for _ in range(STATUSES)}
            latency: dict[str, list[float]] = {"hover": [], "status": []}
            while True:
                message = daemon.receive()
                msg_id = message.get("id")
                if "method" in message:
                    continue
                if msg_id in sent:
                    kind, at = sent.pop(msg_id)
                    latency[kind].append(1000 * (now() - at))
                elif msg_id == trace_id:
                    trace_s = now() - started
                    break
            while sent:  # answers that came after the trace (they waited for it)
                message = daemon.receive()
                if message.get("id") in sent:
                    kind, at = sent.pop(message["id"])
                    latency[kind].append(1000 * (now() - at))
        return Responsiveness(tokens, trace_s, latency["hover"], latency["status"])
    finally:
        daemon.close()
