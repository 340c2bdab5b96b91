"""The lmscope daemon: a JSON-RPC language server (pygls 2.x) over stdio or TCP.

This package is the only place that knows pygls and the wire format. Every `lmscope/*` request
is validated against its schema in `protocol/` (raw JSON params: see
`rpc.LmscopeProtocol.structure_message`), turned into calls on `Session` or `Trace`, and
answered with a schema-shaped dict; engine errors become JSON-RPC errors with the codes of
`protocol/methods.json` and the daemon keeps serving.

Threads: the asyncio loop answers messages; stdin is read and framed on a thread of its own
(`stdio`), so no handler can keep a message from being read; model work (loading, tracing) runs
on the session's worker thread; queries run on pygls' thread pool so a query waiting for the
model lock never blocks the loop. Messages to the client from other threads go through
`loop.call_soon_threadsafe` (`LmscopeServer.post`).

Modules: `rpc` (errors, initialize, raw params), `wire` (result shapes), `app` (the server
object, progress, how a request is registered and run), `handlers` (the lmscope/* requests: one
table of plain handlers), `documents` (the text of the editor's documents), `editor` (hover,
CodeLens), `framing` (the one bounded frame reader, and the transport limits), `stdio` (stdin
on its own reader thread), `tcp` (several TCP clients, each authenticated, in front of pygls'
one protocol).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from typing import Any

from lsprotocol import types

from lmscope.protocol import defaults
from lmscope.server.app import LmscopeServer, register_requests
from lmscope.server.editor import register_editor
from lmscope.server.rpc import LmscopeProtocol, quiet_expected_errors
from lmscope.session import Session

__all__ = ["LmscopeServer", "build_server", "quiet_expected_errors"]

log = logging.getLogger("lmscope.server")


def build_server(session: Session | None = None, token: str | None = None) -> LmscopeServer:
    """The daemon with every handler registered; `token` makes initialize require it."""
    server = LmscopeServer(session)
    assert isinstance(server.protocol, LmscopeProtocol)
    server.protocol.required_token = token
    session = server.session
    register_requests(server)
    register_editor(server)

    @server.feature(types.INITIALIZED)
    async def initialized(_params: Any) -> None:
        server.loop = asyncio.get_running_loop()
        assert isinstance(server.protocol, LmscopeProtocol)
        options = server.protocol.initialization_options
        wanted = server.preload
        if options.get("model"):
            wanted = (
                options["model"],
                options.get("dtype"),
                options.get("device", defaults.DEVICE),
                options.get("deviceMap"),
                options.get("adapter"),
            )
        if wanted is not None and session.model is None:
            spec, dtype, device, device_map, adapter = wanted
            job = session.load_model_job(
                spec,
                dtype,
                device,
                on_state=lambda message: server.notify_model(message=message),
                device_map=device_map,
                adapter=adapter,
            )
            job.progress = lambda message, fraction: server.notify_model(
                percentage=None if fraction is None else int(100 * fraction), message=message
            )
            session.submit(job)

            def log_failure(done: Future) -> None:
                # Failures reach the client as lmscope/modelChanged {state: "error"}; log too.
                if done.exception() is not None:
                    log.error("loading %s failed: %s", spec, done.exception())

            job.future.add_done_callback(log_failure)

    @server.feature(types.SHUTDOWN)
    def shutdown(_params: Any) -> None:
        server.shutdown_requested = True
        session.stop()

    @server.feature(types.EXIT)
    def exit_(_params: Any) -> None:
        # pygls ends the process after this (code 0 after shutdown, else 1): the model work
        # stops first, so no thread is left inside torch when the interpreter finalizes.
        server.exit_code = 0 if server.shutdown_requested else 1  # as LSP asks
        assert isinstance(server.protocol, LmscopeProtocol)
        server.protocol.exited = True
        server.stop_work(exit_code=server.exit_code)

    return server
