"""The `.lmtrace` file: `TraceData` <-> wire dict <-> msgpack file or JSON text.

The format is defined once, in `protocol/lmtrace.schema.json`; this module maps the dataclasses
of `traces.data` onto it (snake_case field -> camelCase key, numpy array -> ndarray object) and
checks what a schema cannot: byte lengths, shapes against the model's sizes, index ranges,
ordering and vocabulary coverage. Every function that reads or writes validates, so an invalid
`TraceData` never reaches disk and a damaged file never reaches the query code.

Reading is hostile-input safe: the file size is capped, msgpack containers are bounded by it, and
no array is allocated before its declared shape is checked against the bytes actually present.
Any problem is one `TraceFileError` line naming the file, the field path and what is wrong.

Writing has three named steps, `_open_temp`, `_write_all` and `_before_rename`: the fault
injection seams of `tests/reliability/faults.py`, which replaces them in a spawned daemon to
simulate a full disk, a read-only folder or a kill between the temp file and the rename. They
do nothing else, and nothing in lmscope replaces them.

It is longer than our ~400-line guide because most of it is the cross-field checks, which are
the format's other half and read best next to the schema mapping they guard.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import secrets
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import numpy as np

from lmscope.errors import TraceFileError
from lmscope.protocol.files import TRACE_SCHEMA
from lmscope.traces import data as D

MAGIC = "lmscope-trace"
MAX_TRACE_BYTES = 2 * 1024**3  # readers refuse larger files; writers refuse to produce them
MAX_LIST_ITEMS = 2**24  # msgpack arrays/maps: far above any real trace, bounds hostile input
SCHEMA_PATH = TRACE_SCHEMA

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


class _Invalid(Exception):
    """Internal: what is wrong, without saying where the document came from."""


class _NewerFormat(_Invalid):
    pass


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _is_array_field(f: Any) -> bool:
    # data.py uses `from __future__ import annotations`, so field types are strings.
    return str(f.type).startswith("np.ndarray")


# ---- TraceData -> wire -------------------------------------------------------------------------


def _array_to_wire(value: Any, path: str, binary: bool) -> dict[str, Any]:
    arr = np.asarray(value)
    if arr.dtype.kind in "biu":
        if arr.size and (arr.min() < _INT32.min or arr.max() > _INT32.max):
            raise _Invalid(f"{path} has values outside the int32 range")
        name = "int32"
    elif arr.dtype.kind == "f":
        name = "float32"
    else:
        raise _Invalid(f"{path} has dtype {arr.dtype}, expected a numeric array")
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
                key, value = _camel(f.name), getattr(section, f.name)
                if _is_array_field(f) and value is not None:
                    out[key] = _array_to_wire(value, f"{name}.{key}", binary)
                else:
                    out[key] = _scalar_to_wire(value)
        vocab = sorted((int(i), text) for i, text in data.vocabulary.items())
        wire["vocabulary"] = {
            "ids": _array_to_wire(
                np.array([i for i, _ in vocab], np.int64), "vocabulary.ids", binary
            ),
            "strings": [text for _, text in vocab],
        }
        wire["extra"] = dict(data.extra)
    except _Invalid as e:
        raise TraceFileError(f"invalid trace data: {e}") from None
    return wire


# ---- wire -> TraceData, validated --------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    if not SCHEMA_PATH.is_file():
        raise RuntimeError(
            f"lmscope is installed without its protocol files: {SCHEMA_PATH} is missing"
        )
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
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
    empty: jsonschema takes ~6 us per number, so `_array_from_wire` checks the schema's rules
    for them (numbers; int32 range for int32) with numpy instead."""
    if isinstance(obj, dict):
        return {k: v if k == "extra" else _schema_view(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [] if key == "values" else [_schema_view(v) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        return len(obj) if key == "data" else _Bin(len(obj))
    return obj


def _schema_check(obj: dict[str, Any]) -> None:
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
    raise _Invalid(f"{path.lstrip('.') or 'top level'}: {message}")


def _array_from_wire(obj: dict[str, Any], path: str) -> np.ndarray:
    """Decode one schema-checked ndarray, checking its size before allocating anything."""
    dtype = _DTYPES[obj["dtype"]]
    shape = tuple(int(s) for s in obj["shape"])
    count = math.prod(shape)  # Python ints: a hostile shape cannot overflow
    if "data" in obj:
        buf = obj["data"]
        if not isinstance(buf, (bytes, bytearray)):
            raise _Invalid(f"{path}.data is not binary (JSON traces use `values`)")
        if len(buf) != count * dtype.itemsize:
            raise _Invalid(
                f"{path} declares shape {list(shape)} ({count * dtype.itemsize} bytes) "
                f"but holds {len(buf)} bytes"
            )
        arr = np.frombuffer(buf, dtype=dtype).astype(dtype.newbyteorder("="))  # own, writable
    else:
        if len(obj["values"]) != count:
            raise _Invalid(
                f"{path} declares shape {list(shape)} ({count} values) "
                f"but holds {len(obj['values'])} values"
            )
        # The schema's item rules, checked here (see _schema_view); bool is not a number.
        if not all(type(v) in (int, float) for v in obj["values"]):
            raise _Invalid(f"{path}.values holds something other than numbers")
        with np.errstate(over="ignore"):  # 1e300 -> inf, reported just below
            wide = np.array(obj["values"], dtype=np.float64)  # exact for every int32
        if dtype.kind == "i" and not (
            (wide == np.trunc(wide)).all()
            and (wide >= _INT32.min).all()
            and (wide <= _INT32.max).all()
        ):
            raise _Invalid(f"{path}.values holds numbers that are not int32 integers")
        with np.errstate(over="ignore"):
            arr = wide.astype(dtype.newbyteorder("="))
    if dtype.kind == "f" and not np.isfinite(arr).all():
        raise _Invalid(f"{path} contains non-finite values (NaN or infinity)")
    return arr.reshape(shape)


def _decode(obj: dict[str, Any]) -> D.TraceData:
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        kwargs = {}
        for f in fields(cls):
            key = _camel(f.name)
            value = obj[name][key]
            if _is_array_field(f):
                value = None if value is None else _array_from_wire(value, f"{name}.{key}")
            elif f.type in ("int", "float"):  # the schema accepts 3.0 as an integer
                value = int(value) if f.type == "int" else float(value)
            kwargs[f.name] = value
        sections[name] = cls(**kwargs)
    vocab_ids = _array_from_wire(obj["vocabulary"]["ids"], "vocabulary.ids")
    strings = obj["vocabulary"]["strings"]
    if vocab_ids.ndim != 1 or len(strings) != len(vocab_ids):
        raise _Invalid(f"vocabulary has {vocab_ids.size} ids but {len(strings)} strings")
    if (np.diff(vocab_ids) <= 0).any():
        raise _Invalid("vocabulary.ids are not strictly increasing")
    vocabulary = dict(zip(vocab_ids.tolist(), strings, strict=True))
    return D.TraceData(**sections, vocabulary=vocabulary, extra=dict(obj["extra"]))


def _length(path: str, arr: np.ndarray) -> int:
    """Length of a 1-D array that sets a count (n, E, F, P)."""
    if arr.ndim != 1:
        raise _Invalid(f"{path} has shape {list(arr.shape)}, expected one dimension")
    return int(arr.shape[0])


def _shape(path: str, arr: np.ndarray, expected: tuple[int, ...], names: str) -> None:
    if arr.shape != expected:
        raise _Invalid(f"{path} has shape {list(arr.shape)}, expected {list(expected)} {names}")


def _within(path: str, arr: np.ndarray, low: int, high: int, what: str) -> None:
    """Every value in [low, high)."""
    if arr.size and (arr.min() < low or arr.max() >= high):
        bad = arr[(arr < low) | (arr >= high)].flat[0]
        raise _Invalid(f"{path} holds {bad}, outside [{low}, {high}) ({what})")


def _check_invariants(t: D.TraceData) -> None:
    """What the schema cannot say: sizes agree with the model, indices are in range."""
    m, s = t.model, t.settings
    L, H, V = m.n_layers, m.n_heads, m.vocab_size
    if m.n_heads % m.n_kv_heads:
        raise _Invalid(f"model.nHeads {m.n_heads} is not a multiple of nKvHeads {m.n_kv_heads}")
    n = _length("tokens.ids", t.tokens.ids)
    if n == 0:
        raise _Invalid("tokens.ids is empty")
    if len(t.tokens.strings) != n:
        raise _Invalid(f"tokens.strings has {len(t.tokens.strings)} items, expected {n} [n]")
    _within("tokens.ids", t.tokens.ids, 0, V, "model.vocabSize")

    k_pred = min(s.prediction_top_k, V)
    _shape("predictions.ids", t.predictions.ids, (n, k_pred), "[n, kPred]")
    _shape("predictions.probs", t.predictions.probs, (n, k_pred), "[n, kPred]")
    _within("predictions.ids", t.predictions.ids, 0, V, "model.vocabSize")

    b = t.blocks
    _shape("blocks.residualAttention", b.residual_attention, (L, n), "[L, n]")
    _shape("blocks.ffn", b.ffn, (L, n), "[L, n]")
    if m.parallel_blocks != (b.residual_ffn is None):
        raise _Invalid("blocks.residualFfn must be null exactly when model.parallelBlocks")
    if b.residual_ffn is not None:
        _shape("blocks.residualFfn", b.residual_ffn, (L, n), "[L, n]")

    e = t.edges
    E = _length("edges.layer", e.layer)
    for key, arr in (("target", e.target), ("source", e.source)):
        _shape(f"edges.{key}", arr, (E,), "[E]")
        _within(f"edges.{key}", arr, 0, n, "token positions")
    _shape("edges.headContributions", e.head_contributions, (E, H), "[E, H]")
    _shape("edges.headAttention", e.head_attention, (E, H), "[E, H]")
    _within("edges.layer", e.layer, 0, L, "model.nLayers")
    if (e.source > e.target).any():
        raise _Invalid(f"edges row {int(np.argmax(e.source > e.target))}: source > target")
    order = (e.layer.astype(np.int64) * n + e.target) * n + e.source  # lexicographic key
    if (np.diff(order) <= 0).any():
        row = int(np.argmax(np.diff(order) <= 0)) + 1
        raise _Invalid(f"edges row {row} is out of (layer, target, source) order or repeated")

    u = t.neurons
    F = _length("neurons.layer", u.layer)
    K = min(s.top_neurons, m.d_ffn)
    for key, arr, shape, names in (
        ("position", u.position, (F,), "[F]"),
        ("index", u.index, (F, K), "[F, K]"),
        ("contribution", u.contribution, (F, K), "[F, K]"),
        ("activation", u.activation, (F, K), "[F, K]"),
        ("restContribution", u.rest_contribution, (F,), "[F]"),
    ):
        _shape(f"neurons.{key}", arr, shape, names)
    _within("neurons.layer", u.layer, 0, L, "model.nLayers")
    _within("neurons.position", u.position, 0, n, "token positions")
    _within("neurons.index", u.index, 0, m.d_ffn, "model.dFfn")
    if np.unique(u.layer.astype(np.int64) * n + u.position).size != F:
        raise _Invalid("neurons has two rows for the same (layer, position)")

    _check_projections(t, L, n, V)

    vocab = np.array(sorted(t.vocabulary), dtype=np.int64)
    _within("vocabulary.ids", vocab, 0, V, "model.vocabSize")
    for path, ids in (
        ("tokens.ids", t.tokens.ids),
        ("predictions.ids", t.predictions.ids),
        ("projections.topIds", t.projections.top_ids),
        ("projections.bottomIds", t.projections.bottom_ids),
    ):
        missing = np.setdiff1d(ids, vocab)
        if missing.size:
            raise _Invalid(f"vocabulary lacks token id {int(missing[0])} used in {path}")


# Which node each projection kind may describe (method.md, "Vocabulary projections").
_PROJECTION_NODES = {
    D.PROJ_LENS: {D.EMBEDDING, D.POST_ATTENTION, D.RESIDUAL},
    D.PROJ_ATTENTION_UPDATE: {D.POST_ATTENTION, D.RESIDUAL},  # residual: parallel blocks
    D.PROJ_FFN_UPDATE: {D.FFN},
}


def _check_projections(t: D.TraceData, L: int, n: int, V: int) -> None:
    p = t.projections
    P = _length("projections.layer", p.layer)
    k = min(t.settings.projection_top_k, V)
    _shape("projections.position", p.position, (P,), "[P]")
    for key in ("kind", "node_kind"):
        if len(getattr(p, key)) != P:
            raise _Invalid(f"projections.{_camel(key)} has {len(getattr(p, key))} items, not {P}")
    for key in ("top_ids", "top_logits", "bottom_ids", "bottom_logits", "top_prev_rank"):
        _shape(f"projections.{_camel(key)}", getattr(p, key), (P, k), "[P, k]")
    _within("projections.layer", p.layer, 0, L, "model.nLayers")
    _within("projections.position", p.position, 0, n, "token positions")
    _within("projections.topIds", p.top_ids, 0, V, "model.vocabSize")
    _within("projections.bottomIds", p.bottom_ids, 0, V, "model.vocabSize")
    _within("projections.topPrevRank", p.top_prev_rank, -1, V, "-1 or a rank")
    for row, (kind, node) in enumerate(zip(p.kind, p.node_kind, strict=True)):
        if node not in _PROJECTION_NODES[kind]:
            raise _Invalid(f"projections row {row}: a {kind} projection of a {node} node")
        if node == D.POST_ATTENTION and t.model.parallel_blocks:
            raise _Invalid(f"projections row {row}: post_attention node with parallel blocks")
        if node == D.EMBEDDING and p.layer[row] != 0:
            raise _Invalid(f"projections row {row}: embedding node at layer {p.layer[row]}")
        if (kind != D.PROJ_LENS or node == D.EMBEDDING) and (p.top_prev_rank[row] != -1).any():
            raise _Invalid(f"projections row {row}: topPrevRank must be -1 (no previous lens)")


def _load(obj: Any) -> D.TraceData:
    """Schema, then sizes while decoding, then invariants. Raises `_Invalid`."""
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise _Invalid("not an lmscope trace (no 'lmscope-trace' magic)")
    version = obj.get("formatVersion")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        found = "missing" if version is None else f"{version!r}"
        raise _Invalid(f"formatVersion is {found}, expected a positive integer")
    if version > D.FORMAT_VERSION:  # checked before the schema: newer files may add fields
        raise _NewerFormat(
            f"was written by a newer lmscope (format {version}); this lmscope reads format "
            f"{D.FORMAT_VERSION} — upgrade lmscope"
        )
    try:
        _schema_check(obj)
        trace = _decode(obj)
    except RecursionError:  # hostile nesting (msgpack allows ~1000 levels)
        raise _Invalid("values are nested too deeply") from None
    _check_invariants(trace)
    return trace


def _error(where: str, err: _Invalid, adjective: str = "corrupt") -> TraceFileError:
    if isinstance(err, _NewerFormat):
        return TraceFileError(f"{where} {err}")
    return TraceFileError(f"{adjective} {where}: {err}")


def from_wire(obj: dict[str, Any]) -> D.TraceData:
    """Decode a wire dict (either array form) into `TraceData`, validating everything."""
    try:
        return _load(obj)
    except _Invalid as e:
        raise _error("trace data", e, "invalid") from None


def validate_wire(obj: dict[str, Any]) -> None:
    """Raise `TraceFileError` unless `obj` is a valid trace: schema plus cross-field checks."""
    from_wire(obj)


# ---- files and JSON ----------------------------------------------------------------------------


def _encodable(path: Path) -> bool:
    """A path the OS can be asked about: no NUL, no unpaired surrogate."""
    text = str(path)
    if "\0" in text:
        return False
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return True


def _open_temp(tmp: Path) -> int:
    """Create the temp file (never an existing one)."""
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _before_rename(tmp: Path) -> None:
    """The temp file is complete and fsynced; the rename comes next (a fault-injection seam)."""


def write_trace(data: D.TraceData, path: str | os.PathLike[str]) -> Path:
    """Write `data` to `path` atomically: a reader sees the old file or the new one, never half.

    The bytes go to a hidden temp file in the same folder (same filesystem, so the rename is
    atomic), are fsynced, then renamed over `path`. On failure the temp file is removed and any
    previous file at `path` is untouched; OS errors become `TraceFileError`.
    """
    path = Path(path)
    if not _encodable(path):
        raise TraceFileError(f"cannot write trace file {str(path)!a}: not a valid file path")
    wire = to_wire(data, binary=True)
    try:
        _load(wire)
    except _Invalid as e:
        raise TraceFileError(f"cannot write trace file {path}: invalid trace data: {e}") from None
    try:
        payload = msgpack.packb(wire, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:  # only `extra` is not checked above
        raise TraceFileError(f"cannot write trace file {path}: {e}") from None
    if len(payload) > MAX_TRACE_BYTES:
        raise TraceFileError(f"cannot write trace file {path}: {len(payload)} bytes is too large")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_temp(tmp)
    except OSError as e:
        raise TraceFileError(f"cannot write trace file {path}: {e.strerror or e}") from None
    try:
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        _before_rename(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise TraceFileError(f"cannot write trace file {path}: {e.strerror or e}") from None
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def read_trace(path: str | os.PathLike[str]) -> D.TraceData:
    """Read and fully validate a `.lmtrace` file; any problem is one `TraceFileError` line."""
    path = Path(path)
    where = f"trace file {path}"
    if not _encodable(path):
        raise TraceFileError(
            f"trace file {str(path)!a} is not a valid file path (NUL or unpaired surrogate)"
        )
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise TraceFileError(f"{where} is not a file")
        if size == 0:
            raise TraceFileError(f"{where} is empty")
        if size > MAX_TRACE_BYTES:
            raise TraceFileError(f"{where} is {size} bytes, over the {MAX_TRACE_BYTES}-byte limit")
        raw = path.read_bytes()
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise TraceFileError(f"{where} does not exist") from None
        raise TraceFileError(f"cannot read {where}: {e.strerror or e}") from None
    # A msgpack trace starts with a map byte; '{' or '[' (after blanks) means a JSON export.
    if raw[:4096].lstrip()[:1] in (b"{", b"["):
        raise TraceFileError(
            f"{where} holds JSON (a JSON export?), not a .lmtrace file; "
            "lmscope reads JSON exports with lmscope.traces.fileformat.import_json"
        )
    # Every trace is a msgpack map (fixmap 0x80-0x8f, map16 0xde, map32 0xdf). Anything else is
    # some other file, which msgpack might otherwise half-parse into a misleading message.
    if not (0x80 <= raw[0] <= 0x8F or raw[0] in (0xDE, 0xDF)):
        raise TraceFileError(f"{where} is not an lmscope trace (not a msgpack map)")
    bound = min(len(raw), MAX_LIST_ITEMS)
    try:  # unpackb sees only bytes, so any exception means a damaged or foreign file
        obj = msgpack.unpackb(
            raw,
            raw=False,
            max_bin_len=len(raw),
            max_str_len=len(raw),
            max_array_len=bound,
            max_map_len=bound,
            max_ext_len=0,
        )
    except Exception as e:
        if "incomplete" in str(e):
            raise TraceFileError(f"corrupt {where}: truncated (the data ends early)") from None
        reason = (
            "text that is not UTF-8"
            if isinstance(e, UnicodeDecodeError)
            else "extra bytes after the data"
            if isinstance(e, msgpack.ExtraData)
            else str(e)[:80] or type(e).__name__
        )
        raise TraceFileError(f"corrupt {where}: not valid msgpack ({reason})") from None
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise TraceFileError(f"{where} is not an lmscope trace (no 'lmscope-trace' magic)")
    try:
        return _load(obj)
    except _Invalid as e:
        raise _error(where, e) from None


def export_json(data: D.TraceData) -> str:
    """The JSON export: the same document with arrays as flat value lists, keys sorted."""
    wire = to_wire(data, binary=False)
    validate_wire(wire)
    try:
        return json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:  # only `extra` can hold something JSON cannot
        raise TraceFileError(f"cannot export trace as JSON: {e}") from None


def import_json(text: str) -> D.TraceData:
    """Read a JSON export back (validated like a file)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise TraceFileError(f"not a JSON trace: {e}") from None
    try:
        return _load(obj)
    except _Invalid as e:
        raise _error("JSON trace", e) from None
