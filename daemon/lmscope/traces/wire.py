"""`TraceData` <-> the wire dict of a `.lmtrace` file, field by field.

The format is defined once, in `protocol/lmtrace.schema.json`; this module maps the dataclasses
of `traces.data` onto it (snake_case field -> camelCase key, numpy array -> ndarray object),
checks a wire dict against the schema, and decodes its arrays without allocating anything before
the declared shape is checked against the bytes actually present. The cross-field checks are in
`traces.invariants`, the files in `traces.lmtrace`. TypeScript twin:
extension/shared/traces/wire.ts.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import fields
from typing import Any

import jsonschema
import numpy as np

from lmscope.errors import TraceFileError
from lmscope.protocol.files import TRACE_SCHEMA
from lmscope.traces import data as D

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
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(TRACE_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class _Bin:
    """Stands in for a msgpack bin outside an array's `data` (a type error) in the schema view."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"<binary, {self.n} bytes>"


def _schema_view(obj: Any, key: Any = None) -> Any:
    """A copy of `obj` that JSON Schema can check: array `data` bins become their byte length
    (as the schema documents); other bins become an opaque stand-in that matches no type.
    `extra` is passed through: the schema does not look inside it. Array `values` lists become
    empty: jsonschema takes ~6 us per number, so `array_from_wire` checks the schema's rules
    for them (numbers; int32 range for int32) with numpy instead."""
    if isinstance(obj, dict):
        return {k: v if k == "extra" else _schema_view(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [] if key == "values" else [_schema_view(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return len(obj) if key == "data" else _Bin(len(obj))
    return obj


def schema_check(obj: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(_validator().iter_errors(_schema_view(obj)))
    if error is None:
        return
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator in ("oneOf", "anyOf"):  # its message would quote the whole value
        if isinstance(error.instance, dict):  # the only object alternatives: ndarray forms
            message = "an ndarray needs exactly one of `data` and `values`"
        else:
            message = f"a value of type {type(error.instance).__name__} is not allowed here"
    else:  # messages quote the offending value; keep them one readable line
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    raise Invalid(f"{path.lstrip('.') or 'top level'}: {message}")


def array_from_wire(obj: dict[str, Any], path: str) -> np.ndarray:
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
    return arr.reshape(shape)


def decode(obj: dict[str, Any]) -> D.TraceData:
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        kwargs = {}
        for f in fields(cls):
            key = camel(f.name)
            value = obj[name][key]
            if is_array_field(f):
                value = None if value is None else array_from_wire(value, f"{name}.{key}")
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
    return D.TraceData(**sections, vocabulary=vocabulary, extra=dict(obj["extra"]))
