"""lmscope/ablate and lmscope/verifyRoute through a spawned daemon: answers, progress, cancel,
and the "needs the model" answer without one. Synchronised on notifications, never on sleeps."""

from __future__ import annotations

import pytest

import lmscope
from tests.conftest import TINY_PROMPT, build_tiny
from tests.daemon_client import DaemonClient, RpcError

pytestmark = pytest.mark.slow  # spawns daemons

NEEDS_MODEL = -32004
CANCELLED = -32800


def test_ablate_and_verify_route_answer_report_progress_and_cancel(tmp_path, slow_model_folder):
    client = DaemonClient(tmp_path / "daemon.log")
    client.initialize()
    client.request("lmscope/loadModel", {"spec": str(slow_model_folder)})
    prompt = " ".join(["mary", "john", "went", "to", "the", "store"] * 20)
    handle = client.request("lmscope/trace", {"prompt": prompt})["trace"]["handle"]

    ablated = client.request(
        "lmscope/ablate", {"handle": handle, "targets": ["L7H0", "L7:5<-2", "L3.ffn@4"]}
    )
    assert ablated["targets"] == ["L7H0", "L7:5<-2", "L3.ffn@4"] and ablated["top"]
    assert ablated["deltaLogprob"] == pytest.approx(ablated["ablatedLogprob"] - ablated["logprob"])
    verified = client.request(
        "lmscope/verifyRoute",
        {"handle": handle, "threshold": 0.01, "randomSets": 2, "seed": 4, "workDoneToken": "v"},
    )
    assert verified["seed"] == 4 and len(verified["randomProbs"]) == 2
    with pytest.raises(RpcError, match="the forms are"):
        client.request("lmscope/ablate", {"handle": handle, "targets": ["L7Hx"]})

    running = client.request_async(
        "lmscope/verifyRoute",
        {"handle": handle, "threshold": 0.01, "randomSets": 100, "workDoneToken": "slow"},
    )
    client.wait_notification(
        lambda n: (
            n["method"] == "$/progress"
            and n["params"]["token"] == "slow"
            and n["params"]["value"].get("percentage", 0) > 0
        )
    )
    client.notify("$/cancelRequest", {"id": running})
    with pytest.raises(RpcError) as cancelled:
        client.response(running, timeout=60)
    assert cancelled.value.code == CANCELLED
    # The cancelled job stops at its next layer; the next request queues behind it and runs.
    assert client.request("lmscope/ablate", {"handle": handle, "targets": ["L0H1"]})["top"]
    assert client.close() == 0


def test_without_a_model_ablation_answers_that_it_needs_the_model(tmp_path):
    saved = lmscope.trace(TINY_PROMPT, model=build_tiny("llama")).save(tmp_path / "t.lmtrace")
    client = DaemonClient(tmp_path / "daemon.log")
    client.initialize()
    handle = client.request("lmscope/openTrace", {"path": str(saved)})["trace"]["handle"]
    for method, params in (
        ("lmscope/ablate", {"handle": handle, "targets": ["L0H0"]}),
        ("lmscope/verifyRoute", {"handle": handle}),
    ):
        with pytest.raises(RpcError) as refused:
            client.request(method, params)
        assert refused.value.code == NEEDS_MODEL and "needs the model" in str(refused.value)
    assert client.close() == 0
