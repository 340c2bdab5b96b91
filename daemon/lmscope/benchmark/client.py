"""A minimal JSON-RPC client over a spawned daemon's pipes, for the benchmark's measurements of
the daemon over the real protocol (cold start, responsiveness during a trace)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import IO, Any

from lmscope.errors import LmscopeError
from lmscope.protocol import PROTOCOL_VERSION


class Daemon:
    """`python -m lmscope serve --stdio`, spawned; messages sent and read one by one."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lmscope", "serve", "--stdio", "--log-level", "error"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        self._next_id = 0

    def send(self, method: str, params: Any, *, request: bool = True) -> int | None:
        """Send a request (returns its id) or a notification."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        msg_id = None
        if request:
            self._next_id += 1
            msg_id = message["id"] = self._next_id
        body = json.dumps(message).encode()
        self.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.stdin.flush()
        return msg_id

    def receive(self) -> dict[str, Any]:
        length = None
        while True:
            line = self.stdout.readline()
            if not line:
                raise LmscopeError("the daemon exited during the measurement")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("ascii").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise LmscopeError("the daemon sent a message without Content-Length")
        return json.loads(self.stdout.read(length))

    def result(self, msg_id: int | None) -> Any:
        """Read until the answer to `msg_id`; its result, or LmscopeError."""
        while True:
            message = self.receive()
            if message.get("id") == msg_id and "method" not in message:
                if "error" in message:
                    raise LmscopeError(f"daemon: {message['error'].get('message')}")
                return message.get("result")

    def initialize(self) -> None:
        options = {"protocolVersion": PROTOCOL_VERSION}
        params: dict[str, Any] = {"processId": None, "rootUri": None, "capabilities": {}}
        self.result(self.send("initialize", {**params, "initializationOptions": options}))
        self.send("initialized", {}, request=False)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def now() -> float:
    return time.perf_counter()
