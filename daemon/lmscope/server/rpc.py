"""JSON-RPC at the edge: error codes and mapping, raw params for lmscope/* messages, the
initialize checks (protocol version, TCP token)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from cattrs import ClassValidationError, transform_error
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcMethodNotFound,
    JsonRpcRequestCancelled,
)
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    ResponseErrorMessage,
)
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
from lmscope.session import JobCancelled, TraceNotSavedError
from lmscope.traces.cache import UnknownHandleError

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


@dataclass(frozen=True)
class _Unreadable:
    """A message pygls could not structure: a request is answered InvalidParams (or
    MethodNotFound) by its id; a notification (id None) is never answered."""

    id: Any
    method: str
    reason: str


def _params_reason(exc: BaseException) -> str:
    """One readable line on why params do not fit their LSP type (cattrs' errors, joined)."""
    cause = exc.__cause__
    if isinstance(cause, ClassValidationError):
        reasons = "; ".join(transform_error(cause, path="")).replace("@ .", "@ ")
        # cattrs names lsprotocol's attributes; the wire names are camelCase.
        return _one_line(re.sub(r"_([a-z])", lambda m: m.group(1).upper(), reasons), 240)
    return "they do not match the method's parameter type"


class LmscopeProtocol(LanguageServerProtocol):
    """pygls' protocol with raw JSON params for `lmscope/*` messages, the protocol version in
    the initialize result, and an optional token check before any other request."""

    required_token: str | None = None
    authenticated = False
    exited = False  # `exit` came: nothing more is sent
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
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            # A standard request whose params do not fit its LSP type: pygls raises here, from
            # inside the JSON parser, where the request's id is lost and nobody answers it.
            # Keep the id, so that handle_message answers InvalidParams to that request.
            if isinstance(method, str) and "jsonrpc" in data:
                # A notification (no id) is never answered, not even with an error (JSON-RPC).
                return _Unreadable(data.get("id"), method, _params_reason(exc))
            raise

    def handle_message(self, message):
        msg_id = getattr(message, "id", None)
        method = getattr(message, "method", None)
        if isinstance(message, _Unreadable) and msg_id is None:
            log.info("ignored the notification %s: %s", method, message.reason)
            return None
        if not self._allowed(method, msg_id):
            return None
        if self._shutdown and msg_id is not None and method not in (None, types.EXIT):
            # pygls drops requests after `shutdown` without an answer; LSP asks for an error.
            self._answer_error(msg_id, INVALID_REQUEST, "the daemon is shutting down")
            return None
        if isinstance(message, _Unreadable):
            if method in self.fm.features or method in self.fm.builtin_features:
                reason = f"invalid params for {method}: {message.reason}"
                self._answer_error(msg_id, JsonRpcInvalidParams.CODE, reason)
            else:  # an LSP method the daemon does not serve: whatever its params
                self._answer_error(
                    msg_id, JsonRpcMethodNotFound.CODE, f"Method Not Found: {method}"
                )
            return None
        if method is not None and msg_id is None:
            try:  # a notification is never answered, not even when it cannot be handled
                return super().handle_message(message)
            except Exception as exc:
                log.info("ignored the notification %s: %s", method, exc)
                return None
        return super().handle_message(message)

    def _answer_error(self, msg_id: Any, code: int, message: str) -> None:
        error = JsonRpcException(code=code, message=message)
        self._send_response(msg_id, error=error.to_response_error())

    def _allowed(self, method: Any, msg_id: Any) -> bool:
        """Before a TCP token was given, only initialize and exit run (others: Unauthorized)."""
        if self.required_token is None or self.authenticated:
            return True
        if method in (types.INITIALIZE, types.EXIT, None):
            return True
        if msg_id is not None:
            self._answer_error(
                msg_id, UNAUTHORIZED, "not authenticated: initialize with the token first"
            )
        return False

    def _send_data(self, data: Any) -> None:
        # JSON has no Infinity or NaN, and a client's parser may hang on them (VS Code's does):
        # whatever the daemon sends is checked to hold only finite numbers. Results are finite
        # by construction (the trace readers refuse what cannot be represented); this is the
        # last line of defence, answering an internal error rather than sending bad JSON.
        if self.exited:
            return  # the client said `exit`: it reads nothing more (and stdout is closing)
        if data is not None:
            try:
                json.dumps(data, default=self._serialize_message, allow_nan=False)
            except ValueError:
                msg_id = getattr(data, "id", None)
                log.error("refused to send a non-finite number (message id %r)", msg_id)
                if msg_id is None or getattr(data, "method", None) is not None:
                    return  # a notification or a request to the client: dropped, not sent bad
                error = JsonRpcException(
                    message="internal error: the answer held a number JSON cannot carry "
                    "(infinity or NaN)"
                )
                data = ResponseErrorMessage(id=msg_id, error=error.to_response_error())
        super()._send_data(data)

    def _send_response(self, msg_id, result=None, error=None):
        # pygls puts a Python traceback in an internal error's `data`: it goes to the log, and
        # the client gets one line (no response ever carries a traceback).
        if error is not None and isinstance(error.data, dict) and "traceback" in error.data:
            log.error("internal error answering %r: %s", msg_id, error.message)
            log.debug("%s", "".join(error.data["traceback"]))
            error.data = None
            error.message = _one_line(f"internal error: {error.message}", 300)
        return super()._send_response(msg_id, result=result, error=error)

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
