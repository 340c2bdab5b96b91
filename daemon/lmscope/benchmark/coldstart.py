"""Daemon cold start for the benchmark: process start -> model ready, over the real protocol.

Spawns `python -m lmscope serve --stdio`, initializes it and loads a model, and times the whole
thing from before the spawn to the loadModel result. The model cache must already exist (the
benchmark loads the model first).
"""

from __future__ import annotations

from typing import Any

from lmscope.benchmark.client import Daemon, now


def load_params(spec: str, device: str, dtype: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"spec": spec, "device": device}
    if dtype is not None:
        params["dtype"] = dtype
    return params


def cold_start_seconds(spec: str, device: str, dtype: str | None) -> float:
    """Seconds from spawning the daemon to its answer that `spec` is loaded."""
    start = now()
    daemon = Daemon()
    try:
        daemon.initialize()
        daemon.result(daemon.send("lmscope/loadModel", load_params(spec, device, dtype)))
        return now() - start
    finally:
        daemon.close()
