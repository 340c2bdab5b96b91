"""`lmscope run` as a process: killed with SIGKILL after the k-th trace file appears, then run
again, it gives the table of an uninterrupted run and traces no prompt twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmscope.runs.table import load_run
from tests.conftest import TINY_PROMPT

pytestmark = pytest.mark.slow

WORDS = (TINY_PROMPT + " the war lasted").split()
N_PROMPTS = 40
KILL_AFTER = 3  # trace files on disk when the run is killed


def lmscope_run(source: Path, out: Path, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lmscope",
        "run",
        str(source),
        "--out",
        str(out),
        "--model",
        str(model),
        "--threads",
        "1",
    ]


def trace_files(out: Path) -> dict[str, int]:
    folder = out / "traces"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix == ".lmtrace"}


def test_a_killed_run_resumes_to_the_same_table_without_tracing_a_prompt_twice(
    model_folder, tmp_path
):
    source = tmp_path / "corpus.prompts.txt"
    source.write_text(
        "".join(" ".join(WORDS[i % 7 : i % 7 + 3 + i % 5]) + "\n" for i in range(N_PROMPTS))
    )
    full = subprocess.run(
        lmscope_run(source, tmp_path / "full", model_folder),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr

    process = subprocess.Popen(
        lmscope_run(source, tmp_path / "cut", model_folder),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(trace_files(tmp_path / "cut")) < KILL_AFTER:  # wait on the files themselves
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    before = trace_files(tmp_path / "cut")
    assert KILL_AFTER <= len(before) < N_PROMPTS

    resumed = subprocess.run(
        lmscope_run(source, tmp_path / "cut", model_folder),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming:" in resumed.stderr
    after = trace_files(tmp_path / "cut")
    assert len(after) == N_PROMPTS
    # Every trace file written before the kill is untouched: no prompt was traced twice.
    assert {name: after[name] for name in before} == before

    cut, whole = load_run(tmp_path / "cut"), load_run(tmp_path / "full")
    assert cut.components.equals(whole.components)
    assert cut.neurons.equals(whole.neurons)
    assert cut.prompts.drop(["seconds"]).equals(whole.prompts.drop(["seconds"]))
    assert (
        cut.info["counts"]
        == whole.info["counts"]
        == {"prompts": N_PROMPTS, "done": N_PROMPTS, "failed": 0, "skippedBadLines": 0}
    )
    assert not (tmp_path / "cut" / "parts").exists()
