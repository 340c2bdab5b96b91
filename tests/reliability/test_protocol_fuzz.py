"""Protocol fuzzing at the process boundary: requests generated from the JSON Schemas in
protocol/ (hypothesis + hypothesis-jsonschema), then mutations of valid requests (wrong types,
missing and unknown fields, huge and non-finite numbers, deep nesting, invalid UTF-8, oversized
and lying frames). One daemon with the tiny model takes all of them; each request gets a result
(checked against its schema) or a JSON-RPC error, and the daemon never dies.

The standard LSP methods too, served (hover, codeLens, a second initialize, the document
notifications) or not (definition, completion, workspace/symbol, made-up names): params
generated from LSP's shapes and mutated the same way, held to the contract written above their
tests (exactly one response per request, none to a notification, no traceback, InvalidParams,
MethodNotFound, null results). A fresh daemon takes initialize, shutdown and exit.

The number of cases run is printed (`pytest -s`) and asserted from below."""

from __future__ import annotations

import collections
import copy
import itertools
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from lsprotocol import types as lsp
from pygls.protocol import default_converter

from lmscope import protocol
from tests.conftest import TINY_PROMPT
from tests.daemon_client import RpcError
from tests.reliability.conftest import spawn, spawn_loaded

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


# --- the standard LSP methods -------------------------------------------------------------------
# The contract, for the methods the daemon serves (hover, codeLens, initialize, the document
# notifications), for LSP methods it does not serve, and for made-up ones: every request gets
# exactly one response, a result or an error with a JSON-RPC code; params that LSP's own types
# cannot read (lsprotocol, as pygls reads them) answer InvalidParams, well-formed ones a result
# (null where LSP allows it: hover or CodeLens on a document that is not open); a method the
# daemon does not serve answers MethodNotFound; nothing the daemon sends carries a Python
# traceback; notifications get no response; and the daemon keeps serving.
METHOD_NOT_FOUND = protocol.ERROR_CODES["MethodNotFound"]
INVALID_PARAMS = protocol.ERROR_CODES["InvalidParams"]
REQUEST_CANCELLED = protocol.ERROR_CODES["RequestCancelled"]
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"\n]*", line \d+')
CONVERTER = default_converter()
ABSENT = object()  # a message without "params" (None sends "params": null)
SERVED = ["textDocument/hover", "textDocument/codeLens"]
NOT_SERVED = ["textDocument/definition", "textDocument/completion", "workspace/symbol", "foo/bar"]
NOTIFICATIONS = [
    "textDocument/didOpen", "textDocument/didChange", "textDocument/didClose",
    "$/unknownNotification", "$/setTrace", "$/cancelRequest", "initialized",
]  # fmt: skip
NOTES = "See L0H0 and L1H2 here.\nno reference on this line\n"
PROMPTS = f"{TINY_PROMPT}\n# a comment\n"
UINTEGER = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
TOKEN = {"type": ["integer", "string"]}
_lsp_ids = itertools.count(1)


@dataclass
class LspDocs:
    """The documents the standard-method fuzzing works on: two open (a reference, a prompt
    file), one written but never opened, one for the notifications to mangle."""

    folder: Path
    notes: str
    prompts: str
    closed: str
    scratch: str

    def odd_uris(self) -> list[str]:
        return [
            self.closed, self.folder.as_uri(), (self.folder / "missing.md").as_uri(),
            (self.folder / "missing.prompts.txt").as_uri(), "untitled:Untitled-1", "",
            "not a uri", "file://", "file:///" + "a" * 5000 + ".md", "file:///\u202e\ud800.md",
        ]  # fmt: skip


@pytest.fixture(scope="module")
def lsp_docs(tmp_path_factory) -> LspDocs:
    folder = tmp_path_factory.mktemp("lsp-docs")
    (folder / "notes.md").write_text(NOTES, encoding="utf-8")
    (folder / "ioi.prompts.txt").write_text(PROMPTS, encoding="utf-8")
    (folder / "closed.md").write_text(NOTES, encoding="utf-8")
    (folder / "scratch.md").write_text(NOTES, encoding="utf-8")
    uri = lambda name: (folder / name).as_uri()  # noqa: E731
    return LspDocs(
        folder, uri("notes.md"), uri("ioi.prompts.txt"), uri("closed.md"), uri("scratch.md")
    )


def open_documents(daemon, docs: LspDocs) -> None:
    for uri, language, text in [
        (docs.notes, "markdown", NOTES),
        (docs.prompts, "plaintext", PROMPTS),
    ]:
        document = {"uri": uri, "languageId": language, "version": 1, "text": text}
        daemon.notify("textDocument/didOpen", {"textDocument": document})


def text_document(uris: list[str]) -> dict[str, Any]:
    uri = {"anyOf": [{"enum": uris}, {"type": "string"}]}
    return {"type": "object", "required": ["uri"], "properties": {"uri": uri}}


def lsp_schema(method: str, uris: list[str]) -> dict[str, Any]:
    """LSP's params of `method` as a strict JSON Schema (unknown fields allowed, as in LSP)."""
    position = {
        "type": "object",
        "required": ["line", "character"],
        "properties": {"line": UINTEGER, "character": UINTEGER},
    }
    at = {
        "type": "object",
        "required": ["textDocument", "position"],
        "properties": {"textDocument": text_document(uris), "position": position,
                       "workDoneToken": TOKEN},
    }  # fmt: skip
    if method in ("textDocument/hover", "textDocument/definition"):
        return at
    if method == "textDocument/completion":
        context = {
            "type": "object",
            "required": ["triggerKind"],
            "properties": {
                "triggerKind": {"enum": [1, 2, 3]},
                "triggerCharacter": {"type": "string"},
            },
        }
        return {**at, "properties": {**at["properties"], "context": context}}
    if method == "textDocument/codeLens":
        return {
            "type": "object",
            "required": ["textDocument"],
            "properties": {"textDocument": text_document(uris), "workDoneToken": TOKEN,
                           "partialResultToken": TOKEN},
        }  # fmt: skip
    if method == "workspace/symbol":
        return {
            "type": "object",
            "required": ["query"],
            "properties": {"query": {"type": "string"}},
        }
    return {}  # foo/bar: anything


def lsp_valid(method: str, docs: LspDocs) -> dict[str, Any]:
    """Well-formed params of a standard request, on the open documents."""
    at = {"textDocument": {"uri": docs.notes}, "position": {"line": 0, "character": 6}}
    return {
        "textDocument/hover": at,
        "textDocument/definition": at,
        "textDocument/completion": {**at, "context": {"triggerKind": 1}},
        "textDocument/codeLens": {"textDocument": {"uri": docs.prompts}},
        "workspace/symbol": {"query": "L0"},
        "foo/bar": {"anything": [1, 2]},
    }[method]


def lsp_notification(method: str, docs: LspDocs) -> Any:
    """Well-formed params of a notification, on the scratch document (the open ones stay)."""
    return {
        "textDocument/didOpen": {"textDocument": {"uri": docs.scratch, "languageId": "markdown",
                                                  "version": 1, "text": NOTES}},
        "textDocument/didChange": {
            "textDocument": {"uri": docs.scratch, "version": 2},
            "contentChanges": [
                {"range": {"start": {"line": 0, "character": 4},
                           "end": {"line": 0, "character": 8}}, "text": "L1H1"},
                {"text": "L2H3 replaces everything"},
            ],
        },
        "textDocument/didClose": {"textDocument": {"uri": docs.scratch}},
        "$/unknownNotification": {"anything": True},
        "$/setTrace": {"value": "verbose"},
        "$/cancelRequest": {"id": "s-never-sent"},
        "initialized": {},
    }[method]  # fmt: skip


def lsp_initialize(docs: LspDocs) -> dict[str, Any]:
    return {
        "processId": os.getpid(),
        "rootUri": docs.folder.as_uri(),
        "capabilities": {"window": {"workDoneProgress": True}},
        "initializationOptions": {"protocolVersion": protocol.PROTOCOL_VERSION},
    }


def readable(method: str, params: Any) -> bool:
    """Whether LSP's own types read these params (lsprotocol, leniently, as pygls does)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not ABSENT:
        message["params"] = params
    try:
        CONVERTER.structure(message, lsp.METHOD_TO_TYPES[method][0])
    except Exception:
        return False
    return True


def expectation(method: str, params: Any, uris: list[str]) -> str:
    """What a request must get: "result", "invalid" (InvalidParams), "either" (params LSP's
    types read only by coercion, e.g. a line "3": a result or InvalidParams), "not-found"
    (MethodNotFound) or "any" (a result or any error)."""
    if method not in SERVED:
        return "not-found" if method in NOT_SERVED else "any"
    if not readable(method, params):
        return "invalid"
    valid = params is not ABSENT and jsonschema.Draft202012Validator(
        lsp_schema(method, uris)
    ).is_valid(params)
    return "result" if valid else "either"


def mangled(base: Any, path: tuple[str, ...], value: Any = ABSENT) -> Any:
    """`base` with the field at `path` replaced by `value`, or removed (ABSENT)."""
    out = copy.deepcopy(base)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is ABSENT:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def field_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(node, dict):
        return []
    return [p for k, v in node.items() for p in [(*prefix, k), *field_paths(v, (*prefix, k))]]


NESTED_GARBAGE: Any = {"a": [{"b": [[{"c": None}]] * 3}] * 3, "d": [[[[[[[[[[{}]]]]]]]]]]}


def lsp_mutations(base: Any, odd_uris: list[str]) -> list[Any]:
    """Whole params replaced (absent, null, an array, scalars, `{}`, garbage), then every field
    at any depth removed or replaced by an odd value, then the document named by odd URIs."""
    out: list[Any] = [
        ABSENT, None, [], [base], "params", 42, True, {}, {"unknown": 1}, NESTED_GARBAGE,
        {**base, "zzz": NESTED_GARBAGE},
    ]  # fmt: skip
    for path in field_paths(base):
        out.append(mangled(base, path))
        out.extend(mangled(base, path, value) for value in [*ODD_VALUES, NESTED_GARBAGE])
    if isinstance(base.get("textDocument"), dict) and "uri" in base["textDocument"]:
        out.extend(mangled(base, ("textDocument", "uri"), uri) for uri in odd_uris)
    return out


def drawn(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples of a strategy (derandomized); the checks run after, on all of them."""
    out: list[Any] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


@dataclass
class Sent:
    method: str
    params: Any
    msg_id: str | None  # None: a notification
    expect: str = "any"


class Batch:
    """Standard messages sent pipelined to one daemon, then checked against the contract
    together: what every request got, what came back that nobody asked for."""

    def __init__(self, daemon, uris: list[str]) -> None:
        self.daemon, self.uris = daemon, uris
        self.sent: list[Sent] = []
        self.got: dict[Any, dict[str, Any]] = {}
        self.nulls = daemon.response_counts[None]
        self.heard = len(daemon.notifications)

    def _send(self, method: str, params: Any, msg_id: str | None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if msg_id is not None:
            message["id"] = msg_id
        if params is not ABSENT:
            message["params"] = params
        self.daemon.send(message)

    def request(self, method: str, params: Any, expect: str | None = None) -> Sent:
        sent = Sent(
            method, params, f"s{next(_lsp_ids)}", expect or expectation(method, params, self.uris)
        )
        self._send(method, params, sent.msg_id)
        self.sent.append(sent)
        return sent

    def notify(self, method: str, params: Any) -> None:
        self._send(method, params, None)
        self.sent.append(Sent(method, params, None))

    def check(self, timeout: float = 15.0, serving: bool = True) -> list[str]:
        """The contract's violations (one line each); `serving`: the daemon must still answer
        lmscope/status (the barrier after which late and duplicate answers are counted)."""
        ids = [s.msg_id for s in self.sent if s.msg_id is not None]
        got = self.got = self.daemon.responses(ids, timeout)
        problems = [
            problem
            for s in self.sent
            if s.msg_id is not None and (problem := verdict(s, got.get(s.msg_id)))
        ]
        if serving:
            try:
                still_serving(self.daemon)
            except (RpcError, TimeoutError, AssertionError) as exc:
                problems.append(f"[not serving] lmscope/status after the batch: {exc}")
        for s in self.sent:
            if s.msg_id is not None and self.daemon.response_counts[s.msg_id] > 1:
                count = self.daemon.response_counts[s.msg_id]
                problems.append(f"[duplicate responses] {count} to {s.method} {short(s.params)}")
        nulls = self.daemon.response_counts[None] - self.nulls
        if nulls:
            last = self.daemon.responses([None], 0).get(None, {})
            problems.append(
                f"[null id] {nulls} responses with a null id (to notifications, or to requests "
                f"whose id they lost); the last: {short(last.get('error'), 300)}"
            )
        for note in self.daemon.notifications[self.heard :]:
            if has_traceback(note.get("params")):
                problems.append(f"[traceback] {note['method']}: {short(note.get('params'))}")
        if self.daemon.process.poll() is not None:
            problems.append(f"[died] the daemon exited with {self.daemon.process.returncode}")
        COUNTS["standard"] = COUNTS.get("standard", 0) + len(self.sent)
        return problems


def has_traceback(value: Any) -> bool:
    """Whether any string in a JSON value (keys too, at any depth) holds a Python traceback."""
    if isinstance(value, str):
        return TRACEBACK.search(value) is not None
    if isinstance(value, dict):
        return any(has_traceback(k) or has_traceback(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_traceback(v) for v in value)
    return False


def short(value: Any, limit: int = 160) -> str:
    text = "(absent)" if value is ABSENT else json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verdict(sent: Sent, message: dict[str, Any] | None) -> str | None:
    """What is wrong with the response to one request, or None."""
    what = f"{sent.method} {short(sent.params)}"
    if message is None:
        return f"[no response] {what}"
    if ("result" in message) == ("error" in message):
        return f"[malformed response] {what}: {short(message)}"
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            return f"[error without a code] {what}: {short(error)}"
        if has_traceback(error):
            return f"[traceback] {what}: {short(error, 300)}"
        if not isinstance(error.get("message"), str) or not error["message"]:
            return f"[error without a message] {what}: {short(error)}"
        code = error["code"]
        wanted = {
            "invalid": INVALID_PARAMS,
            "not-found": METHOD_NOT_FOUND,
            "either": INVALID_PARAMS,
        }
        if code == REQUEST_CANCELLED or sent.expect in ("any", "error"):
            return None
        if code == wanted.get(sent.expect):
            return None
        due = "a result" if sent.expect == "result" else f"error {wanted[sent.expect]}"
        return f"[error {code}, {due} due] {what}: {short(error.get('message'), 120)}"
    if sent.expect in ("invalid", "not-found", "error"):
        due = {"invalid": "InvalidParams", "not-found": "MethodNotFound", "error": "an error"}[
            sent.expect
        ]
        return f"[a result, {due} due] {what}: {short(message['result'])}"
    types_of = lsp.METHOD_TO_TYPES.get(sent.method)
    if types_of is not None:
        try:
            CONVERTER.structure(
                {"jsonrpc": "2.0", "id": 1, "result": message["result"]}, types_of[1]
            )
        except Exception as exc:
            name = types_of[1].__name__
            return f"[not a {name}] {what}: {short(message['result'])} ({exc})"
    return None


def assert_contract(problems: list[str], sent: int) -> None:
    """Fail with a count of each kind of violation, then the first few of them."""
    kinds = collections.Counter(p[1 : p.index("]")] if p.startswith("[") else p for p in problems)
    summary = ", ".join(f"{kind}: {count}" for kind, count in kinds.most_common())
    listed = "\n".join(problems[:25]) + ("\n..." if len(problems) > 25 else "")
    assert not problems, f"{len(problems)} violations in {sent} messages ({summary}):\n{listed}"


@pytest.mark.parametrize("method", SERVED + NOT_SERVED)
def test_standard_requests_generated_from_lsp_shapes_are_answered(daemon, lsp_docs, method):
    open_documents(daemon, lsp_docs)
    uris = [lsp_docs.notes, lsp_docs.prompts, *lsp_docs.odd_uris()]
    batch = Batch(daemon, uris)
    for params in drawn(from_schema(lsp_schema(method, uris)), 30):
        batch.request(method, params)
    assert_contract(batch.check(), len(batch.sent))


@pytest.mark.parametrize("method", SERVED + NOT_SERVED)
def test_mutated_standard_requests_get_exactly_one_answer(daemon, lsp_docs, method):
    open_documents(daemon, lsp_docs)
    uris = [lsp_docs.notes, lsp_docs.prompts, *lsp_docs.odd_uris()]
    batch = Batch(daemon, uris)
    for params in lsp_mutations(lsp_valid(method, lsp_docs), lsp_docs.odd_uris()):
        batch.request(method, params)
    assert_contract(batch.check(), len(batch.sent))
    if method in SERVED:  # the documents' features still work after the barrage
        card = daemon.request(method, lsp_valid(method, lsp_docs))
        assert card, f"{method} on the open document answered {card!r}"


def test_standard_notifications_get_no_response(daemon, lsp_docs):
    batch = Batch(daemon, [])
    for method in NOTIFICATIONS:
        base = lsp_notification(method, lsp_docs)
        for params in [base, *lsp_mutations(base, lsp_docs.odd_uris())]:
            batch.notify(method, params)
        batch.notify(method, ABSENT)
    assert_contract(batch.check(), len(batch.sent))
    open_documents(daemon, lsp_docs)
    hover = daemon.request("textDocument/hover", lsp_valid("textDocument/hover", lsp_docs))
    assert "L0H0" in hover["contents"]["value"]


def initialize_params(docs: LspDocs) -> st.SearchStrategy[Any]:
    """initialize params: LSP's shape, with lmscope's options (never a model to load)."""
    options = params_schema_of("initializationOptions")
    options["properties"] = {k: v for k, v in options["properties"].items() if k != "model"}
    shape = {
        "type": "object",
        "required": ["processId", "rootUri", "capabilities"],
        "properties": {
            "processId": {"type": ["integer", "null"]},
            "rootUri": {"anyOf": [{"const": docs.folder.as_uri()}, {"type": ["string", "null"]}]},
            "capabilities": {"type": "object", "additionalProperties": False,
                             "properties": {"window": {"type": "object"}}},
            "initializationOptions": {"anyOf": [options, {}]},
        },
    }  # fmt: skip
    return from_schema(shape)


def params_schema_of(name: str) -> dict[str, Any]:
    schema = protocol.SCHEMAS[f"{name}.schema.json"]
    return inline_refs(schema, schema)


def no_model(params: Any) -> Any:
    """A second initialize must not load a model (the `initialized` handler would)."""
    options = params.get("initializationOptions") if isinstance(params, dict) else None
    if isinstance(options, dict) and "model" in options:
        params = {**params, "initializationOptions": {**options, "model": "/nonexistent/model"}}
    return params


def test_a_second_initialize_gets_exactly_one_answer(daemon, lsp_docs):
    base = lsp_initialize(lsp_docs)
    batch = Batch(daemon, [])
    cases = [
        base,
        *drawn(initialize_params(lsp_docs), 30),
        *lsp_mutations(base, lsp_docs.odd_uris()),
    ]
    for params in cases:
        batch.request("initialize", no_model(params), expect="any")
    assert_contract(batch.check(), len(batch.sent))
    open_documents(daemon, lsp_docs)  # a second initialize may have reset the workspace
    hover = daemon.request("textDocument/hover", lsp_valid("textDocument/hover", lsp_docs))
    assert "L0H0" in hover["contents"]["value"]


SHUTDOWN_PARAMS: list[Any] = [{"x": 1}, [], 42, "params", NESTED_GARBAGE, None, ABSENT]


def test_initialize_shutdown_and_exit_each_answer_once(tmp_path, lsp_docs):
    """A fresh daemon: malformed initializes refused, a plain one without lmscope's options
    (what a generic LSP client sends) accepted; shutdown with odd params answered once (LSP's
    shutdown takes none: an error, or a shutdown); after shutdown every request is refused
    with an error (LSP says InvalidRequest) and notifications get nothing; exit then ends the
    process with status 0."""
    client = spawn(tmp_path)
    problems: list[str] = []
    sent = 0

    def run(batch: Batch, serving: bool = False) -> None:
        nonlocal sent
        problems.extend(batch.check(serving=serving))
        sent += len(batch.sent)

    try:
        first = Batch(client, [])
        for params in [
            ABSENT, None, [], "params", 42, {}, {"processId": None},
            {"processId": "x", "rootUri": None, "capabilities": {}},
        ]:  # fmt: skip
            assert not readable("initialize", params)
            first.request("initialize", params, "invalid")
        run(first)

        plain = Batch(client, [])
        plain.request(
            "initialize", {"processId": None, "rootUri": None, "capabilities": {}}, "result"
        )
        run(plain)
        client.notify("initialized", {})
        run(Batch(client, []), serving=True)

        shut = False
        for params in SHUTDOWN_PARAMS:
            expect = "error" if shut else "result" if params is ABSENT else "any"
            once = Batch(client, [])
            request = once.request("shutdown", params, expect)
            run(once)
            answer = once.got.get(request.msg_id, {})
            if "result" in answer and answer["result"] is not None:
                problems.append(f"[not null] shutdown answered {short(answer['result'])}")
            shut = shut or "result" in answer  # the first shutdown answered with a result

        after = Batch(client, [])
        for method, params in [
            ("lmscope/status", {}),
            ("textDocument/hover", lsp_valid("textDocument/hover", lsp_docs)),
            ("foo/bar", {}),
            ("initialize", lsp_initialize(lsp_docs)),
            ("shutdown", ABSENT),
        ]:
            after.request(method, params, "error")
        after.notify("textDocument/didOpen", lsp_notification("textDocument/didOpen", lsp_docs))
        run(after)

        client.send({"jsonrpc": "2.0", "method": "exit"})
        try:
            code = client.process.wait(timeout=30)
            if code != 0:
                problems.append(f"[exit status {code}] exit after shutdown")
        except subprocess.TimeoutExpired:
            problems.append("[no exit] the daemon still runs 30 s after exit")
    finally:
        if client.process.poll() is None:
            client.process.kill()
        client.close()
    assert_contract(problems, sent)
