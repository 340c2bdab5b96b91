"""Run the benchmark: per prompt length, lmscope's trace against a plain forward pass and the
dense reference, with memory, file size, open and route times; then the daemon's cold start.

Every timed figure is the median of `repeats` runs after a warm-up at that length (for the dense
reference, the run that checks its agreement with lmscope). lmscope's peak memory is measured on
one warm run (after the warm-up, whose one-off costs such as loading the compiled loops belong
to the process, not to a trace), apart from the timed runs (the CPU sampler thread would cost
them time); the dense reference's on its first timed run (one run takes seconds, the sampler's
cost is noise).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmscope.__about__ import __version__
from lmscope.attribution.decompose import LayerContributions
from lmscope.benchmark.coldstart import cold_start_seconds
from lmscope.benchmark.dense import dense_bytes, dense_layer, max_abs_difference
from lmscope.benchmark.memory import PeakMemory, available_bytes
from lmscope.benchmark.responsiveness import Responsiveness, responsiveness
from lmscope.errors import LmscopeError
from lmscope.models.adapter import adapter_for
from lmscope.models.devices import input_device
from lmscope.models.loading import LoadedModel
from lmscope.traces.lmtrace import read_trace, write_trace
from lmscope.traces.trace import Trace
from lmscope.tracing.capture import LayerCapture, capture_layers, run_forward
from lmscope.tracing.engine import StageTimes, TraceOptions, run_trace
from lmscope.tracing.layers import attribute_layer
from lmscope.tracing.live import LiveModel
from lmscope.tracing.tokens import tokenize

DEFAULT_LENGTHS = (10, 50, 200, 1000)
MB = 2**20
# The dense reference runs only where its [n, n, H, d] layer fits in this share of free memory.
DENSE_MEMORY_SHARE = 0.7
VERIFY_MAX_TOKENS = 500  # verify_route is timed up to this length (its masks grow as n²)

# Plain English, repeated to any length: what the prompts of every length are cut from.
TEXT = (
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
    "Ships passing the rocky coast relied on its beam to find the harbour safely. One winter "
    "night a storm knocked out the power across the island, and the keeper had to turn the "
    "great lens by hand until morning, counting the seconds between each flash so that the "
    "captains would still recognise the signal. "
)


@dataclass
class LengthResult:
    """One prompt length's figures (times in milliseconds, sizes in MiB)."""

    tokens: int
    forward_ms: float
    trace_ms: float
    stages_ms: dict[str, float]
    trace_extra_mb: float
    dense_ms: float | None
    dense_extra_mb: float | None
    dense_note: str | None
    max_abs_diff: float | None
    file_mb: float
    open_ms: float
    route_ms: float
    edges: int
    detail_nodes: int
    # verify_route at the default τ (zero ablation, 5 random sets) on the live trace; None past
    # VERIFY_MAX_TOKENS (its masks are [H, n, n] per layer).
    verify_ms: float | None = None

    @property
    def ratio_forward(self) -> float:
        return self.trace_ms / self.forward_ms

    @property
    def ratio_verify(self) -> float | None:
        """verify_route's cost in forward passes (a few: one per random set, plus two)."""
        return None if self.verify_ms is None else self.verify_ms / self.forward_ms

    @property
    def ratio_dense(self) -> float | None:
        return None if self.dense_ms is None else self.dense_ms / self.trace_ms


@dataclass
class BenchReport:
    machine: dict[str, Any]
    threads: int
    model: dict[str, Any]
    options: dict[str, Any]
    cold_start_s: float | None
    lengths: list[LengthResult] = field(default_factory=list)
    responsiveness: Responsiveness | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON document of `lmscope bench --json`."""
        return {
            "lmscope_version": __version__,
            "machine": self.machine,
            "threads": self.threads,
            "model": self.model,
            "options": self.options,
            "cold_start_s": self.cold_start_s,
            "lengths": [asdict(r) for r in self.lengths],
            "responsiveness": None if self.responsiveness is None else asdict(self.responsiveness),
        }


def machine_description(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        total_kb = next((int(line.split()[1]) for line in f if line.startswith("MemTotal:")), 0)
    description = {
        "cpu": cpu,
        "cpu_count": _cpu_count(),
        "memory_gb": round(total_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
        description["gpu_memory_gb"] = round(
            torch.cuda.get_device_properties(device).total_memory / 2**30, 1
        )
    return description


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def prompt_of_length(loaded: LoadedModel, n_tokens: int) -> str:
    """A prompt of about `n_tokens` tokens with BOS (the trace reports the exact count)."""
    bos = 1 if loaded.tokenizer.bos_token_id is not None else 0
    want = max(1, n_tokens - bos)
    text = TEXT
    ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    while len(ids) < want:
        text += TEXT
        ids = loaded.tokenizer.encode(text, add_special_tokens=False)
    return str(loaded.tokenizer.decode(ids[:want]))


def _median_ms(run: Callable[[], Any], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Bench:
    """The measurements of one loaded model."""

    def __init__(self, loaded: LoadedModel, repeats: int, workdir: Path, progress) -> None:
        self.loaded = loaded
        self.adapter = adapter_for(loaded.model)
        self.device = input_device(loaded.model)
        self.repeats = repeats
        self.workdir = workdir
        self.progress = progress

    # --- lmscope -------------------------------------------------------------------------------
    def trace_once(self, prompt: str, times: StageTimes | None = None) -> tuple[Any, Path]:
        data = run_trace(self.loaded, prompt, TraceOptions(), times=times)
        path = self.workdir / "bench.lmtrace"
        write_trace(data, path)
        if times is not None:
            times.mark("write")
        return data, path

    def ids(self, prompt: str) -> torch.Tensor:
        return torch.tensor(
            tokenize(self.loaded, prompt, True, self.adapter.context_length), dtype=torch.long
        )

    # --- dense reference -----------------------------------------------------------------------
    def dense_once(self, ids: torch.Tensor) -> None:
        def on_layer(captured: LayerCapture) -> None:
            dense_layer(self.adapter, captured)

        with capture_layers(self.adapter, on_layer):
            run_forward(self.loaded.model, ids)

    def dense_difference(self, ids: torch.Tensor) -> float:
        worst = [0.0]

        def on_layer(captured: LayerCapture) -> None:
            sparse: LayerContributions = attribute_layer(self.adapter, captured, keep_above=-1.0)
            worst[0] = max(
                worst[0], max_abs_difference(dense_layer(self.adapter, captured), sparse)
            )

        with capture_layers(self.adapter, on_layer):
            run_forward(self.loaded.model, ids)
        return worst[0]

    def dense_fits(self, n: int) -> str | None:
        need = dense_bytes(n, self.adapter.n_heads, self.adapter.d_model)
        free = available_bytes(self.device)
        if need > DENSE_MEMORY_SHARE * free:
            return (
                f"skipped: one layer's [n, n, H, d] needs {need / 2**30:.1f} GiB, "
                f"{free / 2**30:.1f} GiB free"
            )
        return None

    # --- one length ----------------------------------------------------------------------------
    def length(self, n_tokens: int, dense: bool) -> LengthResult:
        prompt = prompt_of_length(self.loaded, n_tokens)
        ids = self.ids(prompt)
        n = len(ids)
        say = self.progress
        say(f"{n} tokens: forward")
        run_forward(self.loaded.model, ids)  # warm-up
        forward_ms = _median_ms(
            lambda: run_forward(self.loaded.model, ids), self.repeats, self.device
        )

        say(f"{n} tokens: trace")
        data, path = self.trace_once(prompt)  # warm-up: one-off costs (the compiled loops' load)
        del data
        with PeakMemory(self.device) as peak:  # a warm trace's working memory
            data, path = self.trace_once(prompt)
        del data
        stage_runs: list[dict[str, float]] = []

        def timed_trace() -> None:
            times = StageTimes(self.device)
            self.trace_once(prompt, times)
            stage_runs.append(times.seconds)

        trace_ms = _median_ms(timed_trace, self.repeats, self.device)
        stages = {
            stage: statistics.median(run.get(stage, 0.0) for run in stage_runs) * 1000
            for stage in stage_runs[0]
        }

        verify_ms = None
        if n <= VERIFY_MAX_TOKENS:
            say(f"{n} tokens: verify route")
            live = Trace(read_trace(path), LiveModel(self.loaded, ids.tolist()))
            verify_ms = _median_ms(live.verify_route, self.repeats, self.device)

        say(f"{n} tokens: open and route")
        file_mb = path.stat().st_size / MB
        open_ms = _median_ms(lambda: Trace(read_trace(path)), self.repeats, self.device)
        saved = Trace(read_trace(path))
        thresholds = iter([0.05 + 0.001 * k for k in range(self.repeats)])
        route_ms = _median_ms(lambda: saved.route(-1, next(thresholds)), self.repeats, self.device)
        detail = len(set(zip(saved.data.projections.node_kind, saved.data.projections.layer,
                             saved.data.projections.position)))  # fmt: skip

        dense_ms = dense_extra = diff = None
        note = None if dense else "skipped: --no-dense"
        if dense and note is None:
            note = self.dense_fits(n)
        if note is None:
            say(f"{n} tokens: dense reference")
            diff = self.dense_difference(ids)  # also the dense reference's warm-up
            with PeakMemory(self.device) as dense_peak:
                first_ms = _median_ms(lambda: self.dense_once(ids), 1, self.device)
            dense_extra = dense_peak.extra_bytes / MB
            rest = [
                _median_ms(lambda: self.dense_once(ids), 1, self.device)
                for _ in range(self.repeats - 1)
            ]
            dense_ms = statistics.median([first_ms, *rest])
        return LengthResult(
            tokens=n,
            forward_ms=forward_ms,
            trace_ms=trace_ms,
            stages_ms=stages,
            trace_extra_mb=peak.extra_bytes / MB,
            dense_ms=dense_ms,
            dense_extra_mb=dense_extra,
            dense_note=note,
            max_abs_diff=diff,
            file_mb=file_mb,
            open_ms=open_ms,
            route_ms=route_ms,
            edges=len(saved.data.edges.layer),
            detail_nodes=detail,
            verify_ms=verify_ms,
        )


def run_bench(
    loaded: LoadedModel,
    lengths: list[int],
    *,
    repeats: int = 3,
    dense: bool = True,
    cold_start: bool = True,
    responsiveness_tokens: int | None = None,
    progress: Callable[[str], None] = lambda _m: None,
    on_length: Callable[[LengthResult], None] = lambda _r: None,
) -> BenchReport:
    """Measure `loaded` at each prompt length; see the module docstring."""
    if repeats < 1:
        raise LmscopeError("repeats must be at least 1")
    adapter = adapter_for(loaded.model)
    device = input_device(loaded.model)
    report = BenchReport(
        machine=machine_description(device),
        threads=torch.get_num_threads(),
        model={
            "spec": loaded.spec,
            "name": loaded.name,
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "device": loaded.device,
            "n_layers": adapter.n_layers,
            "n_heads": adapter.n_heads,
            "d_model": adapter.d_model,
            "d_ffn": adapter.d_ffn,
            "vocab_size": adapter.vocab_size,
        },
        options={"repeats": repeats, "detail": TraceOptions().detail},
        cold_start_s=None,
    )
    with tempfile.TemporaryDirectory(prefix="lmscope-bench-") as tmp:
        bench = _Bench(loaded, repeats, Path(tmp), progress)
        for n in lengths:
            if n > adapter.context_length:
                progress(f"{n} tokens: skipped, the model's context is {adapter.context_length}")
                continue
            result = bench.length(n, dense)
            report.lengths.append(result)
            on_length(result)
    if cold_start:
        progress("daemon cold start")
        runs = [
            cold_start_seconds(loaded.spec, loaded.device, report.model["dtype"])
            for _ in range(min(repeats, 3))
        ]
        report.cold_start_s = statistics.median(runs)
    if responsiveness_tokens is not None:
        progress(f"hover and status during a {responsiveness_tokens}-token trace")
        prompt = prompt_of_length(loaded, responsiveness_tokens)
        report.responsiveness = responsiveness(
            loaded.spec, loaded.device, report.model["dtype"], prompt, responsiveness_tokens
        )
    return report


# --- the table -------------------------------------------------------------------------------
HEADER = (
    "tokens",
    "forward ms",
    "trace ms",
    "x fwd",
    "dense ms",
    "dense/trace",
    "trace +MB",
    "dense +MB",
    "file MB",
    "open ms",
    "route ms",
    "verify x fwd",
    "max |diff|",
)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def table_row(r: LengthResult) -> list[str]:
    return [
        str(r.tokens),
        _fmt(r.forward_ms, 1),
        _fmt(r.trace_ms, 0),
        _fmt(r.ratio_forward, 1),
        _fmt(r.dense_ms, 0),
        _fmt(r.ratio_dense, 1),
        _fmt(r.trace_extra_mb, 0),
        _fmt(r.dense_extra_mb, 0),
        _fmt(r.file_mb, 2),
        _fmt(r.open_ms, 1),
        _fmt(r.route_ms, 2),
        _fmt(r.ratio_verify, 1),
        "—" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}",
    ]


def format_report(report: BenchReport) -> str:
    rows = [list(HEADER)] + [table_row(r) for r in report.lengths]
    widths = [max(len(row[c]) for row in rows) for c in range(len(HEADER))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    m = report.machine
    where = m.get("gpu") or m["cpu"]
    out = [
        f"lmscope {__version__} bench · {report.model['name']} ({report.model['dtype']}, "
        f"{report.model['device']}) · {where} · {report.threads} threads · median of "
        f"{report.options['repeats']}",
        "",
        *lines,
        "",
        "trace stages (ms): "
        + " | ".join(
            f"{r.tokens}: "
            + ", ".join(f"{stage} {ms:,.0f}" for stage, ms in r.stages_ms.items() if ms >= 0.5)
            for r in report.lengths
        ),
    ]
    notes = [
        f"{r.tokens} tokens: dense reference {r.dense_note}" for r in report.lengths if r.dense_note
    ]
    out += notes
    if report.cold_start_s is not None:
        out.append(f"daemon cold start (process start -> model ready): {report.cold_start_s:.2f} s")
    if report.responsiveness is not None:
        out.append(report.responsiveness.line())
    return "\n".join(out)
