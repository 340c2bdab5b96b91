"""Component references in text (`lmscope.components`): every accepted form parses to the right
component with the right span, ordinary text stays quiet, and the cursor picks the reference
under it."""

from __future__ import annotations

import time

import pytest

from lmscope.components import ComponentRef, find_references, reference_at

HEAD = ComponentRef("head", 12, 3)
NEURON = ComponentRef("neuron", 5, 1234)
ATTN = ComponentRef("attention", 5)
FFN = ComponentRef("ffn", 5)

ACCEPTED = [
    ("L12H3", HEAD),
    ("L12.H3", HEAD),
    ("L5.N1234", NEURON),
    ("L5N1234", NEURON),
    ("L5.attn", ATTN),
    ("L5.attention", ATTN),
    ("L5.ffn", FFN),
    ("L5.mlp", FFN),
    ("blocks.5.attn", ATTN),
    ("blocks.5.mlp", FFN),
    ("blocks.5.attn.hook_z", ATTN),
    ("blocks.5.mlp.hook_post", FFN),
    ("blocks.5.hook_attn_out", ATTN),
    ("blocks.5.hook_mlp_out", FFN),
    ("model.layers[5].mlp", FFN),
    ("model.layers[5].self_attn", ATTN),
    ("model.layers.5.mlp", FFN),
    ("model.layers.5.self_attn.o_proj.weight", ATTN),
    ("model.model.layers[5].mlp", FFN),
    ("self.model.layers[5].mlp", FFN),
    ("transformer.h.5.attn", ATTN),
    ("transformer.h[5].mlp", FFN),
    ("transformer.h.5.mlp.c_proj.weight", FFN),
    ("gpt_neox.layers.5.attention", ATTN),
    ("gpt_neox.layers.5.mlp", FFN),
    ("layers[5].mlp.down_proj", FFN),
    ("layers[5].feed_forward", FFN),
    ("model.layers[5].self_attn.o_proj", ATTN),
    ("transformer.h.5.self_attention", ATTN),
    ("model.decoder.layers.5.fc1", FFN),  # OPT
    ("model.decoder.layers[5].fc2.weight", FFN),
    ("model.decoder.layers.5.self_attn.out_proj", ATTN),
    ("L0H0", ComponentRef("head", 0, 0)),
    ("L0.N0", ComponentRef("neuron", 0, 0)),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_every_accepted_form_parses_to_its_component_and_spans_the_whole_reference(text, expected):
    line = f"see {text} here"
    assert find_references(line) == [(expected, 4, 4 + len(text))]


@pytest.mark.parametrize(
    "text",
    [
        "XL12H3Y",
        "L12H3x",
        "xL12H3",
        "HL2",
        "CL5N10V",
        "0xL1H2",
        "l12h3",
        "L12h3",
        "l5.n12",
        "L05H3",
        "L1H03",
        "L+1H2",
        "L-1H2",
        "L1H+2",
        "L1H",
        "LH3",
        "L5.attn_out",
        "L5.mlpx",
        "L1 H2",
        "L١H٢",  # Arabic-Indic digits are digits to Python, not to us
        "layers[-1].mlp",
        "layers[+1].mlp",
        "layers[05].mlp",
        "model.layers[5].mlpx",
        "model.layers[5].attention_mask",
        "model.layers[5]",
        "blocks.5",
        "blocks.5.hook_resid_post",
        "h.5.attn",
        "path.5.attn",
        "mylayers.5.mlp",
        "https://example.com/L1H2",
        "http://host/model.layers.5.mlp",
        "see https://example.com/a?x=L1H2&y=1",
        "deadbeefL1H2",
        "HELLO WORLD L",
        "",
    ],
)
def test_ordinary_text_and_near_misses_are_not_references(text):
    assert find_references(text) == []


def test_a_line_with_several_references_lists_them_in_order():
    line = "`L1H2` feeds model.layers[3].mlp (L3.N7), not L4.attn."
    found = find_references(line)
    assert [(ref.label(), line[start:end]) for ref, start, end in found] == [
        ("L1H2", "L1H2"),
        ("L3.ffn", "model.layers[3].mlp"),
        ("L3.N7", "L3.N7"),
        ("L4.attn", "L4.attn"),
    ]


def test_references_next_to_punctuation_and_after_a_url_still_match():
    line = "(L1H2), [L2.N3]: see https://x.org/p then L4H5."
    assert [ref.label() for ref, _, _ in find_references(line)] == ["L1H2", "L2.N3", "L4H5"]


def test_module_paths_inside_code_match_after_indexing_and_calls():
    line = "out = models[0].layers[2].mlp(x) + get().blocks.1.attn"
    found = [(ref.label(), line[s:e]) for ref, s, e in find_references(line)]
    assert found == [("L2.ffn", "layers[2].mlp"), ("L1.attn", "blocks.1.attn")]


def test_references_in_json_and_markdown_table_text():
    line = '{"component": "L7H1", "path": "model.layers.2.self_attn"} | L0.ffn |'
    assert [ref.label() for ref, _, _ in find_references(line)] == ["L7H1", "L2.attn", "L0.ffn"]


def test_offsets_are_python_string_indices_after_non_bmp_characters():
    line = "🙂🙂 L1H2"
    ((ref, start, end),) = find_references(line)
    assert (ref.label(), start, end, line[start:end]) == ("L1H2", 3, 7, "L1H2")


def test_reference_at_picks_the_reference_under_the_cursor():
    line = "L1H2 model.layers[3].mlp"
    assert reference_at(line, 0) == (ComponentRef("head", 1, 2), 0, 4)
    assert reference_at(line, 3) == (ComponentRef("head", 1, 2), 0, 4)
    ffn = (ComponentRef("ffn", 3), 5, 24)
    assert reference_at(line, 5) == ffn
    assert reference_at(line, 12) == ffn  # on "layers"
    assert reference_at(line, 23) == ffn


def test_reference_at_between_references_or_past_the_end_is_none():
    line = "L1H2 L3H4"
    assert reference_at(line, 4) is None  # the space: spans are half-open
    assert reference_at(line, 9) is None
    assert reference_at(line, 100) is None
    assert reference_at("no references here", 3) is None


def test_long_lines_are_scanned_in_linear_time():
    lines = ["a." * 50_000, "L1" * 50_000, "x." * 30_000 + "layers.1.mlp", "h" * 100_000]
    start = time.perf_counter()
    for line in lines:
        find_references(line)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("ref", "label", "wire"),
    [
        (ComponentRef("head", 12, 3), "L12H3", {"kind": "head", "layer": 12, "index": 3}),
        (
            ComponentRef("neuron", 5, 1234),
            "L5.N1234",
            {"kind": "neuron", "layer": 5, "index": 1234},
        ),
        (ComponentRef("attention", 5), "L5.attn", {"kind": "attention", "layer": 5}),
        (ComponentRef("ffn", 0), "L0.ffn", {"kind": "ffn", "layer": 0}),
    ],
)
def test_labels_are_canonical_and_wire_form_round_trips(ref, label, wire):
    assert ref.label() == label
    assert ref.to_wire() == wire
    assert ComponentRef.from_wire(wire) == ref
    (parsed, _, _), *_ = find_references(label)
    assert parsed == ref


@pytest.mark.parametrize(
    "wire",
    [
        {"kind": "head", "layer": 1},
        {"kind": "neuron", "layer": 1, "index": -1},
        {"kind": "attention", "layer": 1, "index": 2},
        {"kind": "ffn", "layer": -1},
        {"kind": "ffn", "layer": True},
        {"kind": "head", "layer": 1, "index": 2.0},
        {"kind": "residual", "layer": 1},
        {"layer": 1},
    ],
)
def test_malformed_wire_refs_are_rejected(wire):
    with pytest.raises(ValueError):
        ComponentRef.from_wire(wire)
