"""The daemon's state, independent of any protocol: the loaded model, a queue of model work run
by one worker thread, and a bounded cache of trace handles (`traces.cache`).

The server (`lmscope.server`) turns requests into calls here and results into wire dicts; this
module knows neither pygls nor JSON. Model work (loading, tracing) runs strictly one job at a
time, in submission order, on the worker thread, so the server's event loop keeps answering
status, hover and cancel requests. Queries on stored trace data run on any thread; the rare
queries that need the model again (`Trace.live`) take the model's lock, so they never run a
forward pass while a trace's hooks are installed.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmscope.chats import Message, check_generate
from lmscope.errors import LmscopeError, NeedsModelError, TraceFileError
from lmscope.prompts import check_prompt
from lmscope.traces.cache import TraceCache
from lmscope.traces.live import LiveQueries
from lmscope.traces.lmtrace import read_trace
from lmscope.traces.trace import Trace

log = logging.getLogger("lmscope.session")

ProgressFn = Callable[[str, float | None], None]


class NoModelError(LmscopeError):
    """A trace was asked for with no model loaded and none could be loaded."""


class JobCancelled(LmscopeError):
    """The job was cancelled before or while it ran."""


class TraceNotSavedError(TraceFileError):
    """A trace finished but its file could not be written; the trace stays in memory under
    `handle`, so it can still be queried and saved elsewhere (`Session.save_trace`)."""

    def __init__(self, message: str, handle: str) -> None:
        super().__init__(message)
        self.handle = handle


def check_save_path(path: Path) -> None:
    """Refuse a save path the daemon should never write: lmscope only ever writes `.lmtrace`
    files, at absolute paths without `..` parts (a client cannot climb out of the folder it
    names, nor make the daemon replace some other kind of file)."""
    if not path.is_absolute():
        raise LmscopeError(f"a trace is saved to an absolute path, got {str(path)!r}")
    try:
        valid = "\0" not in str(path) and bool(str(path).encode("utf-8"))
    except UnicodeEncodeError:
        valid = False
    if not valid:
        raise LmscopeError(f"not a valid file path: {str(path)!a}")
    if ".." in path.parts:
        raise LmscopeError(f"a trace save path may not contain '..': {str(path)!r}")
    if path.suffix != ".lmtrace" or path.name == ".lmtrace":
        raise LmscopeError(f"a trace is saved as a .lmtrace file, got {str(path)!r}")


@dataclass
class Job:
    """One unit of model work: a model load or a trace. `on_start` runs on the worker thread
    just before `run` (the server announces that the job started)."""

    kind: str  # "load" | "trace"
    run: Callable[[Job], Any]
    description: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    progress: ProgressFn | None = None
    on_start: Callable[[], None] | None = None

    def report(self, message: str, fraction: float | None) -> None:
        if self.progress is not None:
            self.progress(message, fraction)


class Session:
    """The loaded model, the model-work queue, the trace cache of one daemon, and the latest
    trace of each folder (the context hover cards use)."""

    def __init__(self, cache: TraceCache | None = None) -> None:
        self.model: Any = None  # lmscope.models.loading.LoadedModel | None
        self.model_state = "none"  # none | loading | ready | error
        self.traces = cache or TraceCache()
        # folder -> handle of the latest trace made from, saved to or opened from it ("": any)
        self._latest: dict[str, str] = {}
        self._queue: list[Job] = []
        self._current: Job | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="lmscope-worker", daemon=True)
        self._worker.start()

    # --- the queue ---------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._wake:
            if self._stopping:
                raise LmscopeError("the daemon is shutting down")
            self._queue.append(job)
            self._wake.notify()
        return job

    @property
    def state(self) -> str:
        current = self._current
        if current is None:
            return "idle"
        return "loading" if current.kind == "load" else "tracing"

    @property
    def model_pending(self) -> bool:
        """A model load is running or queued (a trace submitted now will run after it)."""
        with self._wake:
            current = self._current
            return (current is not None and current.kind == "load") or any(
                job.kind == "load" for job in self._queue
            )

    @property
    def queued(self) -> list[Job]:
        with self._wake:
            return list(self._queue)

    def cancel(self, job: Job) -> None:
        """Cancel a queued job at once, or a running one at its next check."""
        job.cancel.set()
        with self._wake:
            if job in self._queue:
                self._queue.remove(job)
                if not job.future.done():
                    job.future.set_exception(JobCancelled("cancelled before it started"))

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job = self._queue.pop(0)
                self._current = job
            error: BaseException | None = None
            result: Any = None
            try:
                if job.cancel.is_set():
                    raise JobCancelled("cancelled before it started")
                if job.on_start is not None:
                    job.on_start()
                result = job.run(job)
            except BaseException as exc:
                error = exc
            # Idle before the answer goes out: a client that asks for status right after
            # its answer must not see this job still running.
            with self._wake:
                self._current = None
            if not job.future.done():
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(result)
            del error, result

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            for job in self._queue:
                if not job.future.done():
                    job.future.set_exception(JobCancelled("the daemon is shutting down"))
            self._queue.clear()
            self._wake.notify_all()
        if self._current is not None:
            self._current.cancel.set()

    def close(self, timeout: float) -> bool:
        """`stop`, then wait up to `timeout` seconds for the worker to finish its job (a trace
        stops at its next layer); True when the worker has ended."""
        self.stop()
        self._worker.join(timeout)
        return not self._worker.is_alive()

    # --- model work --------------------------------------------------------------------------
    def load_model_job(
        self,
        spec: str,
        dtype: str | None,
        device: str,
        on_state: Callable[[str | None], None],
        device_map: str | None = None,
        adapter: str | None = None,
    ) -> Job:
        """A job that replaces the loaded model; `device_map` (an accelerate plan) splits it
        over devices instead of putting it on `device`; `adapter` (a PEFT adapter folder) is
        merged into it. Everything that can be checked without
        reading weights is checked first (`check_loadable`): a spec that names nothing loadable
        fails with the old model still loaded. Then the old model is freed before the new one
        arrives (two may not fit). `on_state(message)` is told each state change, with the
        reason of a failure."""

        def run(job: Job) -> Any:
            from lmscope.models.loading import DeviceMap, check_loadable, load_model

            mapping = None if device_map is None else DeviceMap(device_map)
            try:
                check_loadable(
                    spec, dtype=dtype, device=device, device_map=mapping, adapter=adapter
                )
            except BaseException as exc:
                self.model_state = "error"  # the last load failed; the model stays loaded
                on_state(str(exc) or type(exc).__name__)
                raise
            self.traces.drop_live()
            previous, self.model = self.model, None
            self.model_state = "loading"
            on_state(None)
            del previous  # free the old weights before the new ones arrive
            _free_device_memory()
            try:
                loaded = load_model(
                    spec,
                    dtype=dtype,
                    device=device,
                    progress=job.report,
                    device_map=mapping,
                    adapter=adapter,
                )
            except BaseException as exc:
                self.model_state = "error"
                on_state(str(exc) or type(exc).__name__)
                raise
            self.model = loaded
            self.model_state = "ready"
            on_state(None)
            return loaded

        what = spec if adapter is None else f"{spec} + {adapter}"
        return Job("load", run, description=f"load {what}")

    def trace_job(
        self,
        prompt: str | list[Message],
        options: Any,
        save_path: Path | None,
        folder: Path | None = None,
    ) -> Job:
        """A job that traces `prompt` (text, or a conversation checked by `check_messages`) on
        the loaded model and caches the result; the trace becomes the latest of `folder` (the
        prompt document's), or of the save path's."""

        def run(job: Job) -> tuple[str, bool]:
            import torch

            from lmscope.tracing.engine import StageTimes, TraceCancelled, run_trace
            from lmscope.tracing.live import LiveModel

            loaded = self.model
            if loaded is None:
                raise NoModelError("no model is loaded: load one first (lmscope/loadModel)")
            started = time.perf_counter()
            # Stages are timed on the CPU only: on a GPU each mark would synchronise the device.
            device = torch.device(loaded.device)
            times = StageTimes(device) if device.type == "cpu" else None
            try:
                data = run_trace(
                    loaded,
                    prompt,
                    options,
                    progress=job.report,
                    should_cancel=job.cancel.is_set,
                    times=times,
                )
            except TraceCancelled:
                release_failed_work(None)
                raise JobCancelled("trace cancelled") from None
            except BaseException as exc:
                # Out of memory, a CUDA error, a bug: drop what the engine held (its frames
                # hang off the traceback) before the error travels to the client.
                release_failed_work(exc)
                raise
            finally:
                _free_device_memory()
            if job.cancel.is_set():
                # Cancelled after the last layer's check (projections run after it): the user
                # asked for no trace, so none is kept or saved.
                raise JobCancelled("trace cancelled")
            traced = time.perf_counter()
            trace = Trace(data, LiveModel(loaded, data.tokens.ids.tolist()))
            # Cached first: a failed save (disk full, read-only folder) loses no work.
            handle = self.traces.add(trace, None)
            self.note_latest(folder if save_path is None else trace_folder(save_path), handle)
            stages = _stages_text(times)
            if save_path is None:
                log.info(
                    "traced %d tokens in %.0f ms%s",
                    len(data.tokens.ids),
                    1e3 * (traced - started),
                    stages,
                )
                return handle, False
            try:
                trace.save(save_path)
            except TraceFileError as exc:
                raise TraceNotSavedError(
                    f"{exc}; the trace is kept in memory as {handle}: save it elsewhere", handle
                ) from None
            self.traces.set_path(handle, save_path)
            log.info(
                "traced %d tokens in %.0f ms%s, saved in %.0f ms",
                len(data.tokens.ids),
                1e3 * (traced - started),
                stages,
                1e3 * (time.perf_counter() - traced),
            )
            return handle, True

        if isinstance(prompt, str):
            check_prompt(prompt)
            description = prompt[:60]
        else:
            description = f"chat of {len(prompt)} messages: {prompt[-1].content[:40]}"
        check_generate(options.generate, options.seed)
        if save_path is not None:
            check_save_path(save_path)
        return Job("trace", run, description=description)

    def causal_job(self, handle: str, description: str, run: Callable[[Trace, Job], Any]) -> Job:
        """A job running a causal check (`lmscope.causal`) of trace `handle`: `run(trace, job)`
        on the worker, with the trace's own model or the loaded one when it made the trace (a
        different loaded model is refused, naming both); cancelled between layers."""
        trace = self.traces.get(handle)

        def work(job: Job) -> Any:
            from lmscope.causal.ablate import AblationCancelled

            live, notes = self.live_for(trace)
            if live is None or not live.has_prompt:
                needs = f"{description} needs the model: load {trace.data.model.name}"
                raise NeedsModelError("; ".join(notes) or needs)
            try:
                return run(Trace(trace.data, live), job)
            except AblationCancelled:
                raise JobCancelled(f"{description} cancelled") from None

        return Job("causal", work, description=description)

    def save_trace(self, handle: str, path: Path) -> Path:
        """Write a held trace to `path` (atomically); the handle then names that file."""
        check_save_path(path)
        trace = self.traces.get(handle)
        trace.save(path)
        self.traces.set_path(handle, path)
        self.note_latest(trace_folder(path), handle)
        return path

    def open_trace(self, path: Path) -> str:
        handle = self.traces.add(Trace(read_trace(path)), path)
        self.note_latest(trace_folder(path), handle)
        return handle

    # --- the context of hover cards ----------------------------------------------------------
    def note_latest(self, folder: Path | str | None, handle: str) -> None:
        """`handle` is now the latest trace of `folder` (None: of no folder) and of any."""
        if folder is not None:
            self._latest[str(folder)] = handle
        self._latest[""] = handle

    def latest_for(self, document: Path | None) -> str | None:
        """The latest trace still held of the document's folder, of the folder above it (a
        prompt file beside its traces/ folder), or of any folder."""
        keys = [] if document is None else [str(document.parent), str(document.parent.parent)]
        for key in [*keys, ""]:
            handle = self._latest.get(key)
            if handle is not None and self.traces.holds(handle):
                return handle
        return None

    def live_for(self, trace: Trace | None) -> tuple[LiveQueries | None, list[str]]:
        """What answers a card's model questions about `trace`: its own live model, else the
        loaded model when it made the trace (or with no prompt when there is no trace), and
        notes on why the loaded model is not used."""
        if trace is not None and trace.live is not None:
            return trace.live, []
        from lmscope.tracing.live import queries_for

        return queries_for(self.model, None if trace is None else trace.data)


def _stages_text(times: Any) -> str:
    """A trace's stage times in ms, as `lmscope bench` splits them, for the log: " (forward
    750, attention 918, ...)"; "" when they were not timed."""
    if times is None or not times.seconds:
        return ""
    return " (" + ", ".join(f"{k} {1e3 * v:.0f}" for k, v in times.seconds.items()) + ")"


def trace_folder(path: Path) -> Path:
    """The folder a saved trace belongs to: the prompt's folder when saved in its traces/."""
    return path.parent.parent if path.parent.name == "traces" else path.parent


def release_failed_work(exc: BaseException | None) -> None:
    """Free what a failed job held: the locals of every finished frame on the exception's
    traceback (activations, attention probabilities), then cycles, then the GPU cache."""
    if exc is not None:
        traceback.clear_frames(exc.__traceback__)
    gc.collect()
    _free_device_memory()


def _free_device_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
