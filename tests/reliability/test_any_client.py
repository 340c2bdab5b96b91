"""Any LSP client is served: one that sends no initialization options at all (Neovim, eglot,
Helix, Zed), one whose standard requests are malformed, one asking for methods the daemon does
not serve. Every request gets exactly one response, and no response carries a traceback."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import TINY_PROMPT
from tests.daemon_client import PROTOCOL_VERSION, RpcError
from tests.reliability.conftest import spawn

INVALID_PARAMS, METHOD_NOT_FOUND, INVALID_REQUEST = -32602, -32601, -32600
TRACEBACK = ("Traceback (most recent call last)", 'File "')


def initialize_raw(client, params: dict) -> dict:
    return client.request(
        "initialize", {"processId": os.getpid(), "rootUri": None, "capabilities": {}, **params}
    )


def no_traceback(message: dict) -> None:
    text = json.dumps(message)
    assert not any(marker in text for marker in TRACEBACK), text[:400]


@pytest.mark.parametrize(
    "options",
    [{}, {"initializationOptions": None}, {"initializationOptions": {}},
     {"initializationOptions": {"protocolVersion": PROTOCOL_VERSION}}],
)  # fmt: skip
def test_a_client_without_initialization_options_is_served(tmp_path, model_folder, options):
    client = spawn(tmp_path / "logs")
    result = initialize_raw(client, options)
    assert result["capabilities"]["experimental"]["lmscope"]["protocolVersion"] == PROTOCOL_VERSION
    client.notify("initialized", {})
    client.request("lmscope/loadModel", {"spec": str(model_folder)})
    handle = client.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    assert client.request("lmscope/route", {"handle": handle, "threshold": 0.04})["nodes"]
    uri = (tmp_path / "notes.md").as_uri()
    document = {"uri": uri, "languageId": "markdown", "version": 1, "text": "see L1H2 here\n"}
    client.notify("textDocument/didOpen", {"textDocument": document})
    hover = client.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 5}},
    )
    assert "L1H2 · attention head" in hover["contents"]["value"]
    assert client.close() == 0


@pytest.mark.parametrize("version", ["2", "0", "10"])
def test_a_different_protocol_version_is_still_refused(tmp_path, version):
    client = spawn(tmp_path / "logs")
    with pytest.raises(RpcError) as refused:
        initialize_raw(client, {"initializationOptions": {"protocolVersion": version}})
    assert refused.value.code == INVALID_REQUEST and "update the lmscope" in refused.value.message
    assert client.close() in (0, 1)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    client = spawn(tmp_path_factory.mktemp("any-client"))
    initialize_raw(client, {})
    client.notify("initialized", {})
    yield client
    assert client.close() == 0


HOVER = {
    "textDocument": {"uri": "file:///nowhere/notes.md"},
    "position": {"line": 0, "character": 0},
}


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("textDocument/hover", {}),
        ("textDocument/hover", {"textDocument": {}}),
        ("textDocument/hover", {"textDocument": {"uri": 7}, "position": {"line": 0}}),
        ("textDocument/hover", {**HOVER, "position": {"line": "zero", "character": 0}}),
        ("textDocument/hover", [1, 2]),
        ("textDocument/hover", "params"),
        ("textDocument/hover", None),
        ("textDocument/codeLens", {"x": 1}),
        ("textDocument/codeLens", {"textDocument": None}),
        ("textDocument/codeLens", [{}]),
    ],
)
def test_a_malformed_standard_request_is_answered_invalid_params(daemon, method, params):
    msg_id = next(daemon._ids)
    message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        message["params"] = params
    daemon.send(message)
    with pytest.raises(RpcError) as answered:
        daemon.response(msg_id, timeout=30)
    assert answered.value.code == INVALID_PARAMS, answered.value.message
    assert answered.value.message.startswith(f"invalid params for {method}")
    no_traceback({"message": answered.value.message, "data": answered.value.data})
    assert daemon.request("lmscope/status", {})["state"] == "idle"


@pytest.mark.parametrize(
    "method",
    ["textDocument/definition", "textDocument/completion", "workspace/symbol", "foo/bar",
     "lmscope/noSuchMethod", "$/unknownRequest"],
)  # fmt: skip
def test_a_method_the_daemon_does_not_serve_is_answered_method_not_found(daemon, method):
    with pytest.raises(RpcError) as answered:
        daemon.request(method, {**HOVER}, timeout=30)
    assert answered.value.code == METHOD_NOT_FOUND
    no_traceback({"message": answered.value.message, "data": answered.value.data})


@pytest.mark.parametrize(
    "uri",
    ["file:///nowhere/notes.md", "file:///", "untitled:Untitled-1", "https://example.com/x.md",
     "file:///etc/passwd", "not a uri"],
)  # fmt: skip
def test_hover_and_code_lens_on_a_document_the_editor_has_not_opened_are_null(daemon, uri):
    where = {"textDocument": {"uri": uri}}
    assert daemon.request("textDocument/hover", {**where, "position": HOVER["position"]}) is None
    assert daemon.request("textDocument/codeLens", where) is None
