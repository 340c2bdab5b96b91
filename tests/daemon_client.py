"""A small JSON-RPC client that spawns the real daemon (`python -m lmscope serve --stdio`) and
talks to it over its pipes, byte for byte, so tests can also send malformed frames.

Responses are matched by id; notifications ($/progress, lmscope/*Changed, window/logMessage)
are collected and can be awaited with a deadline. A reader thread drains stdout; stderr goes to
a log file so a chatty daemon never blocks on a full pipe.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lmscope.protocol import validate_notification, validate_result

PROTOCOL_VERSION = "1"


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message", "")
        self.data = error.get("data")


class DaemonClient:
    def __init__(
        self,
        log_path: Path,
        *extra_args: str,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "lmscope", "serve", "--stdio", *extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **(env or {})},
        )
        self._ids = itertools.count(1)
        self._responses: dict[Any, dict[str, Any]] = {}
        # How many responses arrived for each id (JSON-RPC allows exactly one per request;
        # a response to a notification would show up under its id, usually null).
        self.response_counts: collections.Counter[Any] = collections.Counter()
        self._cond = threading.Condition()
        self.notifications: list[dict[str, Any]] = []
        self.server_requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # --- wire ----------------------------------------------------------------------------------
    def send_bytes(self, payload: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(payload)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        self.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def _read(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        while True:
            length = None
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("ascii", "replace").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length is None:
                continue
            message = json.loads(stream.read(length))
            with self._cond:
                if "method" in message and "id" in message:
                    self.server_requests.put(message)
                    # Accept server requests (e.g. window/workDoneProgress/create).
                    self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
                elif "method" in message:
                    self.notifications.append(message)
                else:
                    msg_id = message.get("id")
                    with contextlib.suppress(TypeError):  # an unhashable id is not counted
                        self.response_counts[msg_id] += 1
                    self._responses[msg_id] = message
                self._cond.notify_all()

    # --- requests ------------------------------------------------------------------------------
    def request_async(self, method: str, params: Any = None) -> int:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return msg_id

    def response(self, msg_id: Any, timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and msg_id not in self._responses):
                    raise TimeoutError(f"no response to {msg_id} (daemon log: {self.log_path})")
                self._cond.wait(min(left, 0.5))
            message = self._responses.pop(msg_id)
        if "error" in message:
            raise RpcError(message["error"])
        return message.get("result")

    def responses(self, msg_ids: list[Any], timeout: float) -> dict[Any, dict[str, Any]]:
        """The raw response messages to `msg_ids` that arrive within one shared `timeout`
        (taken off the client as they are returned); the ids missing then are left out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(i not in self._responses for i in msg_ids):
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    break
                self._cond.wait(min(left, 0.5))
            return {i: self._responses.pop(i) for i in msg_ids if i in self._responses}

    def request(self, method: str, params: Any = None, timeout: float = 120.0) -> Any:
        """Send a request and wait for its result; lmscope results are checked against their
        schema in protocol/, so a daemon answering off-contract fails the test."""
        result = self.response(self.request_async(method, params), timeout)
        if method.startswith("lmscope/"):
            validate_result(method, result)
        return result

    def check_notifications(self) -> None:
        """Every lmscope/* notification received so far matches its schema."""
        with self._cond:
            received = list(self.notifications)
        for message in received:
            if message["method"].startswith("lmscope/"):
                validate_notification(message["method"], message.get("params"))

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    def wait_notification(self, predicate, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.notifications:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("notification did not arrive")
                self._cond.wait(min(left, 0.5))

    # --- session -------------------------------------------------------------------------------
    def initialize(self, root: Path | None = None, **options: Any) -> dict[str, Any]:
        result = self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": root.as_uri() if root else None,
                "capabilities": {"window": {"workDoneProgress": True}},
                "initializationOptions": {"protocolVersion": PROTOCOL_VERSION, **options},
            },
        )
        self.notify("initialized", {})
        return result

    def close(self, timeout: float = 30.0) -> int:
        try:
            if self.process.poll() is None:
                with contextlib.suppress(RpcError, TimeoutError, OSError):
                    self.request("shutdown", timeout=timeout)
                with contextlib.suppress(OSError):
                    self.notify("exit")
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self._log.close()
