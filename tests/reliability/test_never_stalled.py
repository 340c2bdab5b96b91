"""The daemon is never stalled by model work: while a long trace runs, status, cancel and hover
are answered (hover from what the trace stores, saying what needs the model), even with many
queries that need the model queued behind the trace; and `exit` or a closed stdin during a
trace ends the process cleanly (exit 0, no abort)."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_PROMPT
from tests.reliability.conftest import spawn

LONG_PROMPT = " ".join(["mary", "john", "went", "to", "the", "store"] * 250)
BUSY = "the model is busy with a trace"


@pytest.fixture
def tracing(tmp_path, slow_model_folder):
    """A daemon with a live trace of a short prompt to hover on, now running a long trace."""
    client = spawn(tmp_path / "logs")
    client.initialize(root=tmp_path)
    client.request("lmscope/loadModel", {"spec": str(slow_model_folder)})
    short = client.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    uri = (tmp_path / "notes.md").as_uri()
    document = {"uri": uri, "languageId": "markdown", "version": 1, "text": "L1H2 L2.ffn\n"}
    client.notify("textDocument/didOpen", {"textDocument": document})
    long_id = client.request_async("lmscope/trace", {"prompt": LONG_PROMPT})
    client.wait_notification(
        lambda n: n["method"] == "lmscope/traceChanged" and n["params"]["state"] == "started"
    )
    yield client, uri, short, long_id
    client.close()


def still_tracing(client) -> bool:
    return client.request("lmscope/status", {}, timeout=30)["state"] == "tracing"


def test_status_and_hover_answer_during_a_trace_with_what_the_trace_stores(tracing):
    client, uri, _short, _long = tracing
    for character in (1, 7):  # a head and a block
        hover = client.request(
            "textDocument/hover",
            {"textDocument": {"uri": uri}, "position": {"line": 0, "character": character}},
            timeout=30,
        )
        card = hover["contents"]["value"]
        assert "carries" in card  # the route's share, from the stored trace
        assert BUSY in card
    assert still_tracing(client), "the trace ended first: the check proved nothing"


def test_queries_that_need_the_model_do_not_hold_up_status_hover_or_cancel(tracing):
    client, uri, short, long_id = tracing
    queued = [
        client.request_async("lmscope/headMaps", {"handle": short, "layer": 1, "head": h})
        for h in range(8)
    ]
    assert still_tracing(client)
    hover = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}},
        timeout=30,
    )
    assert BUSY in hover["contents"]["value"]
    assert still_tracing(client)
    client.notify("$/cancelRequest", {"id": long_id})
    with pytest.raises(Exception, match="cancel"):
        client.response(long_id, timeout=60)
    for msg_id in queued:  # the model is free again: the maps come
        assert client.response(msg_id, timeout=120)["head"] in range(8)


@pytest.mark.parametrize("how", ["shutdown and exit", "exit alone", "stdin closed"])
def test_the_process_ends_cleanly_when_told_to_during_a_trace(tracing, how):
    client, _uri, _short, _long = tracing
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
