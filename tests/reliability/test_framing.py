"""Framing faults on stdio, at the process boundary: every kind of unreadable frame (absurd,
negative or non-numeric lengths, no length, no blank line, a header that never ends, garbage
between frames) is answered with a null-id error and the next well-formed request is still
answered; a stream that ends inside a frame ends the daemon cleanly (exit 0, the partial
request never run). And stdin is read while queries wait for the model: what the loop answers
(codeLens, `$/cancelRequest`) is not stuck behind them."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import TINY_PROMPT
from tests.daemon_client import DaemonClient, RpcError
from tests.reliability.conftest import spawn

STATUS = b'{"jsonrpc":"2.0","id":"probe","method":"lmscope/status","params":{}}'
NULL_ID_CODES = (-32600, -32700)  # Invalid Request, Parse error


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def length(value: bytes) -> bytes:
    """A frame declaring `value` as its length, with a short body after it."""
    return b"Content-Length: " + value + b"\r\n\r\n" + b'{"jsonrpc":"2.0"}'


# Bytes after which the stream goes on: each gets a null-id error, then the next frame is read.
RECOVERABLE = {
    "length 1e20 as digits": length(b"1" + b"0" * 20),
    "length 1e20 as a float": length(b"1e20"),
    "length 2**40": length(b"%d" % 2**40),
    "length 2**63": length(b"%d" % 2**63),
    "length 2**64 + 1": length(b"%d" % (2**64 + 1)),
    "length over the frame limit": length(b"%d" % (256 * 2**20 + 1)),
    "length -1": length(b"-1"),
    "length abc": length(b"abc"),
    "length empty": length(b""),
    "length 0x10": length(b"0x10"),
    "length with a 5000-digit number": length(b"9" * 5000),
    "length with a 100000-digit number": length(b"9" * 100_000),
    "length not ASCII": length("٣".encode()),
    "two different lengths": b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "an empty body": b"Content-Length: 0\r\n\r\n",
    "no Content-Length header": b"Content-Type: application/vscode-jsonrpc\r\n\r\n" + STATUS,
    "a body without any header": STATUS.replace(b"probe", b"lost"),
    "a blank line, then a body": b"\r\n" + STATUS.replace(b"probe", b"lost"),
    "a header without the blank line": b"Content-Length: %d\r\n" % len(STATUS) + STATUS,
    "a header line without a colon": b"Content-Length 17\r\n\r\n{}",
    "an unterminated 10 MB header line": b"X" * 10_000_000,
    "10 MB of spaces": b" " * 10_000_000,
    "binary garbage between frames": bytes(range(256)) * 4,
    "garbage lines between frames": b"hello\r\nworld\r\n\r\n\x00\xff\r\n",
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    client = spawn(tmp_path_factory.mktemp("framing"))
    client.initialize()
    yield client
    assert client.process.poll() is None, f"the daemon died (log: {client.log_path})"
    assert client.close() == 0


def null_id_error(client: DaemonClient) -> RpcError:
    with pytest.raises(RpcError) as error:
        client.response(None, timeout=10)
    return error.value


@pytest.mark.parametrize("name", list(RECOVERABLE))
def test_an_unreadable_frame_is_answered_and_the_next_request_still_is(daemon, name):
    daemon.send_bytes(RECOVERABLE[name])
    daemon.send_bytes(frame(STATUS))
    assert daemon.response("probe", timeout=30)["version"]
    assert null_id_error(daemon).code in NULL_ID_CODES
    assert daemon.request("lmscope/status", {}, timeout=30)["state"] == "idle"
    with pytest.raises(TimeoutError):  # a request without a frame of its own is not run
        daemon.response("lost", timeout=0)


def test_frames_around_garbage_are_all_answered(daemon):
    first, second = (STATUS.replace(b"probe", tag) for tag in (b"first", b"second"))
    daemon.send_bytes(frame(first) + b"\x00garbage\r\n" + frame(second) + frame(STATUS))
    for msg_id in ("first", "second", "probe"):
        assert daemon.response(msg_id, timeout=30)["version"]
    assert null_id_error(daemon).code in NULL_ID_CODES


def test_frames_split_into_single_bytes_are_read(daemon):
    for byte in frame(STATUS):
        daemon.send_bytes(bytes([byte]))
    assert daemon.response("probe", timeout=30)["version"]


# A stream that ends inside a frame cannot go on: the daemon ends, exit status 0.
CUT_SHORT = {
    "a body shorter than declared": b"Content-Length: 200\r\n\r\n"
    + STATUS.replace(b"probe", b"cut"),
    "a header without the blank line": b"Content-Length: %d\r\n" % len(STATUS),
    "half a header line": b"Content-Le",
    "an unterminated 10 MB header line": b"X" * 10_000_000,
}


@pytest.mark.parametrize("name", list(CUT_SHORT))
def test_input_ending_inside_a_frame_ends_the_daemon_cleanly(tmp_path, name):
    client = spawn(tmp_path)
    client.initialize()
    client.send_bytes(CUT_SHORT[name])
    assert client.process.stdin is not None
    client.process.stdin.close()
    assert client.process.wait(timeout=60) == 0
    assert client.close() == 0
    client._reader.join(timeout=10)  # everything the daemon wrote has been read
    if name != "an unterminated 10 MB header line":  # that one was reported when it overran
        assert null_id_error(client).code in NULL_ID_CODES
    with pytest.raises(TimeoutError):  # the partial request never ran
        client.response("cut", timeout=0)


def test_input_ending_between_frames_ends_the_daemon_cleanly(tmp_path):
    client = spawn(tmp_path)
    client.initialize()
    assert client.process.stdin is not None
    client.process.stdin.close()
    assert client.process.wait(timeout=60) == 0
    assert client.close() == 0
    client._reader.join(timeout=10)
    with pytest.raises(TimeoutError):  # nothing to complain about
        client.response(None, timeout=0)


# --- stdin is read while every query thread waits for the model ---------------------------------
@pytest.fixture
def held_daemon(tmp_path, model_folder):
    """A daemon whose "victim" trace holds the model's lock until it is cancelled; killed at
    the end if it is still running (a stuck daemon must not outlive the test)."""
    marker = tmp_path / "lock-held"
    client = spawn(tmp_path / "daemon", f"hold-model-lock:{marker}")
    client.initialize()
    client.request("lmscope/loadModel", {"spec": str(model_folder)})
    yield client, marker
    if client.process.poll() is None:
        client.process.kill()
    client.close()


def wait_for_file(path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)  # polling a file the daemon writes (no event to wait on)


def test_stdin_is_read_while_queries_waiting_for_the_model_fill_the_thread_pool(held_daemon):
    client, marker = held_daemon
    handle = client.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    blocking = client.request_async("lmscope/trace", {"prompt": TINY_PROMPT + " victim"})
    wait_for_file(marker)
    # More head-map queries (they recapture, so they need the model's lock) than pygls' pool
    # has threads (at most 32): every pool thread now waits for the lock.
    workers = min(32, (os.cpu_count() or 1) + 4)
    head_maps = {"handle": handle, "layer": 0, "head": 0}
    queries = [client.request_async("lmscope/headMaps", head_maps) for _ in range(workers + 8)]

    # Answered on the loop while the lock is still held: stdin was read.
    lens = client.request_async("textDocument/codeLens", {"textDocument": {"uri": "file:///a.md"}})
    assert client.response(lens, timeout=10) is None
    with pytest.raises(TimeoutError):  # the trace still holds the lock
        client.response(blocking, timeout=0)
    status = client.request_async("lmscope/status", {})
    client.notify("$/cancelRequest", {"id": blocking})
    with pytest.raises(RpcError) as cancelled:
        client.response(blocking, timeout=10)
    assert cancelled.value.code == -32800
    assert client.response(status, timeout=10)["version"]  # the pool drained once the lock freed
    for msg_id in queries:
        assert client.response(msg_id, timeout=60)["head"] == 0
    assert client.close() == 0
