"""The daemon end to end on the embedded default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest

from tests.daemon_client import DaemonClient

pytestmark = pytest.mark.default_model

IOI = "When Mary and John went to the store, John gave a drink to"


def test_the_daemon_loads_the_default_model_at_start_and_traces_the_ioi_prompt(tmp_path):
    client = DaemonClient(tmp_path / "daemon.log")
    try:
        client.initialize(root=tmp_path, model="default")
        client.wait_notification(
            lambda n: n["method"] == "lmscope/modelChanged" and n["params"]["state"] == "ready",
            timeout=300,
        )
        status = client.request("lmscope/status", {})
        assert status["model"]["name"].startswith("SmolLM2") and status["model"]["nLayers"] == 30

        saved = tmp_path / "traces" / "ioi.lmtrace"
        result = client.request("lmscope/trace", {"prompt": IOI, "savePath": str(saved)})
        summary = result["trace"]
        assert summary["predictions"][0]["token"] == " Mary"
        route = client.request("lmscope/route", {"handle": summary["handle"], "threshold": 0.04})
        late_mary = [
            e
            for e in route["edges"]
            if e["kind"] == "attention"
            and e["source"]["position"] == 2
            and e["target"]["position"] == route["token"]
            and e["target"]["layer"] >= 15
        ]
        assert late_mary, "no late attention edge from ' Mary' into the last token"

        uri = (tmp_path / "notes.md").as_uri()
        layer = late_mary[0]["target"]["layer"]
        text = f"Head L{layer}H0 and block L{layer}.attn.\n"
        client.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "markdown", "version": 1, "text": text}},
        )
        where = {"line": 0, "character": text.index(".attn")}
        hover = client.request(
            "textDocument/hover", {"textDocument": {"uri": uri}, "position": where}
        )
        assert hover is not None and f"L{layer}" in hover["contents"]["value"]
        client.check_notifications()
    finally:
        assert client.close() == 0
