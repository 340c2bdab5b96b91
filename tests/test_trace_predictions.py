"""A trace's predictions come from the final normed states, a block of rows at a time, without
the forward's [n, V] logits; they are the model's own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lmscope.attribution import budget
from lmscope.tracing.capture import run_forward
from lmscope.tracing.engine import run_trace
from tests.conftest import FAMILIES, TINY_PROMPT, build_tiny


def columns_per_block(monkeypatch, n: int, d: int, columns: int) -> None:
    """Predictions scored `columns` tokens of the vocabulary a block, for n positions of
    width d (the projection budget sets it)."""
    small = dataclasses.replace(budget.CPU, projection_bytes=8 * (n + d) * columns)
    monkeypatch.setattr(budget, "CPU", small)


@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_equal_the_top_of_the_models_full_logits(family, monkeypatch):
    loaded = build_tiny(family)
    n = len(loaded.tokenizer(TINY_PROMPT)["input_ids"]) + 1  # with a BOS, at most
    d = loaded.model.get_output_embeddings().weight.shape[1]
    columns_per_block(monkeypatch, n, d, 37)  # several blocks, the last one short
    data = run_trace(loaded, TINY_PROMPT)
    ids = torch.tensor(data.tokens.ids.tolist())
    logits = run_forward(loaded.model, ids)  # [n, V], after the trace: its hook is gone
    assert logits.shape == (len(ids), loaded.model.get_output_embeddings().weight.shape[0])
    top = torch.softmax(logits, -1).topk(data.predictions.ids.shape[1], dim=-1)
    np.testing.assert_array_equal(data.predictions.ids, top.indices.numpy())
    np.testing.assert_allclose(data.predictions.probs, top.values.numpy(), atol=1e-6)


def test_the_forward_of_a_trace_makes_logits_for_the_last_position_only():
    loaded = build_tiny("llama")
    shapes = []
    head = loaded.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    try:
        run_trace(loaded, TINY_PROMPT)
    finally:
        handle.remove()
    assert shapes == [(1, 1, head.weight.shape[0])]  # the forward's one row, nothing else
