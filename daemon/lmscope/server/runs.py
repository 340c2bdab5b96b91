"""Corpus runs in the daemon: `lmscope/run` (a run folder's statistics for the run view) and
`lmscope/setActiveRun` (the run hover cards cite), both answered from the run's tables
(`lmscope.runs.table`, torch-free) on the thread pool, so they never wait for the model.

`RunShelf` keeps, per server, the run tables read so far (a few, by folder) and the active run.
A table is read again when its run.json or its parts/ folder changes: a run in progress rewrites
run.json after each prompt it traces, so the view and the cards follow it without re-reading
the tables on every request.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError
from lmscope.server.wire import finite

if TYPE_CHECKING:
    from lmscope.runs.table import RunTable
    from lmscope.server.app import LmscopeServer

MAX_TABLES = 4  # run tables kept read (the active run and the views open)
RUN_JSON = "run.json"
# The run's on-route columns by τ (the run folder contract: on_route_001 / _004 / _010).
ON_ROUTE_STATS = {0.01: "on_route_001", 0.04: "on_route_004", 0.1: "on_route_010"}

# run.json (inode, mtime_ns, size), parts/ mtime_ns (0 when absent)
_Stamp = tuple[int, int, int, int]


def run_folder(path: str) -> Path:
    """The run folder `path` names (the folder, or its run.json); LmscopeError when relative or
    not a path the file system can take (a NUL, a lone surrogate)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise LmscopeError(f"not a path the file system can name: {path!r}") from None
    if "\0" in path:
        raise LmscopeError(f"not a path the file system can name (a NUL character): {path!r}")
    given = Path(path)
    if not given.is_absolute():
        raise LmscopeError(f"a run is named by an absolute path, got {path!r}")
    return given.parent if given.name == RUN_JSON else given


def _stamp(folder: Path) -> _Stamp:
    """What changes when a run writes: run.json (rewritten atomically: a new inode, whatever the
    clock's resolution) and parts/ (a part file added or compacted away)."""
    try:
        stat = (folder / RUN_JSON).stat()
    except OSError:
        return (0, 0, 0, 0)  # load_run says what is missing
    try:
        parts = (folder / "parts").stat().st_mtime_ns
    except OSError:
        parts = 0
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size, parts)


# What the view and the cards read of run.json (the run folder contract), by section.
_INFO_KEYS = {
    "model": ("name", "spec", "contentHash", "nLayers", "nHeads"),
    "counts": ("prompts", "done", "failed", "skippedBadLines"),
    "options": ("thresholds", "shareThreshold"),
}


def _check_info(folder: Path, info: dict[str, Any]) -> None:
    """LmscopeError naming the first field run.json lacks (a run.json edited or truncated)."""
    for key in ("name", "updated", *_INFO_KEYS):
        if key not in info:
            raise LmscopeError(f"{folder / RUN_JSON} is incomplete: it has no {key!r}")
    for section, keys in _INFO_KEYS.items():
        found = info[section]
        missing = [k for k in keys if not isinstance(found, dict) or k not in found]
        if missing:
            raise LmscopeError(
                f"{folder / RUN_JSON} is incomplete: {section} has no {missing[0]!r}"
            )


class RunShelf:
    """The run tables a daemon has read, newest first, and the run cards cite."""

    def __init__(self, max_tables: int = MAX_TABLES) -> None:
        self._lock = threading.Lock()
        self._tables: OrderedDict[Path, tuple[_Stamp, RunTable]] = OrderedDict()
        self._max = max_tables
        self.active: Path | None = None

    def table(self, folder: Path) -> RunTable:
        """The run table of `folder`, read again when the run wrote since (RunError: cannot)."""
        from lmscope.runs.table import load_run

        stamp = _stamp(folder)
        with self._lock:
            held = self._tables.get(folder)
            if held is not None and held[0] == stamp:
                self._tables.move_to_end(folder, last=False)
                return held[1]
        table = load_run(folder)  # outside the lock: other requests go on meanwhile
        _check_info(folder, table.info)
        with self._lock:
            self._tables[folder] = (stamp, table)
            self._tables.move_to_end(folder, last=False)
            while len(self._tables) > self._max:
                self._tables.popitem()
        return table

    def cited(self) -> RunTable | None:
        """The active run's table for a card; None when none is active or it cannot be read
        now (a card never fails for a run: the view says what is wrong with it)."""
        folder = self.active
        if folder is None:
            return None
        try:
            return self.table(folder)
        except LmscopeError:
            return None


_SHELVES: WeakKeyDictionary[Any, RunShelf] = WeakKeyDictionary()
_SHELVES_LOCK = threading.Lock()


def shelf_of(server: LmscopeServer) -> RunShelf:
    """The server's run shelf (made on first use)."""
    with _SHELVES_LOCK:
        shelf = _SHELVES.get(server)
        if shelf is None:
            shelf = _SHELVES[server] = RunShelf()
        return shelf


def _model_ref(info: dict[str, Any]) -> dict[str, Any]:
    model = info["model"]
    return {"name": model["name"], "spec": model["spec"], "contentHash": model["contentHash"]}


def _info_wire(table: RunTable) -> dict[str, Any]:
    info, model = table.info, table.info["model"]
    counts, options = info["counts"], info["options"]
    return {
        "path": str(table.folder),
        "name": info["name"],
        "model": _model_ref(info),
        "nLayers": model["nLayers"],
        "nHeads": model["nHeads"],
        "counts": {
            key: int(counts[key]) for key in ("prompts", "done", "failed", "skippedBadLines")
        },
        "tags": table.tags(),
        "thresholds": [float(t) for t in options["thresholds"]],
        "shareThreshold": float(options["shareThreshold"]),
        "updated": str(info["updated"]),
    }


def _component(table: RunTable, wire: dict[str, Any]) -> ComponentRef:
    """The asked component, checked against the run's model."""
    ref = ComponentRef.from_wire(wire)
    model, name = table.info["model"], table.info["name"]
    n_layers, n_heads = model["nLayers"], model["nHeads"]
    if ref.layer >= n_layers:
        raise LmscopeError(
            f"{ref.label()}: layer {ref.layer} is out of range: run {name}'s model has "
            f"{n_layers} layers (0-{n_layers - 1})"
        )
    if ref.kind == "head" and ref.index is not None and ref.index >= n_heads:
        raise LmscopeError(
            f"{ref.label()}: head {ref.index} is out of range: run {name}'s model has "
            f"{n_heads} heads per layer (0-{n_heads - 1})"
        )
    return ref


def _prompt_texts(table: RunTable, indices: set[int]) -> dict[int, str]:
    """The texts of the prompts `indices` (the reader's prompts table: index, text, ...)."""
    prompts = table.prompts
    return {
        index: text
        for index, text in zip(prompts["index"].to_pylist(), prompts["text"].to_pylist())
        if index in indices
    }


def _component_wire(table: RunTable, ref: ComponentRef, tag: str | None) -> dict[str, Any]:
    head = ref.index if ref.kind == "head" else None
    stats = table.component_stats(ref.kind, ref.layer, head, tag=tag)
    texts = _prompt_texts(table, {int(index) for index, *_ in stats.top_prompts})
    return {
        "component": ref.to_wire(),
        "nPrompts": int(stats.n_prompts),
        "onRouteFraction": min(1.0, max(0.0, finite(float(stats.on_route_fraction)))),
        "meanShare": finite(float(stats.mean_share)),
        "stdShare": max(0.0, finite(float(stats.std_share))),
        "topPrompts": [
            {
                "index": int(index),
                "id": str(prompt_id),
                "share": finite(float(share)),
                "text": texts.get(int(index), ""),
                "trace": str(trace),
            }
            for index, prompt_id, share, trace in stats.top_prompts
        ],
    }


def run(server: LmscopeServer, params: dict[str, Any]) -> dict[str, Any]:
    """lmscope/run: the run's facts, one statistic of every head and FFN block, and the asked
    component's statistics and top prompts."""
    table = shelf_of(server).table(run_folder(params["path"]))
    name, tag = table.info["name"], params.get("tag")
    if tag is not None and tag not in table.tags():
        tags = ", ".join(repr(t) for t in table.tags()) or "none"
        raise LmscopeError(f"run {name} has no prompt tagged {tag!r} (its tags: {tags})")
    ref = None if params.get("component") is None else _component(table, params["component"])
    stat = "mean_share" if params["stat"] == "meanShare" else ON_ROUTE_STATS[params["threshold"]]
    heads = table.head_matrix(stat, tag=tag)  # [layers][heads]
    ffn = table.ffn_vector(stat, tag=tag)  # [layers]
    # Every traced prompt has a row for every component: any one's count is the prompts'.
    n_prompts = (
        table.n_prompts if tag is None else table.component_stats("ffn", 0, None, tag=tag).n_prompts
    )
    return {
        "run": _info_wire(table),
        "stat": params["stat"],
        "threshold": float(params["threshold"]),
        "tag": tag,
        "nPrompts": int(n_prompts),
        "heads": [[finite(float(v)) for v in row] for row in heads],
        "ffn": [finite(float(v)) for v in ffn],
        "component": None if ref is None else _component_wire(table, ref, tag),
    }


def set_active_run(server: LmscopeServer, params: dict[str, Any]) -> dict[str, Any]:
    """lmscope/setActiveRun: the run cards cite from now on (read and checked first), or none."""
    shelf = shelf_of(server)
    if params["path"] is None:
        shelf.active = None
        return {"run": None}
    folder = run_folder(params["path"])
    table = shelf.table(folder)  # RunError here leaves the active run as it was
    shelf.active = folder
    return {
        "run": {"name": table.info["name"], "path": str(folder), "model": _model_ref(table.info)}
    }
