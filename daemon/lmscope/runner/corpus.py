"""One corpus run: read the prompts, refuse bad lines, pick up where a previous run stopped,
trace what is left through a backend, and write each result as it arrives.

Per prompt, each write atomic and in this order (`runs.folder`, the resume rule): the trace
file, the components and neurons parts, the prompts part. A prompt whose trace file is on disk
but whose rows are not (a kill between the writes) is read back, not traced again, so no prompt
is traced twice and none is lost. run.json is rewritten at the start, every few seconds and at
the end; the parts are compacted into the three tables at the end (and at the start of a
resume).

Backends (`Backend`): `local.LocalBackend` (this process, the model loaded once) and
`ray_workers.RayBackend` (one model per Ray actor). Both yield results in any order; only this
module writes.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lmscope.errors import LmscopeError, TraceFileError
from lmscope.runner.progress import RunProgress
from lmscope.runs.folder import RUN_FORMAT, RUN_FORMAT_VERSION, RunError, RunFolder
from lmscope.runs.rows import ROUTE_THRESHOLDS, SHARE_THRESHOLD, prompt_rows
from lmscope.runs.sources import RunPrompt, RunSource, read_source
from lmscope.traces.data import TraceData
from lmscope.traces.lmtrace import read_trace, write_trace
from lmscope.traces.text import inert
from lmscope.traces.trace import Trace

INFO_EVERY_S = 2.0  # run.json is rewritten at most this often while the run goes


@dataclass(frozen=True)
class RunSettings:
    """How a run traces and what it keeps (recorded in run.json `options`)."""

    top_neurons: int = 10
    prepend_bos: bool = True
    skip_bad: bool = False


@dataclass(frozen=True)
class TraceResult:
    """What a backend gives back for one prompt: its trace, or why it failed."""

    prompt: RunPrompt
    data: TraceData | None
    seconds: float
    error: str | None = None


class Backend(Protocol):
    def facts(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(the model's facts as .lmtrace writes them, {lmscope, torch, transformers, python})."""
        ...

    def trace_all(self, prompts: list[RunPrompt]) -> Iterator[TraceResult]:
        """Trace every prompt once; results in any order."""
        ...

    def close(self) -> None: ...


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def say(message: str) -> None:
    print(f"lmscope: {message}", file=sys.stderr, flush=True)


def read_checked_source(path: Path, skip_bad: bool) -> RunSource:
    """The prompt file, its bad lines reported with their line numbers before anything is
    traced; refused (LmscopeError) when it has any, unless `skip_bad`."""
    source = read_source(path)
    for line, problem in source.bad_lines:
        say(f"{inert(str(path))} line {line}: {inert(problem)}")
    if source.bad_lines and not skip_bad:
        count = len(source.bad_lines)
        raise LmscopeError(
            f"{inert(str(path))} has {count} bad line{'s' * (count != 1)} (listed above): fix "
            "them, or pass --skip-bad to run the others"
        )
    if not source.prompts:
        raise LmscopeError(f"{inert(str(path))} has no prompt to run")
    return source


class CorpusRun:
    """A run folder being filled from one prompt file."""

    def __init__(self, source: RunSource, out: Path, settings: RunSettings) -> None:
        self.source, self.folder, self.settings = source, RunFolder(out), settings
        self.options = {
            "thresholds": list(ROUTE_THRESHOLDS),
            "shareThreshold": SHARE_THRESHOLD,
            "renormalize": True,
            "topNeurons": settings.top_neurons,
            "generate": 0,
            "prependBos": settings.prepend_bos,
            "source": str(source.path),
            "sourceSha256": source.sha256,
        }
        self.previous = self._previous_run()
        if self.previous is not None:
            self.folder.compact()  # what a killed run left in parts
        self.done = self.folder.done_indices()
        self.failed = 0
        self._info: dict[str, Any] = {}
        self._info_written = 0.0

    def _previous_run(self) -> dict[str, Any] | None:
        """run.json of the run this one resumes (None: a new run); refused when it ran another
        file or other options."""
        if not self.folder.info_path.exists():
            if self.folder.path.exists() and any(self.folder.path.iterdir()):
                raise LmscopeError(
                    f"{inert(str(self.folder.path))} is not empty and holds no run: give a new "
                    "or empty --out folder"
                )
            return None
        info = self.folder.read_info()
        before = info.get("options", {})
        if before.get("sourceSha256") != self.source.sha256:
            raise RunError(
                f"{inert(str(self.folder.path))} is a run of another prompt file (or the file "
                "changed since): give a new --out folder"
            )
        for key in ("topNeurons", "prependBos", "thresholds", "shareThreshold"):
            if before.get(key) != self.options[key]:
                raise RunError(
                    f"{inert(str(self.folder.path))} ran with {key} {before.get(key)!r}, not "
                    f"{self.options[key]!r}: resume it with the same options or use a new --out"
                )
        return info

    @property
    def pending(self) -> list[RunPrompt]:
        return [p for p in self.source.prompts if p.index not in self.done]

    def start(self, model: dict[str, Any], versions: dict[str, str]) -> None:
        """Record the model (a resumed run must trace with the same weights) in run.json."""
        if self.previous is not None:
            before = self.previous.get("model", {}).get("contentHash")
            if before != model.get("contentHash"):
                raise RunError(
                    f"{inert(str(self.folder.path))} was traced with model "
                    f"{inert(str(self.previous.get('model', {}).get('name')))} "
                    f"({before}); resume it with the same model"
                )
        created = self.previous.get("created", _now()) if self.previous else _now()
        self._info = {
            "format": RUN_FORMAT,
            "formatVersion": RUN_FORMAT_VERSION,
            "name": self.folder.path.resolve().name,
            "model": model,
            "versions": versions,
            "options": self.options,
            "counts": {},
            "created": created,
            "updated": created,
        }
        self.write_info(force=True)

    def write_info(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._info_written < INFO_EVERY_S:
            return
        self._info["counts"] = {
            "prompts": len(self.source.prompts),
            "done": len(self.done),
            "failed": self.failed,
            "skippedBadLines": len(self.source.bad_lines),
        }
        self._info["updated"] = _now()
        self.folder.write_info(self._info)
        self._info_written = time.monotonic()

    def recovered(self) -> Iterator[TraceResult]:
        """Pending prompts whose trace file was written before a kill: read back, not traced
        (their time is unknown: NaN seconds)."""
        for prompt in self.pending:
            path = self.folder.path / RunFolder.trace_relpath(prompt)
            if path.exists():
                try:
                    yield TraceResult(prompt, read_trace(path), math.nan)
                except TraceFileError:
                    continue  # not a complete trace of ours: traced again

    def record(self, result: TraceResult) -> None:
        """Write one result: trace file, then rows (prompts part last)."""
        prompt = result.prompt
        if result.data is None:
            self.failed += 1
            say(f"{inert(str(self.source.path))} line {prompt.line}: {inert(str(result.error))}")
            return
        relpath = RunFolder.trace_relpath(prompt)
        path = self.folder.path / relpath
        if not (math.isnan(result.seconds) and path.exists()):
            write_trace(result.data, path)
        rows = prompt_rows(
            Trace(result.data), prompt, relpath, result.seconds, self.settings.top_neurons
        )
        self.folder.write_parts(prompt.index, rows)
        self.done.add(prompt.index)
        self.write_info()

    def finish(self) -> None:
        self.folder.compact()
        self.write_info(force=True)


def run_corpus(
    source: RunSource,
    out: Path,
    settings: RunSettings,
    open_backend: Callable[[], Backend],
    quiet: bool = False,
    on_prompt: Callable[[], None] | None = None,
) -> CorpusRun:
    """Run (or resume) `source` into `out`; `open_backend` is called only when there is work.
    `on_prompt` runs after each prompt is written (the benchmark samples memory there)."""
    run = CorpusRun(source, out, settings)
    pending = run.pending
    if run.previous is not None:
        say(f"resuming: {len(run.done)} of {len(source.prompts)} prompts already done")
    backend = open_backend()
    try:
        run.start(*backend.facts())
        progress = RunProgress(len(source.prompts), len(run.done), enabled=not quiet)
        try:
            recovered = list(run.recovered())
            for result in recovered:
                run.record(result)
                progress.step(f"line {result.prompt.line} (read back)")
            left = [p for p in pending if p.index not in run.done]
            for result in backend.trace_all(left):
                run.record(result)
                progress.step(f"line {result.prompt.line}: {result.seconds:.2f} s")
                if on_prompt is not None:
                    on_prompt()
        finally:
            progress.close()
            run.write_info(force=True)
        run.finish()
    finally:
        backend.close()
    return run
