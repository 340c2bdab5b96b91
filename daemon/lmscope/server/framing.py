"""The one frame reader of both transports: JSON-RPC's `Content-Length` framing, bounded.

`FrameReader` takes bytes as they arrive (`feed`) and gives back whole frames and faults
(`next`); it never reads a stream itself, so stdio (a reader thread) and TCP (asyncio) share
it. Everything it holds is bounded: a header block by `MAX_HEADER_BYTES`, a body by the
reader's `max_frame` (a length over it is refused from the header, before any body is read).

A fault (a malformed header line, a missing, negative, non-numeric or oversized length, a
header block that never ends, bytes that are no header at all) is reported once, and then
the reader resynchronises: it skips ahead to the next `Content-Length:` and reads on from
there, so the next well-formed frame is still answered. A stream that ends inside a frame
reports that from `end`; nothing of the partial frame is handed on.

The limits are written down here once (protocol/README.md names them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_FRAME_BYTES = 256 * 2**20  # one message, once a client is logged in (stdio: always)
MAX_LOGIN_FRAME_BYTES = 64 * 2**10  # a TCP connection's frames before initialize has the token
MAX_HEADER_BYTES = 8 * 2**10  # a frame's header block; an LSP client sends about 80 bytes
MAX_UNAUTHENTICATED_CONNECTIONS = 8  # TCP connections not yet logged in, at once
LOGIN_DEADLINE_S = 30.0  # how long a TCP connection may stay without logging in (default)
MAX_LOGIN_UNREAD_BYTES = 64 * 2**10  # answers a TCP connection not logged in leaves unread
# stdio: frames read ahead of the event loop; past this the reader waits, so a client writing
# faster than the daemon handles messages fills its pipe, not the daemon's memory.
MAX_PENDING_FRAMES = 16
READ_CHUNK_BYTES = 64 * 2**10  # what a transport reads from its stream at a time

PARSE_ERROR, INVALID_REQUEST = -32700, -32600

# A header line is `name: value`, the name an RFC 9110 token. A byte outside the token set
# before the colon means this is not a header (a body without one, garbage): no need to wait
# for the line to end to say so.
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_NOT_TCHAR = re.compile(rb"[^" + _TCHAR + rb"]")
_HEADER_LINE = re.compile(rb"([" + _TCHAR + rb"]+):[ \t]*(.*?)[ \t]*")
_DIGITS = re.compile(rb"[0-9]+")
_RESYNC = re.compile(rb"content-length:", re.IGNORECASE)
_KEEP = len(b"content-length:") - 1  # a match may straddle two reads

_HEADER, _BODY, _RESYNCING = "header", "body", "resync"


@dataclass(frozen=True)
class Frame:
    """One message's bytes, exactly as long as its header said."""

    body: bytes


@dataclass(frozen=True)
class Fault:
    """A frame that could not be read: answered with a null id (nothing to answer it by)."""

    message: str
    too_large: bool = False  # the declared length is over the limit (TCP closes then)
    code: int = INVALID_REQUEST

    def error(self) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": self.code, "message": self.message}}


class FrameReader:
    """Bytes in, frames and faults out; see the module docstring. `max_frame` may change
    between frames (a TCP connection's limit grows once it has logged in)."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, max_header: int = MAX_HEADER_BYTES):
        self.max_frame = max_frame
        self.max_header = max_header
        self._buf = bytearray()
        self._state = _HEADER
        self._scan = 0  # header: where the current line starts
        self._length: int | None = None  # header: the Content-Length seen so far
        self._lines = 0  # header: lines of the current block
        self._body = 0  # body: the length being read

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> Frame | Fault | None:
        """The next frame or fault, or None until more bytes come."""
        while True:
            if self._state == _BODY:
                if len(self._buf) < self._body:
                    return None
                body = bytes(memoryview(self._buf)[: self._body])
                del self._buf[: self._body]
                self._start_block()
                return Frame(body)
            if self._state == _RESYNCING:
                found = _RESYNC.search(self._buf)
                if found is None:
                    del self._buf[: max(0, len(self._buf) - _KEEP)]
                    return None
                del self._buf[: found.start()]
                self._start_block()
            fault = self._read_header()
            if fault is not None or self._state == _HEADER:
                return fault

    def end(self) -> Fault | None:
        """The stream ended: a fault when it ended inside a frame."""
        state, buffered = self._state, len(self._buf)
        self._buf.clear()
        self._start_block()
        if state == _BODY:
            return Fault(f"the stream ended {buffered} bytes into a {self._body}-byte frame")
        if state == _HEADER and buffered:
            return Fault("the stream ended inside a frame's header")
        return None

    # --- the header block ---------------------------------------------------------------------
    def _start_block(self) -> None:
        self._state, self._scan, self._length, self._lines = _HEADER, 0, None, 0

    def _resync(self, start: int, fault: Fault) -> Fault:
        """Report `fault` and skip to the next `Content-Length:` at or after `start`."""
        del self._buf[:start]
        self._state = _RESYNCING
        return fault

    def _read_header(self) -> Fault | None:
        """Read header lines; return a fault, or None with the state `_BODY` (the header is
        complete) or `_HEADER` (more bytes are needed)."""
        while True:
            start = self._scan
            newline = self._buf.find(b"\n", start)
            if newline < 0:
                partial = bytes(self._buf[start:]).removesuffix(b"\r")  # "\r" | "\n" split
                if _NOT_TCHAR.search(partial.partition(b":")[0]):
                    return self._resync(start + 1, _not_a_header(partial))
                if len(self._buf) > self.max_header:
                    return self._resync(1, Fault(f"a header over {self.max_header} bytes"))
                return None
            line = bytes(self._buf[start:newline]).removesuffix(b"\r")
            self._scan = newline + 1
            if self._scan > self.max_header:
                return self._resync(1, Fault(f"a header over {self.max_header} bytes"))
            if not line:  # the blank line: the header block is complete
                if self._lines == 0:  # a stray blank line between frames is no frame
                    del self._buf[: self._scan]
                    self._start_block()
                    continue
                if self._length is None:
                    return self._resync(self._scan, Fault("a frame needs a Content-Length header"))
                del self._buf[: self._scan]
                self._state, self._body = _BODY, self._length
                return None
            self._lines += 1
            header = _HEADER_LINE.fullmatch(line)
            if header is None:
                return self._resync(start + 1, _not_a_header(line))
            if header[1].lower() == b"content-length":
                fault = self._content_length(header[2])
                if fault is not None:
                    return self._resync(start + 1, fault)

    def _content_length(self, value: bytes) -> Fault | None:
        shown = value[:40].decode("ascii", "replace") + ("..." if len(value) > 40 else "")
        if not _DIGITS.fullmatch(value):
            return Fault(f"Content-Length {shown!r} is not a byte count")
        digits = value.lstrip(b"0") or b"0"
        # Compared as text first: int() of thousands of digits is slow (and refused past 4300).
        if len(digits) > len(str(self.max_frame)) or int(digits) > self.max_frame:
            return Fault(
                f"a frame of {shown} bytes is over the {self.max_frame}-byte limit", too_large=True
            )
        length = int(digits)
        if self._length is not None and self._length != length:
            return Fault("a frame with two different Content-Length headers")
        self._length = length
        return None


def _not_a_header(line: bytes) -> Fault:
    shown = line[:40].decode("ascii", "replace")
    return Fault(f"not a header line (a frame starts with Content-Length): {shown!r}")
