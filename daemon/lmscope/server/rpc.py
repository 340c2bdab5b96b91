"""JSON-RPC at the edge: error codes and mapping, raw params for lmscope/* messages, the
initialize checks (protocol version, TCP token)."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import JsonRPCNotification, JsonRPCRequestMessage
from pygls.protocol.language_server import lsp_method

from lmscope import protocol
from lmscope.__about__ import __version__
from lmscope.errors import (
    LmscopeError,
    ModelLoadError,
    NeedsModelError,
    PromptError,
    TraceFileError,
)
from lmscope.server.wire import FiniteJson
from lmscope.session import JobCancelled, TraceNotSavedError, UnknownHandleError

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
            code=OUT_OF_MEMORY,
            message=_one_line(f"out of memory: {exc}", 300) + " (memory was released)",
        )
    if _is_device_error(exc):
        log.error("device error during model work: %s", exc)
        return JsonRpcException(
            code=LMSCOPE_ERROR,
            message=_one_line(f"the GPU failed during this work: {exc}", 300)
            + " (memory was released; if it happens again, restart the daemon)",
        )
    if isinstance(exc, TraceNotSavedError):  # the client can still save it elsewhere
        return JsonRpcException(
            code=TRACE_FILE_ERROR, message=str(exc), data={"handle": exc.handle}
        )
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return JsonRpcException(code=code, message=str(exc))
    log.exception("internal error", exc_info=exc)
    return JsonRpcException(message=f"internal error: {type(exc).__name__}: {exc}"[:300])


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_device_error(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) failure: torch raises AcceleratorError, older versions a
    RuntimeError whose message starts with "CUDA error"."""
    try:
        import torch

        accelerator = getattr(torch, "AcceleratorError", None)
        if accelerator is not None and isinstance(exc, accelerator):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and str(exc).lstrip().startswith(("CUDA error", "CUBLAS"))


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


class LmscopeProtocol(FiniteJson, LanguageServerProtocol):
    """pygls' protocol with raw JSON params for `lmscope/*` messages, the protocol version in
    the initialize result, and an optional token check before any other request."""

    required_token: str | None = None
    authenticated = False
    initialization_options: dict[str, Any] = {}  # noqa: RUF012 - replaced, never mutated

    def structure_message(self, data: dict[str, Any]):
        # pygls turns unknown params into namedtuples (renaming odd keys); lmscope validates
        # the raw JSON against protocol/ instead, so it keeps the dicts as they came.
        method = data.get("method") if isinstance(data, dict) else None
        if isinstance(data, dict) and "jsonrpc" in data and "id" in data:
            msg_id = data["id"]
            if isinstance(msg_id, bool) or not isinstance(msg_id, (int, str, type(None))):
                # JSON-RPC ids are strings or numbers; answered with a null id (app.py).
                raise ValueError(f"a message id must be a string or a number, not {msg_id!r:.40}")
            if "method" in data and not isinstance(method, str):
                raise ValueError(f"a method name must be a string, not {data['method']!r:.40}")
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
        check_initialization(options, self.required_token)
        self.authenticated = True
        self.initialization_options = options
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {"lmscope": protocol.capabilities(__version__)}
        return result


def check_initialization(options: dict[str, Any], token: str | None) -> None:
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
