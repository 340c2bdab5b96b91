"""One token display everywhere: lmscope.traces.text against the shared test vectors
(tests/fixtures/token_display.json), which extension/test/display.test.ts checks against the
TypeScript twin, and the display vocabulary (protocol/vocabulary.json) against its schema and
the code that names nodes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import lmscope
from lmscope.errors import TraceFileError
from lmscope.graph import Node
from lmscope.protocol import vocabulary
from lmscope.protocol.files import SCHEMAS, VOCABULARY, VOCABULARY_SCHEMA
from lmscope.render.svg import trace_route_svg
from lmscope.summary import prediction_line, route_summary
from lmscope.traces import pieces
from lmscope.traces import text as text_module
from lmscope.traces.text import clip, display_token, is_byte_piece, token_hints
from tests.reliability import bounds

VECTORS = json.loads(
    (Path(__file__).parent / "fixtures" / "token_display.json").read_text(encoding="utf-8")
)


def _case_id(case: dict) -> str:
    return case.get("note", case.get("text", ""))[:60]


@pytest.mark.parametrize("case", VECTORS["display"], ids=_case_id)
def test_tokens_display_as_the_shared_vectors_say(case):
    text = case["text"] * case.get("repeat", 1)
    data = bytes.fromhex(case["bytes"]) if "bytes" in case else None
    expected = case["display"] * case.get("displayRepeat", 1)
    assert display_token(text, data, limit=case.get("max")) == expected
    if "hints" in case:
        hints = vocabulary.TOKENS.hints
        assert token_hints(text, data) == [hints[key] for key in case["hints"]]


@pytest.mark.parametrize("case", VECTORS["clip"], ids=_case_id)
def test_clip_cuts_displayed_text_as_the_shared_vectors_say(case):
    assert clip(case["text"], case["max"]) == case["clipped"]


@pytest.mark.parametrize("case", VECTORS["tokenBytes"], ids=_case_id)
def test_stored_token_bytes_are_checked_as_the_shared_vectors_say(case):
    assert pieces.check(case["extra"], case["nTokens"], case["nVocabulary"]) == case["problem"]


def test_a_megabyte_token_costs_what_its_shown_part_costs(monkeypatch):
    """Only the characters that can be shown are looked at: limit + 1 (the extra one says
    whether to cut), however long the token."""
    looked_at: list[str] = []
    unit = text_module._unit

    def counting(ch: str) -> str:
        looked_at.append(ch)
        return unit(ch)

    monkeypatch.setattr(text_module, "_unit", counting)
    assert display_token("\u200b" * (1 << 20), limit=12) == "\\u200b…"
    assert len(looked_at) <= 13


def test_every_display_is_inert_text():
    """No display holds a control, format or invisible character: the terminal, an SVG or a
    Markdown card can show it as it is."""
    for case in VECTORS["display"]:
        data = bytes.fromhex(case["bytes"]) if "bytes" in case else None
        shown = display_token(case["text"], data, limit=200)
        assert shown.isprintable(), case


def test_byte_pieces_are_bytes_that_are_not_whole_characters():
    assert is_byte_piece(b"\xe2\x80") and is_byte_piece(b" \xf0\x9f\x98")
    assert not is_byte_piece(None) and not is_byte_piece(b"") and not is_byte_piece("é".encode())


def test_token_bytes_round_trip_through_extra():
    stored = pieces.to_extra([None, b"\xe2\x80", "é".encode()], [b"\xff"])
    assert stored == {"tokens": ["", "e280", ""], "vocabulary": ["ff"]}
    assert pieces.check({pieces.TOKEN_BYTES_KEY: stored}, 3, 1) is None
    extra = {pieces.TOKEN_BYTES_KEY: stored}
    assert pieces.prompt_bytes(extra, 3) == [None, b"\xe2\x80", None]
    assert pieces.vocabulary_bytes(extra, [7]) == {7: b"\xff"}
    assert pieces.to_extra([None, b"ok"], []) is None  # nothing to store
    assert pieces.prompt_bytes({}, 2) == [None, None]


def test_the_vocabulary_file_is_valid_against_its_schema():
    schema = json.loads(VOCABULARY_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(
        json.loads(VOCABULARY.read_text(encoding="utf-8"))
    )


def test_the_vocabulary_names_every_node_and_edge_kind_of_the_protocol():
    common = SCHEMAS["common.schema.json"]["$defs"]
    assert set(vocabulary.NODES) == set(common["NodeKind"]["enum"])
    assert set(vocabulary.EDGES) == set(common["EdgeKind"]["enum"])


def test_node_labels_use_the_vocabulary_letters():
    for kind in vocabulary.NODES:
        node = Node(kind, 23, 14)
        assert node.label() == vocabulary.node_label(kind, 23, 14)
    assert vocabulary.node_label("embedding", 0, 3) == "X3"
    assert vocabulary.node_label("post_attention", 23, 14) == "A23.14"
    assert vocabulary.row_label(-1) == vocabulary.EMBEDDING_ROW
    assert vocabulary.row_label(5) == "L5"


def test_node_sizes_follow_the_share():
    sizes = vocabulary.SIZES
    assert sizes.radius(1.0, 10) == 10 and sizes.radius(0.0, 10) == 10 * sizes.base
    assert sizes.radius(float("nan"), 10) == sizes.radius(float("inf"), 10) == 10 * sizes.base
    assert sizes.opacity(1.0) == 1.0 and sizes.opacity(0.0) == sizes.opacity_base


def _saved(tmp_path, extra=None):
    """A small valid trace file whose prompt token 1 and vocabulary entry 0 are "\ufffd", the
    top prediction everywhere. `extra(n_vocabulary)` gives its extra; None: none, as in files
    written before token bytes were stored."""
    data = bounds.quiet_trace(share=0.5)
    data.tokens.strings[1] = "\ufffd"
    data.vocabulary[0] = "\ufffd"
    data.predictions.ids[:, 0] = 0
    data.extra = {} if extra is None else extra(len(data.vocabulary))
    path = tmp_path / "t.lmtrace"
    path.write_bytes(bounds.pack(bounds.wire_of(data)))
    return path


def test_a_trace_without_token_bytes_opens_and_says_a_replacement_character_may_hide_bytes(
    tmp_path,
):
    trace = lmscope.load_trace(_saved(tmp_path))
    route = trace.route(1)
    summary = route_summary(trace, route)
    assert "“�”" in summary and f"({vocabulary.TOKENS.hints['maybeBytePiece']})" in summary
    assert "⟨" not in summary
    assert "“�”" in trace_route_svg(trace, route)


def test_a_trace_with_token_bytes_shows_byte_pieces_as_bytes_everywhere(tmp_path):
    def extra(n_vocabulary: int) -> dict:
        stored = {"tokens": ["", "e280", ""], "vocabulary": ["e2"] + [""] * (n_vocabulary - 1)}
        return {pieces.TOKEN_BYTES_KEY: stored}

    trace = lmscope.load_trace(_saved(tmp_path, extra))
    route = trace.route(1)
    text = prediction_line(trace, 1) + "\n" + route_summary(trace, route)
    assert "prediction after “⟨E2 80⟩”: “⟨E2⟩”" in text
    assert f"({vocabulary.TOKENS.hints['bytePiece']})" in text
    assert "⟨E2 80⟩" in trace_route_svg(trace, route)


def test_a_malformed_token_bytes_entry_is_refused_with_its_place(tmp_path):
    def extra(n_vocabulary: int) -> dict:
        return {
            pieces.TOKEN_BYTES_KEY: {"tokens": ["", "E280", ""], "vocabulary": [""] * n_vocabulary}
        }

    with pytest.raises(TraceFileError, match=r"extra\.lmscope\.tokenBytes\.tokens\[1\]: not a"):
        lmscope.load_trace(_saved(tmp_path, extra))
