"""The wire protocol's contract in protocol/: the method table, the schemas, the examples, the
README and the generated TypeScript agree, and `lmscope.protocol` reports violations by path."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing.exceptions

from lmscope import protocol
from lmscope.protocol import (
    METHODS,
    PROTOCOL_DIR,
    PROTOCOL_VERSION,
    SCHEMAS,
    ParamsError,
    ProtocolError,
    ProtocolVersionError,
)

REPO_ROOT = PROTOCOL_DIR.parent
EXAMPLES_DIR = PROTOCOL_DIR / "examples"
TYPES_TS = REPO_ROOT / "extension" / "shared" / "protocol" / "types.ts"
SCHEMA_BASE = "https://lmscope.dev/protocol/schemas/"
TABLE = json.loads((PROTOCOL_DIR / "methods.json").read_text(encoding="utf-8"))

EXAMPLE_NAME = re.compile(
    r"(?P<subject>[A-Za-z]+)(?:\.(?P<part>params|result))?\.(?P<validity>valid|invalid)\.\d+\.json"
)


def examples() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.json"))


def parse_example(path: Path) -> tuple[str, str | None, bool]:
    """(subject, part, valid) from e.g. route.params.invalid.2.json; subject is a method name
    without the prefix, or "initializationOptions" (which has no part)."""
    match = EXAMPLE_NAME.fullmatch(path.name)
    assert match, f"{path.name}: name examples <method>.<params|result>.<valid|invalid>.<n>.json"
    return match["subject"], match["part"], match["validity"] == "valid"


def validate_example(path: Path, instance: object) -> None:
    """Validate an example with the function its name calls for."""
    subject, part, _ = parse_example(path)
    if subject == "initializationOptions":
        assert part is None
        protocol.validate_initialization_options(instance)
        return
    method = protocol.METHOD_PREFIX + subject
    if part == "result":
        protocol.validate_result(method, instance)
    elif METHODS[method].kind == "notification":
        protocol.validate_notification(method, instance)
    else:
        protocol.validate_params(method, instance)


def top_level_properties(schema_file: str) -> list[str]:
    """A schema's top-level property names, following a top-level `$ref` (ComponentResult)."""
    schema = SCHEMAS[schema_file]
    if "$ref" in schema:
        resolved = protocol.REGISTRY.resolver(schema["$id"]).lookup(schema["$ref"]).contents
        return list(resolved.get("properties", {}))
    return list(schema.get("properties", {}))


# --- examples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [p for p in examples() if parse_example(p)[2]], ids=lambda p: p.name
)
def test_valid_example_passes_its_schema(path: Path) -> None:
    validate_example(path, json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "path", [p for p in examples() if not parse_example(p)[2]], ids=lambda p: p.name
)
def test_invalid_example_fails_where_its_comment_says(path: Path) -> None:
    instance = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(instance, dict) and isinstance(instance.get("$comment"), str), (
        f'{path.name}: an invalid example carries "$comment": "<path>: <why it is invalid>"'
    )
    expected_path = instance.pop("$comment").split(": ", 1)[0]
    with pytest.raises(ProtocolError) as failure:
        validate_example(path, instance)
    assert failure.value.path == expected_path, str(failure.value)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_has_schemas_and_valid_and_invalid_examples(name: str) -> None:
    spec = METHODS[name]
    assert spec.kind in ("request", "notification")
    assert spec.direction == ("client->server" if spec.kind == "request" else "server->client")
    parts = {"params": spec.params_schema}
    if spec.kind == "request":
        assert spec.result_schema is not None, f"{name}: a request needs a result schema"
        parts["result"] = spec.result_schema
    else:
        assert spec.result_schema is None, f"{name}: a notification has no result"
    stem = name.removeprefix(protocol.METHOD_PREFIX)
    for part, schema_file in parts.items():
        assert schema_file == f"{stem}.{part}.schema.json"
        assert (protocol.SCHEMAS_DIR / schema_file).is_file()
        for validity in ("valid", "invalid"):
            found = list(EXAMPLES_DIR.glob(f"{stem}.{part}.{validity}.*.json"))
            assert found, f"no {validity} example for {name} {part}"


def test_initialization_options_have_valid_and_invalid_examples() -> None:
    for validity in ("valid", "invalid"):
        assert list(EXAMPLES_DIR.glob(f"initializationOptions.{validity}.*.json"))


def test_every_example_names_a_method_of_the_table() -> None:
    for path in examples():
        subject, part, _ = parse_example(path)
        if subject != "initializationOptions":
            spec = METHODS.get(protocol.METHOD_PREFIX + subject)
            assert spec is not None, f"{path.name}: no such method"
            assert part == "params" or spec.kind == "request", f"{path.name}: no result"


# --- schemas --------------------------------------------------------------------------------


def test_every_schema_file_is_named_by_the_table() -> None:
    named = {"common.schema.json", TABLE["initializationOptions"]}
    for spec in METHODS.values():
        named.add(spec.params_schema)
        if spec.result_schema is not None:
            named.add(spec.result_schema)
    assert set(SCHEMAS) == named


def walk(schema: Any, where: str) -> Any:
    """Every (location, subschema) pair that describes a shape, the schema included; if/then/
    else only add conditions to a shape declared elsewhere, so they are not walked."""
    yield where, schema
    for key in ("properties", "$defs"):
        for name, sub in schema.get(key, {}).items():
            yield from walk(sub, f"{where}/{key}/{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{where}/items")
    for key in ("oneOf", "anyOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from walk(sub, f"{where}/{key}/{i}")


@pytest.mark.parametrize("schema_file", sorted(SCHEMAS))
def test_schema_is_strict_documented_and_named(schema_file: str) -> None:
    schema = SCHEMAS[schema_file]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_BASE + schema_file
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", schema["title"])
    for name, definition in schema.get("$defs", {}).items():
        assert definition.get("title") == name, f"$defs/{name} needs title {name!r}"
    for where, sub in walk(schema, schema_file):
        if "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{where} is not closed"
            for name, prop in sub["properties"].items():
                assert prop.get("description"), f"{where}/properties/{name} has no description"
        if "$ref" in sub:
            assert not sub["$ref"].startswith("http"), f"{where}: use a relative $ref"
            protocol.REGISTRY.resolver(schema["$id"]).lookup(sub["$ref"])


def test_titles_are_unique_across_schemas() -> None:
    titles: list[str] = []
    for schema in SCHEMAS.values():
        for _, sub in walk(schema, ""):
            if "title" in sub:
                titles.append(sub["title"])
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)


def test_registry_resolves_nothing_outside_protocol() -> None:
    resolver = protocol.REGISTRY.resolver()
    with pytest.raises(referencing.exceptions.Unresolvable):
        resolver.lookup("https://example.com/elsewhere.schema.json")


def test_protocol_version_is_the_same_everywhere() -> None:
    assert TABLE["protocolVersion"] == PROTOCOL_VERSION == "1"
    status = SCHEMAS["status.result.schema.json"]["properties"]["protocolVersion"]
    capabilities = SCHEMAS["common.schema.json"]["$defs"]["LmscopeCapabilities"]
    assert status["const"] == capabilities["properties"]["protocolVersion"]["const"]
    assert status["const"] == PROTOCOL_VERSION
    protocol.validate_result(
        "lmscope/status",
        {
            "version": "0.1.0",
            "protocolVersion": PROTOCOL_VERSION,
            "state": "idle",
            "model": None,
            "queuedTraces": 0,
            "traceCache": {"count": 0, "bytes": 0, "maxCount": 1, "maxBytes": 1},
        },
    )
    assert protocol.capabilities("0.1.0") == {"protocolVersion": "1", "version": "0.1.0"}


# --- validation -----------------------------------------------------------------------------


def params_error(method: str, params: object) -> ParamsError:
    with pytest.raises(ParamsError) as failure:
        protocol.validate_params(method, params)
    return failure.value


def test_params_error_names_the_nested_field_and_the_reason() -> None:
    error = params_error(
        "lmscope/projection",
        {"handle": "t1", "node": {"kind": "ffn", "layer": -1, "position": 0}},
    )
    assert error.path == "node.layer"
    assert error.reason == "-1 is less than the minimum of 0"
    assert str(error) == "node.layer: -1 is less than the minimum of 0"


def test_params_error_indexes_list_items() -> None:
    with pytest.raises(ProtocolError) as failure:
        protocol.validate_result(
            "lmscope/ffnNeurons",
            {
                "total": 4,
                "offset": 0,
                "rest": 0.0,
                "neurons": [
                    {"neuron": 1, "contribution": 0.5, "activation": 1.0},
                    {"neuron": 2, "contribution": "0.2", "activation": 1.0},
                ],
            },
        )
    assert failure.value.path == "neurons[1].contribution"


def test_trace_with_both_prompt_and_document_says_to_give_exactly_one() -> None:
    document = {
        "uri": "file:///notes.md",
        "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 4}},
    }
    error = params_error("lmscope/trace", {"prompt": "Hello", "document": document})
    assert error.path == "(root)"
    assert error.reason == "prompt and document exclude each other: give exactly one"
    neither = params_error("lmscope/trace", {"prependBos": False})
    assert neither.reason == "one of prompt, document, messages is required"


def test_component_kind_selects_the_variant_that_explains_the_error() -> None:
    head = params_error("lmscope/component", {"component": {"kind": "head", "layer": 2}})
    assert (head.path, head.reason) == ("component", "'index' is a required property")
    block = params_error(
        "lmscope/component", {"component": {"kind": "ffn", "layer": 2, "index": 1}}
    )
    assert block.path == "component.index"
    unknown = params_error("lmscope/component", {"component": {"kind": "mlp", "layer": 2}})
    assert unknown.path == "component.kind"
    assert unknown.reason == (
        "'mlp' is not one of ['head', 'neuron', 'attention', 'ffn', 'expert', 'expert_neuron']"
    )
    neuron = {"kind": "expert_neuron", "layer": 2, "expert": 1, "shared": False}
    expert = params_error("lmscope/component", {"component": neuron})
    assert (expert.path, expert.reason) == ("component", "'index' is a required property")
    encoded = params_error("lmscope/component", {"component": "L2H1"})
    assert encoded.reason == "'L2H1' is not of type 'object'"


def test_route_context_fields_need_a_handle() -> None:
    error = params_error(
        "lmscope/component",
        {"component": {"kind": "head", "layer": 2, "index": 1}, "threshold": 0.1},
    )
    assert (error.path, error.reason) == ("(root)", "threshold needs handle")


def test_unknown_property_is_reported_at_the_property() -> None:
    error = params_error("lmscope/route", {"handle": "t1", "threshold": 0.1, "nodes": []})
    assert error.path == "nodes"
    assert error.reason == "unknown property (expected: handle, token, threshold, mode)"


def test_long_values_are_cut_in_the_reason() -> None:
    error = params_error("lmscope/trace", {"prompt": "x", "prependBos": "y" * 10_000})
    assert error.path == "prependBos"
    assert len(error.reason) < 200 and error.reason.endswith("is not of type 'boolean'")


def test_omitted_params_count_as_an_empty_object() -> None:
    protocol.validate_params("lmscope/status", None)
    assert params_error("lmscope/route", None).reason == "'handle' is a required property"


def test_unknown_methods_raise_key_error() -> None:
    with pytest.raises(KeyError):
        protocol.validate_params("lmscope/nothing", {})
    with pytest.raises(KeyError):
        protocol.validate_params("lmscope/modelChanged", {"state": "none", "model": None})
    with pytest.raises(KeyError):
        protocol.validate_result("lmscope/traceChanged", {})
    with pytest.raises(KeyError):
        protocol.validate_notification("lmscope/status", {})


def test_with_defaults_fills_only_what_is_missing() -> None:
    filled = protocol.with_defaults("lmscope/route", {"handle": "t1", "threshold": 0.1, "token": 3})
    assert filled == {"handle": "t1", "threshold": 0.1, "token": 3, "mode": "renormalize"}
    # Defaults behind a $ref are filled too.
    assert protocol.with_defaults("lmscope/component", {"component": {}})["threshold"] == 0.04
    assert protocol.with_defaults("lmscope/ffnNeurons", {"handle": "t1"})["limit"] == 50


# --- initialize -----------------------------------------------------------------------------


def test_newer_editor_is_told_to_update_the_python_package() -> None:
    # Checked before the schema: a newer editor may send options this daemon does not know.
    with pytest.raises(ProtocolVersionError) as failure:
        protocol.validate_initialization_options({"protocolVersion": "2", "newOption": True})
    assert str(failure.value) == (
        "the editor extension speaks lmscope protocol 2 but this daemon speaks 1: "
        "update the lmscope Python package"
    )


def test_older_editor_is_told_to_update_the_extension() -> None:
    with pytest.raises(ProtocolVersionError, match=r"update the lmscope editor extension$"):
        protocol.validate_initialization_options({"protocolVersion": "0"})


@pytest.mark.parametrize("options", [None, {}, {"model": "default"}, {"protocolVersion": "1"}])
def test_absent_options_or_version_mean_the_daemon_s_own(options) -> None:
    protocol.validate_initialization_options(options)  # an LSP client that sends none is served


def test_malformed_initialization_options_are_params_errors() -> None:
    with pytest.raises(ParamsError, match=r"^protocolVersion: "):
        protocol.validate_initialization_options({"protocolVersion": "v1"})
    with pytest.raises(ParamsError, match=r"^\(root\): "):
        protocol.validate_initialization_options(["not", "an", "object"])


# --- README ---------------------------------------------------------------------------------


def readme_sections(text: str | None = None) -> dict[str, str]:
    """The `### lmscope/<method>` sections of protocol/README.md (or of `text`), in order:
    method name -> the section's text up to the next heading of level 1 to 3. The tests below
    compare them with the table and the schemas so the README cannot drift."""
    text = protocol.README.read_text(encoding="utf-8") if text is None else text
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        heading = re.match(r"(#{1,3}) (.*)", line)
        if heading:
            title = heading.group(2).strip().strip("`")
            current = (
                title
                if heading.group(1) == "###" and title.startswith(protocol.METHOD_PREFIX)
                else None
            )
            if current is not None:
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_readme_has_one_section_per_method_in_table_order() -> None:
    assert list(readme_sections()) == list(METHODS)


@pytest.mark.parametrize("name", list(METHODS))
def test_readme_section_describes_the_method_and_names_every_field(name: str) -> None:
    spec = METHODS[name]
    section = readme_sections().get(name)
    assert section is not None, f"protocol/README.md has no ### {name} section"
    kind = "Request" if spec.kind == "request" else "Notification"
    flags = (
        f"progress: {'yes' if spec.progress else 'no'} · "
        f"cancellable: {'yes' if spec.cancellable else 'no'}"
    )
    assert kind in section and flags in section, f"{name}: say '{kind}' and '{flags}'"
    # "Params (`RouteParams`, ...):" and "Result (`RouteResult`, ...):" open the two lists.
    params, _, result = section.partition("\nResult (")
    assert "\nParams (" in params, f"{name}: list the params after 'Params (`...`)'"
    for part, schema_file in ((params, spec.params_schema), (result, spec.result_schema)):
        if schema_file is None:
            assert not result, f"{name}: a notification has no result"
            continue
        assert f"`{SCHEMAS[schema_file]['title']}`" in part
        for field in top_level_properties(schema_file):
            assert f"`{field}`" in part, f"{name}: README does not list `{field}`"


@pytest.mark.parametrize("name", [m for m, spec in METHODS.items() if spec.kind == "request"])
def test_readme_states_each_default_the_schemas_give(name: str) -> None:
    section = readme_sections()[name]
    params = section.partition("\nResult (")[0]
    for field, value in protocol.param_defaults(name).items():
        line = next(ln for ln in params.splitlines() if ln.startswith(f"- `{field}` — "))
        assert f"default `{json.dumps(value)}`" in line, f"{name}: {field} defaults to {value!r}"


def test_shared_defaults_come_from_common_definitions() -> None:
    from lmscope.protocol import defaults

    common = SCHEMAS["common.schema.json"]["$defs"]
    assert common["Threshold"]["default"] == defaults.THRESHOLD
    assert common["MinThreshold"]["default"] == defaults.MIN_THRESHOLD
    # A parameter that references a definition takes its default.
    assert protocol.param_defaults("lmscope/component")["threshold"] == defaults.THRESHOLD
    assert protocol.param_defaults("lmscope/trace")["minThreshold"] == defaults.MIN_THRESHOLD
    # The threshold a route is shown at is one the trace can answer.
    assert defaults.MIN_THRESHOLD <= defaults.THRESHOLD


def test_readme_lists_every_error_code() -> None:
    readme = protocol.README.read_text(encoding="utf-8")
    for error in TABLE["errors"]:
        assert f"| {error['code']} | {error['name']} |" in readme
    assert protocol.ERROR_CODES["InvalidParams"] == -32602


def test_readme_sections_stop_at_the_next_heading() -> None:
    text = "## Methods\n### `lmscope/a`\none\n#### detail\ntwo\n### Other\nthree\n"
    assert readme_sections(text) == {"lmscope/a": "one\n#### detail\ntwo\n"}


# --- TypeScript -----------------------------------------------------------------------------


def test_generated_typescript_is_fresh() -> None:
    if not (REPO_ROOT / "node_modules" / "json-schema-to-typescript").is_dir():
        pytest.skip("node_modules/json-schema-to-typescript is missing: run `npm ci` first")
    node = shutil.which("node")
    assert node is not None, "node is needed to check the generated TypeScript"
    result = subprocess.run(
        [node, "protocol/generate-ts.mjs", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr or result.stdout


def test_typescript_declares_every_schema_and_method() -> None:
    ts = TYPES_TS.read_text(encoding="utf-8")
    assert ts.startswith("// generated from protocol/ by protocol/generate-ts.mjs — do not edit")
    declared = re.findall(r"^export (?:interface|type) (\w+)", ts, flags=re.MULTILINE)
    assert len(declared) == len(set(declared)), "a type is declared twice"
    titles = [schema["title"] for name, schema in SCHEMAS.items() if name != "common.schema.json"]
    titles += list(SCHEMAS["common.schema.json"]["$defs"])
    missing = [title for title in titles if title not in declared]
    assert not missing, f"types.ts lacks {missing}"
    assert f'export const PROTOCOL_VERSION = "{PROTOCOL_VERSION}";' in ts
    for name in METHODS:
        key = name.removeprefix(protocol.METHOD_PREFIX)
        assert f'  {key}: "{name}",' in ts


def test_protocol_module_does_not_import_pygls() -> None:
    code = "import sys, lmscope.protocol; sys.exit('pygls' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_model_family_enums_are_exactly_the_registered_adapter_families():
    """The family is written in two schemas (the wire and the trace file, which stands alone)
    and read by the TypeScript reader: all must name exactly the families lmscope traces."""
    from lmscope.models.adapter import supported_families

    registered = set(supported_families())
    common = json.loads((PROTOCOL_DIR / "schemas" / "common.schema.json").read_text("utf-8"))
    trace_file = json.loads((PROTOCOL_DIR / "lmtrace.schema.json").read_text("utf-8"))
    wire_enum = common["$defs"]["ModelFamily"]["enum"]
    file_enum = trace_file["$defs"]["model"]["properties"]["family"]["enum"]
    assert set(wire_enum) == registered
    assert file_enum == wire_enum
    reader = (REPO_ROOT / "extension" / "shared" / "traces" / "lmtrace.ts").read_text("utf-8")
    listed = re.search(r"const MODEL_FAMILIES: readonly ModelFamily\[\] = \[([^\]]*)\]", reader)
    assert listed is not None
    assert re.findall(r"'([a-z0-9_]+)'", listed.group(1)) == wire_enum
