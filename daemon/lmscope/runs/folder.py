"""A run folder on disk: where each file lives, run.json, and which prompts are done.

    runs/NAME/run.json                        the model, versions, options, counts
    runs/NAME/traces/<index:05d>-<slug>.lmtrace   one trace per prompt
    runs/NAME/parts/<index:05d>.<table>.parquet   one prompt's rows while the run is going
    runs/NAME/{prompts,components,neurons}.parquet  the rows, compacted

The resume rule: a prompt is done when its prompts row exists (in prompts.parquet or its own
`parts/<index>.prompts.parquet`). A runner writes, in order and each atomically, the trace file,
the components and neurons parts, then the prompts part, so a done prompt has all its rows and a
kill between any two writes leaves the prompt not done (its trace file, when complete, is read
back instead of traced again). Compaction writes the three tables with every done prompt, then
removes the parts it folded in; the reader takes a prompt's rows from its parts when they exist,
else from the tables, so every state in between reads the same. Only the runner compacts.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lmscope.errors import LmscopeError
from lmscope.files import atomic_write_text
from lmscope.runs.parquet import PROMPTS, TABLES, empty, read_table, write_table
from lmscope.runs.rows import PromptRows
from lmscope.runs.sources import RunPrompt
from lmscope.traces.wire import camel

RUN_FORMAT = "lmscope-run"
RUN_FORMAT_VERSION = 1
RUN_JSON = "run.json"
_PART = re.compile(r"(\d{5,})\.(prompts|components|neurons)\.parquet")
_CUT_WRITE = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # atomic_write's temp file names


class RunError(LmscopeError):
    """A run folder that cannot be read: missing, corrupt, or of a newer format."""


def model_wire(facts: Any) -> Any:
    """A ModelFacts dataclass as the .lmtrace `model` section writes it (camelCase keys)."""
    if is_dataclass(facts) and not isinstance(facts, type):
        return {camel(f.name): model_wire(getattr(facts, f.name)) for f in fields(facts)}
    if isinstance(facts, (list, tuple)):
        return [model_wire(item) for item in facts]
    return facts


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe stem from a prompt's words (as `lmscope trace --file` names files)."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return words[:limit].rstrip("-") or "prompt"


class RunFolder:
    """The files of one run folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / RUN_JSON

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def part_path(self, index: int, name: str) -> Path:
        return self.path / "parts" / f"{index:05d}.{name}.parquet"

    @staticmethod
    def trace_relpath(prompt: RunPrompt) -> str:
        return f"traces/{prompt.index:05d}-{slug(prompt.prompt)}.lmtrace"

    # --- run.json ------------------------------------------------------------------------------
    def read_info(self) -> dict[str, Any]:
        """run.json, checked; RunError when missing, corrupt or newer than this lmscope."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.path} is not a run folder (no {RUN_JSON})") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RunError(f"cannot read {self.info_path}: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise RunError(f"{self.info_path} is not an lmscope run.json")
        version = info.get("formatVersion")
        if not isinstance(version, int) or version > RUN_FORMAT_VERSION:
            raise RunError(
                f"{self.info_path} has run format {version!r}; this lmscope reads format "
                f"{RUN_FORMAT_VERSION} (upgrade lmscope)"
            )
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        try:
            atomic_write_text(self.info_path, json.dumps(info, indent=2) + "\n")
        except (OSError, ValueError) as exc:
            raise LmscopeError(f"cannot write {self.info_path}: {exc}") from None

    # --- rows ----------------------------------------------------------------------------------
    def write_parts(self, index: int, rows: PromptRows) -> None:
        """One prompt's rows, the prompts part last: it marks the prompt done."""
        tables = rows.by_name()
        for name in (*(n for n in TABLES if n != PROMPTS), PROMPTS):
            write_table(self.part_path(index, name), tables[name])

    def _parts(self) -> dict[str, dict[int, Path]]:
        """{table: {index: part file}} of the part files present."""
        found: dict[str, dict[int, Path]] = {name: {} for name in TABLES}
        folder = self.path / "parts"
        if folder.is_dir():
            for path in folder.iterdir():
                match = _PART.fullmatch(path.name)
                if match:
                    found[match.group(2)][int(match.group(1))] = path
        return found

    def done_indices(self) -> set[int]:
        return set(self._done(self._parts()))

    def _done(self, parts: dict[str, dict[int, Path]]) -> list[int]:
        done = set(parts[PROMPTS])
        compacted = self.table_path(PROMPTS)
        if compacted.exists():
            done.update(read_table(PROMPTS, compacted).column("index").to_pylist())
        return sorted(done)

    def read_tables(self) -> dict[str, pa.Table]:
        """Every done prompt's rows of each table, sorted by prompt index (a stable sort: rows of
        one prompt keep their order)."""
        parts = self._parts()
        done = pa.array(self._done(parts), pa.int32())
        with_parts = sorted(parts[PROMPTS])  # done prompts whose rows are in their parts
        tables = {}
        for name in TABLES:
            pieces = []
            compacted = self.table_path(name)
            if compacted.exists():
                table = read_table(name, compacted)
                replaced = pc.is_in(table["index"], pa.array(with_parts, pa.int32()))
                pieces.append(table.filter(pc.invert(replaced)))
            pieces += [read_table(name, parts[name][i]) for i in with_parts if i in parts[name]]
            table = pa.concat_tables(pieces) if pieces else empty(name)
            table = table.filter(pc.is_in(table["index"], done))
            tables[name] = table.take(pc.sort_indices(table, [("index", "ascending")]))
        return tables

    def compact(self) -> None:
        """Fold the parts into the three tables, then remove the parts folded in and the temp
        files of writes a kill cut short."""
        parts = self._parts()
        if any(parts.values()):
            tables = self.read_tables()
            for name in TABLES:
                write_table(self.table_path(name), tables[name])
            for by_index in parts.values():
                for path in by_index.values():
                    path.unlink(missing_ok=True)
        self._remove_cut_writes()
        with contextlib.suppress(OSError):  # gone when empty; a stray file keeps it
            (self.path / "parts").rmdir()

    def _remove_cut_writes(self) -> None:
        """The temp files `lmscope.files.atomic_write` leaves when the process is killed between
        creating one and its rename. Only the runner compacts, and never while it writes."""
        for folder in (self.path, self.path / "parts", self.path / "traces"):
            if folder.is_dir():
                for path in folder.iterdir():
                    if _CUT_WRITE.fullmatch(path.name):
                        path.unlink(missing_ok=True)
