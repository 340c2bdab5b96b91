"""TCP transport: several clients at once, each authenticated on its own connection.

pygls' own `start_tcp` shares one protocol object between connections: a second client takes
over the first one's answers, one client's `initialize` with the token authenticates every
other connection, and any client disconnecting (or sending `exit` before authenticating) stops
the daemon. This router keeps pygls' single protocol (and so every handler) as it is and puts
one `Connection` per client in front of it:

- a connection must `initialize` with the token (constant-time compare) before anything else;
  until then requests answer Unauthorized, notifications are dropped and `exit` only closes it;
- request ids, `$/cancelRequest` ids and work-done tokens are prefixed with the connection's
  number on the way in, so answers and `$/progress` go back to the one client that asked, with
  its own ids;
- the first `initialize` reaches pygls (it sets up the workspace and the model to load); later
  clients get the same result; `shutdown` and `exit` end only their own connection: the daemon
  serves until it is killed;
- other notifications (model and trace state, log messages) go to every authenticated client;
  `lmscope/traceChanged` names the request id only to the client that sent it;
- a closed connection's requests still pending are cancelled.

Frames are read by `framing.FrameReader`, the reader stdio uses too. Before a connection has
logged in, its frames may be `MAX_LOGIN_FRAME_BYTES` at most (room for an initialize), after
that `MAX_FRAME_BYTES`; a frame declaring more closes the connection before its body is read.
At most `MAX_UNAUTHENTICATED_CONNECTIONS` connections may wait to log in at once (the next is
answered with an error and closed), and one that leaves more than `MAX_LOGIN_UNREAD_BYTES` of
answers unread is dropped: clients without the token cannot make the daemon buffer much. Other
framing faults are answered with a null id and the connection reads on. Writes from worker
threads hop to the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
from itertools import count
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from lmscope.server.framing import (
    INVALID_REQUEST,
    LOGIN_DEADLINE_S,
    MAX_FRAME_BYTES,
    MAX_LOGIN_FRAME_BYTES,
    MAX_LOGIN_UNREAD_BYTES,
    MAX_UNAUTHENTICATED_CONNECTIONS,
    PARSE_ERROR,
    READ_CHUNK_BYTES,
    Fault,
    Frame,
    FrameReader,
)
from lmscope.server.rpc import UNAUTHORIZED, check_initialization

log = logging.getLogger("lmscope.server")

LOCAL = ("shutdown", "exit", "initialize", "initialized")


def _wrap(cid: int, value: Any) -> str:
    return f"{cid}:{json.dumps(value)}"


def _unwrap(value: Any) -> tuple[int, Any] | None:
    if not isinstance(value, str):
        return None
    head, sep, rest = value.partition(":")
    if not sep or not head.isdigit():
        return None
    try:
        return int(head), json.loads(rest)
    except ValueError:
        return None


class Connection:
    def __init__(self, cid: int, writer: asyncio.StreamWriter) -> None:
        self.cid = cid
        self.writer = writer
        self.authenticated = False
        self.pending: set[str] = set()  # internal ids of requests sent to pygls

    def send(self, message: dict[str, Any]) -> None:
        if self.writer.is_closing():
            return
        body = json.dumps(message).encode("utf-8")
        self.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if not self.authenticated and (
            self.writer.transport.get_write_buffer_size() > MAX_LOGIN_UNREAD_BYTES
        ):
            # A client without the token that sends and never reads would have the daemon
            # hold its answers (errors) without bound: drop them and the connection.
            log.warning("TCP client %d not logged in leaves its answers unread: closed", self.cid)
            self.writer.transport.abort()


class _RouterWriter:
    """What pygls writes to: each message is routed by the router on the event loop."""

    def __init__(self, router: TcpRouter) -> None:
        self.router = router

    def write(self, data: bytes) -> None:
        message = json.loads(data)
        if threading.get_ident() == self.router.loop_thread:
            self.router.from_server(message)
        else:
            self.router.loop.call_soon_threadsafe(self.router.from_server, message)

    def close(self) -> None:  # pygls' exit handler; connections close themselves
        pass


class TcpRouter:
    def __init__(self, server: Any, token: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.protocol = server.protocol
        self.token = token
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.connections: dict[int, Connection] = {}
        self._ids = count(1)
        self.initialize_result: dict[str, Any] | None = None
        self.initialize_waiting: list[tuple[Connection, Any]] = []
        self.login_deadline = LOGIN_DEADLINE_S  # seconds a connection may wait to log in
        self.initialize_sent = False
        self.initialized_sent = False
        self.server_requests: dict[Any, int] = {}  # server->client request id -> connection
        self.protocol.required_token = None  # authentication happens here, per connection
        self.protocol.set_writer(_RouterWriter(self), include_headers=False)

    # --- connections --------------------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(next(self._ids), writer)
        peer = writer.get_extra_info("peername")
        waiting = sum(not c.authenticated for c in self.connections.values())
        if waiting >= MAX_UNAUTHENTICATED_CONNECTIONS:
            log.warning("TCP client from %s refused: %d connections not logged in", peer, waiting)
            message = f"too many connections waiting to log in ({waiting}): try again later"
            conn.send(self._error(None, INVALID_REQUEST, message))
            writer.close()
            return
        self.connections[conn.cid] = conn
        log.info("TCP client %d connected from %s", conn.cid, peer)
        # A place among those waiting to log in is held for LOGIN_DEADLINE_S at most: idle
        # connections cannot keep every other client out.
        self.loop.call_later(self.login_deadline, self._login_deadline, conn)
        frames = FrameReader(MAX_LOGIN_FRAME_BYTES)
        try:
            while not writer.is_closing() and (data := await reader.read(READ_CHUNK_BYTES)):
                frames.feed(data)
                self._take_frames(conn, frames)
            fault = frames.end()
            if fault is not None:
                conn.send(fault.error())
        except ConnectionError:
            pass
        finally:
            self._closed(conn)

    def _login_deadline(self, conn: Connection) -> None:
        if conn.authenticated or conn.writer.is_closing():
            return
        log.warning(
            "TCP client %d not logged in within %g s: closed", conn.cid, self.login_deadline
        )
        message = f"not logged in within {self.login_deadline:g} s: initialize with the token"
        conn.send(self._error(None, INVALID_REQUEST, message))
        conn.writer.close()

    def _take_frames(self, conn: Connection, frames: FrameReader) -> None:
        while not conn.writer.is_closing():
            # Until initialize has carried the token, a frame may only be small: the limit is
            # set again before each frame, since the frame before may have logged in.
            frames.max_frame = MAX_FRAME_BYTES if conn.authenticated else MAX_LOGIN_FRAME_BYTES
            item = frames.next()
            if item is None:
                return
            if isinstance(item, Frame):
                self.from_client(conn, item.body)
            else:
                self._refuse(conn, item)

    def _refuse(self, conn: Connection, fault: Fault) -> None:
        """Answer a frame that cannot be read; one over the limit also ends the connection,
        before its body is read (one client cannot make the daemon buffer without bound)."""
        log.warning("TCP client %d: unreadable frame: %s", conn.cid, fault.message)
        message = fault.message
        if fault.too_large and not conn.authenticated:
            message += " before initialize with the token"
        conn.send(self._error(None, fault.code, message))
        if fault.too_large:
            conn.writer.close()

    def _closed(self, conn: Connection) -> None:
        self.connections.pop(conn.cid, None)
        for internal in list(conn.pending):  # nobody is left to read these answers
            self._to_server(
                {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": internal}}
            )
        if not conn.writer.is_closing():
            conn.writer.close()
        log.info("TCP client %d disconnected", conn.cid)

    @staticmethod
    def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}

    # --- client -> server ---------------------------------------------------------------------
    def from_client(self, conn: Connection, body: bytes) -> None:
        try:
            message = json.loads(body)
        except (ValueError, RecursionError) as exc:
            reason = " ".join(str(exc).split())[:200]
            conn.send(self._error(None, PARSE_ERROR, f"parse error: {reason}"))
            return
        if not isinstance(message, dict):
            conn.send(self._error(None, INVALID_REQUEST, "invalid request: not a JSON object"))
            return
        method = message.get("method")
        msg_id = message.get("id")
        if method is None:  # a response to a request the daemon sent
            if conn.authenticated and msg_id in self.server_requests:
                self.server_requests.pop(msg_id)
                self._to_server(message)
            return
        if method == types.INITIALIZE and msg_id is not None:
            self._initialize(conn, message)
            return
        if method == types.EXIT:
            conn.writer.close()
            return
        if not conn.authenticated:
            if msg_id is not None:
                conn.send(
                    self._error(
                        msg_id, UNAUTHORIZED, "not authenticated: initialize with the token first"
                    )
                )
            return
        if method == types.SHUTDOWN:
            if msg_id is not None:
                conn.send({"jsonrpc": "2.0", "id": msg_id, "result": None})
            return
        if method == types.INITIALIZED:
            if self.initialized_sent:
                return
            self.initialized_sent = True
        message = self._rewrite_in(conn, message)
        self._to_server(message)

    def _rewrite_in(self, conn: Connection, message: dict[str, Any]) -> dict[str, Any]:
        message = dict(message)
        params = message.get("params")
        if isinstance(params, dict):
            params = dict(params)
            for key in ("workDoneToken", "partialResultToken"):
                if key in params and isinstance(params[key], (str, int)):
                    params[key] = _wrap(conn.cid, params[key])
            if message.get("method") == "$/cancelRequest" and "id" in params:
                params["id"] = _wrap(conn.cid, params["id"])
            message["params"] = params
        if "id" in message:
            internal = _wrap(conn.cid, message["id"])
            conn.pending.add(internal)
            message["id"] = internal
        return message

    def _initialize(self, conn: Connection, message: dict[str, Any]) -> None:
        params = message.get("params")
        options = params.get("initializationOptions") if isinstance(params, dict) else None
        try:
            check_initialization(options if isinstance(options, dict) else {}, self.token)
        except JsonRpcException as exc:
            conn.send(self._error(message.get("id"), exc.code, exc.message))
            return
        conn.authenticated = True
        if self.initialize_result is not None:
            self._answer_initialize(conn, message.get("id"))
        elif self.initialize_sent:
            self.initialize_waiting.append((conn, message.get("id")))
        else:
            self.initialize_sent = True
            self.initialize_waiting.append((conn, message.get("id")))
            self._to_server({**message, "id": "initialize:0"})

    def _answer_initialize(self, conn: Connection, msg_id: Any) -> None:
        conn.send({"jsonrpc": "2.0", "id": msg_id, "result": copy.deepcopy(self.initialize_result)})

    def _to_server(self, message: dict[str, Any]) -> None:
        try:
            structured = json.loads(
                json.dumps(message), object_hook=self.protocol.structure_message
            )
            self.protocol.handle_message(structured)
        except Exception as exc:  # a message pygls cannot take: answered like stdio's
            self.server.report_server_error(exc, JsonRpcException)

    # --- server -> client ---------------------------------------------------------------------
    def from_server(self, message: dict[str, Any]) -> None:
        msg_id = message.get("id")
        method = message.get("method")
        if method is None:  # an answer
            if msg_id == "initialize:0":
                self._initialize_answered(message)
                return
            found = _unwrap(msg_id)
            if found is None:
                self._broadcast(message)  # e.g. a null-id parse error
                return
            cid, original = found
            conn = self.connections.get(cid)
            if conn is not None:
                conn.pending.discard(msg_id)
                conn.send({**message, "id": original})
            return
        params = message.get("params")
        if msg_id is not None:  # a request to the client
            if method == types.WINDOW_WORK_DONE_PROGRESS_CREATE:
                self._to_server({"jsonrpc": "2.0", "id": msg_id, "result": None})
                return
            owner = self._owner(params)
            target = owner or next(iter(self._ready()), None)
            if target is not None:
                self.server_requests[msg_id] = target.cid
                target.send(message)
            return
        if method == "$/progress" and isinstance(params, dict):
            found = _unwrap(params.get("token"))
            if found is not None:
                conn = self.connections.get(found[0])
                if conn is not None:
                    conn.send({**message, "params": {**params, "token": found[1]}})
                return
        if method == "lmscope/traceChanged" and isinstance(params, dict):
            found = _unwrap(params.get("requestId"))
            if found is not None:
                others = {k: v for k, v in params.items() if k != "requestId"}
                for conn in self._ready():
                    own = conn.cid == found[0]
                    conn.send(
                        {**message, "params": {**others, "requestId": found[1]} if own else others}
                    )
                return
        self._broadcast(message)

    def _initialize_answered(self, message: dict[str, Any]) -> None:
        waiting, self.initialize_waiting = self.initialize_waiting, []
        if "result" in message:
            self.initialize_result = message["result"]
        else:
            self.initialize_sent = False  # refused: the next client's initialize tries again
        for conn, msg_id in waiting:
            conn.send({**message, "id": msg_id})

    def _owner(self, params: Any) -> Connection | None:
        if isinstance(params, dict):
            found = _unwrap(params.get("token"))
            if found is not None:
                return self.connections.get(found[0])
        return None

    def _ready(self) -> list[Connection]:
        return [c for c in self.connections.values() if c.authenticated]

    def _broadcast(self, message: dict[str, Any]) -> None:
        for conn in self._ready():
            conn.send(message)


def serve_tcp(server: Any, host: str, port: int, login_deadline: float = LOGIN_DEADLINE_S) -> None:
    """Serve `server` on host:port until the process is stopped."""
    token = server.protocol.required_token

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server.loop = loop
        router = TcpRouter(server, token, loop)
        router.login_deadline = login_deadline
        listener = await asyncio.start_server(router.serve, host, port)
        log.info("serving on %s", ", ".join(str(s.getsockname()) for s in listener.sockets))
        async with listener:
            await listener.serve_forever()

    asyncio.run(main())
