"""Daemon cold start for the benchmark: process start -> model ready, over the real protocol.

Spawns `python -m lmscope serve --stdio`, speaks just enough JSON-RPC (LSP framing) to
initialize and load a model, and times the whole thing from before the spawn to the
loadModel result. The model cache must already exist (the benchmark loads the model first).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import IO, Any

from lmscope.errors import LmscopeError
from lmscope.protocol import PROTOCOL_VERSION


def _send(stream: IO[bytes], message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    stream.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    stream.flush()


def _receive(stream: IO[bytes]) -> dict[str, Any]:
    length = None
    while True:
        line = stream.readline()
        if not line:
            raise LmscopeError("the daemon exited during the cold-start measurement")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("ascii").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise LmscopeError("the daemon sent a message without Content-Length")
    return json.loads(stream.read(length))


def _result_of(stream: IO[bytes], request_id: int) -> Any:
    while True:
        message = _receive(stream)
        if message.get("id") == request_id and "method" not in message:
            if "error" in message:
                raise LmscopeError(f"daemon: {message['error'].get('message')}")
            return message.get("result")


def cold_start_seconds(spec: str, device: str, dtype: str | None) -> float:
    """Seconds from spawning the daemon to its answer that `spec` is loaded."""
    params: dict[str, Any] = {"spec": spec, "device": device}
    if dtype is not None:
        params["dtype"] = dtype
    start = time.perf_counter()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "lmscope", "serve", "--stdio", "--log-level", "error"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert daemon.stdin is not None and daemon.stdout is not None
    try:
        _send(
            daemon.stdin,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "processId": None,
                    "rootUri": None,
                    "capabilities": {},
                    "initializationOptions": {"protocolVersion": PROTOCOL_VERSION},
                },
            },
        )
        _result_of(daemon.stdout, 1)
        _send(daemon.stdin, {"jsonrpc": "2.0", "method": "initialized", "params": {}})
        _send(
            daemon.stdin,
            {"jsonrpc": "2.0", "id": 2, "method": "lmscope/loadModel", "params": params},
        )
        _result_of(daemon.stdout, 2)
        return time.perf_counter() - start
    finally:
        daemon.kill()
        daemon.wait()
