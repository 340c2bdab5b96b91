"""The daemon is never stalled by model work: while a long trace runs, status, cancel and hover
are answered (hover from what the trace stores, saying what needs the model), even with many
queries that need the model queued behind the trace; and `exit` or a closed stdin during a
trace ends the process cleanly (exit 0, no abort)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_PROMPT
from tests.daemon_client import RpcError
from tests.reliability.conftest import spawn
from tests.reliability.test_faults import wait_for_file

LONG_PROMPT = " ".join(["mary", "john", "went", "to", "the", "store"] * 250)
BUSY = "the model is busy with a trace"


@pytest.fixture
def held(tmp_path, model_folder):
    """A daemon with a live trace of a short prompt to hover on, now running a trace that
    holds the model until it is cancelled (faults.py, hold-model-lock): the model stays busy
    for as long as the test needs, whatever the machine's speed."""
    marker = tmp_path / "lock-held"
    client = spawn(tmp_path / "logs", f"hold-model-lock:{marker}")
    client.initialize(root=tmp_path)
    client.request("lmscope/loadModel", {"spec": str(model_folder)})
    short = client.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    uri = (tmp_path / "notes.md").as_uri()
    document = {"uri": uri, "languageId": "markdown", "version": 1, "text": "L1H2 L2.ffn\n"}
    client.notify("textDocument/didOpen", {"textDocument": document})
    held_id = client.request_async("lmscope/trace", {"prompt": TINY_PROMPT + " victim"})
    wait_for_file(marker, client)
    yield client, uri, short, held_id
    if client.process.poll() is None:
        client.process.kill()
    client.close()


def still_tracing(client) -> bool:
    return client.request("lmscope/status", {}, timeout=30)["state"] == "tracing"


def hover(client, uri: str, character: int) -> str:
    answer = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": 0, "character": character}},
        timeout=30,
    )
    return answer["contents"]["value"]


def test_status_and_hover_answer_during_a_trace_with_what_the_trace_stores(held):
    client, uri, _short, _held = held
    head = hover(client, uri, 1)
    assert "carries" in head  # the route's share, from the stored trace
    assert BUSY in head  # a head's tokens and attention need the model
    block = hover(client, uri, 7)
    assert "carries" in block  # a block's tokens may be stored: then no note is needed
    assert still_tracing(client)


def test_queries_that_need_the_model_do_not_hold_up_status_hover_or_cancel(held):
    client, uri, short, held_id = held
    queued = [
        client.request_async("lmscope/headMaps", {"handle": short, "layer": 1, "head": h % 6})
        for h in range(8)  # the tiny llama has 6 heads
    ]
    assert still_tracing(client)
    assert BUSY in hover(client, uri, 1)
    assert still_tracing(client)
    client.notify("$/cancelRequest", {"id": held_id})
    with pytest.raises(RpcError, match="cancel"):
        client.response(held_id, timeout=60)
    for msg_id in queued:  # the model is free again: the maps come
        assert client.response(msg_id, timeout=120)["head"] in range(6)


@pytest.fixture
def tracing(tmp_path, slow_model_folder):
    """A daemon inside a long trace of a real model (torch at work on the worker thread)."""
    client = spawn(tmp_path / "logs")
    client.initialize(root=tmp_path)
    client.request("lmscope/loadModel", {"spec": str(slow_model_folder)})
    client.request_async("lmscope/trace", {"prompt": LONG_PROMPT})
    client.wait_notification(
        lambda n: n["method"] == "lmscope/traceChanged" and n["params"]["state"] == "started"
    )
    yield client
    client.close()


@pytest.mark.parametrize("how", ["shutdown and exit", "exit alone", "stdin closed"])
def test_the_process_ends_cleanly_when_told_to_during_a_trace(tracing, how):
    client = tracing
    if how == "shutdown and exit":
        client.request("shutdown", timeout=30)
        client.notify("exit")
        expected = 0
    elif how == "exit alone":
        client.notify("exit")
        expected = 1  # LSP: exit without shutdown
    else:
        client.process.stdin.close()
        expected = 0
    assert client.process.wait(timeout=60) == expected  # not -6 (SIGABRT)
    log = client.log_path.read_text(errors="replace")
    assert "terminate called" not in log and "Traceback" not in log
