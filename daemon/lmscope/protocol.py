"""The lmscope wire protocol, Python side: the method table and validation at the edge.

`protocol/` at the repository root is the contract, written once: `methods.json` (every method,
its direction, params and result schemas, progress, cancellation, and the error codes) and one
JSON Schema (draft 2020-12) per params, result and notification under `protocol/schemas/`. The
TypeScript types are generated from the same files (`protocol/generate-ts.mjs`).

This module loads the table and the schemas once, resolves their `$ref`s offline through a
`referencing.Registry` (no schema is ever fetched), and validates messages:

- `validate_params` at the server's edge: a violation raises `ParamsError`, whose message names
  the field path and the reason ("node.layer: -1 is less than the minimum of 0"), ready for a
  JSON-RPC InvalidParams error;
- `validate_result` and `validate_notification` for tests and the server's debug mode;
- `validate_initialization_options` for `initialize`, comparing the protocol versions first so a
  mismatch is refused with a message naming the side to update.

It imports neither pygls nor the engine, so tests and tools can use it alone.
"""

from __future__ import annotations

import functools
import heapq
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema
from jsonschema.exceptions import ValidationError, relevance

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
SCHEMAS_DIR = PROTOCOL_DIR / "schemas"
README = PROTOCOL_DIR / "README.md"

PROTOCOL_VERSION = "1"
"""The protocol this daemon speaks; methods.json must say the same (checked at import)."""

METHOD_PREFIX = "lmscope/"

# A schema error quotes the offending value, which may be a whole prompt: longer quotes are cut,
# since the message goes back to the client as one line.
_MAX_VALUE = 80


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


class ProtocolError(Exception):
    """A message that breaks its schema: `path` is where ("nodes[2].id.layer", or "(root)"),
    `reason` what is wrong; str() is "path: reason"."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ParamsError(ProtocolError):
    """Request params (or initialization options) that break their schema: the client's
    mistake, answered with JSON-RPC InvalidParams (-32602) and this message."""


class ProtocolVersionError(Exception):
    """The editor speaks another protocol version; the message says which side to update."""

    def __init__(self, client_version: str) -> None:
        newer = int(client_version) > int(PROTOCOL_VERSION)
        update = "the lmscope Python package" if newer else "the lmscope editor extension"
        super().__init__(
            f"the editor extension speaks lmscope protocol {client_version} but this daemon "
            f"speaks {PROTOCOL_VERSION}: update {update}"
        )
        self.client_version = client_version


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _load_table() -> tuple[dict[str, MethodSpec], dict[str, int], str]:
    table = _read_json(PROTOCOL_DIR / "methods.json")
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
    path.name: _read_json(path) for path in sorted(SCHEMAS_DIR.glob("*.schema.json"))
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


@functools.cache
def _validator(schema_file: str) -> jsonschema.Draft202012Validator:
    """The compiled validator of one schema file (checked against the metaschema once)."""
    schema = SCHEMAS[schema_file]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=REGISTRY)


def _spec(method: str, kind: str) -> MethodSpec:
    spec = METHODS.get(method)
    if spec is None or spec.kind != kind:
        raise KeyError(f"no lmscope {kind} named {method!r}")
    return spec


def _check(schema_file: str, instance: object, error_type: type[ProtocolError]) -> None:
    error = _best(_validator(schema_file).iter_errors(instance))
    if error is not None:
        where, reason = _explain(error)
        raise error_type(_path(where), reason)


def _best(errors: Iterable[ValidationError]) -> ValidationError | None:
    """The most relevant error, chosen as `jsonschema.exceptions.best_match` does (shallowest
    error first; inside a oneOf/anyOf, the deepest), except that the descent stops at a union
    of `kind` variants, which `_explain` resolves by the instance's `kind` instead of by depth
    (best_match would blame a head's missing `index` on its `kind` not being "attention")."""
    best = max(errors, key=relevance, default=None)
    while best is not None and best.context and not _is_kind_union(best):
        smallest = heapq.nsmallest(2, best.context, key=relevance)
        if len(smallest) == 2 and relevance(smallest[0]) == relevance(smallest[1]):
            break
        best = smallest[0]
    return best


def _explain(error: ValidationError) -> tuple[list[str | int], str]:
    """Where an error is (path parts) and a reason a client developer can act on.

    jsonschema's message is kept where it describes the mistake. Errors that describe the
    schema instead are rewritten: a union of `kind` variants (explained inside the variant the
    `kind` selects), a union the value's type fits no branch of, an "exactly one of" rule (a
    `oneOf` of bare `required` lists), a field that needs another (`dependentRequired`), and an
    unknown property (reported at the property, with the names that are allowed).
    """
    where: list[str | int] = list(error.absolute_path)
    instance, context = error.instance, error.context or []
    if context and all(e.validator == "type" and not e.relative_path for e in context):
        types = dict.fromkeys(repr(t) for e in context for t in _as_list(e.validator_value))
        return where, f"{_quote(instance)} is not of type {' or '.join(types)}"
    if error.validator == "pattern":
        # jsonschema quotes the pattern with repr, doubling every backslash.
        return where, f"{_quote(instance)} does not match {error.validator_value}"
    if not isinstance(instance, Mapping):
        return where, _short(error)
    if _is_kind_union(error):
        return _explain_kind_union(error, where, instance)
    if error.validator == "oneOf" and all(_is_bare_required(b) for b in error.validator_value):
        names = [branch["required"][0] for branch in error.validator_value]
        given = [name for name in names if name in instance]
        if len(given) > 1:
            return where, f"{' and '.join(given)} exclude each other: give exactly one"
        return where, f"one of {', '.join(names)} is required"
    if error.validator == "dependentRequired":
        for name, needs in error.validator_value.items():
            missing = [need for need in needs if need not in instance]
            if name in instance and missing:
                return where, f"{name} needs {' and '.join(missing)}"
    if error.validator == "additionalProperties" and isinstance(error.schema, Mapping):
        allowed = list(error.schema.get("properties", {}))
        unknown = sorted(str(key) for key in instance if key not in allowed)
        if unknown:
            expected = ", ".join(allowed) if allowed else "no properties"
            return [*where, unknown[0]], f"unknown property (expected: {expected})"
    return where, _short(error)


def _is_kind_union(error: ValidationError) -> bool:
    """A failed union of object variants told apart by `kind` (like ComponentRef)."""
    if error.validator not in ("oneOf", "anyOf") or not isinstance(error.instance, Mapping):
        return False
    return "kind" in error.instance or any(
        e.validator == "required" and "kind" in e.validator_value for e in error.context or ()
    )


def _explain_kind_union(
    error: ValidationError, where: list[str | int], instance: Mapping[str, Any]
) -> tuple[list[str | int], str]:
    """Explain a failed `kind` union by the one variant whose `kind` matches the instance."""
    if "kind" not in instance:
        return where, "'kind' is a required property"
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
    kind_errors = {
        branch: [e for e in errors if list(e.relative_path) == ["kind"]]
        for branch, errors in by_branch.items()
    }
    matching = [branch for branch, errors in by_branch.items() if not kind_errors[branch]]
    if len(matching) == 1:
        best = _best(by_branch[matching[0]])
        if best is not None:
            return _explain(best)
    kinds = [
        kind
        for errors in kind_errors.values()
        for e in errors
        if e.validator == "enum"
        for kind in e.validator_value
    ]
    if not matching and kinds:
        return [*where, "kind"], f"{_quote(instance['kind'])} is not one of {kinds}"
    return where, _short(error)


def _is_bare_required(branch: object) -> bool:
    return (
        isinstance(branch, Mapping) and set(branch) == {"required"} and len(branch["required"]) == 1
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _quote(value: object) -> str:
    """A value as jsonschema's messages quote it (repr), cut short when long (a whole prompt)."""
    shown = repr(value)
    return shown if len(shown) <= _MAX_VALUE else shown[: _MAX_VALUE - 1] + "…"


def _short(error: ValidationError) -> str:
    """jsonschema's message, with a long quoted value cut short so it stays one readable line."""
    return error.message.replace(repr(error.instance), _quote(error.instance), 1)


def _path(parts: Iterable[str | int]) -> str:
    """ "nodes[2].id.layer" from ["nodes", 2, "id", "layer"]; "(root)" when empty."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(root)"


def validate_params(method: str, params: object) -> None:
    """Check a request's params against its schema, before the engine sees them.

    `None` (params omitted, as JSON-RPC allows) is checked as `{}`. Raises `KeyError` for a
    method that is not a request in the table, `ParamsError` for the most relevant violation.
    """
    spec = _spec(method, "request")
    _check(spec.params_schema, {} if params is None else params, ParamsError)


def validate_result(method: str, result: object) -> None:
    """Check a request's result against its schema (tests, and the server's debug mode).
    Raises `KeyError` for an unknown request, `ProtocolError` for a violation."""
    spec = _spec(method, "request")
    assert spec.result_schema is not None  # every request has one (test_protocol checks)
    _check(spec.result_schema, result, ProtocolError)


def validate_notification(method: str, params: object) -> None:
    """Check a notification's params against its schema. Raises `KeyError` for an unknown
    notification, `ProtocolError` for a violation."""
    _check(_spec(method, "notification").params_schema, params, ProtocolError)


def validate_initialization_options(options: object) -> None:
    """Check the editor's `initializationOptions` at `initialize`.

    The protocol version is compared before anything else: options from another version may
    hold fields this daemon does not know, and the user needs "update X", not a schema error.
    Raises `ProtocolVersionError` on a version mismatch, `ParamsError` for malformed options
    (`None`, i.e. no options, is checked as `{}` and so lacks `protocolVersion`).
    """
    options = {} if options is None else options
    version = options.get("protocolVersion") if isinstance(options, Mapping) else None
    if (
        isinstance(version, str)
        and re.fullmatch(r"[0-9]+", version)
        and version != PROTOCOL_VERSION
    ):
        raise ProtocolVersionError(version)
    _check(INITIALIZATION_OPTIONS_SCHEMA, options, ParamsError)


def with_defaults(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Valid request params with the schema's top-level defaults filled in, so a default is
    written once (in the schema) rather than again in each handler."""
    schema = SCHEMAS[_spec(method, "request").params_schema]
    filled = dict(params or {})
    for name, prop in schema.get("properties", {}).items():
        if "default" in prop and name not in filled:
            filled[name] = prop["default"]
    return filled


def capabilities(version: str) -> dict[str, str]:
    """What the server puts in InitializeResult.capabilities.experimental["lmscope"]."""
    return {"protocolVersion": PROTOCOL_VERSION, "version": version}


def readme_sections(text: str | None = None) -> dict[str, str]:
    """The `### lmscope/<method>` sections of protocol/README.md (or of `text`), in order:
    method name -> the section's text up to the next heading of level 1 to 3. Tests compare
    them with the table and the schemas so the README cannot drift."""
    text = README.read_text(encoding="utf-8") if text is None else text
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        heading = re.match(r"(#{1,3}) (.*)", line)
        if heading:
            title = heading.group(2).strip().strip("`")
            current = (
                title if heading.group(1) == "###" and title.startswith(METHOD_PREFIX) else None
            )
            if current is not None:
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections
