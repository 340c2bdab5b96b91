"""lmscope/ffnExperts at the process boundary: a spawned daemon with a tiny Qwen2-MoE (layer 0
dense, layer 1 sparse with a shared expert) answers an FFN node's experts from the trace file's
table (stored), from the model (live), "needs the model" for a saved trace opened without it,
and a clear error for a dense layer or a position out of range. Results are checked against
protocol/schemas/ffnExperts.result.schema.json by the client.
"""

from __future__ import annotations

import pytest

from lmscope.api import load_trace
from lmscope.traces.experts import stored as stored_experts
from tests.conftest import TINY_PROMPT, save_tiny_folder
from tests.daemon_client import DaemonClient, RpcError

pytestmark = pytest.mark.slow  # spawns a daemon (the process boundary)

NEEDS_MODEL = -32004


@pytest.fixture(scope="module")
def moe_daemon(tmp_path_factory):
    """A daemon with a tiny Qwen2-MoE loaded, one trace of it (live, and saved), and its table."""
    folder = save_tiny_folder("qwen2_moe", tmp_path_factory.mktemp("tiny-qwen2-moe"))
    logs = tmp_path_factory.mktemp("daemon-experts")
    client = DaemonClient(logs / "daemon.log", "--log-level", "warning")
    client.initialize(root=logs)
    client.request("lmscope/loadModel", {"spec": str(folder)})
    path = logs / "moe.lmtrace"
    traced = client.request("lmscope/trace", {"prompt": TINY_PROMPT, "savePath": str(path)})
    saved = load_trace(path)
    table = stored_experts(saved.data.extra, saved.n_layers, saved.n_tokens).table
    yield client, traced["trace"]["handle"], path, saved, table
    client.check_notifications()
    assert client.close() == 0


def ask(client: DaemonClient, handle: str, layer: int, position: int):
    return client.request(
        "lmscope/ffnExperts", {"handle": handle, "layer": layer, "position": position}
    )


def test_ffn_experts_of_a_stored_node_come_from_the_file(moe_daemon):
    client, handle, path, saved, table = moe_daemon
    layer, position = int(table.layer[0]), int(table.position[0])
    live = ask(client, handle, layer, position)
    assert live["stored"] and live["total"] == 3  # k = 2 chosen and 1 shared
    assert [e["expert"] for e in live["experts"]] == table.expert[0].tolist()
    assert {e["label"] for e in live["experts"]} >= {"S0"}
    assert live == saved.ffn_experts(layer, position)
    reopened = client.request("lmscope/openTrace", {"path": str(path)})["trace"]["handle"]
    assert ask(client, reopened, layer, position) == live


def test_ffn_experts_of_an_unstored_node_come_from_the_model_or_need_it(moe_daemon):
    client, handle, path, _saved, table = moe_daemon
    rows = set(zip(table.layer.tolist(), table.position.tolist()))
    position = next(p for p in range(_saved.n_tokens) if (1, p) not in rows)
    live = ask(client, handle, 1, position)
    assert not live["stored"] and live["total"] == 3
    shares = sum(e["contribution"] for e in live["experts"]) + live["rest"]
    assert shares == pytest.approx(1.0, abs=1e-4)
    reopened = client.request("lmscope/openTrace", {"path": str(path)})["trace"]["handle"]
    with pytest.raises(RpcError) as needs:
        ask(client, reopened, 1, position)
    assert needs.value.code == NEEDS_MODEL
    assert "the others need the model" in needs.value.message


def test_ffn_experts_of_a_dense_layer_or_a_bad_position_are_clear_errors(moe_daemon):
    client, handle, _path, saved, _table = moe_daemon
    with pytest.raises(RpcError) as dense:
        ask(client, handle, 0, 1)
    assert dense.value.message == "layer 0 has a dense FFN: it has no experts"
    with pytest.raises(RpcError) as outside:
        ask(client, handle, 1, saved.n_tokens)
    assert "is out of range" in outside.value.message
