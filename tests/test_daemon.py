"""The daemon at its process boundary: spawn `lmscope serve --stdio`, talk JSON-RPC to it.

A tiny random-init Llama saved with save_pretrained stands in for a real model; every method
runs end to end. Synchronisation is on responses and notifications, never on sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmscope.api import load_trace
from tests.conftest import TINY_PROMPT, build_tiny
from tests.daemon_client import DaemonClient, RpcError

pytestmark = pytest.mark.slow  # spawns daemons (the process boundary)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_folder):
    """One daemon for the module, initialized, with the tiny model loaded."""
    logs = tmp_path_factory.mktemp("daemon-logs")
    client = DaemonClient(logs / "daemon.log", "--log-level", "debug")
    client.initialize(root=logs)
    client.request("lmscope/loadModel", {"spec": str(model_folder)})
    yield client
    client.check_notifications()
    assert client.close() == 0


def new_daemon(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> DaemonClient:
    return DaemonClient(tmp_path / "daemon.log", *args, env=env)


# --- lifecycle -------------------------------------------------------------------------------
def test_initialize_advertises_the_protocol_and_shutdown_exits_cleanly(tmp_path):
    client = new_daemon(tmp_path)
    result = client.initialize()
    capabilities = result["capabilities"]
    assert capabilities["experimental"]["lmscope"]["protocolVersion"] == "1"
    assert capabilities["hoverProvider"]
    assert "codeLensProvider" in capabilities
    assert result["serverInfo"]["name"] == "lmscope"
    assert client.close() == 0


@pytest.mark.parametrize(
    ("version", "update"),
    [("2", "update the lmscope Python package"), ("0", "update the lmscope editor extension")],
)
def test_a_client_of_another_protocol_version_is_told_which_side_to_update(
    tmp_path, version, update
):
    client = new_daemon(tmp_path)
    with pytest.raises(RpcError) as refused:
        client.request(
            "initialize",
            {"processId": None, "rootUri": None, "capabilities": {},
             "initializationOptions": {"protocolVersion": version}},
        )  # fmt: skip
    assert update in refused.value.message
    client.close()


# --- model -----------------------------------------------------------------------------------
def test_loading_a_model_reports_progress_and_state_changes(tmp_path, model_folder):
    client = new_daemon(tmp_path)
    client.initialize()
    before = client.request("lmscope/status", {})
    assert before["model"] is None and before["state"] == "idle"
    result = client.request(
        "lmscope/loadModel", {"spec": str(model_folder), "workDoneToken": "load-1"}
    )
    assert result["model"]["nLayers"] == 3 and result["model"]["family"] == "llama"
    states = [
        n["params"]["state"] for n in client.notifications if n["method"] == "lmscope/modelChanged"
    ]
    assert states[0] == "loading" and states[-1] == "ready"
    kinds = [
        n["params"]["value"]["kind"]
        for n in client.notifications
        if n["method"] == "$/progress" and n["params"]["token"] == "load-1"
    ]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    after = client.request("lmscope/status", {})
    assert after["model"]["spec"] == str(model_folder)
    client.check_notifications()
    assert client.close() == 0


def test_a_model_split_by_a_device_map_loads_reports_its_map_and_traces(tmp_path, model_folder):
    client = new_daemon(tmp_path)
    client.initialize()
    result = client.request("lmscope/loadModel", {"spec": str(model_folder), "deviceMap": "auto"})
    placed = result["model"]["deviceMap"]
    assert placed and "disk" not in placed.values()  # all on the CPU here, on GPU 0 with one
    traced = client.request("lmscope/trace", {"prompt": TINY_PROMPT})
    route = client.request(
        "lmscope/route", {"handle": traced["trace"]["handle"], "threshold": 0.04}
    )
    assert route["edges"]
    with pytest.raises(RpcError) as refused:
        client.request("lmscope/loadModel", {"spec": str(model_folder), "deviceMap": "everywhere"})
    assert refused.value.code == -32602 and "deviceMap" in refused.value.message
    client.check_notifications()
    assert client.close() == 0


def test_the_editor_can_ask_for_a_device_map_at_initialize(tmp_path, model_folder):
    client = new_daemon(tmp_path)
    client.initialize(model=str(model_folder), deviceMap="auto")
    client.wait_notification(
        lambda n: n["method"] == "lmscope/modelChanged" and n["params"]["state"] == "ready"
    )
    assert client.request("lmscope/status", {})["model"]["deviceMap"]
    client.check_notifications()
    assert client.close() == 0


def test_an_unknown_model_is_a_model_error_and_the_daemon_keeps_serving(tmp_path):
    client = new_daemon(tmp_path)
    client.initialize()
    with pytest.raises(RpcError) as failed:
        client.request("lmscope/loadModel", {"spec": "no-such-model-xyz"})
    assert failed.value.code == -32001
    assert "unknown model" in failed.value.message
    assert client.request("lmscope/status", {})["state"] == "idle"
    assert client.close() == 0


# --- traces ----------------------------------------------------------------------------------
def test_trace_route_and_drill_downs_end_to_end(daemon, tmp_path):
    path = tmp_path / "traces" / "ioi.lmtrace"
    result = daemon.request(
        "lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(path), "workDoneToken": "tr-1"}
    )
    summary = result["trace"]
    assert result["saved"] and path.is_file()
    assert summary["tokens"][0] == "<bos>" and summary["live"]
    handle = summary["handle"]

    # τ = 0.01: a random tiny model spreads attention thinly; the lowest τ keeps its edges.
    route = daemon.request("lmscope/route", {"handle": handle, "threshold": 0.01})
    assert route["token"] == len(summary["tokens"]) - 1
    assert route["edges"], "the route of the last token is empty"
    ids = [n["id"] for n in route["nodes"]]
    assert {"kind": "residual", "layer": 2, "position": route["token"]} in ids

    attention = next(e for e in route["edges"] if e["kind"] == "attention")
    heads = daemon.request(
        "lmscope/edgeHeads",
        {"handle": handle, "layer": attention["target"]["layer"],
         "target": attention["target"]["position"], "source": attention["source"]["position"]},
    )["heads"]  # fmt: skip
    assert len(heads) == summary["nHeads"]

    ffn = next(n["id"] for n in route["nodes"] if n["id"]["kind"] == "ffn")
    page = daemon.request(
        "lmscope/ffnNeurons",
        {"handle": handle, "layer": ffn["layer"], "position": ffn["position"], "limit": 10},
    )
    assert page["total"] == 96 and len(page["neurons"]) == 10

    output = {"kind": "residual", "layer": 2, "position": route["token"]}
    lens = daemon.request("lmscope/projection", {"handle": handle, "node": output})
    assert len(lens["top"]) == 10 and isinstance(lens["top"][0]["id"], int)

    reopened = daemon.request("lmscope/openTrace", {"path": str(path)})["trace"]
    assert not reopened["live"] and reopened["tokens"] == summary["tokens"]
    again = daemon.request("lmscope/route", {"handle": reopened["handle"], "threshold": 0.01})
    assert again["edges"] == route["edges"]
    assert daemon.request("lmscope/closeTrace", {"handle": reopened["handle"]}) == {"closed": True}
    with pytest.raises(RpcError) as gone:
        daemon.request("lmscope/route", {"handle": reopened["handle"], "threshold": 0.04})
    assert gone.value.code == -32005


def test_a_trace_reports_progress_per_layer_and_state_notifications(daemon):
    result = daemon.request("lmscope/trace", {"prompt": TINY_PROMPT, "workDoneToken": "tr-2"})
    reports = [
        n["params"]["value"]
        for n in daemon.notifications
        if n["method"] == "$/progress" and n["params"]["token"] == "tr-2"
    ]
    assert reports[0]["kind"] == "begin" and reports[-1]["kind"] == "end"
    percentages = [r["percentage"] for r in reports if r.get("percentage") is not None]
    assert percentages == sorted(percentages) and percentages[-1] == 100
    handle = result["trace"]["handle"]
    daemon.wait_notification(
        lambda n: (
            n["method"] == "lmscope/traceChanged"
            and n["params"]["state"] == "finished"
            and n["params"].get("handle") == handle
        )
    )


@pytest.mark.parametrize(
    ("prompt", "fragment"), [("", "empty prompt"), ("mary " * 300, "prompt too long")]
)
def test_empty_and_oversized_prompts_are_prompt_errors(daemon, prompt, fragment):
    with pytest.raises(RpcError) as refused:
        daemon.request("lmscope/trace", {"prompt": prompt})
    assert refused.value.code == -32002 and fragment in refused.value.message
    assert daemon.request("lmscope/status", {})["state"] == "idle"


@pytest.mark.parametrize("prompt", ["", " \n\t ", "\x00"])
def test_an_untraceable_prompt_is_refused_before_anything_else_even_without_a_model(
    tmp_path, prompt
):
    client = new_daemon(tmp_path)
    client.initialize()
    with pytest.raises(RpcError) as refused:  # no model loaded: the prompt is the first problem
        client.request("lmscope/trace", {"prompt": prompt})
    assert refused.value.code == -32002
    assert client.request("lmscope/status", {})["queuedTraces"] == 0
    assert client.close() == 0


def test_a_trace_of_a_document_range_uses_the_open_document(daemon, tmp_path):
    uri = (tmp_path / "exp.py").as_uri()
    text = f'PROMPT = "{TINY_PROMPT}"\n'
    daemon.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
    )
    start = text.index(TINY_PROMPT)
    span = {"start": {"line": 0, "character": start},
            "end": {"line": 0, "character": start + len(TINY_PROMPT)}}  # fmt: skip
    result = daemon.request("lmscope/trace", {"document": {"uri": uri, "range": span}})
    assert result["trace"]["prompt"] == TINY_PROMPT


def test_cancelling_a_running_trace_stops_it_and_the_next_request_works(
    tmp_path, slow_model_folder
):
    client = new_daemon(tmp_path)
    client.initialize()
    client.request("lmscope/loadModel", {"spec": str(slow_model_folder)})
    long_prompt = " ".join(["mary", "john", "went", "to", "the", "store"] * 300)
    running = client.request_async(
        "lmscope/trace", {"prompt": long_prompt, "workDoneToken": "slow"}
    )
    queued = client.request_async("lmscope/trace", {"prompt": long_prompt})
    # Once the first layer is done, cancel both: the queued one never starts, the running one
    # stops between layers.
    client.wait_notification(
        lambda n: (
            n["method"] == "$/progress"
            and n["params"]["token"] == "slow"
            and n["params"]["value"].get("percentage") is not None
        )
    )
    client.notify("$/cancelRequest", {"id": queued})
    client.notify("$/cancelRequest", {"id": running})
    for msg_id in (running, queued):
        with pytest.raises(RpcError) as cancelled:
            client.response(msg_id, timeout=60)
        assert cancelled.value.code == -32800
    status = client.request("lmscope/status", {})
    assert status["queuedTraces"] == 0 and status["traceCache"]["count"] == 0
    assert client.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    assert client.close() == 0


# --- bad input -------------------------------------------------------------------------------
def test_invalid_params_name_the_field_and_reason(daemon):
    with pytest.raises(RpcError) as bad:
        daemon.request("lmscope/route", {"handle": "t1", "threshold": "high"})
    assert bad.value.code == -32602
    assert bad.value.data["path"] == "threshold"
    assert "threshold" in bad.value.message


def test_unknown_methods_are_method_not_found(daemon):
    with pytest.raises(RpcError) as missing:
        daemon.request("lmscope/doesNotExist", {})
    assert missing.value.code == -32601


def test_malformed_frames_do_not_kill_the_daemon(tmp_path):
    client = new_daemon(tmp_path)
    client.initialize()
    client.send_bytes(b"Content-Length: 9\r\n\r\n{not json")
    client.send_bytes(b"Content-Length: 2\r\n\r\n[]")
    body = b'{"jsonrpc":"2.0","id":"short","method":"lmscope/status","params":{}}'
    client.send_bytes(b"Content-Length: %d\r\n\r\n" % (len(body) - 10) + body)  # too short
    client.send_bytes(b"Content-Length: 5\r\n\r\n")  # promises bytes that never come alone
    client.send({"jsonrpc": "2.0", "id": "x", "method": "lmscope/status", "params": [1, 2]})
    assert client.request("lmscope/status", {})["version"]
    assert client.process.poll() is None
    assert client.close() == 0


# --- editor features -------------------------------------------------------------------------
def test_hover_shows_a_card_for_component_references_and_nothing_elsewhere(daemon, tmp_path):
    daemon.request("lmscope/trace", {"prompt": TINY_PROMPT})
    uri = (tmp_path / "notes.md").as_uri()
    text = "The head L1H2 moves names; see model.layers[2].mlp too.\n"
    daemon.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "markdown", "version": 1, "text": text}},
    )
    inside = {"line": 0, "character": text.index("L1H2") + 1}
    card = daemon.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": inside})
    assert card is not None and "L1H2" in card["contents"]["value"]
    block = daemon.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": 0, "character": text.index("mlp")}},
    )
    assert block is not None
    nothing = daemon.request(
        "textDocument/hover",
        {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}},
    )
    assert nothing is None


def test_a_chat_with_a_generation_round_trips_through_the_daemon(daemon, tmp_path, model_folder):
    messages = [{"role": "user", "content": "when mary and john went to the store"}]
    with pytest.raises(RpcError) as refused:  # the tiny model's tokenizer has no template
        daemon.request("lmscope/trace", {"messages": messages})
    assert refused.value.code == -32002 and "has no chat template" in refused.value.message
    chat_folder = tmp_path / "chat-llama"
    tiny = build_tiny("llama")
    tiny.tokenizer.chat_template = (
        "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<bos> assistant :{% endif %}"
    )
    tiny.model.save_pretrained(chat_folder)
    tiny.tokenizer.save_pretrained(chat_folder)
    daemon.request("lmscope/loadModel", {"spec": str(chat_folder)})
    try:
        path = tmp_path / "chat.lmtrace"
        params = {"messages": messages, "generate": 3, "seed": 11, "savePath": str(path)}
        summary = daemon.request("lmscope/trace", params)["trace"]
        assert summary["tokens"][:3] == ["<bos>", "<unk>", "<unk>"] and len(summary["tokens"]) == 17
        saved = load_trace(path)
        assert saved.chat is not None and saved.chat.token_message[3:11] == [0] * 8
        assert saved.generation is not None
        assert (saved.generation.prompt_tokens, saved.generation.seed) == (14, 11)
    finally:
        daemon.request("lmscope/loadModel", {"spec": str(model_folder)})


def test_code_lens_offers_trace_above_each_prompt_of_a_prompt_file(daemon, tmp_path):
    uri = (tmp_path / "ioi.prompts.txt").as_uri()
    text = "# prompts\nwhen mary and john went\n\njohn gave a drink to\n"
    daemon.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "plaintext", "version": 1, "text": text}},
    )
    lenses = daemon.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    assert [lens["range"]["start"]["line"] for lens in lenses] == [1, 3]
    assert all(lens["command"]["title"] == "Trace" for lens in lenses)
    assert lenses[0]["command"]["arguments"][0]["prompt"] == "when mary and john went"


def test_code_lens_of_a_chat_file_carries_each_conversation(daemon, tmp_path):
    uri = (tmp_path / "ioi.chat.jsonl").as_uri()
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text = json.dumps({"messages": conversation}) + "\n{not json\n"
    daemon.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "json", "version": 1, "text": text}},
    )
    (lens,) = daemon.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    argument = lens["command"]["arguments"][0]
    assert (lens["command"]["command"], argument["line"]) == ("lmscope.tracePrompt", 0)
    assert argument["messages"] == conversation and argument["prompt"] == "hi"


def test_component_cards_come_with_route_context(daemon):
    handle = daemon.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    card = daemon.request(
        "lmscope/component",
        {"component": {"kind": "ffn", "layer": 2}, "handle": handle, "threshold": 0.04},
    )
    assert card["title"].startswith("L2")
    assert card["context"]["handle"] == handle
    assert card["markdown"]


def test_head_maps_of_a_live_trace_give_causal_maps_and_the_heads_tokens(daemon, tmp_path):
    path = tmp_path / "maps.lmtrace"
    summary = daemon.request("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(path)})[
        "trace"
    ]
    n = len(summary["tokens"])
    maps = daemon.request(
        "lmscope/headMaps", {"handle": summary["handle"], "layer": 1, "head": 2, "position": -2}
    )
    assert (maps["layer"], maps["head"], maps["position"]) == (1, 2, n - 2)
    assert [len(row) for row in maps["attention"]] == list(range(1, n + 1))
    assert [len(row) for row in maps["contribution"]] == list(range(1, n + 1))
    assert all(abs(sum(row) - 1) < 1e-4 for row in maps["attention"]), "softmax rows sum to 1"
    assert len(maps["promoted"]) == len(maps["suppressed"]) == 8
    assert maps["promoted"][0]["score"] >= maps["promoted"][-1]["score"]
    # The maps agree with the edge head splits the trace stores.
    route = daemon.request("lmscope/route", {"handle": summary["handle"], "threshold": 0.01})
    edge = next(e for e in route["edges"] if e["kind"] == "attention" and e["target"]["layer"] == 1)
    target, source = edge["target"]["position"], edge["source"]["position"]
    heads = daemon.request(
        "lmscope/edgeHeads",
        {"handle": summary["handle"], "layer": 1, "target": target, "source": source},
    )["heads"]
    # Strongest contribution first, ties by head index; head 2 is wherever that puts it.
    assert heads == sorted(heads, key=lambda h: (-h["contribution"], h["head"]))
    (head_2,) = [h for h in heads if h["head"] == 2]
    assert maps["attention"][target][source] == head_2["attention"]  # the same computation
    assert maps["contribution"][target][source] == head_2["contribution"]

    saved = daemon.request("lmscope/openTrace", {"path": str(path)})["trace"]
    with pytest.raises(RpcError) as needs:
        daemon.request("lmscope/headMaps", {"handle": saved["handle"], "layer": 1, "head": 2})
    assert needs.value.code == -32004 and "needs the model" in needs.value.message
    with pytest.raises(RpcError) as out_of_range:
        daemon.request("lmscope/headMaps", {"handle": summary["handle"], "layer": 1, "head": 6})
    assert "head 6 is out of range" in out_of_range.value.message


# --- TCP ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_frame(conn: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    header, _, rest = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in header.split(b"\r\n"))
    length = int(fields[b"Content-Length"])
    while len(rest) < length:
        rest += conn.recv(4096)
    return json.loads(rest[:length])


def _connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling a port with a deadline (no event to wait on)


def test_tcp_mode_refuses_a_wrong_token_before_any_method_runs(tmp_path):
    port = _free_port()
    token = "s3cret-token-for-tests"
    server = subprocess.Popen(
        [sys.executable, "-m", "lmscope", "serve", "--tcp", f"127.0.0.1:{port}"],
        env={**os.environ, "LMSCOPE_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn = _connect(port, time.monotonic() + 60)
        conn.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "lmscope/status"}))
        assert _read_frame(conn)["error"]["code"] == -32008
        init = {"processId": None, "rootUri": None, "capabilities": {},
                "initializationOptions": {"protocolVersion": "1", "token": "wrong"}}  # fmt: skip
        conn.sendall(_frame({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": init}))
        assert _read_frame(conn)["error"]["code"] == -32008
        init["initializationOptions"]["token"] = token
        conn.sendall(_frame({"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": init}))
        assert "capabilities" in _read_frame(conn)["result"]
        conn.sendall(_frame({"jsonrpc": "2.0", "id": 4, "method": "lmscope/status"}))
        assert _read_frame(conn)["result"]["state"] == "idle"
        conn.close()
    finally:
        server.kill()
        server.wait()


def test_tcp_mode_without_a_token_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LMSCOPE_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "lmscope", "serve", "--tcp", "127.0.0.1:1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "needs a token" in result.stderr


def test_a_library_printing_to_stdout_cannot_corrupt_the_stream(tmp_path):
    """stdout carries JSON-RPC only: `serve` rebinds sys.stdout, so a stray print goes to the
    log. Simulated by a daemon whose trace opening prints first."""
    script = (
        "import sys\n"
        "from lmscope import session\n"
        "original = session.Session.open_trace\n"
        "def noisy(self, path):\n"
        "    print('stray library output')\n"
        "    return original(self, path)\n"
        "session.Session.open_trace = noisy\n"
        "from lmscope.cli import main\n"
        "sys.exit(main(['serve', '--stdio']))\n"
    )
    trace_path = tmp_path / "tiny.lmtrace"
    from lmscope.traces.trace import Trace
    from lmscope.tracing.engine import run_trace

    Trace(run_trace(build_tiny("llama"), TINY_PROMPT)).save(trace_path)
    client = DaemonClient(tmp_path / "daemon.log", command=[sys.executable, "-c", script])
    client.initialize()
    opened = client.request("lmscope/openTrace", {"path": str(trace_path)})
    assert opened["trace"]["tokens"][0] == "<bos>"
    assert client.close() == 0
    assert "stray library output" in (tmp_path / "daemon.log").read_text()


def test_a_trace_asked_for_while_the_model_loads_waits_for_it(tmp_path, model_folder):
    client = new_daemon(tmp_path)
    client.initialize()
    loading = client.request_async("lmscope/loadModel", {"spec": str(model_folder)})
    traced = client.request("lmscope/trace", {"prompt": TINY_PROMPT})
    assert traced["trace"]["tokens"][0] == "<bos>"
    assert client.response(loading)["model"]["nLayers"] == 3
    assert client.close() == 0
