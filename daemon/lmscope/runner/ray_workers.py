"""Trace a run's prompts on a Ray cluster: one actor per worker, each loading the model once.

`--ray auto` joins the cluster `ray start` made on this machine, or starts a local one with a
worker per core;
`--ray HOST:PORT` / `ray://HOST:PORT` joins that cluster. The driver (this process) keeps the
resume rule and every write (`corpus`): actors only trace and send back the `TraceData`. With
GPUs in the cluster each actor takes one (num_gpus=1, device "cuda"); otherwise one CPU each.

Ray is an optional extra (`pip install lmscope[ray]`), imported only here and only when asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lmscope.errors import LmscopeError
from lmscope.runner.corpus import TraceResult
from lmscope.runs.sources import RunPrompt

IN_FLIGHT_PER_ACTOR = 2  # one tracing, one queued: an actor never waits on the driver


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LmscopeError(
            "--ray needs Ray, an optional extra: pip install 'lmscope[ray]'"
        ) from None
    return ray


class TraceWorker:
    """The actor's class: the model loaded once, then one prompt per call."""

    def __init__(self, model: dict[str, Any], prepend_bos: bool, threads: int | None) -> None:
        from lmscope.models.loading import load_model
        from lmscope.tracing.engine import TraceOptions

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.loaded = load_model(**model)
        self.options = TraceOptions(prepend_bos=prepend_bos)

    def facts(self) -> tuple[dict[str, Any], dict[str, str]]:
        from lmscope.runner.local import versions
        from lmscope.runs.folder import model_wire

        return model_wire(self.loaded.facts), versions()

    def trace(self, prompt: RunPrompt) -> TraceResult:
        from lmscope.runner.local import trace_one

        return trace_one(self.loaded, prompt, self.options)


class RayBackend:
    """Prompts sharded over Ray actors; results as they finish."""

    def __init__(
        self,
        address: str,
        *,
        model: str,
        dtype: str | None = None,
        device: str = "cpu",
        adapter: str | None = None,
        prepend_bos: bool = True,
        workers: int | None = None,
    ) -> None:
        self.ray = ray = import_ray()
        self._started_here = not ray.is_initialized()
        if self._started_here:
            # address None: Ray's own "find a running cluster, else start one here"
            ray.init(address=None if address == "auto" else address, include_dashboard=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        count = workers or (gpus if gpus else cpus)
        spec = {"spec": model, "dtype": dtype, "device": "cuda" if gpus else device}
        if adapter is not None:
            spec["adapter"] = adapter
        actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(TraceWorker)
        # One torch thread per actor on CPUs: the actors already fill the cores.
        self.actors = [actor.remote(spec, prepend_bos, None if gpus else 1) for _ in range(count)]
        try:
            self._facts = ray.get(self.actors[0].facts.remote())
        except Exception as exc:
            self.close()
            raise LmscopeError(f"a Ray worker could not load the model: {_reason(exc)}") from None

    def facts(self) -> tuple[dict[str, Any], dict[str, str]]:
        return self._facts

    def trace_all(self, prompts: list[RunPrompt]) -> Iterator[TraceResult]:
        ray = self.ray
        queue = list(reversed(prompts))
        in_flight: dict[Any, Any] = {}  # object ref -> the actor tracing it

        def submit(actor: Any) -> None:
            if queue:
                in_flight[actor.trace.remote(queue.pop())] = actor

        for actor in self.actors:
            for _ in range(IN_FLIGHT_PER_ACTOR):
                submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor = in_flight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:
                raise LmscopeError(f"a Ray worker failed: {_reason(exc)}") from None
            submit(actor)
            yield result

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor)
        self.actors = []
        if self._started_here:
            self.ray.shutdown()


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
