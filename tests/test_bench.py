"""`lmscope bench`: the dense reference agrees with lmscope, the peak-memory probe sees an
allocation, and the command writes every figure the README and the JSON promise (tiny models;
timings are reported, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from lmscope.benchmark import run as bench_run
from lmscope.benchmark.dense import dense_bytes, dense_layer, max_abs_difference
from lmscope.benchmark.memory import PeakMemory, in_use_bytes
from lmscope.models.adapter import adapter_for
from lmscope.tracing.capture import capture_layers, run_forward
from lmscope.tracing.layers import attribute_layer
from lmscope.tracing.tokens import tokenize
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny, save_tiny_folder

JSON_KEYS = {
    "tokens",
    "forward_ms",
    "trace_ms",
    "dense_ms",
    "trace_extra_mb",
    "dense_extra_mb",
    "route_ms",
    "open_ms",
    "file_mb",
    "max_abs_diff",
}


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_reference_gives_lmscope_s_contributions(family):
    loaded = build_tiny(family)
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    gaps: list[float] = []

    def on_layer(captured) -> None:
        sparse = attribute_layer(adapter, captured, keep_above=-1.0)
        dense = dense_layer(adapter, captured)
        assert dense.heads.shape == (len(ids), len(ids), adapter.n_heads)
        gaps.append(max_abs_difference(dense, sparse))

    with capture_layers(adapter, on_layer):
        run_forward(loaded.model, ids)
    assert len(gaps) == adapter.n_layers
    assert max(gaps) < 1e-5


def test_dense_difference_needs_every_causal_edge():
    loaded = build_tiny("llama")
    adapter = adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))

    def on_layer(captured) -> None:
        pruned = attribute_layer(adapter, captured, keep_above=0.05)
        with pytest.raises(ValueError, match="every causal edge"):
            max_abs_difference(dense_layer(adapter, captured), pruned)

    with capture_layers(adapter, on_layer):
        run_forward(loaded.model, ids)


def test_dense_layer_size_is_lm_tt_s_n_n_h_d_tensor():
    # The figure: SmolLM2 (9 heads, width 576) at 1000 tokens needs ~20 GB per layer.
    assert dense_bytes(1000, 9, 576) / 1e9 == pytest.approx(20.7, abs=0.1)


def test_peak_memory_sees_an_allocation_held_inside_the_block():
    size = 256 * 2**20
    with PeakMemory(torch.device("cpu"), interval_s=0.001) as peak:
        before = in_use_bytes()
        block = torch.ones(size // 4)  # touched: resident
        deadline = time.monotonic() + 10
        while peak._peak < before + size // 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # wait for the sampler to see it (an event, bounded)
        del block
    assert peak.extra_bytes >= size // 2


def test_dense_reference_is_skipped_with_a_reason_when_it_cannot_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_run, "available_bytes", lambda _device: 1024)
    report = bench_run.run_bench(build_tiny("llama"), [6], repeats=1, cold_start=False)
    (result,) = report.lengths
    assert result.dense_ms is None and result.max_abs_diff is None
    assert result.dense_note is not None and "needs" in result.dense_note
    assert "dense reference skipped" in bench_run.format_report(report)


@pytest.mark.slow  # spawns daemons, traces several lengths
def test_bench_command_prints_the_table_and_writes_every_figure(tmp_path):
    folder = save_tiny_folder("llama", tmp_path / "tiny-llama")
    out = tmp_path / "bench.json"
    env = {**os.environ, "LMSCOPE_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "lmscope", "bench", "--model", str(folder), "--lengths", "6,12",
         "--repeats", "2", "--json", str(out), "--quiet", "--responsiveness", "40"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "x fwd" in result.stdout and "daemon cold start" in result.stdout
    assert "during a 40-token trace" in result.stdout
    report = json.loads(out.read_text())
    assert report["threads"] >= 1 and report["machine"]["cpu"]
    assert report["cold_start_s"] > 0
    assert [r["tokens"] for r in report["lengths"]] == [6, 12]
    for figures in report["lengths"]:
        assert figures.keys() >= JSON_KEYS
        assert figures["max_abs_diff"] < 1e-5
        assert figures["forward_ms"] > 0 and figures["trace_ms"] > 0 and figures["file_mb"] > 0
        assert set(figures["stages_ms"]) >= {"forward", "attention", "projections", "write"}
    answered = report["responsiveness"]
    assert answered["tokens"] == 40 and answered["trace_s"] > 0
    assert len(answered["hover_ms"]) == 7 and len(answered["status_ms"]) == 2  # all answered


def test_bench_command_refuses_bad_lengths():
    result = subprocess.run(
        [sys.executable, "-m", "lmscope", "bench", "--lengths", "10,-5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "expected positive token counts" in result.stderr


def test_every_shape_has_the_published_dimensions_and_known_family():
    from lmscope.benchmark.shapes import SHAPES, parameter_bytes

    billions = {
        name: parameter_bytes(s.config(), torch.bfloat16) / 2 / 1e9 for name, s in SHAPES.items()
    }
    assert 7.9 < billions["llama3-8b"] < 8.1  # 8.03 B
    assert 6.6 < billions["llama2-7b"] < 6.8  # 6.74 B
    assert 7.1 < billions["mistral-7b"] < 7.3  # 7.24 B
    assert 7.5 < billions["qwen2.5-7b"] < 7.7  # 7.62 B
    assert 0.13 < billions["smollm2"] < 0.14  # 135 M
    assert 0.12 < billions["gpt2"] < 0.13  # 124 M


def test_a_shaped_model_traces_with_its_synthetic_tokenizer():
    from lmscope.benchmark.shapes import shaped_model

    loaded = shaped_model("gpt2", torch.float32, "cpu", bench_run.TEXT)
    prompt = bench_run.prompt_of_length(loaded, 40)
    ids = tokenize(loaded, prompt, True, 1024)
    assert len(ids) == 40 and len(set(ids)) > 20  # varied ids, no unknown words
    assert loaded.tokenizer.unk_token_id not in ids
    report = bench_run.run_bench(loaded, [12], repeats=1, dense=True, cold_start=False)
    (figures,) = report.lengths
    assert report.model["d_model"] == 768 and report.model["vocab_size"] == 50257
    assert figures.max_abs_diff < 1e-5


def test_bench_shape_refuses_unknown_names_and_what_does_not_fit(monkeypatch):
    from lmscope.benchmark import shapes
    from lmscope.errors import LmscopeError

    with pytest.raises(LmscopeError, match=r"unknown shape 'llama9'.*llama3-8b"):
        shapes.shaped_model("llama9", torch.float32, "cpu", "text")
    monkeypatch.setattr(shapes, "available_bytes", lambda _device: 2**30)
    with pytest.raises(LmscopeError, match=r"llama2-7b in bfloat16 needs 12\.6 GiB.*1\.0 GiB free"):
        shapes.shaped_model("llama2-7b", torch.bfloat16, "cpu", "text")
