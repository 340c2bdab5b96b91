"""The daemon's trace handles: a bounded cache of `Trace`s, least recently used evicted first,
bounded by count and by the bytes of their arrays. Torch-free: it holds saved and live traces
alike."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import fields, is_dataclass
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from lmscope.errors import LmscopeError
from lmscope.traces.trace import Trace

log = logging.getLogger("lmscope.session")


class UnknownHandleError(LmscopeError):
    """A trace handle that is not (or no longer) in the cache."""


def trace_bytes(trace: Trace) -> int:
    """Approximate memory of a trace: the bytes of its numpy arrays (what dominates)."""
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif is_dataclass(value) and not isinstance(value, type):
            for f in fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, (list, tuple)):
            total += 8 * len(value)
        elif isinstance(value, dict):
            total += 64 * len(value)

    walk(trace.data)
    return total


class TraceCache:
    """Trace handles, least recently used evicted first, bounded by count and bytes."""

    def __init__(self, max_count: int = 32, max_bytes: int = 512 * 2**20) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Trace, int, Path | None]] = OrderedDict()
        self._ids = count(1)
        self._lock = threading.Lock()

    def add(self, trace: Trace, path: Path | None = None) -> str:
        handle = f"t{next(self._ids)}"
        size = trace_bytes(trace)
        with self._lock:
            self._entries[handle] = (trace, size, path)
            self._evict(keep=handle)
        return handle

    def _evict(self, keep: str) -> None:
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_count or self.bytes > self.max_bytes
        ):
            oldest = next(iter(self._entries))
            if oldest == keep:
                break
            del self._entries[oldest]
            log.info("trace cache: evicted %s", oldest)

    def get(self, handle: str) -> Trace:
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None:
                raise UnknownHandleError(
                    f"unknown trace handle {handle!r} (closed, evicted from the cache, or from "
                    "an earlier daemon): trace again or reopen the file"
                )
            self._entries.move_to_end(handle)
            return entry[0]

    def path(self, handle: str) -> Path | None:
        with self._lock:
            entry = self._entries.get(handle)
            return None if entry is None else entry[2]

    def set_path(self, handle: str, path: Path) -> None:
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None:
                self._entries[handle] = (entry[0], entry[1], path)

    def holds(self, handle: str) -> bool:
        with self._lock:
            return handle in self._entries

    def close(self, handle: str) -> bool:
        with self._lock:
            return self._entries.pop(handle, None) is not None

    def drop_live(self) -> None:
        """Forget the model of every live trace (the model is being replaced)."""
        with self._lock:
            for trace, _, _ in self._entries.values():
                trace.live = None

    @property
    def count(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self._entries.values())
