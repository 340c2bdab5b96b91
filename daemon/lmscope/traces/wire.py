"""`TraceData` <-> the wire dict of a `.lmtrace` file, field by field.

The format is defined once, in `protocol/lmtrace.schema.json`; this module maps the dataclasses
of `traces.data` onto it (snake_case field -> camelCase key, numpy array -> ndarray object),
checks a wire dict against the schema, and decodes its arrays without allocating anything before
the declared shape is checked against the bytes actually present. The cross-field checks are in
`traces.invariants`, the files in `traces.lmtrace`. TypeScript twin:
extension/shared/traces/wire.ts.

Every limit is read from the schema (`limits()`): integer maxima and short strings are checked by
JSON Schema; the value ranges of float arrays (`shareArray`, `magnitudeArray`), the string lists
(`tokens.strings`, `vocabulary.strings`) and the nesting depth (`x-maxNesting`) are checked here,
because JSON Schema cannot see binary arrays and takes ~5 us per list item.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import jsonschema
import numpy as np

from lmscope import chats
from lmscope.errors import TraceFileError
from lmscope.protocol.files import TRACE_SCHEMA
from lmscope.traces import data as D
from lmscope.traces import experts, pieces

MAGIC = "lmscope-trace"

# Wire sections in file order, each a dataclass of traces.data (vocabulary/extra are special).
SECTIONS = {
    "model": D.ModelFacts,
    "settings": D.Settings,
    "environment": D.Environment,
    "tokens": D.Tokens,
    "predictions": D.Predictions,
    "blocks": D.BlockContributions,
    "edges": D.AttentionEdges,
    "neurons": D.NeuronTable,
    "projections": D.Projections,
}
_DTYPES = {"int32": np.dtype("<i4"), "float32": np.dtype("<f4")}
_INT32 = np.iinfo(np.int32)


class Invalid(Exception):
    """Internal: what is wrong, without saying where the document came from."""


class NewerFormat(Invalid):
    pass


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def is_array_field(f: Any) -> bool:
    # data.py uses `from __future__ import annotations`, so field types are strings.
    return str(f.type).startswith("np.ndarray")


# ---- TraceData -> wire -------------------------------------------------------------------------


def array_to_wire(value: Any, path: str, binary: bool) -> dict[str, Any]:
    arr = np.asarray(value)
    if arr.dtype.kind in "biu":
        if arr.size and (arr.min() < _INT32.min or arr.max() > _INT32.max):
            raise Invalid(f"{path} has values outside the int32 range")
        name = "int32"
    elif arr.dtype.kind == "f":
        name = "float32"
    else:
        raise Invalid(f"{path} has dtype {arr.dtype}, expected a numeric array")
    arr = np.ascontiguousarray(arr, dtype=_DTYPES[name])  # little-endian, row-major
    out: dict[str, Any] = {"dtype": name, "shape": list(arr.shape)}
    if binary:
        out["data"] = arr.tobytes()
    else:
        out["values"] = arr.ravel().tolist()  # float32 -> exact float64 -> shortest repr
    return out


def _scalar_to_wire(value: Any) -> Any:
    if isinstance(value, np.generic):  # msgpack and json cannot encode numpy scalars
        return value.item()
    if is_dataclass(value) and not isinstance(value, type):  # a record (model.adapter)
        return {camel(f.name): _scalar_to_wire(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return list(value)
    return value


def to_wire(data: D.TraceData, *, binary: bool) -> dict[str, Any]:
    """The wire dict of `data`: bytes arrays for msgpack (`binary`), else JSON-able lists.

    Not validated here; `write_trace` and `export_json` validate the result.
    """
    try:
        wire: dict[str, Any] = {"magic": MAGIC, "formatVersion": D.FORMAT_VERSION}
        for name in SECTIONS:
            section = getattr(data, name)
            out = wire[name] = {}
            for f in fields(section):
                key, value = camel(f.name), getattr(section, f.name)
                if value is None and f.default is None:
                    continue  # an optional field, absent (the schema does not require it)
                if is_array_field(f) and value is not None:
                    out[key] = array_to_wire(value, f"{name}.{key}", binary)
                else:
                    out[key] = _scalar_to_wire(value)
        vocab = sorted((int(i), text) for i, text in data.vocabulary.items())
        wire["vocabulary"] = {
            "ids": array_to_wire(
                np.array([i for i, _ in vocab], np.int64), "vocabulary.ids", binary
            ),
            "strings": [text for _, text in vocab],
        }
        wire["extra"] = dict(data.extra)
    except Invalid as e:
        raise TraceFileError(f"invalid trace data: {e}") from None
    return wire


# ---- wire -> TraceData, validated --------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(TRACE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


@dataclass(frozen=True)
class Limits:
    """What the schema says that this module checks itself (see the module docstring)."""

    ranges: dict[str, tuple[float, float]]  # float array path -> [low, high]
    string_lists: dict[str, tuple[int, int]]  # list path -> (most items, most characters each)
    # lists of enumerated values with no count rules: their distinct values decide validity
    enum_lists: frozenset[str]
    share_max: float  # the most a share may be, and the most one step's shares may sum to
    max_nesting: int  # maps and arrays nest at most this deep, the top-level map included


def _ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    return schema["$defs"][node["$ref"].split("/")[-1]] if "$ref" in node else node


def _float_range(schema: dict[str, Any], node: dict[str, Any]) -> tuple[float, float] | None:
    """[low, high] of a float array field (a `shareArray` or `magnitudeArray`), else None."""
    for option in node.get("oneOf", [node]):  # residualFfn: null or an array
        target = _ref(schema, option)
        if target is not option and target.get("$ref") == "#/$defs/float32Array":
            items = target["properties"]["values"]["items"]
            return float(items["minimum"]), float(items["maximum"])
    return None


@functools.lru_cache(maxsize=1)
def limits() -> Limits:
    schema = _schema()
    ranges, lists, enums = {}, {}, set()
    counting = {"minItems", "maxItems", "uniqueItems", "contains", "prefixItems"}
    for section in (*SECTIONS, "vocabulary"):
        for key, node in _ref(schema, schema["properties"][section])["properties"].items():
            bounds = _float_range(schema, node)
            if bounds is not None:
                ranges[f"{section}.{key}"] = bounds
            if node.get("type") == "array" and "maxItems" in node:
                each = _ref(schema, node["items"])
                lists[f"{section}.{key}"] = (int(node["maxItems"]), int(each["maxLength"]))
            elif (
                node.get("type") == "array"
                and not counting & node.keys()
                and "enum" in _ref(schema, node.get("items", {}))
            ):
                enums.add(f"{section}.{key}")
    share = schema["$defs"]["shareArray"]["properties"]["values"]["items"]["maximum"]
    return Limits(ranges, lists, frozenset(enums), float(share), int(schema["x-maxNesting"]))


def too_deep() -> str:
    return f"values are nested more than {limits().max_nesting} deep"


def nested_too_deeply(obj: Any) -> bool:
    """Whether maps and arrays nest deeper than the schema's `x-maxNesting` (the top level is
    1); checked without recursion, before anything else reads the document."""
    limit = limits().max_nesting
    stack = [(obj, 1)] if isinstance(obj, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    return False


class _Bin:
    """Stands in for a msgpack bin outside an array's `data` (a type error) in the schema view."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"<binary, {self.n} bytes>"


def _schema_view(obj: Any, key: Any = None) -> Any:
    """A copy of `obj` that JSON Schema can check: array `data` bins become their byte length
    (as the schema documents); other bins become an opaque stand-in that matches no type.
    `extra` is passed through: the schema does not look inside it. Array `values` lists and
    the string lists become empty: jsonschema takes ~5 us per item, so `array_from_wire` checks
    the schema's rules for numbers (numbers; int32 range for int32; the value range) with numpy,
    and `check_string_lists` those of the string lists."""
    if isinstance(obj, dict):
        return {k: v if k == "extra" else _schema_view(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [] if key in ("values", "strings") else [_schema_view(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return len(obj) if key == "data" else _Bin(len(obj))
    return obj


def _distinct_enum_values(view: dict[str, Any]) -> dict[str, Any]:
    """`view` with each enumerated list (`Limits.enum_lists`: no count rules) cut to its
    distinct values, in order: valid exactly when the whole list is, and jsonschema checks a
    projections table's ~1,000 kinds as a handful (each item costs ~20 us through its $ref)."""
    cut = dict(view)
    for path in limits().enum_lists:
        section, key = path.split(".")
        part = cut.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), list):
            items = part[key]
            if all(isinstance(item, str) for item in items):
                cut[section] = {**part, key: list(dict.fromkeys(items))}
    return cut


def schema_check(obj: dict[str, Any]) -> None:
    view = _schema_view(obj)
    if next(_validator().iter_errors(_distinct_enum_values(view)), None) is None:
        return
    # Invalid: the whole view again, so the error names the offending item's own index.
    error = jsonschema.exceptions.best_match(_validator().iter_errors(view))
    if error is None:  # cannot happen: the whole view is invalid whenever the cut one is
        return
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "maxLength":  # its message would quote the whole (long) text
        message = f"{len(error.instance)} characters, more than the {error.validator_value} allowed"
    elif error.validator in ("oneOf", "anyOf"):  # its message would quote the whole value
        if isinstance(error.instance, dict):  # the only object alternatives: ndarray forms
            message = "an ndarray needs exactly one of `data` and `values`"
        else:
            message = f"a value of type {type(error.instance).__name__} is not allowed here"
    else:  # messages quote the offending value; keep them one readable line
        message = _one_line(error.message)
    raise Invalid(f"{path.lstrip('.') or 'top level'}: {message}")


def _one_line(message: str) -> str:
    return message if len(message) <= 160 else message[:157] + "..."


def check_string_lists(obj: dict[str, Any]) -> None:
    """The schema's rules for `tokens.strings` and `vocabulary.strings` (see `_schema_view`):
    how many items, strings only, how long each. Among several bad items the one with the
    greatest index is named, as jsonschema's best match names one."""
    for path, (most, longest) in limits().string_lists.items():
        section, key = path.split(".")
        items = obj[section][key]
        if len(items) > most:
            raise Invalid(f"{path}: {len(items)} items, more than the {most} allowed")
        if not all(type(item) is str for item in items):
            i = max(i for i, item in enumerate(items) if type(item) is not str)
            shown = _schema_view(items[i])  # a bin as `<binary, N bytes>`, as jsonschema saw it
            raise Invalid(f"{path}[{i}]: " + _one_line(f"{shown!r} is not of type 'string'"))
        if items and max(map(len, items)) > longest:
            i = max(i for i, item in enumerate(items) if len(item) > longest)
            count = len(items[i])
            raise Invalid(f"{path}[{i}]: {count} characters, more than the {longest} allowed")


def array_from_wire(
    obj: dict[str, Any], path: str, bounds: tuple[float, float] | None = None
) -> np.ndarray:
    """Decode one schema-checked ndarray, checking its size before allocating anything."""
    dtype = _DTYPES[obj["dtype"]]
    shape = tuple(int(s) for s in obj["shape"])
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
    if "data" in obj:
        buf = obj["data"]
        if not isinstance(buf, (bytes, bytearray)):
            raise Invalid(f"{path}.data is not binary (JSON traces use `values`)")
        if len(buf) != count * dtype.itemsize:
            raise Invalid(
                f"{path} declares shape {list(shape)} ({count * dtype.itemsize} bytes) "
                f"but holds {len(buf)} bytes"
            )
        arr = np.frombuffer(buf, dtype=dtype).astype(dtype.newbyteorder("="))  # own, writable
    else:
        if len(obj["values"]) != count:
            raise Invalid(
                f"{path} declares shape {list(shape)} ({count} values) "
                f"but holds {len(obj['values'])} values"
            )
        # The schema's item rules, checked here (see _schema_view); bool is not a number.
        if not all(type(v) in (int, float) for v in obj["values"]):
            raise Invalid(f"{path}.values holds something other than numbers")
        with np.errstate(over="ignore"):  # 1e300 -> inf, reported just below
            wide = np.array(obj["values"], dtype=np.float64)  # exact for every int32
        if dtype.kind == "i" and not (
            (wide == np.trunc(wide)).all()
            and (wide >= _INT32.min).all()
            and (wide <= _INT32.max).all()
        ):
            raise Invalid(f"{path}.values holds numbers that are not int32 integers")
        with np.errstate(over="ignore"):
            arr = wide.astype(dtype.newbyteorder("="))
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise Invalid(f"{path} contains non-finite values (NaN or infinity)")
    if bounds is not None and arr.size:
        low, high = bounds  # compared as float64, as TypeScript compares (not rounded to float32)
        outside = (arr < np.float64(low)) | (arr > np.float64(high))
        if outside.any():
            bad = float(arr[outside][0])
            raise Invalid(f"{path} holds {bad!r}, outside [{low!r}, {high!r}]")
    return arr.reshape(shape)


# Optional records nested in a section, by field type: a schema-checked map of camelCase keys.
RECORDS: dict[str, type] = {"AdapterFacts | None": D.AdapterFacts}


def _record_from_wire(cls: type, value: dict[str, Any]) -> Any:
    kwargs = {}
    for f in fields(cls):
        item = value[camel(f.name)]
        if f.type in ("int", "float"):  # the schema accepts 3.0 as an integer
            item = int(item) if f.type == "int" else float(item)
        kwargs[f.name] = list(item) if isinstance(item, list) else item
    return cls(**kwargs)


def decode(obj: dict[str, Any]) -> D.TraceData:
    ranges = limits().ranges
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        kwargs = {}
        for f in fields(cls):
            key = camel(f.name)
            if key not in obj[name] and f.default is None:
                continue  # optional and absent (older files): the dataclass default, None
            value = obj[name][key]
            record = RECORDS.get(str(f.type))
            if record is not None and value is not None:
                value = _record_from_wire(record, value)
            elif is_array_field(f):
                where = f"{name}.{key}"
                value = None if value is None else array_from_wire(value, where, ranges.get(where))
            elif f.type in ("int", "float"):  # the schema accepts 3.0 as an integer
                value = int(value) if f.type == "int" else float(value)
            kwargs[f.name] = value
        sections[name] = cls(**kwargs)
    vocab_ids = array_from_wire(obj["vocabulary"]["ids"], "vocabulary.ids")
    strings = obj["vocabulary"]["strings"]
    if vocab_ids.ndim != 1 or len(strings) != len(vocab_ids):
        raise Invalid(f"vocabulary has {vocab_ids.size} ids but {len(strings)} strings")
    if (np.diff(vocab_ids) <= 0).any():
        raise Invalid("vocabulary.ids are not strictly increasing")
    vocabulary = dict(zip(vocab_ids.tolist(), strings, strict=True))
    problem = pieces.check(obj["extra"], len(sections["tokens"].strings), len(strings))
    if problem is not None:  # the one key of `extra` lmscope reads (traces.pieces)
        raise Invalid(problem)
    problem = chats.check_extra(obj["extra"], len(sections["tokens"].strings))
    if problem is not None:  # the chat and the generation a trace records (lmscope.chats)
        raise Invalid(problem)
    found = experts.read(obj["extra"], sections["model"].n_layers, len(sections["tokens"].strings))
    if isinstance(found, str):  # the experts of an MoE trace (lmscope.traces.experts)
        raise Invalid(found)
    if found is not None and found.layout.flat_width > sections["model"].d_ffn:
        raise Invalid("extra.lmscope.experts.layout: wider than model.dFfn")
    return D.TraceData(**sections, vocabulary=vocabulary, extra=dict(obj["extra"]))
