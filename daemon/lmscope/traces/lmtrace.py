"""The `.lmtrace` file: read and write it, and its JSON export.

A trace file is the wire dict of `traces.wire` packed with msgpack (arrays as little-endian
bytes); the JSON export is the same document with arrays as value lists. Every function that
reads or writes validates (schema, then sizes while decoding, then `traces.invariants`), so an
invalid `TraceData` never reaches disk and a damaged file never reaches the query code.

Reading is hostile-input safe: the file size is capped, msgpack containers are bounded by it,
nesting is bounded, every size, text and value is held to its bound in the schema (so no query
on a file can do more work than the file holds, or form a sum that is not finite), and any
problem is one `TraceFileError` line naming the file, the field path and what is wrong.
Writing goes through `lmscope.files.atomic_write`. TypeScript twin:
extension/shared/traces/lmtrace.ts.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import msgpack

from lmscope.errors import TraceFileError
from lmscope.files import atomic_write, encodable
from lmscope.traces import data as D
from lmscope.traces.invariants import check_invariants
from lmscope.traces.text import inert_json
from lmscope.traces.wire import (
    MAGIC,
    Invalid,
    NewerFormat,
    check_string_lists,
    decode,
    nested_too_deeply,
    schema_check,
    to_wire,
    too_deep,
)

MAX_TRACE_BYTES = 2 * 1024**3  # readers refuse larger files; writers refuse to produce them
MAX_LIST_ITEMS = 2**24  # msgpack arrays/maps: far above any real trace, bounds hostile input


def _load(obj: Any, *, nesting_checked: bool = False) -> D.TraceData:
    """Nesting, magic, version, schema, then sizes and value ranges while decoding, then
    invariants. Raises `Invalid`."""
    if not nesting_checked and nested_too_deeply(obj):
        raise Invalid(too_deep())
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise Invalid("not an lmscope trace (no 'lmscope-trace' magic)")
    version = obj.get("formatVersion")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        found = "missing" if version is None else f"{version!r}"
        raise Invalid(f"formatVersion is {found}, expected a positive integer")
    if version > D.FORMAT_VERSION:  # checked before the schema: newer files may add fields
        raise NewerFormat(
            f"was written by a newer lmscope (format {version}); this lmscope reads format "
            f"{D.FORMAT_VERSION} — upgrade lmscope"
        )
    try:
        schema_check(obj)
        check_string_lists(obj)
        trace = decode(obj)
    except RecursionError:  # not expected: the nesting is bounded above
        raise Invalid(too_deep()) from None
    check_invariants(trace)
    return trace


def _error(where: str, err: Invalid, adjective: str = "corrupt") -> TraceFileError:
    if isinstance(err, NewerFormat):
        return TraceFileError(f"{where} {err}")
    return TraceFileError(f"{adjective} {where}: {err}")


def from_wire(obj: dict[str, Any]) -> D.TraceData:
    """Decode a wire dict (either array form) into `TraceData`, validating everything."""
    try:
        return _load(obj)
    except Invalid as e:
        raise _error("trace data", e, "invalid") from None


def validate_wire(obj: dict[str, Any]) -> None:
    """Raise `TraceFileError` unless `obj` is a valid trace: schema plus cross-field checks."""
    from_wire(obj)


# ---- files and JSON ----------------------------------------------------------------------------


def write_trace(data: D.TraceData, path: str | os.PathLike[str]) -> Path:
    """Validate `data` and write it to `path` atomically (`lmscope.files.atomic_write`): a
    reader sees the old file or the new one, never half; on failure any previous file at `path`
    is untouched. Invalid data and OS errors become `TraceFileError`."""
    path = Path(path)
    if not encodable(path):
        raise TraceFileError(f"cannot write trace file {str(path)!a}: not a valid file path")
    wire = to_wire(data, binary=True)
    try:
        _load(wire)
    except Invalid as e:
        raise TraceFileError(f"cannot write trace file {path}: invalid trace data: {e}") from None
    try:
        payload = msgpack.packb(wire, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:  # only `extra` is not checked above
        raise TraceFileError(f"cannot write trace file {path}: {e}") from None
    if len(payload) > MAX_TRACE_BYTES:
        raise TraceFileError(f"cannot write trace file {path}: {len(payload)} bytes is too large")
    try:
        return atomic_write(path, payload)
    except OSError as e:
        raise TraceFileError(f"cannot write trace file {path}: {e.strerror or e}") from None


def read_trace(path: str | os.PathLike[str]) -> D.TraceData:
    """Read and fully validate a `.lmtrace` file; any problem is one `TraceFileError` line."""
    path = Path(path)
    where = f"trace file {path}"
    if not encodable(path):
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
            "lmscope opens JSON exports with lmscope.import_json(text)"
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
        if isinstance(e, msgpack.StackError):  # msgpack's own limit: deeper than 1024
            raise TraceFileError(f"corrupt {where}: {too_deep()}") from None
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
    if nested_too_deeply(obj):  # anywhere, before any other check reads the document
        raise TraceFileError(f"corrupt {where}: {too_deep()}")
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise TraceFileError(f"{where} is not an lmscope trace (no 'lmscope-trace' magic)")
    try:
        return _load(obj, nesting_checked=True)
    except Invalid as e:
        raise _error(where, e) from None


def export_json(data: D.TraceData) -> str:
    """The JSON export: the same document with arrays as flat value lists, keys sorted. Text
    stays readable (not ASCII-escaped), except characters that could act on a terminal or
    reorder text (controls, bidi and other format characters): those are `\\u` escapes, so
    the export is safe to print (`lmscope export` writes it to stdout)."""
    wire = to_wire(data, binary=False)
    validate_wire(wire)
    try:
        text = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return inert_json(text)
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
    except Invalid as e:
        raise _error("JSON trace", e) from None
