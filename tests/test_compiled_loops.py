"""The compiled CPU loops (lmscope.attribution.loops) and their torch forms compute the same
things, and both equal the literal formulas: overshoot corrections, ranks, top/bottom lists.

Every test runs each form: `torch_form` switches the loops off with LMSCOPE_LOOPS=torch.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lmscope.attribution import lens, loops, screen
from lmscope.attribution.proximity import EPSILON, scaled_parts_proximity
from lmscope.tracing.engine import run_trace
from tests.conftest import TINY_PROMPT, build_tiny


@pytest.fixture(params=["compiled", "torch"])
def form(request, monkeypatch):
    if request.param == "torch":
        monkeypatch.setenv(loops.FORCE_TORCH_ENV, "torch")
    else:
        monkeypatch.delenv(loops.FORCE_TORCH_ENV, raising=False)
        assert loops.available(), "numba is a dependency: the compiled loops must load"
    return request.param


def literal(whole, coef, vectors, scale=None):
    """Σ_d |y_d| − |y_d − z_d| in float64, z = coef · (D ⊙ v): [b, d], [b, P], [P, d]."""
    v = vectors.double()[None]
    if scale is not None:
        v = v * scale.double()[:, None, :]
    parts = coef.double()[:, :, None] * v  # [b, P, d]
    y = whole.double()[:, None, :]
    return (y.abs() - (y - parts).abs()).sum(-1).clamp_min(EPSILON)


def random_case(seed: int, b: int = 9, groups: int = 3, n: int = 17, d: int = 48):
    g = torch.Generator().manual_seed(seed)
    whole = (
        torch.randn(b, d, generator=g) * torch.logspace(-3, 2, d)[torch.randperm(d, generator=g)]
    )
    whole[0, :4] = 0.0  # exact zeros take the sign +1 path
    table = torch.randn(groups, n, d, generator=g) * 3.0
    return g, whole, table


@pytest.mark.parametrize("seed", range(3))
def test_grouped_parts_with_a_row_scale_equal_the_literal_sum(form, seed):
    g, whole, table = random_case(seed)
    used = 11  # parts read only the first `used` vectors of each group
    coef = torch.rand(len(whole), 3 * used, generator=g) ** 4
    coef[:, ::5] *= -2.0
    coef[2] = 0.0  # a row whose parts are all zero: floored, no correction
    scale = torch.rand(len(whole), whole.shape[1], generator=g) * 2 - 0.5  # some gains < 0
    got = scaled_parts_proximity(whole, coef, table, scale, used=used).double()
    expected = literal(whole, coef, table[:, :used].reshape(-1, whole.shape[1]), scale)
    norm = whole.abs().sum(-1, keepdim=True).double()
    assert ((got - expected).abs() / norm).max() < 1e-6
    assert (got[2] == torch.tensor(EPSILON).double()).all()


@pytest.mark.parametrize("first_row", [0, 4, 30])
def test_a_causal_mask_zeroes_the_future_sources_and_keeps_the_rest(form, first_row):
    """Row b is target first_row + b: its parts of sources j > first_row + b are 0, the others
    the unmasked proximities (floored as ever)."""
    g, whole, table = random_case(5, b=9, groups=3, n=17, d=48)
    used = 12
    coef = torch.rand(len(whole), 3 * used, generator=g) ** 4
    plain = scaled_parts_proximity(whole, coef, table, used=used)
    masked = scaled_parts_proximity(whole, coef, table, used=used, first_row=first_row)
    future = torch.arange(used)[None, :] > torch.arange(first_row, first_row + 9)[:, None]
    future = future[:, None, :].expand(9, 3, used).reshape(9, -1)  # [b, G·used]
    assert (masked[future] == 0).all()
    assert torch.equal(masked[~future], plain[~future])


def test_the_two_forms_give_the_same_proximities():
    _, whole, table = random_case(7, b=33, n=40, d=96)
    coef = torch.rand(33, 120) ** 3
    forms = {}
    for name in ("compiled", "torch"):
        with pytest.MonkeyPatch.context() as patch:
            if name == "torch":
                patch.setenv(loops.FORCE_TORCH_ENV, "torch")
            forms[name] = scaled_parts_proximity(whole, coef, table, used=40)
    torch.testing.assert_close(forms["compiled"], forms["torch"], rtol=1e-5, atol=1e-5)


def test_ranks_count_the_strictly_larger_scores_of_the_previous_row(form):
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 300, generator=g)
    scores[1, 40:60] = scores[1, 7]  # ties with a chosen token do not count
    rows = torch.tensor([1, -1, 0, 4])
    ids = torch.tensor([[7, 0, 299], [1, 2, 3], [5, 5, 6], [100, 200, 250]])
    got = lens.ranks_in_rows(scores, rows, ids)
    for p, row in enumerate(rows.tolist()):
        for q, token in enumerate(ids[p].tolist()):
            expected = -1 if row < 0 else int((scores[row] > scores[row, token]).sum())
            assert got[p, q].item() == expected


@pytest.mark.parametrize("vocab", [5, 40, 320, 1000, 1037])
def test_token_lists_are_the_exact_extremes(form, vocab):
    g = torch.Generator().manual_seed(vocab)
    scores = torch.randn(6, vocab, generator=g)
    scores[0] = 1.0  # every score equal
    scores[1, vocab // 2 :] = scores[1].max() + 1  # a tie across blocks at the top
    k = min(10, vocab)
    lists = lens.token_lists(scores, 10)
    assert lists.top_ids.shape == (6, k)
    for row in range(6):
        values = scores[row].numpy()
        top = sorted(range(vocab), key=lambda t: (-values[t], t))[:k]
        bottom = sorted(range(vocab), key=lambda t: (values[t], t))[:k]
        for ids, listed, expected in (
            (lists.top_ids, lists.top_logits, top),
            (lists.bottom_ids, lists.bottom_logits, bottom),
        ):
            np.testing.assert_array_equal(listed[row].numpy(), values[expected])
            chosen = ids[row].tolist()
            assert len(set(chosen)) == k  # distinct tokens, each with its listed score
            np.testing.assert_array_equal(values[chosen], listed[row].numpy())
            if row >= 2:  # no ties: the very tokens
                assert chosen == expected


def test_a_trace_is_the_same_with_either_form(monkeypatch):
    loaded = build_tiny("llama")
    compiled = run_trace(loaded, TINY_PROMPT)
    monkeypatch.setenv(loops.FORCE_TORCH_ENV, "torch")
    plain = run_trace(loaded, TINY_PROMPT)
    for name in ("layer", "target", "source"):
        np.testing.assert_array_equal(getattr(compiled.edges, name), getattr(plain.edges, name))
    np.testing.assert_allclose(
        compiled.edges.head_contributions, plain.edges.head_contributions, atol=1e-6
    )
    np.testing.assert_allclose(compiled.blocks.ffn, plain.blocks.ffn, atol=1e-6)
    np.testing.assert_array_equal(compiled.neurons.index, plain.neurons.index)
    np.testing.assert_array_equal(
        compiled.projections.top_prev_rank, plain.projections.top_prev_rank
    )
    np.testing.assert_array_equal(compiled.projections.top_ids, plain.projections.top_ids)


needs_screen = pytest.mark.skipif(
    not screen.available(torch.device("cpu")), reason="needs a CPU with bf16 matrix units"
)


def exact_scores(normed, with_bias, unembedding, bias):
    scores = normed @ unembedding.T
    return scores + with_bias[:, None].float() * bias[None]


def screened_recording_whole_rows(normed, with_bias, unembedding, bias):
    """A screen of the rows, and the list it fills with the rows it scores whole."""
    w_max = float(torch.linalg.vector_norm(unembedding.double(), dim=1).max()) * (1 + 2**-20)
    screened = screen.Screen(normed, with_bias, unembedding, bias, unembedding.bfloat16(), w_max)
    whole: list[int] = []
    scored_whole = screened._whole
    screened._whole = lambda rows: whole.extend(rows.tolist()) or scored_whole(rows)
    return screened, whole


@needs_screen
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("exact_rows", [0.0, 100.0])
@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_the_bf16_screen_gives_the_exact_lists_and_ranks(seed, exact_rows, weights, monkeypatch):
    """With no candidates past the buffers allowed, rows past them are scored whole; with
    plenty, the degenerate row's list is screened again with wider buffers and the deep
    token's rank counted from its band. The same exact lists and ranks either way, also for
    a bf16 model's unembedding (its exact scores: the float32 products of the bf16 weights,
    through one product over the candidates' union)."""
    monkeypatch.setattr(screen, "EXACT_ROWS", exact_rows)
    g = torch.Generator().manual_seed(seed)
    vocab, d, rows, k = 3000, 64, 40, 10
    unembedding = torch.randn(vocab, d, generator=g) * (1 + torch.rand(vocab, 1, generator=g))
    unembedding = unembedding.to(weights)
    bias = torch.randn(vocab, generator=g) * 0.1
    normed = torch.randn(rows, d, generator=g) * 3
    normed[5] = 0.0  # every score equal: more candidates than fit, scored whole
    with_bias = torch.rand(rows, generator=g) < 0.5
    with_bias[5] = False
    exact = exact_scores(normed, with_bias, unembedding.float(), bias)
    ranked_rows = torch.tensor([0, 1, 2, 3, 5, 7])
    chosen = exact[ranked_rows + 10].topk(k).indices  # other rows' top tokens: mostly in the tail
    chosen[3, 4] = exact[3].argsort()[vocab // 2]  # one deep in the bulk: that row scored whole
    screened, whole = screened_recording_whole_rows(normed, with_bias, unembedding, bias)
    lists = screened.lists(k)
    # the degenerate row only, unless screened again; every other row from its candidates
    assert whole == ([5] if exact_rows == 0 else [])
    expected = lens.token_lists(exact, k)
    tied = torch.arange(rows) == 5  # every score of the degenerate row ties: any k are right
    assert torch.equal(lists.top_ids[~tied], expected.top_ids[~tied])
    assert torch.equal(lists.bottom_ids[~tied], expected.bottom_ids[~tied])
    for ids in (lists.top_ids[5], lists.bottom_ids[5]):
        assert len(set(ids.tolist())) == k and (exact[5, ids] == 0).all()
    # The same float32 scores, summed in another order: a few ulps apart at most.
    torch.testing.assert_close(lists.top_logits, expected.top_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lists.bottom_logits, expected.bottom_logits, rtol=1e-6, atol=1e-6)
    whole.clear()
    ranks = screened.ranks(ranked_rows, chosen)
    # the row with a bulk token is ranked whole, or from its band
    assert (3 in whole) == (exact_rows == 0)
    assert torch.equal(ranks, lens.ranks_in_rows(exact, ranked_rows, chosen))
    assert ranks[3, 4] >= vocab // 2 - 1  # the bulk token ranks deep


@needs_screen
@pytest.mark.parametrize(
    ("candidates", "exact_rows"), [(screen.MAX_CANDIDATES, screen.EXACT_ROWS), (3, 0.0), (3, 1e3)]
)
def test_a_trace_with_the_screen_equals_one_without(candidates, exact_rows, monkeypatch):
    """Also where rows and ranks are left to whole rows (few candidates allowed, none past
    them), over several chunks: the ranks left over are counted after the last chunk; and
    where rows past their buffers are screened again and deep ranks counted from bands."""
    import dataclasses

    from lmscope.attribution import budget

    loaded = build_tiny("gpt2")  # lens rows and update rows, a LayerNorm before the unembedding
    monkeypatch.setattr(screen, "MIN_ROWS", 1)  # screen even the tiny model's few rows
    monkeypatch.setattr(screen, "MAX_CANDIDATES", candidates)
    monkeypatch.setattr(screen, "EXACT_ROWS", exact_rows)
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    few_rows = dataclasses.replace(budget.CPU, projection_bytes=2 * vocab * 7)  # 7 rows a chunk
    monkeypatch.setattr(budget, "CPU", few_rows)
    deferred: list[int] = []
    screened_ranks = screen.Screen.screened_ranks

    def recording(self, at_rows, chosen):
        ranks, full = screened_ranks(self, at_rows, chosen)
        deferred.append(len(full))
        return ranks, full

    monkeypatch.setattr(screen.Screen, "screened_ranks", recording)
    screened = run_trace(loaded, TINY_PROMPT)
    assert len(deferred) > 1  # several chunks ranked
    if candidates == 3:  # many rows past their buffers: whole, or all screened again
        assert (sum(deferred) > 0) == (exact_rows == 0)
    monkeypatch.setattr(screen, "available", lambda _device: False)
    plain = run_trace(loaded, TINY_PROMPT)
    for name in ("top_ids", "bottom_ids", "top_prev_rank"):
        np.testing.assert_array_equal(
            getattr(screened.projections, name), getattr(plain.projections, name)
        )
    np.testing.assert_allclose(
        screened.projections.top_logits, plain.projections.top_logits, atol=1e-5
    )


def test_a_bf16_model_keeps_its_layer_states_in_bf16_and_traces_the_same(monkeypatch):
    import dataclasses

    from lmscope.tracing import engine
    from lmscope.tracing.layers import LayerState

    tiny = build_tiny("gemma2")  # output norms: scales lmscope computes stay float32
    tiny.model.to(torch.bfloat16)
    loaded = dataclasses.replace(tiny, dtype=torch.bfloat16)
    kept: list[LayerState] = []
    compact = LayerState.compact
    monkeypatch.setattr(
        LayerState, "compact", lambda c, d, p=None: kept.append(compact(c, d, p)) or kept[-1]
    )
    small = run_trace(loaded, TINY_PROMPT)
    assert {s.resid_out.dtype for s in kept} == {torch.bfloat16}
    # the FFN's input is kept rather than its activations (d < d_ffn), in the model's dtype
    assert {s.ffn_act for s in kept} == {None}
    assert {s.ffn_input.dtype for s in kept} == {torch.bfloat16}
    # a layer's input is the previous layer's output: one bf16 copy of it is kept, not two
    assert all(later.resid_in is earlier.resid_out for earlier, later in itertools.pairwise(kept))
    assert all(s.attn_scale is None or s.attn_scale.dtype == torch.float32 for s in kept)
    full = engine.LayerState  # the float32 states of before, for comparison
    monkeypatch.setattr(full, "compact", lambda c, d, p=None: compact(c, torch.float32, p))
    wide = run_trace(loaded, TINY_PROMPT)
    for name in ("top_ids", "bottom_ids", "top_prev_rank", "top_logits"):
        np.testing.assert_array_equal(
            getattr(small.projections, name), getattr(wide.projections, name)
        )
    np.testing.assert_array_equal(small.neurons.index, wide.neurons.index)
    np.testing.assert_array_equal(small.neurons.contribution, wide.neurons.contribution)
    np.testing.assert_array_equal(small.edges.head_contributions, wide.edges.head_contributions)


@needs_screen
def test_screened_rows_with_an_infinity_or_a_nan_are_scored_whole_like_the_plain_path():
    g = torch.Generator().manual_seed(5)
    vocab, d, rows, k = 700, 32, 6, 5
    unembedding = torch.randn(vocab, d, generator=g)
    normed = torch.randn(rows, d, generator=g)
    normed[1, 0] = 3e38  # its bf16 product overflows to ±inf
    normed[4, 3] = float("nan")
    with_bias = torch.zeros(rows, dtype=torch.bool)
    screened, whole = screened_recording_whole_rows(normed, with_bias, unembedding, None)
    lists = screened.lists(k)
    assert whole == [1, 4]
    expected = lens.token_lists(normed @ unembedding.T, k)
    assert torch.equal(lists.top_ids, expected.top_ids)
    assert torch.equal(lists.bottom_ids, expected.bottom_ids)


@needs_screen
def test_a_bf16_model_s_screen_scores_its_candidates_through_the_union_product(monkeypatch):
    """A bf16 unembedding has no compiled dot-product loop: the candidates' exact scores come
    from one product over their union, with the same lists as the unscreened path."""
    import dataclasses

    tiny = build_tiny("llama")
    tiny.model.to(torch.bfloat16)
    loaded = dataclasses.replace(tiny, dtype=torch.bfloat16)
    monkeypatch.setattr(screen, "MIN_ROWS", 1)
    exact_calls: list[torch.dtype] = []
    exact = screen.Screen._exact
    monkeypatch.setattr(
        screen.Screen,
        "_exact",
        lambda self, *a: exact_calls.append(self.unembedding.dtype) or exact(self, *a),
    )
    screened = run_trace(loaded, TINY_PROMPT)
    assert exact_calls and set(exact_calls) == {torch.bfloat16}
    monkeypatch.setattr(screen, "available", lambda _device: False)
    plain = run_trace(loaded, TINY_PROMPT)
    for name in ("top_ids", "bottom_ids", "top_prev_rank"):
        np.testing.assert_array_equal(
            getattr(screened.projections, name), getattr(plain.projections, name)
        )
