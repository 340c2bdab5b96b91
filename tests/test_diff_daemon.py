"""`lmscope/diff` through a spawned daemon with no model loaded: two saved traces opened by
path, compared, and the answer equal to `Trace.diff` on the same files; refusals are errors."""

from __future__ import annotations

import json

import pytest

import lmscope
from lmscope import protocol
from tests.conftest import TINY_PROMPT, build_tiny
from tests.daemon_client import DaemonClient, RpcError

pytestmark = pytest.mark.slow  # spawns a daemon

SWAPPED = "when john and mary went to the store , mary gave a drink to"
SHORTER = "when john went to the store , mary gave a drink to"


def test_the_daemon_diffs_two_saved_traces_without_a_model(tmp_path):
    model = build_tiny("llama")
    paths = {}
    for name, prompt in (("a", TINY_PROMPT), ("b", SWAPPED), ("short", SHORTER)):
        paths[name] = lmscope.trace(prompt, model=model).save(tmp_path / f"{name}.lmtrace")
    client = DaemonClient(tmp_path / "daemon.log")
    client.initialize()
    try:
        assert client.request("lmscope/status", {})["model"] is None
        handles = {
            name: client.request("lmscope/openTrace", {"path": str(path)})["trace"]["handle"]
            for name, path in paths.items()
        }
        params = {"handleA": handles["a"], "handleB": handles["b"], "threshold": 0.01}
        answered = client.request("lmscope/diff", params)
        protocol.validate_result("lmscope/diff", answered)
        expected = lmscope.load_trace(paths["a"]).diff(
            lmscope.load_trace(paths["b"]), threshold=0.01
        )
        # Flow sums nodes of equal depth in set order, which differs between processes: ulps.
        _assert_close(answered, json.loads(json.dumps(expected.wire())))
        with pytest.raises(RpcError, match="different token counts"):
            client.request("lmscope/diff", {"handleA": handles["a"], "handleB": handles["short"]})
        last = {"handleA": handles["a"], "handleB": handles["short"], "alignLast": 4}
        assert client.request("lmscope/diff", last)["alignment"]["how"] == "last"
    finally:
        assert client.close() == 0


def _assert_close(found, expected, where="result"):
    """Equal structures, numbers equal to within float rounding."""
    if isinstance(expected, dict):
        assert isinstance(found, dict) and found.keys() == expected.keys(), where
        for key in expected:
            _assert_close(found[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for k, (f, e) in enumerate(zip(found, expected)):
            _assert_close(f, e, f"{where}[{k}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=1e-12, abs=1e-15), where
    else:
        assert found == expected, where
