"""The daemon's state without the protocol: job order, cancellation, the bounded trace cache."""

from __future__ import annotations

import threading

import pytest

from lmscope.session import Job, JobCancelled, Session
from lmscope.traces.cache import TraceCache, UnknownHandleError, trace_bytes
from lmscope.traces.trace import Trace
from lmscope.tracing.engine import run_trace
from tests.conftest import TINY_PROMPT, build_tiny


@pytest.fixture(scope="module")
def tiny_trace() -> Trace:
    return Trace(run_trace(build_tiny("llama"), TINY_PROMPT))


def test_jobs_run_one_at_a_time_in_submission_order():
    session = Session()
    release = threading.Event()
    order: list[int] = []

    def step(number: int):
        def run(_job: Job) -> int:
            if number == 0:
                release.wait(30)
            order.append(number)
            return number

        return run

    jobs = [session.submit(Job("trace", step(n))) for n in range(4)]
    assert session.state == "tracing" or not jobs[0].future.done()
    release.set()
    assert [job.future.result(30) for job in jobs] == [0, 1, 2, 3]
    assert order == [0, 1, 2, 3]
    session.stop()


def test_a_queued_job_cancelled_never_runs():
    session = Session()
    gate = threading.Event()
    first = session.submit(Job("trace", lambda _job: gate.wait(30)))
    ran = []
    second = session.submit(Job("trace", lambda _job: ran.append(1)))
    session.cancel(second)
    gate.set()
    first.future.result(30)
    with pytest.raises(JobCancelled):
        second.future.result(30)
    assert ran == []
    session.stop()


def test_a_failing_job_reports_its_error_and_the_worker_goes_on():
    session = Session()

    def boom(_job: Job) -> None:
        raise MemoryError("simulated out of memory")

    failed = session.submit(Job("trace", boom))
    with pytest.raises(MemoryError):
        failed.future.result(30)
    assert session.submit(Job("trace", lambda _job: "ok")).future.result(30) == "ok"
    session.stop()


def test_the_trace_cache_evicts_the_least_recently_used_by_count(tiny_trace):
    cache = TraceCache(max_count=2, max_bytes=10**9)
    first, second = cache.add(tiny_trace), cache.add(tiny_trace)
    cache.get(first)  # first is now the most recently used
    third = cache.add(tiny_trace)
    assert cache.count == 2
    cache.get(first), cache.get(third)
    with pytest.raises(UnknownHandleError, match=second):
        cache.get(second)


def test_the_trace_cache_stays_within_its_byte_budget(tiny_trace):
    size = trace_bytes(tiny_trace)
    cache = TraceCache(max_count=100, max_bytes=3 * size)
    handles = [cache.add(tiny_trace) for _ in range(10)]
    assert cache.count == 3 and cache.bytes <= 3 * size
    assert cache.get(handles[-1]) is tiny_trace


def test_a_trace_bigger_than_the_budget_is_still_kept_alone(tiny_trace):
    cache = TraceCache(max_count=5, max_bytes=1)
    cache.add(tiny_trace)
    newest = cache.add(tiny_trace)
    assert cache.count == 1 and cache.get(newest) is tiny_trace


def test_a_trace_cancelled_after_its_last_layer_is_neither_kept_nor_saved(tmp_path):
    from lmscope.tracing.engine import TraceOptions

    session = Session()
    session.model = build_tiny("llama")
    path = tmp_path / "cancelled.lmtrace"
    job = session.trace_job(TINY_PROMPT, TraceOptions(), path)

    def cancel_once_the_layers_are_done(message: str, _fraction: float | None) -> None:
        # The engine checks for cancellation between layers only; projections come after.
        if "projection" in message:
            session.cancel(job)

    job.progress = cancel_once_the_layers_are_done
    session.submit(job)
    with pytest.raises(JobCancelled):
        job.future.result(60)
    assert not path.exists() and session.traces.count == 0
    session.stop()
