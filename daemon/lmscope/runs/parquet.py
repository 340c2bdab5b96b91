"""The three tables of a run folder as Parquet: their schemas, atomic writes, reads.

Long format, one schema each (the run folder contract, `lmscope.runs.folder`):
- prompts: one row per done prompt;
- components: one row per (prompt, head or FFN block): share and on-route flags;
- neurons: the top neurons of the route's FFN nodes.
Written through `lmscope.files.atomic_write` (into memory, then one atomic file), so a reader
or a resumed run never sees half a table. pandas, polars and duckdb read them directly.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lmscope.errors import LmscopeError
from lmscope.files import atomic_write

PROMPTS = "prompts"
COMPONENTS = "components"
NEURONS = "neurons"
TABLES = (PROMPTS, COMPONENTS, NEURONS)

SCHEMAS: dict[str, pa.Schema] = {
    PROMPTS: pa.schema(
        [
            ("index", pa.int32()),
            ("id", pa.string()),
            ("line", pa.int32()),
            ("tags", pa.list_(pa.string())),
            ("text", pa.string()),
            ("trace", pa.string()),
            ("n_tokens", pa.int32()),
            ("prediction", pa.string()),
            ("probability", pa.float32()),
            ("seconds", pa.float32()),
        ]
    ),
    COMPONENTS: pa.schema(
        [
            ("index", pa.int32()),
            ("kind", pa.string()),  # "head" | "ffn"
            ("layer", pa.int32()),
            ("head", pa.int32()),  # -1 for an FFN block
            ("share", pa.float32()),
            ("on_route_001", pa.bool_()),
            ("on_route_004", pa.bool_()),
            ("on_route_010", pa.bool_()),
        ]
    ),
    NEURONS: pa.schema(
        [
            ("index", pa.int32()),
            ("layer", pa.int32()),
            ("position", pa.int32()),
            ("neuron", pa.int32()),
            ("contribution", pa.float32()),
            ("activation", pa.float32()),
        ]
    ),
}


def to_table(name: str, columns: dict[str, Any]) -> pa.Table:
    """A table of `name`'s schema from {column: values}."""
    return pa.table(columns, schema=SCHEMAS[name])


def write_table(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` atomically (the whole file or the old one, never half)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    try:
        atomic_write(path, buffer.getvalue())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise LmscopeError(f"cannot write {path}: {reason}") from None


def read_table(name: str, path: Path) -> pa.Table:
    """Read one table, checked against its schema; LmscopeError when unreadable or foreign."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise LmscopeError(f"cannot read {path}: {exc}") from None
    expected = SCHEMAS[name]
    if not table.schema.remove_metadata().equals(expected):
        raise LmscopeError(f"{path} is not a run's {name} table (its columns differ)")
    return table


def empty(name: str) -> pa.Table:
    return SCHEMAS[name].empty_table()
