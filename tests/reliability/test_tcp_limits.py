"""TCP before login: connections without the token cannot make the daemon buffer. A frame over
the login limit is refused from its header (an error, then the connection closes) however much
the client sends, the daemon's resident memory stays flat; only so many connections may wait
to log in at once; one that never reads its answers is dropped; framing faults are answered
and the connection reads on; once logged in, the ordinary frame limit applies and clients work
as before."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.reliability.conftest import QUIET_THREADS, rss_bytes
from tests.reliability.test_tcp import TOKEN, UNAUTHORIZED, TcpClient, free_port

LOGIN_FRAME_LIMIT = 64 * 2**10  # lmscope.server.framing.MAX_LOGIN_FRAME_BYTES
WAITING_LIMIT = 8  # lmscope.server.framing.MAX_UNAUTHENTICATED_CONNECTIONS


def start_tcp_daemon(tmp_path, *args: str):
    port = free_port()
    with open(tmp_path / "daemon.log", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "lmscope", "serve", "--tcp", str(port), *args],
            env={**os.environ, **QUIET_THREADS, "LMSCOPE_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    probe = TcpClient(port)  # waits until it listens; logged in, so it takes no waiting place
    assert "result" in probe.initialize()
    probe.close()
    return port, process


@pytest.fixture
def tcp_daemon(tmp_path):
    """A TCP daemon on a free loopback port, listening; yields (port, process)."""
    port, process = start_tcp_daemon(tmp_path)
    yield port, process
    process.kill()
    process.wait()


def messages_until_closed(sock: socket.socket, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every message the daemon sends on `sock` until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # closed with our unread bytes still queued: a reset
        pass
    except TimeoutError:
        sent = data[:300]
        raise AssertionError(f"the daemon kept the connection open; it sent {sent!r}") from None
    messages = []
    while data:
        header, _, rest = data.partition(b"\r\n\r\n")
        length = int(header.split(b":")[1])
        messages.append(json.loads(rest[:length]))
        data = rest[length:]
    return messages


def refused(sock: socket.socket, words: str) -> None:
    """The daemon answered one null-id error saying `words`, then closed the connection."""
    messages = messages_until_closed(sock)
    assert len(messages) == 1, messages
    assert messages[0]["id"] is None and messages[0]["error"]["code"] == -32600, messages
    assert words in messages[0]["error"]["message"], messages


def status_padded_to(size: int, msg_id: int = 90) -> bytes:
    """A status request padded with JSON whitespace to `size` bytes, framed."""
    body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "lmscope/status"}).encode()
    body += b" " * (size - len(body))
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_connections_without_the_token_cannot_make_the_daemon_buffer_huge_frames(tcp_daemon):
    port, process = tcp_daemon
    declared = 250 * 2**20
    before = rss_bytes(process.pid)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(4)]

    def flood(sock: socket.socket) -> None:
        """Declare 250 MB and send all of it but the last byte (a frame the daemon would
        hold in full, waiting for its end)."""
        chunk = b"x" * 2**20
        try:
            sock.sendall(b"Content-Length: %d\r\n\r\n" % declared)
            for _ in range(declared // len(chunk) - 1):
                sock.sendall(chunk)
            sock.sendall(chunk[:-1])
        except OSError:  # the daemon closed the connection: refused
            pass

    floods = [threading.Thread(target=flood, args=(sock,)) for sock in socks]
    for thread in floods:
        thread.start()
    for thread in floods:
        thread.join(timeout=300)
    grown = rss_bytes(process.pid) - before
    print(f"\n4 unauthenticated 250 MB frames: resident memory {grown / 2**20:+.1f} MiB")
    assert grown < 64 * 2**20
    for sock in socks:
        refused(sock, "before initialize")
        sock.close()
    client = TcpClient(port)  # a client with the token is served as before
    assert "result" in client.initialize()
    assert client.request("lmscope/status", {})["state"] == "idle"
    assert process.poll() is None


def test_only_so_many_connections_may_wait_to_log_in_at_once(tcp_daemon):
    port, process = tcp_daemon
    waiting = [TcpClient(port) for _ in range(WAITING_LIMIT)]
    extra = socket.create_connection(("127.0.0.1", port), timeout=60)
    refused(extra, "too many connections waiting to log in")
    assert "result" in waiting[0].initialize()  # one logs in: a place frees up
    late = TcpClient(port)
    assert "result" in late.initialize()
    assert late.request("lmscope/status", {})["state"] == "idle"
    for client in waiting[1:]:  # the others are still connected, still not logged in
        answer = client.answer(client.request_async("lmscope/status", {}))
        assert answer["error"]["code"] == UNAUTHORIZED
    assert process.poll() is None


def test_a_connection_that_does_not_log_in_in_time_is_closed_and_frees_its_place(tmp_path):
    port, process = start_tcp_daemon(tmp_path, "--login-timeout", "2")
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(3)]
        for sock in idle:  # each closed at its deadline, with a reason
            refused(sock, "not logged in within 2 s")
        full = [TcpClient(port) for _ in range(WAITING_LIMIT)]  # every place is free again
        assert "result" in full[-1].initialize()
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_a_connection_without_the_token_that_never_reads_its_answers_is_dropped(tcp_daemon):
    port, process = tcp_daemon
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its answers back up soon
    sock.connect(("127.0.0.1", port))
    sock.settimeout(60)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "lmscope/status"}).encode()
    batch = (b"Content-Length: %d\r\n\r\n" % len(body) + body) * 1000  # each: Unauthorized
    before = rss_bytes(process.pid)
    dropped = False
    for _ in range(300):  # 300,000 requests: 36 MB of answers if the daemon kept them all
        try:
            sock.sendall(batch)
        except OSError:
            dropped = True
            break
    grown = rss_bytes(process.pid) - before
    sock.close()
    assert dropped, "the daemon kept answering a client that never reads"
    assert grown < 64 * 2**20
    client = TcpClient(port)
    assert "result" in client.initialize()
    assert process.poll() is None


def test_frames_before_login_are_limited_to_the_size_of_an_initialize(tcp_daemon):
    port, _ = tcp_daemon
    for declared in (b"%d" % (LOGIN_FRAME_LIMIT + 1), b"1" + b"0" * 20, b"%d" % 2**40):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"Content-Length: " + declared + b"\r\n\r\n{}")
        refused(sock, "limit")
        sock.close()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(status_padded_to(LOGIN_FRAME_LIMIT + 1))  # a real request, just too big yet
    refused(sock, "before initialize")
    sock.close()


def test_framing_faults_are_answered_and_the_connection_reads_on(tcp_daemon):
    port, _ = tcp_daemon
    client = TcpClient(port)
    for bad in (b"Content-Length: abc\r\n\r\n{}", b"Content-Length: -1\r\n\r\n{}",
                b"hello\r\n\r\n", b'{"no": "header"}'):  # fmt: skip
        with client.cond:
            client.answers.pop(None, None)
        client.sock.sendall(bad)
        assert client.initialize(token="wrong-token-0123456789")["error"]["code"] == UNAUTHORIZED
        assert client.answer(None)["error"]["code"] in (-32600, -32700)
    assert "result" in client.initialize()
    assert client.request("lmscope/status", {})["state"] == "idle"


def test_once_logged_in_frames_up_to_the_ordinary_limit_are_read(tcp_daemon):
    port, process = tcp_daemon
    client = TcpClient(port)
    assert "result" in client.initialize()
    client.sock.sendall(status_padded_to(2 * 2**20, msg_id=91))  # 2 MB: over the login limit
    assert client.answer(91)["result"]["state"] == "idle"
    client.sock.sendall(b"Content-Length: %d\r\n\r\n" % 2**40)  # over the ordinary limit
    with client.cond:
        while None not in client.answers:
            assert client.cond.wait(10), "no answer to a 1 TB frame"
    assert "limit" in client.answers[None][0]["error"]["message"]
    other = TcpClient(port)  # the daemon serves on
    assert "result" in other.initialize()
    assert process.poll() is None
