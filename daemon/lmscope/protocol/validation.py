"""Validation at the edge: requests, results, notifications and `initialize` options against
the schemas of `protocol/`.

- `validate_params` at the server's edge: a violation raises `ParamsError`, whose message names
  the field path and the reason ("node.layer: -1 is less than the minimum of 0"), ready for a
  JSON-RPC InvalidParams error;
- `validate_result` and `validate_notification` for clients: the tests' client checks every
  answer and notification of a spawned daemon with them;
- `validate_initialization_options` for `initialize`, comparing the protocol versions first so a
  mismatch is refused with a message naming the side to update.

`$ref`s resolve offline through the registry of `protocol.files` (no schema is ever fetched).
"""

from __future__ import annotations

import functools
import heapq
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, relevance

from lmscope.protocol.files import (
    INITIALIZATION_OPTIONS_SCHEMA,
    PROTOCOL_VERSION,
    REGISTRY,
    SCHEMAS,
    method_spec,
)

# A schema error quotes the offending value, which may be a whole prompt: longer quotes are cut,
# since the message goes back to the client as one line.
_MAX_VALUE = 80


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


@functools.cache
def _validator(schema_file: str) -> jsonschema.Draft202012Validator:
    """The compiled validator of one schema file (checked against the metaschema once)."""
    schema = SCHEMAS[schema_file]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=REGISTRY)


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
    spec = method_spec(method, "request")
    _check(spec.params_schema, {} if params is None else params, ParamsError)


def validate_result(method: str, result: object) -> None:
    """Check a request's result against its schema (a client checking the daemon's answers).
    Raises `KeyError` for an unknown request, `ProtocolError` for a violation."""
    spec = method_spec(method, "request")
    assert spec.result_schema is not None  # every request has one (test_protocol checks)
    _check(spec.result_schema, result, ProtocolError)


def validate_notification(method: str, params: object) -> None:
    """Check a notification's params against its schema. Raises `KeyError` for an unknown
    notification, `ProtocolError` for a violation."""
    _check(method_spec(method, "notification").params_schema, params, ProtocolError)


def validate_initialization_options(options: object) -> None:
    """Check the editor's `initializationOptions` at `initialize`.

    The protocol version is compared before anything else: options from another version may
    hold fields this daemon does not know, and the user needs "update X", not a schema error.
    Raises `ProtocolVersionError` on a version mismatch, `ParamsError` for malformed options.
    `None` (a client that sends no options: Neovim, eglot, Helix) is `{}`, and an absent
    version is the daemon's own.
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
