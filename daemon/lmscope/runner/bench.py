"""`lmscope run --bench`: what a corpus run costs over tracing its prompts one by one, and
whether its memory stays flat.

In one process, on one loaded model: a warm-up trace; every prompt traced alone with `run_trace`
(nothing written), summed; then the whole run into the --out folder, timed end to end (trace
files, Parquet parts, run.json, compaction included), with the resident set size sampled after
each prompt. The figures: the ratio run / Σ single traces (the aim: ≤ 1.2), and the RSS growth
from the end of the first tenth of the run to its end, with the least-squares slope over the
second half in MiB per 100 prompts (flat: ≈ 0).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmscope.errors import LmscopeError
from lmscope.files import atomic_write_text
from lmscope.models.loading import LoadedModel
from lmscope.runner.corpus import RunSettings, run_corpus
from lmscope.runner.local import LocalBackend, source_of
from lmscope.runs.sources import RunSource
from lmscope.tracing.engine import TraceOptions, run_trace

_PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def bench_run(
    loaded: LoadedModel, source: RunSource, out: Path, settings: RunSettings, quiet: bool
) -> dict[str, Any]:
    """The figures of one benchmark run (see the module docstring)."""
    import torch

    if out.exists() and any(out.iterdir()):
        raise LmscopeError(f"--bench times a whole run: give a new or empty --out, not {out}")
    options = TraceOptions(prepend_bos=settings.prepend_bos)
    prompts = source.prompts
    run_trace(loaded, source_of(prompts[0]), options)  # warm-up: first-call costs
    single = 0.0
    for prompt in prompts:
        started = time.perf_counter()
        run_trace(loaded, source_of(prompt), options)
        single += time.perf_counter() - started
    samples: list[int] = []
    started = time.perf_counter()
    run_corpus(
        source,
        out,
        settings,
        lambda: LocalBackend(loaded, settings.prepend_bos),
        quiet=quiet,
        on_prompt=lambda: samples.append(resident_bytes()),
    )
    run_s = time.perf_counter() - started
    rss = np.asarray(samples, dtype=np.float64) / MIB  # [prompts]
    half = rss[len(rss) // 2 :]
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) * 100 if len(half) > 1 else 0.0
    first_tenth = max(1, len(rss) // 10) - 1
    return {
        "model": loaded.facts.name,
        "prompts": len(prompts),
        "threads": torch.get_num_threads(),
        "singleTracesS": round(single, 3),
        "runS": round(run_s, 3),
        "ratio": round(run_s / single, 3) if single > 0 else None,
        "rssMiB": {
            "afterFirstTenth": round(float(rss[first_tenth]), 1),
            "end": round(float(rss[-1]), 1),
            "max": round(float(rss.max()), 1),
            "growthMiB": round(float(rss[-1] - rss[first_tenth]), 1),
            "slopeMiBPer100PromptsSecondHalf": round(slope, 2),
        },
    }


def report(figures: dict[str, Any], json_path: Path | None) -> str:
    """The figures as text (and as JSON in `json_path`)."""
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(figures, indent=2) + "\n")
    rss = figures["rssMiB"]
    return "\n".join(
        [
            f"{figures['prompts']} prompts on {figures['model']} ({figures['threads']} threads)",
            f"  single traces, summed   {figures['singleTracesS']:9.2f} s",
            f"  the run, end to end     {figures['runS']:9.2f} s   ratio {figures['ratio']:.3f}",
            f"  resident memory         {rss['afterFirstTenth']:.1f} MiB after the first tenth"
            f" -> {rss['end']:.1f} MiB at the end ({rss['growthMiB']:+.1f} MiB; second half "
            f"{rss['slopeMiBPer100PromptsSecondHalf']:+.2f} MiB per 100 prompts)",
        ]
    )
