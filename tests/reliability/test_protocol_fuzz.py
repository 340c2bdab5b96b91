"""Protocol fuzzing at the process boundary: requests generated from the JSON Schemas in
protocol/ (hypothesis + hypothesis-jsonschema), then mutations of valid requests (wrong types,
missing and unknown fields, huge and non-finite numbers, deep nesting, invalid UTF-8, oversized
and lying frames). One daemon with the tiny model takes all of them; each request gets a result
(checked against its schema) or a JSON-RPC error, and the daemon never dies.

The number of cases run is printed (`pytest -s`) and asserted from below."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from lmscope import protocol
from tests.conftest import TINY_PROMPT
from tests.daemon_client import RpcError
from tests.reliability.conftest import spawn_loaded

REQUESTS = [m for m, spec in protocol.METHODS.items() if spec.kind == "request"]
EXAMPLES = Path(protocol.PROTOCOL_DIR) / "examples"
COUNTS: dict[str, int] = {}


def inline_refs(node: Any, here: dict[str, Any]) -> Any:
    """The schema with every `$ref` (to common.schema.json or local `$defs`) inlined."""
    if isinstance(node, dict):
        if "$ref" in node:
            target, _, pointer = node["$ref"].partition("#")
            doc = protocol.SCHEMAS[target] if target else here
            found: Any = doc
            for part in filter(None, pointer.split("/")):
                found = found[part]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return inline_refs({**found, **rest}, doc)
        return {k: inline_refs(v, here) for k, v in node.items() if k not in ("$id", "$schema")}
    if isinstance(node, list):
        return [inline_refs(v, here) for v in node]
    return node


def params_schema(method: str) -> dict[str, Any]:
    schema = protocol.SCHEMAS[protocol.METHODS[method].params_schema]
    return inline_refs(schema, schema)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, model_folder):
    client = spawn_loaded(tmp_path_factory.mktemp("fuzz"), model_folder)
    client.handle = client.request("lmscope/trace", {"prompt": TINY_PROMPT})["trace"]["handle"]
    yield client
    total = sum(COUNTS.values())
    assert total >= 900, COUNTS
    print(f"\nprotocol fuzzing: {total} cases ({', '.join(f'{k} {v}' for k, v in COUNTS.items())})")
    assert client.process.poll() is None, f"the daemon died (log: {client.log_path})"
    assert client.close() == 0


def answered(client, msg_id: Any, method: str | None = None) -> None:
    """The request got a schema-valid result or a well-formed JSON-RPC error."""
    try:
        result = client.response(msg_id, timeout=60)
    except RpcError as error:
        assert isinstance(error.code, int) and isinstance(error.message, str) and error.message
        return
    if method in protocol.METHODS:
        protocol.validate_result(method, result)


def still_serving(client) -> None:
    assert client.request("lmscope/status", {})["version"]


# --- generated from the schemas -----------------------------------------------------------------
def generated(method: str) -> st.SearchStrategy[dict[str, Any]]:
    strategy = from_schema(params_schema(method))
    if method == "lmscope/loadModel":  # never the embedded model (slow); nothing else loads
        strategy = strategy.filter(lambda p: p.get("spec", "").strip() != "default")
    return strategy


@pytest.mark.parametrize(
    "method",
    [m for m in REQUESTS if m != "lmscope/loadModel"]
    + [
        "lmscope/loadModel"  # last: a failed load leaves no model, which the others would see
    ],
)
def test_requests_generated_from_the_schemas_are_answered(daemon, method):
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(params=generated(method), real_handle=st.booleans())
    def run(params: dict[str, Any], real_handle: bool) -> None:
        if real_handle and "handle" in params:
            params = {**params, "handle": daemon.handle}  # reach past the handle lookup
        answered(daemon, daemon.request_async(method, params), method)
        COUNTS["generated"] = COUNTS.get("generated", 0) + 1

    run()
    still_serving(daemon)


# --- mutations of valid requests ----------------------------------------------------------------
ODD_VALUES: list[Any] = [
    None, True, -1, 0, 2**31, -(2**63), 2**64, 10**400, 1e308, -1e308, 1.5, "", "x" * 10_000,
    "\u202e\ud800", [], {}, [[[[[]]]]], {"kind": "attention"},
]  # fmt: skip


def valid_params(method: str, handle: str) -> dict[str, Any]:
    name = method.removeprefix("lmscope/")
    files = sorted(EXAMPLES.glob(f"{name}.params.valid.*.json"))
    params = json.loads(files[0].read_text(encoding="utf-8")) if files else {}
    if "handle" in params:
        params["handle"] = handle
    if method == "lmscope/loadModel":
        params["spec"] = "/nonexistent/model"
    for key in ("savePath", "path"):
        if key in params:
            params[key] = "/nonexistent/dir/x.lmtrace"
    return params


def mutations(method: str, handle: str) -> list[Any]:
    base = valid_params(method, handle)
    out: list[Any] = [[], "params", 42, None, {"unknown": 1}, {**base, "zzz": 1}]
    for key in base:
        out.append({k: v for k, v in base.items() if k != key})
        for value in ODD_VALUES:
            out.append({**base, key: value})
        if isinstance(base[key], dict):
            for inner in base[key]:
                broken = copy.deepcopy(base)
                broken[key][inner] = [base[key][inner]]
                out.append(broken)
    return out


@pytest.mark.parametrize("method", [m for m in REQUESTS if m != "lmscope/loadModel"])
def test_mutated_requests_get_a_result_or_an_error(daemon, method):
    cases = mutations(method, daemon.handle)
    ids = [daemon.request_async(method, params) for params in cases]  # pipelined
    for msg_id in ids:
        answered(daemon, msg_id, method)
    COUNTS["mutated"] = COUNTS.get("mutated", 0) + len(cases)
    still_serving(daemon)


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


# (body, the id its answer carries: None for JSON-RPC's null-id answer to the unreadable)
RAW_REQUESTS = {
    "NaN threshold": (
        b'{"jsonrpc":"2.0","id":"r1","method":"lmscope/route","params":'
        b'{"handle":"HANDLE","threshold":NaN}}',
        "r1",
    ),
    "Infinity threshold": (
        b'{"jsonrpc":"2.0","id":"r2","method":"lmscope/route","params":'
        b'{"handle":"HANDLE","threshold":Infinity}}',
        "r2",
    ),
    "1e400 token": (
        b'{"jsonrpc":"2.0","id":"r3","method":"lmscope/route","params":'
        b'{"handle":"HANDLE","threshold":0.04,"token":1e400}}',
        "r3",
    ),
    "a 5000-digit layer": (
        b'{"jsonrpc":"2.0","id":"r4","method":"lmscope/edgeHeads","params":'
        b'{"handle":"HANDLE","layer":' + b"9" * 5000 + b',"target":1,"source":0}}',
        None,
    ),
    "lone surrogate escape": (
        b'{"jsonrpc":"2.0","id":"r5","method":"lmscope/trace","params":'
        b'{"prompt":"mary \\ud800 john"}}',
        "r5",
    ),
    "id is an object": (
        b'{"jsonrpc":"2.0","id":{"a":1},"method":"lmscope/status","params":{}}',
        None,
    ),
    "method is a number": (b'{"jsonrpc":"2.0","id":"r7","method":5,"params":{}}', None),
    "invalid UTF-8 in a string": (
        b'{"jsonrpc":"2.0","id":"u1","method":"lmscope/trace",'
        b'"params":{"prompt":"mary \xff\xfe john"}}',
        None,
    ),
    "deep nesting": (
        b'{"jsonrpc":"2.0","id":"u2","method":"lmscope/status","params":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
        None,
    ),
    "truncated JSON": (b'{"jsonrpc":"2.0","id":"u3","method":"lmsc', None),
    "not JSON": (b"\x00\x01\x02 hello", None),
}


@pytest.mark.parametrize("name", list(RAW_REQUESTS))
def test_raw_frames_are_answered_and_the_daemon_reads_on(daemon, name):
    body, msg_id = RAW_REQUESTS[name]
    daemon.send_bytes(frame(body.replace(b"HANDLE", daemon.handle.encode())))
    answered(daemon, msg_id)  # a result, or an error (with a null id when unreadable)
    COUNTS["raw"] = COUNTS.get("raw", 0) + 1
    still_serving(daemon)


def test_an_oversized_request_is_answered_and_the_daemon_keeps_serving(daemon, model_folder):
    daemon.request("lmscope/loadModel", {"spec": str(model_folder)})  # the fuzzing unloaded it
    huge = "mary " * 1_000_000  # a 5 MB prompt: far past the tiny model's context
    msg_id = daemon.request_async("lmscope/trace", {"prompt": huge})
    with pytest.raises(RpcError) as refused:
        daemon.response(msg_id, timeout=120)
    assert refused.value.code == -32002 and "too long" in refused.value.message
    COUNTS["oversized"] = COUNTS.get("oversized", 0) + 1
    still_serving(daemon)
