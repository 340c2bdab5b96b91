"""The daemon object: a Session plus loop-side bookkeeping, progress, and request helpers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from lmscope import protocol
from lmscope.__about__ import __version__
from lmscope.server.rpc import LmscopeProtocol, rpc_error
from lmscope.server.wire import model_wire
from lmscope.session import Job, Session

log = logging.getLogger("lmscope.server")


class LmscopeServer(LanguageServer):
    """The daemon: a session plus the loop-side bookkeeping of requests."""

    def __init__(self, session: Session | None = None) -> None:
        super().__init__("lmscope", __version__, protocol_cls=LmscopeProtocol)
        self.session = session or Session()
        self.loop: asyncio.AbstractEventLoop | None = None
        # (spec, dtype, device, device map) to load once the client is initialized (`serve
        # --model`)
        self.preload: tuple[str, str | None, str, str | None] | None = None

    def start_tcp(self, host: str, port: int) -> None:
        """Serve over TCP, several clients at once, each authenticated (`server.tcp`)."""
        from lmscope.server.tcp import serve_tcp

        serve_tcp(self, host, port)

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """Serve over stdio with lmscope's own reader (`server.stdio`): stdin is read on a
        thread of its own, never on the pool handlers wait in, and framing faults are answered.
        Ends like pygls' own: at end of input or `exit` (exit status 0 either way), then shuts
        the server down."""
        import sys
        import threading

        from lmscope.server.stdio import serve_stdio

        self._stop_event = threading.Event()
        try:
            serve_stdio(
                self, stdin or sys.stdin.buffer, stdout or sys.stdout.buffer, self._stop_event
            )
        except BrokenPipeError:
            log.error("the client closed stdout: shutting down")
        except (KeyboardInterrupt, SystemExit):  # `exit`, as in pygls
            pass
        finally:
            self.shutdown()

    def report_server_error(self, error: Exception, source: Any) -> None:
        """A message that could not even be read (invalid JSON or UTF-8, nesting too deep, not
        a JSON-RPC message) has no id to answer: JSON-RPC's answer is an error with a null id.
        The daemon logs it and keeps reading."""
        from pygls.exceptions import JsonRpcException

        if source is not JsonRpcException:
            log.error("%s", error)
            return
        parse = isinstance(
            error, (json.JSONDecodeError, UnicodeDecodeError, RecursionError)
        ) or "integer string conversion" in str(error)
        code, what = (-32700, "parse error") if parse else (-32600, "invalid request")
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        log.warning("unreadable message (%s): %s", what, reason)
        self.protocol._send_data(
            {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": f"{what}: {reason}"}}
        )

    # Messages to the client may come from the worker thread.
    def post(self, send: Callable[[], None]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(send)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.post(lambda: self.protocol.notify(method, params))

    def notify_model(self, percentage: int | None = None, message: str | None = None) -> None:
        session = self.session
        params: dict[str, Any] = {
            "state": session.model_state,
            "model": model_wire(session.model) if session.model is not None else None,
        }
        if percentage is not None:
            params["percentage"] = percentage
        if message is not None:
            params["message"] = message
        self.notify("lmscope/modelChanged", params)

    def notify_trace(self, state: str, **extra: Any) -> None:
        params = {"state": state, "queuedTraces": queued_traces(self.session), **extra}
        self.notify("lmscope/traceChanged", params)


def queued_traces(session: Session) -> int:
    return sum(job.kind == "trace" for job in session.queued)


class Progress:
    """Sends $/progress for a client-given work-done token (callable from the worker thread);
    does nothing when the client gave no token."""

    def __init__(self, server: LmscopeServer, token: Any, title: str) -> None:
        self.server, self.token, self.title = server, token, title
        self.started = False
        self.last: int | None = None

    def __call__(self, message: str, fraction: float | None) -> None:
        if self.token is None:
            return
        server, token = self.server, self.token
        if not self.started:
            self.started = True
            begin = types.WorkDoneProgressBegin(title=self.title, cancellable=True, message=message)
            server.post(lambda: server.work_done_progress.begin(token, begin))
        percentage = None if fraction is None else int(100 * fraction)
        if percentage is not None:
            if percentage == self.last:
                return
            self.last = percentage
        value = types.WorkDoneProgressReport(message=message, percentage=percentage)
        server.post(lambda: server.work_done_progress.report(token, value))

    def end(self, message: str) -> None:
        if self.token is not None and self.started:
            server, token = self.server, self.token
            value = types.WorkDoneProgressEnd(message=message)
            server.post(lambda: server.work_done_progress.end(token, value))


async def run_job(server: LmscopeServer, job: Job) -> Any:
    """Submit model work and wait for it; a cancelled request cancels the job."""
    server.session.submit(job)
    try:
        # shield: cancelling this request must not cancel the job's future directly (the
        # worker still owns it); the session stops the job and settles the future itself.
        return await asyncio.shield(asyncio.wrap_future(job.future))
    except asyncio.CancelledError:
        server.session.cancel(job)
        raise


def register_requests(server: LmscopeServer) -> None:
    """Register every handler of `handlers.HANDLERS`: params validated against the method's
    schema and completed with its defaults, errors mapped to JSON-RPC errors; QUERY handlers on
    pygls' thread pool, JOB handlers as coroutines on the loop."""
    from lmscope.server.handlers import HANDLERS, JOB, Handler

    for method, handler in HANDLERS.items():
        if handler.kind == JOB:

            async def run_job_request(raw: Any, method: str = method, h: Handler = handler) -> Any:
                server.loop = asyncio.get_running_loop()
                try:
                    return await h.run(server, _params(method, raw))
                except BaseException as exc:
                    raise rpc_error(exc) from None

            server.feature(method)(run_job_request)
        else:

            def run_query(raw: Any, method: str = method, h: Handler = handler) -> Any:
                try:
                    return h.run(server, _params(method, raw))
                except Exception as exc:
                    raise rpc_error(exc) from None

            server.thread()(run_query)
            server.feature(method)(run_query)


def _params(method: str, raw: Any) -> dict[str, Any]:
    """Raw params validated against the method's schema, with its defaults filled in."""
    params = {} if raw is None else raw
    protocol.validate_params(method, params)
    return protocol.with_defaults(method, params)
