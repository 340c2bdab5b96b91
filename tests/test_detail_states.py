"""What a trace keeps of each layer (tracing/capture.py, tracing/layers.py): the attention
probabilities in the model's dtype; for the detail stages the FFN's input in place of its wider
activations, recomputed for the rows read, and, once the routes are known, only the token rows
of the detailed nodes. None of it changes what the file stores."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from lmscope.models.adapter import ArchitectureAdapter, adapter_for
from lmscope.traces.experts import EXPERTS_KEY
from lmscope.tracing import engine
from lmscope.tracing.capture import capture_layers, recompute_activations
from lmscope.tracing.engine import TraceOptions, run_trace
from lmscope.tracing.layers import DetailRows, LayerState, attribute_layer, narrow_states
from lmscope.tracing.live import LiveModel
from lmscope.tracing.tokens import tokenize
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny

NO_FFN_MODULE = {"opt", "bloom"}  # their FFN is inline in the layer: activations are kept


def captured_layers(loaded, adapter: ArchitectureAdapter | None = None):
    adapter = adapter or adapter_for(loaded.model)
    ids = torch.tensor(tokenize(loaded, TINY_PROMPT, True, adapter.context_length))
    layers = []
    with torch.inference_mode(), capture_layers(adapter, layers.append):
        loaded.model(input_ids=ids[None], use_cache=False)
    return adapter, layers


@pytest.mark.parametrize("family", FAMILIES)
def test_recomputed_activations_are_the_forwards(family):
    adapter, layers = captured_layers(build_tiny(family))
    dense = [c for c in layers if c.moe is None]
    if family in NO_FFN_MODULE:
        assert dense and all(c.ffn_input is None for c in dense)
        return
    if not dense:  # every layer a mixture of experts: no dense neurons to recompute
        assert all(c.ffn_input is None for c in layers)
        return
    for captured in dense:
        assert captured.ffn_input is not None
        n = len(captured.ffn_act)
        # all rows: the forward's own product shapes, so the very same numbers
        everything = recompute_activations(adapter, captured.layer, captured.ffn_input)
        assert torch.equal(everything, captured.ffn_act)
        scale = float(captured.ffn_act.abs().max())
        for rows in ([n - 1], [0, n // 2], list(range(1, n, 2))):
            at = torch.tensor(rows)
            some = recompute_activations(adapter, captured.layer, captured.ffn_input[at])
            assert some.shape == (len(rows), captured.ffn_act.shape[1])
            torch.testing.assert_close(some, captured.ffn_act[at], rtol=0, atol=1e-6 * scale)


def test_a_cpu_layer_s_state_stays_where_it_is():
    """Only a GPU layer's state waits in host memory (`LayerState.to_host`; tests/test_cuda.py
    checks that path); a CPU one is already there."""
    _adapter, layers = captured_layers(build_tiny("llama"))
    state = LayerState.compact(layers[0], torch.float32)
    assert state.to_host() == (state, None) and state.home is None and state.copied is None
    rows = state.keep_rows(torch.tensor([0, 2]))
    assert torch.equal(rows.resid_out, state.resid_out[[0, 2]])


@pytest.mark.parametrize("family", ["llama", "gemma2", "opt", "mixtral"])
def test_states_held_on_the_host_until_the_routes_trace_the_same(family, monkeypatch):
    """The GPU path of `LayerState.to_host` played on the CPU (copies, no CUDA event): every
    layer's state is a host copy when the routes are known, a layer's input shared with the
    previous output there too, each waited for once; the trace is the one made without."""
    from lmscope.tracing import layers

    loaded = build_tiny(family)
    options = TraceOptions(detail="all")
    kept = run_trace(loaded, TINY_PROMPT, options)
    waits: list[int] = []

    class Queued:  # stands in for the CUDA event behind a layer's copies
        def synchronize(self) -> None:
            waits.append(1)

    monkeypatch.setattr(layers, "_waits_on_host", lambda device: True)
    monkeypatch.setattr(layers, "_copies_queued", lambda device: Queued())
    held: list[LayerState] = []
    narrow = engine.narrow_states
    monkeypatch.setattr(engine, "narrow_states", lambda s, n: held.extend(s) or narrow(s, n))
    moved = run_trace(loaded, TINY_PROMPT, options)
    assert len(held) == loaded.model.config.num_hidden_layers == len(waits)
    assert all(state.home == torch.device("cpu") for state in held)
    assert all(later.resid_in is earlier.resid_out for earlier, later in itertools.pairwise(held))
    for table in ("edges", "neurons", "projections"):
        ours, theirs = getattr(moved, table), getattr(kept, table)
        for name, value in vars(ours).items():
            np.testing.assert_array_equal(value, getattr(theirs, name), err_msg=f"{table}.{name}")


def test_a_layer_keeps_the_narrower_of_its_ffn_input_and_its_activations():
    """Keeping x̂ [n, d] saves memory only where d < d_ffn; otherwise the activations stay."""
    _adapter, layers = captured_layers(build_tiny("llama"))  # d 48 < d_ffn 96
    wide = LayerState.compact(layers[0], torch.float32)
    assert wide.ffn_act is None and wide.ffn_input is layers[0].ffn_input
    d = layers[0].ffn_input.shape[1]
    narrow = dataclasses.replace(layers[0], ffn_act=layers[0].ffn_act[:, :d])  # d_ffn = d
    kept = LayerState.compact(narrow, torch.float32)
    assert kept.ffn_input is None and kept.ffn_act is narrow.ffn_act


def kept_states(monkeypatch) -> list[LayerState]:
    kept: list[LayerState] = []
    compact = LayerState.compact
    monkeypatch.setattr(
        LayerState, "compact", lambda c, d, p=None: kept.append(compact(c, d, p)) or kept[-1]
    )
    return kept


@pytest.mark.parametrize("family", ["llama", "gemma2", "gptj", "phi3"])
def test_neurons_from_the_kept_ffn_input_equal_those_from_kept_activations(family, monkeypatch):
    loaded = build_tiny(family)
    options = TraceOptions(detail="all")
    kept = kept_states(monkeypatch)
    from_input = run_trace(loaded, TINY_PROMPT, options)
    assert kept and all(s.ffn_act is None for s in kept)
    assert {tuple(s.ffn_input.shape[1:]) for s in kept} == {(loaded.model.config.hidden_size,)}
    monkeypatch.setattr(ArchitectureAdapter, "ffn_block", lambda _self, _layer: None)
    kept.clear()
    from_act = run_trace(loaded, TINY_PROMPT, options)
    assert kept and all(s.ffn_act is not None and s.ffn_input is None for s in kept)
    ours, theirs = from_input.neurons, from_act.neurons
    assert len(ours.position) > 0
    np.testing.assert_array_equal(ours.layer, theirs.layer)
    np.testing.assert_array_equal(ours.position, theirs.position)
    np.testing.assert_array_equal(ours.index, theirs.index)
    np.testing.assert_allclose(ours.contribution, theirs.contribution, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.activation, theirs.activation, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.rest_contribution, theirs.rest_contribution, atol=1e-6)


def keep_every_row(states: list[LayerState], nodes) -> DetailRows:
    n = len(states[0].resid_out)
    return DetailRows(list(states), set(nodes), np.arange(n, dtype=np.int32))


@pytest.mark.parametrize("family", ["llama", "gemma2", "gptj", "opt", "mixtral", "qwen2_moe"])
@pytest.mark.parametrize("detail", ["route", "all"])
def test_the_detail_from_narrowed_states_is_the_detail_from_every_row(family, detail, monkeypatch):
    loaded = build_tiny(family)
    options = TraceOptions(detail=detail, detail_threshold=0.2)
    narrowed: list[DetailRows] = []

    def recording(states, nodes):
        n = len(states[0].resid_out)
        rows = narrow_states(states, nodes)
        narrowed.append(rows)
        assert states == []  # the whole states are let go
        assert len(rows.positions) == len({node.position for node in nodes}) <= n
        assert all(len(s.resid_out) == len(rows.positions) for s in rows.states)
        return rows

    monkeypatch.setattr(engine, "narrow_states", recording)
    small = run_trace(loaded, TINY_PROMPT, options)
    monkeypatch.setattr(engine, "narrow_states", keep_every_row)
    whole = run_trace(loaded, TINY_PROMPT, options)
    assert narrowed
    for table in ("neurons", "projections"):
        ours, theirs = getattr(small, table), getattr(whole, table)
        for name, value in vars(ours).items():
            np.testing.assert_array_equal(value, getattr(theirs, name), err_msg=f"{table}.{name}")
    assert (EXPERTS_KEY in small.extra) == (EXPERTS_KEY in whole.extra)
    if EXPERTS_KEY in small.extra:
        ours_e, theirs_e = small.extra[EXPERTS_KEY], whole.extra[EXPERTS_KEY]
        assert ours_e.keys() == theirs_e.keys()
        for key in ours_e:
            np.testing.assert_array_equal(np.asarray(ours_e[key]), np.asarray(theirs_e[key]))


def test_a_route_through_few_positions_keeps_few_rows(monkeypatch):
    """On a prompt longer than its route's reach, the narrowed states hold fewer rows than
    there are tokens (the point of narrowing)."""
    loaded = build_tiny("llama")
    prompt = " ".join([TINY_PROMPT] * 3)
    sizes: list[tuple[int, int]] = []

    def recording(states, nodes):
        n = len(states[0].resid_out)
        rows = narrow_states(states, nodes)
        sizes.append((len(rows.positions), n))
        return rows

    monkeypatch.setattr(engine, "narrow_states", recording)
    data = run_trace(loaded, prompt, TraceOptions(detail_threshold=0.3))
    ((kept, n),) = sizes
    assert n == len(data.tokens.ids)
    stored = set(data.projections.position.tolist()) | set(data.neurons.position.tolist())
    assert kept == len(stored) < n


def bf16_tiny(family: str):
    loaded = build_tiny(family)
    loaded.model.to(torch.bfloat16)
    return dataclasses.replace(loaded, dtype=torch.bfloat16)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gptj"])
def test_attention_probabilities_stay_in_the_models_dtype_and_attribute_the_same(family):
    """A bf16 model's [H, n, n] probabilities are not copied to float32 (the biggest capture);
    the attention step reads them a chunk at a time, to the same contributions."""
    adapter, layers = captured_layers(bf16_tiny(family))
    for captured in layers:
        assert captured.attn_probs.dtype == torch.bfloat16
        ours = attribute_layer(adapter, captured, keep_above=-1.0)
        wide = dataclasses.replace(captured, attn_probs=captured.attn_probs.float())
        theirs = attribute_layer(adapter, wide, keep_above=-1.0)
        assert torch.equal(ours.edge_target, theirs.edge_target)
        assert torch.equal(ours.edge_source, theirs.edge_source)
        assert torch.equal(ours.edge_heads, theirs.edge_heads)


def test_live_attention_queries_of_a_bf16_model_answer_in_float32():
    loaded = bf16_tiny("llama")
    data = run_trace(loaded, TINY_PROMPT)
    live = LiveModel(loaded, [int(i) for i in data.tokens.ids])
    _adapter, layers = captured_layers(loaded)
    pattern = live.attention_pattern(1, 2)
    assert pattern.dtype == np.float32
    np.testing.assert_array_equal(pattern, layers[1].attn_probs[2].float().numpy())
    n = len(data.tokens.ids)
    heads = live.edge_heads(1, n - 1, 0)
    assert [h["attention"] for h in heads] == layers[1].attn_probs[:, n - 1, 0].float().tolist()
    output, residual = live.head_output(1, 2, n - 1)
    assert output.dtype == torch.float32 and output.shape == residual.shape
    assert torch.isfinite(output).all()


def test_activations_are_recomputed_under_the_models_lock(monkeypatch):
    """The recompute runs the model's own FFN modules: a live query's capture hooks on them
    (another thread) must not see those rows, nor the recompute see that query's pass."""
    from lmscope.tracing import layers

    loaded = build_tiny("llama")
    held: list[bool] = []
    recompute = layers.recompute_activations

    def checking(adapter, layer, normed):
        held.append(loaded.lock._is_owned())  # type: ignore[attr-defined]
        return recompute(adapter, layer, normed)

    monkeypatch.setattr(layers, "recompute_activations", checking)
    run_trace(loaded, TINY_PROMPT, TraceOptions(detail="all"))
    assert held and all(held)
