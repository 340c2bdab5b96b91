"""The daemon object: a Session plus loop-side bookkeeping, progress, and request helpers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from lmscope import protocol
from lmscope.__about__ import __version__
from lmscope.server.rpc import LmscopeProtocol, rpc_error
from lmscope.server.wire import model_wire
from lmscope.session import Job, Session

log = logging.getLogger("lmscope.server")

# How long `exit` waits for a running trace to stop at its next layer before ending the process.
EXIT_GRACE_S = 10.0


class LmscopeServer(LanguageServer):
    """The daemon: a session plus the loop-side bookkeeping of requests."""

    def __init__(self, session: Session | None = None) -> None:
        super().__init__("lmscope", __version__, protocol_cls=LmscopeProtocol)
        self.session = session or Session()
        self.loop: asyncio.AbstractEventLoop | None = None
        # Queries that may re-run the model (and so wait for it behind a trace) run here, never
        # on pygls' pool, where hovers run (handlers.py, LIVE).
        self.live_queries = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lmscope-live")
        self.shutdown_requested = False  # LSP `shutdown` came: `exit` then ends with code 0
        self.exit_code = 0  # the process's: 1 after `exit` without `shutdown` (LSP)
        # (spec, dtype, device, device map) to load once the client is initialized (`serve
        # --model`)
        # (spec, dtype, device, device map, adapter) of `lmscope serve --model`
        self.preload: tuple[str, str | None, str, str | None, str | None] | None = None

    def start_tcp(self, host: str, port: int, login_deadline: float | None = None) -> None:
        """Serve over TCP, several clients at once, each authenticated (`server.tcp`)."""
        from lmscope.server.tcp import serve_tcp

        if login_deadline is None:
            serve_tcp(self, host, port)
        else:
            serve_tcp(self, host, port, login_deadline)

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """Serve over stdio with lmscope's own reader (`server.stdio`): stdin is read on a
        thread of its own, never on the pool handlers wait in, and framing faults are answered.
        Ends like pygls' own: at end of input or `exit` (exit status 0 either way), then shuts
        the server down."""
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
            # An error already answered to its request: expected ones (cancelled, invalid
            # params, lmscope's own codes) are not failures of the daemon.
            expected = isinstance(error, JsonRpcException) and error.code != -32603
            log.log(logging.INFO if expected else logging.ERROR, "%s", error)
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

    def stop_work(self, exit_code: int, grace: float = EXIT_GRACE_S) -> None:
        """Stop the model work before the process ends: cancel the queued and running jobs and
        the live queries, and wait (at most `grace` seconds) for their threads. A thread still
        inside torch when the interpreter finalizes aborts the process (SIGABRT, "terminate
        called without an active exception"), so past the grace period the process ends here,
        at once, with `exit_code`, its logs flushed."""
        stopped = self.session.close(grace)
        self.live_queries.shutdown(wait=False, cancel_futures=True)
        busy = [
            t for t in threading.enumerate() if t.name.startswith("lmscope-live") and t.is_alive()
        ]
        for thread in busy:
            thread.join(timeout=grace)
        if stopped and not any(t.is_alive() for t in busy):
            return
        log.warning("model work did not stop within %.0f s: ending the process now", grace)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)

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
    settled = asyncio.wrap_future(job.future)
    try:
        # shield: cancelling this request must not cancel the job's future directly (the
        # worker still owns it); the session stops the job and settles the future itself.
        return await asyncio.shield(settled)
    except asyncio.CancelledError:
        server.session.cancel(job)
        # Nobody awaits the job's outcome any more: take it, so asyncio does not log it.
        settled.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise


def register_requests(server: LmscopeServer) -> None:
    """Register every handler of `handlers.HANDLERS`: params validated against the method's
    schema and completed with its defaults, errors mapped to JSON-RPC errors, each run where its
    kind says (handlers.py: LOOP, QUERY, LIVE, JOB)."""
    from lmscope.server.handlers import HANDLERS, JOB, LIVE, LOOP, Handler

    for method, handler in HANDLERS.items():
        if handler.kind in (JOB, LIVE):

            async def run_async(raw: Any, method: str = method, h: Handler = handler) -> Any:
                server.loop = asyncio.get_running_loop()
                try:
                    params = _params(method, raw)
                    if h.kind == JOB:
                        return await h.run(server, params)
                    running = server.live_queries.submit(h.run, server, params)
                    return await asyncio.wrap_future(running)
                except asyncio.CancelledError:
                    raise  # pygls answers a cancelled request itself
                except BaseException as exc:
                    raise rpc_error(exc) from None

            server.feature(method)(run_async)
        else:

            def run_now(raw: Any, method: str = method, h: Handler = handler) -> Any:
                try:
                    return h.run(server, _params(method, raw))
                except Exception as exc:
                    raise rpc_error(exc) from None

            if handler.kind != LOOP:
                server.thread()(run_now)
            server.feature(method)(run_now)


def _params(method: str, raw: Any) -> dict[str, Any]:
    """Raw params validated against the method's schema, with its defaults filled in."""
    params = {} if raw is None else raw
    protocol.validate_params(method, params)
    return protocol.with_defaults(method, params)
