"""A trace's predictions come from the final normed states, a block of rows at a time, without
the forward's [n, V] logits; they are the model's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmscope.tracing import engine
from lmscope.tracing.capture import run_forward
from lmscope.tracing.engine import run_trace
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny


@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_equal_the_top_of_the_models_full_logits(family, monkeypatch):
    loaded = build_tiny(family)
    monkeypatch.setattr(engine, "PREDICTION_ROWS", 3)  # several blocks on a tiny prompt
    data = run_trace(loaded, TINY_PROMPT)
    ids = torch.tensor(data.tokens.ids.tolist())
    logits = run_forward(loaded.model, ids)  # [n, V], after the trace: its hook is gone
    assert logits.shape == (len(ids), loaded.model.get_output_embeddings().weight.shape[0])
    top = torch.softmax(logits, -1).topk(data.predictions.ids.shape[1], dim=-1)
    np.testing.assert_array_equal(data.predictions.ids, top.indices.numpy())
    np.testing.assert_allclose(data.predictions.probs, top.values.numpy(), atol=1e-6)


def test_the_forward_of_a_trace_makes_logits_for_the_last_position_only(monkeypatch):
    loaded = build_tiny("llama")
    monkeypatch.setattr(engine, "PREDICTION_ROWS", 4)
    shapes = []
    head = loaded.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    try:
        data = run_trace(loaded, TINY_PROMPT)
    finally:
        handle.remove()
    n, vocab = data.n_tokens, head.weight.shape[0]
    assert n > 4
    # the forward's one row, then the predictions' blocks: no call saw all n rows at once
    assert shapes[0] == (1, 1, vocab)
    assert [shape[1] for shape in shapes[1:]] == [min(4, n - start) for start in range(0, n, 4)]
