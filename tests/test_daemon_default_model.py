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

        # Every drill-down on the real model, and the saved file reopened without it.
        edge = late_mary[0]
        handle = summary["handle"]
        heads = client.request(
            "lmscope/edgeHeads",
            {"handle": handle, "layer": edge["target"]["layer"],
             "target": edge["target"]["position"], "source": 2},
        )["heads"]  # fmt: skip
        # Unthresholded head contributions; the route's weight is their renormalised survivors.
        assert len(heads) == 9 and sum(h["contribution"] for h in heads) > 0.04
        assert abs(sum(edge["heads"]) - edge["weight"]) < 1e-9
        ffn = max(
            (n for n in route["nodes"] if n["id"]["kind"] == "ffn"), key=lambda n: n["share"]
        )["id"]
        page = client.request(
            "lmscope/ffnNeurons",
            {"handle": handle, "layer": ffn["layer"], "position": ffn["position"],
             "offset": 60, "limit": 20},
        )  # fmt: skip
        assert page["total"] == 1536 and len(page["neurons"]) == 20  # past the stored 64: live
        output = {"kind": "residual", "layer": 29, "position": route["token"]}
        lens = client.request("lmscope/projection", {"handle": handle, "node": output})
        assert lens["top"][0]["token"] == " Mary"
        card = client.request(
            "lmscope/component",
            {"component": {"kind": "head", "layer": edge["target"]["layer"], "index": 0},
             "handle": handle},
        )  # fmt: skip
        assert card["context"]["share"] > 0 and card["promoted"]
        reopened = client.request("lmscope/openTrace", {"path": str(saved)})["trace"]
        again = client.request("lmscope/route", {"handle": reopened["handle"], "threshold": 0.04})
        assert again["edges"] == route["edges"]
        assert client.request("lmscope/closeTrace", {"handle": reopened["handle"]})["closed"]

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
