"""The engine on a CUDA device agrees with the CPU (skipped where no GPU is present, e.g. CI).

Run on a GPU machine with `python -m pytest tests/test_cuda.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lmscope.tracing.engine import TraceOptions, run_trace
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def on_device(family: str, dtype: torch.dtype = torch.float32):
    loaded = build_tiny(family)
    loaded.model.to("cuda", dtype)
    return dataclasses.replace(loaded, device="cuda:0", dtype=dtype)


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_trace_matches_the_cpu_trace(family):
    cpu = run_trace(build_tiny(family), TINY_PROMPT)
    gpu = run_trace(on_device(family), TINY_PROMPT)
    np.testing.assert_allclose(gpu.blocks.ffn, cpu.blocks.ffn, atol=1e-4)
    np.testing.assert_allclose(
        gpu.blocks.residual_attention, cpu.blocks.residual_attention, atol=1e-4
    )
    cpu_edges = set(zip(cpu.edges.layer, cpu.edges.target, cpu.edges.source))
    gpu_edges = set(zip(gpu.edges.layer, gpu.edges.target, gpu.edges.source))
    # Edges right at the 0.01 storage threshold may differ by rounding; the rest must match.
    common = cpu_edges & gpu_edges
    assert len(common) >= 0.95 * len(cpu_edges)
    np.testing.assert_array_equal(gpu.predictions.ids[:, 0], cpu.predictions.ids[:, 0])


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_half_precision_models_attribute_in_float32(family):
    data = run_trace(on_device(family, torch.bfloat16), TINY_PROMPT)
    assert np.isfinite(data.blocks.ffn).all()
    assert data.edges.head_contributions.dtype == np.float32
    per_target = np.zeros((data.model.n_layers, data.n_tokens))
    np.add.at(
        per_target, (data.edges.layer, data.edges.target), data.edges.head_contributions.sum(-1)
    )
    assert (per_target + data.blocks.residual_attention <= 1.0 + 1e-4).all()


def test_a_gpu_trace_holds_its_layer_states_on_the_host_and_traces_the_same(monkeypatch):
    """Until the routes are known a GPU layer's state waits in pinned host memory, a layer's
    input shared with the previous output there too; the rows the detail stages read come
    back to the GPU. The trace is the one made with every state kept on the GPU."""
    import itertools

    from lmscope.tracing import engine
    from lmscope.tracing.layers import LayerState

    loaded = on_device("llama", torch.bfloat16)
    options = TraceOptions(detail="all")
    held: list[LayerState] = []
    narrow = engine.narrow_states

    def recording(states, nodes):
        held.extend(states)
        rows = narrow(states, nodes)
        assert all(state.resid_out.device.type == "cuda" for state in rows.states)
        return rows

    monkeypatch.setattr(engine, "narrow_states", recording)
    on_host = run_trace(loaded, TINY_PROMPT, options)
    assert len(held) == loaded.model.config.num_hidden_layers
    assert all(s.resid_out.device.type == "cpu" and s.home.type == "cuda" for s in held)
    assert all(s.resid_out.is_pinned() for s in held)
    assert all(later.resid_in is earlier.resid_out for earlier, later in itertools.pairwise(held))
    monkeypatch.setattr(LayerState, "to_host", lambda self, shared=None: (self, None))
    on_gpu = run_trace(loaded, TINY_PROMPT, options)
    for table in ("edges", "neurons", "projections"):
        ours, theirs = getattr(on_host, table), getattr(on_gpu, table)
        for name, value in vars(ours).items():
            np.testing.assert_array_equal(value, getattr(theirs, name), err_msg=f"{table}.{name}")


def test_gpu_with_a_layer_offloaded_to_cpu_traces_like_the_cpu_model(tmp_path):
    from lmscope.models.loading import DeviceMap, load_model

    tiny = build_tiny("llama")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    n_layers = tiny.model.config.num_hidden_layers
    plan = {"model.embed_tokens": 0, "model.norm": 0, "model.rotary_emb": 0, "lm_head": 0}
    plan.update({f"model.layers.{i}": "cpu" if i == 1 else 0 for i in range(n_layers)})
    mapped = load_model(str(tmp_path), device_map=DeviceMap(plan))
    assert mapped.device == "cuda:0" and mapped.device_map["model.layers.1"] == "cpu"
    cpu = run_trace(load_model(str(tmp_path)), TINY_PROMPT)
    gpu = run_trace(mapped, TINY_PROMPT)
    np.testing.assert_allclose(gpu.blocks.ffn, cpu.blocks.ffn, atol=1e-4)
    np.testing.assert_allclose(
        gpu.blocks.residual_attention, cpu.blocks.residual_attention, atol=1e-4
    )
