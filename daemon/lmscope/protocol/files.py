"""Where the protocol's files are, and the method table and schemas read from them.

`protocol/` at the repository root is the contract, written once: `methods.json` (every method,
its direction, params and result schemas, progress, cancellation, and the error codes), one JSON
Schema (draft 2020-12) per params, result and notification under `protocol/schemas/`, the trace
file's schema `lmtrace.schema.json`, and the display vocabulary `vocabulary.json` (the names,
colours and token display rules of every view; `protocol.vocabulary`). In a checkout (and an
editable install) lmscope reads them there; a built wheel carries a copy as package data
(`lmscope/protocol/spec/`, copied by `setup.py`'s build step), so an installed lmscope never
needs the repository.

Only `json` and `referencing` are imported here: the defaults (`protocol.defaults`) and the
trace-file reader use these files without the request validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import referencing
import referencing.jsonschema

_PACKAGED = Path(__file__).resolve().parent / "spec"
_CHECKOUT = Path(__file__).resolve().parents[3] / "protocol"


def _protocol_dir() -> Path:
    """The packaged copy when this lmscope was installed from a wheel, else the checkout's."""
    for candidate in (_PACKAGED, _CHECKOUT):
        if (candidate / "methods.json").is_file():
            return candidate
    raise RuntimeError(
        f"lmscope is installed without its protocol files: neither {_PACKAGED} nor "
        f"{_CHECKOUT} holds methods.json (reinstall lmscope)"
    )


PROTOCOL_DIR = _protocol_dir()
SCHEMAS_DIR = PROTOCOL_DIR / "schemas"
README = PROTOCOL_DIR / "README.md"
TRACE_SCHEMA = PROTOCOL_DIR / "lmtrace.schema.json"
VOCABULARY = PROTOCOL_DIR / "vocabulary.json"
VOCABULARY_SCHEMA = PROTOCOL_DIR / "vocabulary.schema.json"

PROTOCOL_VERSION = "1"
"""The protocol this daemon speaks; methods.json must say the same (checked at import)."""

METHOD_PREFIX = "lmscope/"


@dataclass(frozen=True)
class MethodSpec:
    """One row of protocol/methods.json. Schemas are file names in protocol/schemas/."""

    name: str
    direction: str  # "client->server" | "server->client"
    kind: str  # "request" | "notification"
    params_schema: str
    result_schema: str | None  # None for notifications
    progress: bool
    cancellable: bool
    summary: str


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_table() -> tuple[dict[str, MethodSpec], dict[str, int], str]:
    table = read_json(PROTOCOL_DIR / "methods.json")
    if table["protocolVersion"] != PROTOCOL_VERSION:
        raise RuntimeError(
            f"protocol/methods.json says protocol {table['protocolVersion']!r} but "
            f"lmscope.protocol.PROTOCOL_VERSION is {PROTOCOL_VERSION!r}: change both together"
        )
    methods = {
        row["name"]: MethodSpec(
            name=row["name"],
            direction=row["direction"],
            kind=row["kind"],
            params_schema=row["params"],
            result_schema=row["result"],
            progress=row["progress"],
            cancellable=row["cancellable"],
            summary=row["summary"],
        )
        for row in table["methods"]
    }
    errors = {row["name"]: row["code"] for row in table["errors"]}
    return methods, errors, table["initializationOptions"]


METHODS, ERROR_CODES, INITIALIZATION_OPTIONS_SCHEMA = _load_table()
"""METHODS: every method by name, in table order. ERROR_CODES: JSON-RPC code by error name
("InvalidParams" -> -32602, "UnknownHandle" -> -32005, ...)."""

SCHEMAS: dict[str, dict[str, Any]] = {
    path.name: read_json(path) for path in sorted(SCHEMAS_DIR.glob("*.schema.json"))
}
"""Every schema, by file name (e.g. "route.params.schema.json")."""

# Each schema is registered under its `$id` (https://lmscope.dev/protocol/schemas/<file>), so a
# relative `$ref` such as "common.schema.json#/$defs/NodeId" resolves against the referring
# schema's `$id` to another registered schema. The registry has no `retrieve` function: a `$ref`
# to anything not registered fails instead of reaching for the network.
REGISTRY: referencing.Registry[Any] = (
    referencing.Registry()
    .with_resources(
        (schema["$id"], referencing.jsonschema.DRAFT202012.create_resource(schema))
        for schema in SCHEMAS.values()
    )
    .crawl()
)


def method_spec(method: str, kind: str) -> MethodSpec:
    """The table row of a request or notification; KeyError for anything else."""
    spec = METHODS.get(method)
    if spec is None or spec.kind != kind:
        raise KeyError(f"no lmscope {kind} named {method!r}")
    return spec


def resolve(schema: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`schema` itself, or what its `$ref` (relative to the schema `base`) points at."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolver = REGISTRY.resolver(base_uri=base["$id"])
    return resolver.lookup(ref).contents


def capabilities(version: str) -> dict[str, str]:
    """What the server puts in InitializeResult.capabilities.experimental["lmscope"]."""
    return {"protocolVersion": PROTOCOL_VERSION, "version": version}
