"""The lmscope daemon: a JSON-RPC language server (pygls 2.x) over stdio or TCP.

The only module that knows pygls and the wire format. Every `lmscope/*` request is validated
against its schema in `protocol/` (raw JSON params: see `LmscopeProtocol.structure_message`),
turned into calls on `Session` or `Trace`, and answered with a schema-shaped dict. Engine errors
become JSON-RPC errors with the codes of `protocol/README.md`; the daemon keeps serving.

Threads: the asyncio loop reads and answers messages; model work (loading, tracing) runs on the
session's worker thread; queries run on pygls' thread pool so a query waiting for the model lock
never blocks the loop. Messages to the client from other threads go through
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage
from pygls.protocol.language_server import lsp_method

from lmscope import protocol
from lmscope.__about__ import __version__
from lmscope.attribution.graph import RAW, RENORMALIZE, Node
from lmscope.errors import (
    LmscopeError,
    ModelLoadError,
    NeedsModelError,
    PromptError,
    TraceFileError,
)
from lmscope.session import Job, JobCancelled, Session, UnknownHandleError

log = logging.getLogger("lmscope.server")

# Error codes beyond JSON-RPC's own, from the table in protocol/methods.json.
CODES = protocol.ERROR_CODES
MODEL_ERROR = CODES["ModelError"]
PROMPT_ERROR = CODES["PromptError"]
TRACE_FILE_ERROR = CODES["TraceFileError"]
NEEDS_MODEL = CODES["NeedsModel"]
UNKNOWN_HANDLE = CODES["UnknownHandle"]
LMSCOPE_ERROR = CODES["LmscopeError"]
OUT_OF_MEMORY = CODES["OutOfMemory"]
UNAUTHORIZED = CODES["Unauthorized"]
INVALID_REQUEST = CODES["InvalidRequest"]

_ERROR_CODES: list[tuple[type[BaseException], int]] = [
    (ModelLoadError, MODEL_ERROR),
    (PromptError, PROMPT_ERROR),
    (TraceFileError, TRACE_FILE_ERROR),
    (NeedsModelError, NEEDS_MODEL),
    (UnknownHandleError, UNKNOWN_HANDLE),
    (LmscopeError, LMSCOPE_ERROR),
]


def rpc_error(exc: BaseException) -> JsonRpcException:
    """The JSON-RPC error for an exception raised while answering a request."""
    if isinstance(exc, JsonRpcException):
        return exc
    if isinstance(exc, protocol.ParamsError):
        return JsonRpcInvalidParams(
            message=f"invalid params: {exc}", data={"path": exc.path, "reason": exc.reason}
        )
    if isinstance(exc, (JobCancelled, asyncio.CancelledError)):
        return JsonRpcRequestCancelled(message=str(exc) or "cancelled")
    if _is_out_of_memory(exc):
        return JsonRpcException(
            code=OUT_OF_MEMORY, message=f"out of memory: {exc}"[:300] + " (memory was released)"
        )
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return JsonRpcException(code=code, message=str(exc))
    log.exception("internal error", exc_info=exc)
    return JsonRpcException(message=f"internal error: {type(exc).__name__}: {exc}"[:300])


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        return isinstance(exc, torch.OutOfMemoryError)
    except (ImportError, AttributeError):  # pragma: no cover
        return False


class _ExpectedErrorsFilter(logging.Filter):
    """pygls logs every error response with a traceback; ours are answers, not crashes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, JsonRpcException) and error.code != -32603)


def quiet_expected_errors() -> None:
    """Keep pygls' logs for real failures only (call once when the daemon starts)."""
    for name in ("pygls.protocol.json_rpc", "pygls.protocol", "pygls"):
        logging.getLogger(name).addFilter(_ExpectedErrorsFilter())


class LmscopeProtocol(LanguageServerProtocol):
    """pygls' protocol with raw JSON params for `lmscope/*` messages, the protocol version in
    the initialize result, and an optional token check before any other request."""

    required_token: str | None = None
    authenticated = False
    initialization_options: dict[str, Any] = {}  # noqa: RUF012 - replaced, never mutated

    def structure_message(self, data: dict[str, Any]):
        # pygls turns unknown params into namedtuples (renaming odd keys); lmscope validates
        # the raw JSON against protocol/ instead, so it keeps the dicts as they came.
        method = data.get("method") if isinstance(data, dict) else None
        if isinstance(method, str) and method.startswith("lmscope/") and "jsonrpc" in data:
            params = data.get("params")
            if "id" in data:
                return JsonRPCRequestMessage(
                    id=data["id"], method=method, jsonrpc=data["jsonrpc"], params=params
                )
            return JsonRPCNotification(method=method, jsonrpc=data["jsonrpc"], params=params)
        return super().structure_message(data)

    def handle_message(self, message):
        method = getattr(message, "method", None)
        if (
            self.required_token is not None
            and not self.authenticated
            and method not in (types.INITIALIZE, types.EXIT, None)
        ):
            if getattr(message, "id", None) is not None:
                error = JsonRpcException(
                    code=UNAUTHORIZED, message="not authenticated: initialize with the token first"
                )
                self._send_response(message.id, error=error.to_response_error())
            return None
        return super().handle_message(message)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        options = params.initialization_options or {}
        if not isinstance(options, dict):
            options = {}
        _check_initialization(options, self.required_token)
        self.authenticated = True
        self.initialization_options = options
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {"lmscope": protocol.capabilities(__version__)}
        return result


def _check_initialization(options: dict[str, Any], token: str | None) -> None:
    """Refuse a wrong token or protocol version before anything else runs."""
    if token is not None:
        given = options.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode("utf-8", "replace"), token.encode("utf-8")
        ):
            raise JsonRpcException(code=UNAUTHORIZED, message="wrong or missing token")
    try:
        protocol.validate_initialization_options(options)
    except protocol.ProtocolVersionError as exc:
        raise JsonRpcException(code=INVALID_REQUEST, message=str(exc)) from None
    except protocol.ParamsError as exc:
        raise rpc_error(exc) from None


# --- wire shapes -----------------------------------------------------------------------------
def node_wire(node: Node) -> dict[str, Any]:
    return {"kind": node.kind, "layer": node.layer, "position": node.position}


def model_wire(loaded: Any) -> dict[str, Any]:
    from lmscope.models.adapter import adapter_for
    from lmscope.tracing.engine import model_facts

    facts = model_facts(loaded, adapter_for(loaded.model))
    parameter_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    return {
        "spec": facts.spec,
        "name": facts.name,
        "source": facts.source,
        "contentHash": facts.content_hash,
        "family": facts.family,
        "modelType": facts.model_type,
        "nLayers": facts.n_layers,
        "nHeads": facts.n_heads,
        "nKvHeads": facts.n_kv_heads,
        "dModel": facts.d_model,
        "dHead": facts.d_head,
        "dFfn": facts.d_ffn,
        "vocabSize": facts.vocab_size,
        "contextLength": facts.context_length,
        "parallelBlocks": facts.parallel_blocks,
        "device": loaded.device,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "parameterBytes": int(parameter_bytes),
    }


def summary_wire(handle: str, trace: Any, path: Path | None) -> dict[str, Any]:
    data = trace.data
    return {
        "handle": handle,
        "prompt": data.tokens.prompt,
        "tokens": list(data.tokens.strings),
        "nLayers": data.model.n_layers,
        "nHeads": data.model.n_heads,
        "dFfn": data.model.d_ffn,
        "parallelBlocks": data.model.parallel_blocks,
        "minThreshold": data.settings.min_threshold,
        "model": {
            "name": data.model.name,
            "spec": data.model.spec,
            "contentHash": data.model.content_hash,
        },
        "predictions": [
            {"token": data.vocabulary.get(int(i), ""), "id": int(i), "score": float(p)}
            for i, p in zip(data.predictions.ids[-1], data.predictions.probs[-1])
        ],
        "live": trace.live is not None,
        "path": None if path is None else str(path),
    }


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


# --- the server ------------------------------------------------------------------------------
class LmscopeServer(LanguageServer):
    """The daemon: a session plus the loop-side bookkeeping of requests."""

    def __init__(self, session: Session | None = None) -> None:
        super().__init__("lmscope", __version__, protocol_cls=LmscopeProtocol)
        self.session = session or Session()
        self.loop: asyncio.AbstractEventLoop | None = None
        # folder of a document -> handle of the latest trace made from or saved there
        self.latest_by_folder: dict[str, str] = {}
        # (spec, dtype, device) to load once the client is initialized (`serve --model`)
        self.preload: tuple[str, str | None, str] | None = None

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
        params = {"state": state, "queuedTraces": _queued_traces(self.session), **extra}
        self.notify("lmscope/traceChanged", params)


def _queued_traces(session: Session) -> int:
    return sum(job.kind == "trace" for job in session.queued)


class _Progress:
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


async def _run_job(server: LmscopeServer, job: Job) -> Any:
    """Submit model work and wait for it; a cancelled request cancels the job."""
    server.session.submit(job)
    try:
        # shield: cancelling this request must not cancel the job's future directly (the
        # worker still owns it); the session stops the job and settles the future itself.
        return await asyncio.shield(asyncio.wrap_future(job.future))
    except asyncio.CancelledError:
        server.session.cancel(job)
        raise


def _params(method: str, params: Any) -> dict[str, Any]:
    """Validate raw params against the method's schema; fill nothing (defaults in code)."""
    if params is None:
        params = {}
    protocol.validate_params(method, params)
    return params


def _mode(params: dict[str, Any]) -> bool:
    return params.get("mode", RENORMALIZE) != RAW


def _path_of_uri(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def build_server(session: Session | None = None, token: str | None = None) -> LmscopeServer:
    """The daemon with every handler registered; `token` makes initialize require it."""
    server = LmscopeServer(session)
    assert isinstance(server.protocol, LmscopeProtocol)
    server.protocol.required_token = token
    session = server.session

    def request(method: str, *, threaded: bool = True):
        """Register a validated lmscope request handler that maps errors to RPC errors."""

        def register(body: Callable[[dict[str, Any]], Any]):
            def handler(params: Any) -> Any:
                try:
                    return body(_params(method, params))
                except Exception as exc:
                    raise rpc_error(exc) from None

            if threaded:
                server.thread()(handler)
            server.feature(method)(handler)
            return body

        return register

    @server.feature(types.INITIALIZED)
    async def initialized(_params: Any) -> None:
        server.loop = asyncio.get_running_loop()
        assert isinstance(server.protocol, LmscopeProtocol)
        options = server.protocol.initialization_options
        wanted = server.preload
        if options.get("model"):
            wanted = (options["model"], options.get("dtype"), options.get("device", "cpu"))
        if wanted is not None and session.model is None:
            spec, dtype, device = wanted
            job = session.load_model_job(spec, dtype, device, on_state=server.notify_model)
            job.progress = lambda message, fraction: server.notify_model(
                percentage=None if fraction is None else int(100 * fraction), message=message
            )
            session.submit(job)

            def log_failure(done: Future) -> None:
                # Failures reach the client as lmscope/modelChanged {state: "error"}; log too.
                if done.exception() is not None:
                    log.error("loading %s failed: %s", spec, done.exception())

            job.future.add_done_callback(log_failure)

    # --- status and model ----------------------------------------------------------------------
    @request("lmscope/status")
    def status(_params: dict[str, Any]) -> dict[str, Any]:
        cache = session.traces
        return {
            "version": __version__,
            "protocolVersion": protocol.PROTOCOL_VERSION,
            "state": session.state,
            "model": model_wire(session.model) if session.model is not None else None,
            "queuedTraces": _queued_traces(session),
            "traceCache": {
                "count": cache.count,
                "bytes": cache.bytes,
                "maxCount": cache.max_count,
                "maxBytes": cache.max_bytes,
            },
        }

    @server.feature("lmscope/loadModel")
    async def load_model(raw: Any) -> dict[str, Any]:
        server.loop = asyncio.get_running_loop()
        try:
            params = _params("lmscope/loadModel", raw)
            job = session.load_model_job(
                params["spec"],
                params.get("dtype"),
                params.get("device", "cpu"),
                on_state=lambda: server.notify_model(),
            )
            reporter = _Progress(server, params.get("workDoneToken"), "Loading model")

            def progress(message: str, fraction: float | None) -> None:
                reporter(message, fraction)
                pct = None if fraction is None else int(100 * fraction)
                server.notify_model(percentage=pct, message=message)

            job.progress = progress
            loaded = await _run_job(server, job)
            reporter.end("model ready")
            return {"model": model_wire(loaded)}
        except BaseException as exc:
            raise rpc_error(exc) from None

    # --- traces --------------------------------------------------------------------------------
    def prompt_of(params: dict[str, Any]) -> tuple[str, str | None]:
        """The prompt text, and the folder it came from (document traces)."""
        if "prompt" in params:
            return params["prompt"], None
        document = params["document"]
        uri, span = document["uri"], document["range"]
        start: Any
        end: Any
        try:
            doc = server.workspace.get_text_document(uri)
            lines: Sequence[str] = doc.lines
            start = doc.position_codec.position_from_client_units(lines, _pos(span["start"]))
            end = doc.position_codec.position_from_client_units(lines, _pos(span["end"]))
        except Exception:
            path = _path_of_uri(uri)
            if path is None or not path.is_file():
                raise LmscopeError(f"document {uri} is not open and not a readable file") from None
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            start, end = _pos(span["start"]), _pos(span["end"])
        text = _slice(lines, start, end)
        path = _path_of_uri(uri)
        return text, None if path is None else str(path.parent)

    @server.feature("lmscope/trace")
    async def trace(raw: Any) -> dict[str, Any]:
        from lmscope.tracing.engine import TraceOptions

        server.loop = asyncio.get_running_loop()
        request_id = server.protocol.msg_id
        try:
            params = _params("lmscope/trace", raw)
            prompt, folder = prompt_of(params)
            options = TraceOptions(
                prepend_bos=params.get("prependBos", True),
                min_threshold=params.get("minThreshold", 0.01),
            )
            save = params.get("savePath")
            save_path = Path(save) if save else None
            if save_path is not None and not save_path.is_absolute():
                raise LmscopeError(f"savePath must be an absolute path, got {save!r}")
            if session.model is None and not any(j.kind == "load" for j in session.queued):
                raise ModelLoadError("no model is loaded: call lmscope/loadModel first")
            job = session.trace_job(prompt, options, save_path)
            token = params.get("workDoneToken")
            reporter = _Progress(server, token, "Tracing")
            job.progress = reporter
            if token is not None:
                # The client's Cancel button on the progress notification cancels the trace too.
                progress_cancel = server.work_done_progress.tokens.setdefault(token, Future())

                def on_progress_cancel(done: Future) -> None:
                    if done.cancelled():
                        session.cancel(job)

                progress_cancel.add_done_callback(on_progress_cancel)
            server.notify_trace("queued", requestId=request_id)
            job_started = job.run

            def run_and_announce(j: Job) -> Any:
                server.notify_trace("started", requestId=request_id)
                return job_started(j)

            job.run = run_and_announce
            try:
                handle, saved = await _run_job(server, job)
            except BaseException as exc:
                cancelled = isinstance(exc, (JobCancelled, asyncio.CancelledError))
                server.notify_trace(
                    "cancelled" if cancelled else "failed",
                    requestId=request_id,
                    message=str(exc)[:300] or type(exc).__name__,
                )
                reporter.end("cancelled" if cancelled else "failed")
                raise
            reporter.end("done")
            if save_path is not None:
                folder = str(_trace_folder(save_path))
            if folder is not None:
                server.latest_by_folder[folder] = handle
            server.latest_by_folder[""] = handle
            server.notify_trace("finished", requestId=request_id, handle=handle)
            trace_obj = session.traces.get(handle)
            return {"trace": summary_wire(handle, trace_obj, save_path), "saved": saved}
        except BaseException as exc:
            raise rpc_error(exc) from None

    @request("lmscope/openTrace")
    def open_trace(params: dict[str, Any]) -> dict[str, Any]:
        path = Path(params["path"])
        handle = session.open_trace(path)
        server.latest_by_folder[str(_trace_folder(path))] = handle
        return {"trace": summary_wire(handle, session.traces.get(handle), path)}

    @request("lmscope/closeTrace")
    def close_trace(params: dict[str, Any]) -> dict[str, Any]:
        return {"closed": session.traces.close(params["handle"])}

    @request("lmscope/route")
    def route(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        found = trace_obj.route(params.get("token", -1), params["threshold"], _mode(params))
        share = found.flow()
        return {
            "token": found.token,
            "threshold": found.threshold,
            "mode": found.mode,
            "nodes": [
                {"id": node_wire(node), "share": _finite(share.get(node, 0.0))}
                for node in sorted(found.nodes)
            ],
            "edges": [
                {
                    "kind": edge.kind,
                    "source": node_wire(edge.source),
                    "target": node_wire(edge.target),
                    "weight": edge.weight,
                    "heads": list(edge.heads),
                }
                for edge in found.edges
            ],
        }

    @request("lmscope/edgeHeads")
    def edge_heads(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        heads = trace_obj.edge_heads(params["layer"], params["target"], params["source"])
        return {"heads": heads}

    @request("lmscope/ffnNeurons")
    def ffn_neurons(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        return trace_obj.ffn_neurons(
            params["layer"], params["position"], params.get("offset", 0), params.get("limit", 50)
        )

    @request("lmscope/projection")
    def projection(params: dict[str, Any]) -> dict[str, Any]:
        trace_obj = session.traces.get(params["handle"])
        node = params["node"]
        kind = params.get("kind", "lens")
        result = trace_obj.projection((node["kind"], node["layer"], node["position"]), kind)
        ids = trace_obj.projection_ids((node["kind"], node["layer"], node["position"]), kind)
        return {
            "top": [
                {"token": token, "id": i, "logit": logit, "prevRank": rank}
                for (token, logit, rank), i in zip(result["top"], ids["top"])
            ],
            "bottom": [
                {"token": token, "id": i, "logit": logit}
                for (token, logit), i in zip(result["bottom"], ids["bottom"])
            ],
        }

    @request("lmscope/component")
    def component(params: dict[str, Any]) -> dict[str, Any]:
        from lmscope.cards import component_card
        from lmscope.components import ComponentRef

        ref = ComponentRef.from_wire(params["component"])
        handle = params.get("handle")
        trace_obj = session.traces.get(handle) if handle else None
        card = component_card(
            ref,
            trace_obj,
            token=params.get("token", -1),
            threshold=params.get("threshold", 0.04),
            renormalize=_mode(params),
            model=session.model,
            handle=handle,
        )
        return card

    # --- standard LSP features -------------------------------------------------------------------
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @server.thread()
    def hover(params: types.HoverParams) -> types.Hover | None:
        from lmscope.cards import component_card
        from lmscope.components import reference_at

        try:
            doc = server.workspace.get_text_document(params.text_document.uri)
            line_number = params.position.line
            if line_number >= len(doc.lines):
                return None
            line = doc.lines[line_number]
            position = doc.position_codec.position_from_client_units(doc.lines, params.position)
            found = reference_at(line, position.character)
            if found is None:
                return None
            ref, start, end = found
            handle = _context_handle(server, params.text_document.uri)
            trace_obj = session.traces.get(handle) if handle else None
            card = component_card(ref, trace_obj, model=session.model, handle=handle)
            span = doc.position_codec.range_to_client_units(
                doc.lines,
                types.Range(types.Position(line_number, start), types.Position(line_number, end)),
            )
            return types.Hover(
                contents=types.MarkupContent(
                    kind=types.MarkupKind.Markdown, value=card["markdown"]
                ),
                range=span,
            )
        except LmscopeError as exc:
            return types.Hover(
                contents=types.MarkupContent(kind=types.MarkupKind.PlainText, value=str(exc))
            )

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS)
    def code_lens(params: types.CodeLensParams) -> list[types.CodeLens] | None:
        from lmscope.promptfiles import is_prompt_file, prompts_in

        uri = params.text_document.uri
        if not is_prompt_file(uri):
            return None
        doc = server.workspace.get_text_document(uri)
        lenses = []
        for span in prompts_in(doc.source, uri):
            rng = doc.position_codec.range_to_client_units(
                doc.lines,
                types.Range(
                    types.Position(span.line, span.start), types.Position(span.line, span.end)
                ),
            )
            lenses.append(
                types.CodeLens(
                    range=rng,
                    command=types.Command(
                        title="Trace",
                        command="lmscope.tracePrompt",
                        arguments=[{"uri": uri, "line": span.line, "prompt": span.prompt}],
                    ),
                )
            )
        return lenses

    @server.feature(types.SHUTDOWN)
    def shutdown(_params: Any) -> None:
        session.stop()

    return server


def _trace_folder(path: Path) -> Path:
    """The folder a saved trace belongs to: the prompt's folder when saved in its traces/."""
    return path.parent.parent if path.parent.name == "traces" else path.parent


def _context_handle(server: LmscopeServer, uri: str) -> str | None:
    """The latest trace of the document's folder (or of any folder), if still cached."""
    path = _path_of_uri(uri)
    candidates = []
    if path is not None:
        folder = path.parent
        candidates = [str(folder), str(folder.parent)]
    candidates.append("")
    for key in candidates:
        handle = server.latest_by_folder.get(key)
        if handle is not None:
            try:
                server.session.traces.get(handle)
            except UnknownHandleError:
                continue
            return handle
    return None


def _pos(value: dict[str, int]) -> types.Position:
    return types.Position(line=value["line"], character=value["character"])


def _slice(lines: Sequence[str], start: Any, end: Any) -> str:
    """The text between two positions (Python str offsets) of a document's lines."""
    if (end.line, end.character) < (start.line, start.character):
        raise LmscopeError("the range ends before it starts")
    if start.line >= len(lines):
        return ""
    if start.line == end.line:
        return lines[start.line][start.character : end.character]
    parts = [lines[start.line][start.character :]]
    parts.extend(lines[start.line + 1 : min(end.line, len(lines))])
    if end.line < len(lines):
        parts.append(lines[end.line][: end.character])
    return "".join(parts)
