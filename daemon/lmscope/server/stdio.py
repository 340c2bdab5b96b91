"""The stdio transport: stdin read on a thread of its own, framed by `framing.FrameReader`.

pygls reads stdin on its thread pool, the pool `@server.thread()` handlers run on: once queries
waiting for the model lock fill it, nothing more is read, not even the `$/cancelRequest` that
would free them. Here one daemon thread does nothing but read stdin (blocking reads of its file
descriptor) and frame it; frames and framing faults go to the event loop, which does with a
message what pygls does (`protocol.structure_message` as json.loads' object hook, then
`protocol.handle_message`; `server.report_server_error` for one that cannot be read) and
answers a fault with a null-id error. No handler can keep stdin from being read.

The loop ends at end of input (after reporting a frame it cut short) and when `exit` raises
SystemExit, as pygls' own loop does; the caller (`LmscopeServer.start_io`) shuts the server
down after either. Writing stays pygls' `StdoutWriter`.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdoutWriter

from lmscope.server.framing import (
    MAX_PENDING_FRAMES,
    READ_CHUNK_BYTES,
    Fault,
    Frame,
    FrameReader,
)

if TYPE_CHECKING:
    from lmscope.server.app import LmscopeServer

log = logging.getLogger("lmscope.server")

Item = Frame | Fault | None  # None: the input has ended


def serve_stdio(
    server: LmscopeServer, stdin: BinaryIO, stdout: BinaryIO, stop: threading.Event
) -> None:
    """Serve JSON-RPC on stdin/stdout until the input ends, `exit`, or `stop` is set."""
    server.protocol.set_writer(StdoutWriter(stdout))
    asyncio.run(_serve(server, stdin, stop))


async def _serve(server: LmscopeServer, stdin: BinaryIO, stop: threading.Event) -> None:
    loop = asyncio.get_running_loop()
    server.loop = loop
    items: asyncio.Queue[Item] = asyncio.Queue()
    room = threading.Semaphore(MAX_PENDING_FRAMES)

    def post(item: Item) -> bool:
        room.acquire()
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the loop is gone (`exit`): nobody reads any more
            return False
        return True

    reader = threading.Thread(
        target=read_frames, args=(stdin, post), name="lmscope-stdin", daemon=True
    )
    reader.start()
    while not stop.is_set():
        item = await items.get()
        room.release()
        if item is None:
            break
        if isinstance(item, Fault):
            log.warning("unreadable frame: %s", item.message)
            server.protocol._send_data(item.error())
        else:
            deliver(server, item.body)


def deliver(server: LmscopeServer, body: bytes) -> None:
    """What pygls does with a frame's body."""
    try:
        message = json.loads(body, object_hook=server.protocol.structure_message)
        server.protocol.handle_message(message)
    except Exception as exc:  # answered with a null id; the daemon reads on
        log.debug("unable to handle a message", exc_info=True)
        server.report_server_error(exc, JsonRpcException)


def read_frames(stdin: BinaryIO, post: Callable[[Item], bool]) -> None:
    """The reader thread: frames (and faults) to `post` until the input ends, then None."""
    read = _raw_reader(stdin)
    frames = FrameReader()
    try:
        while data := read(READ_CHUNK_BYTES):
            frames.feed(data)
            while (item := frames.next()) is not None:
                if not post(item):
                    return
    except (OSError, ValueError) as exc:  # stdin closed under us: the same as its end
        log.warning("reading stdin failed: %s", exc)
    fault = frames.end()
    if fault is not None and not post(fault):
        return
    post(None)


def _raw_reader(stdin: BinaryIO) -> Callable[[int], bytes]:
    """Reads of stdin's file descriptor, below its buffered reader: a daemon thread blocked
    in the buffered reader holds its lock, and the interpreter aborts at exit when it cannot
    take that lock. Nothing has read stdin before (the daemon's input starts here)."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return getattr(stdin, "read1", stdin.read)  # an in-memory stream (tests)
    return lambda size: os.read(fd, size)
