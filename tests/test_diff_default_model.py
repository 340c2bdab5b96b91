"""IOI clean vs its "ABC" corruption on the embedded default model (SmolLM2-135M-Instruct), the
`make demo` diff: the three names replaced by three others, so the model has no repeated name to
copy. The prediction " Mary" collapses, and the L23 edge " Mary" -> " to" (the name mover
docs/method.md reports) is on the clean route only."""

from __future__ import annotations

import pytest

import lmscope
from lmscope.api import load_model
from lmscope.graph import ATTENTION_EDGE
from lmscope.traces.diff import ONLY_A

pytestmark = pytest.mark.default_model

IOI = "When Mary and John went to the store, John gave a drink to"
ABC = "When Alice and Bob went to the store, Carol gave a drink to"
MARY = 2  # position of " Mary" (BOS is 0)


@pytest.fixture(scope="module")
def ioi_vs_abc():
    model = load_model("default")
    return lmscope.trace(IOI, model=model), lmscope.trace(ABC, model=model)


def test_the_names_are_single_tokens_so_positions_align_one_to_one(ioi_vs_abc):
    clean, corrupted = ioi_vs_abc
    assert clean.n_tokens == corrupted.n_tokens == 15
    assert [corrupted.tokens[p] for p in (2, 4, 10)] == [" Alice", " Bob", " Carol"]


def test_ioi_abc_diff_loses_mary_and_her_late_name_mover_edge(ioi_vs_abc):
    clean, corrupted = ioi_vs_abc
    diff = clean.diff(corrupted)
    mary = next(t for t in diff.prediction.tokens if t.text == " Mary")
    assert mary.token_id == diff.prediction.top_a[0][0] and mary.p_a is not None
    assert mary.p_a > 0.5
    # B's stored top k does not hold " Mary": only the bound, and it is far below A's.
    assert mary.p_b is None and mary.below_b < mary.p_a / 10
    late = [
        e
        for e in diff.edges
        if e.kind == ATTENTION_EDGE
        and e.target.layer == 23
        and (e.source.position_a, e.target.position_a) == (MARY, clean.n_tokens - 1)
    ]
    assert late and all(e.membership == ONLY_A and e.delta < 0 for e in late)
