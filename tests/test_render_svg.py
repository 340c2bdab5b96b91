"""Behaviour of the SVG route renderer: valid, safe, faithful to the route, deterministic."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from lmscope.graph import ATTENTION_EDGE, FFN_EDGE, RESIDUAL_EDGE, Edge, Node, Route
from lmscope.protocol import vocabulary
from lmscope.render.svg import route_svg
from lmscope.traces.data import EMBEDDING, FFN, POST_ATTENTION, RESIDUAL
from lmscope.traces.text import display_token

NS = "{http://www.w3.org/2000/svg}"
TOKENS = ["The", " cat", " sat", " on"]


def X(i: int) -> Node:
    return Node(EMBEDDING, 0, i)


def A(layer: int, i: int) -> Node:
    return Node(POST_ATTENTION, layer, i)


def M(layer: int, i: int) -> Node:
    return Node(FFN, layer, i)


def R(layer: int, i: int) -> Node:
    return Node(RESIDUAL, layer, i)


def sequential_route() -> Route:
    """3 layers x 4 tokens, output token 3, with a self-attention edge at layer 2."""
    edges = [
        Edge(RESIDUAL_EDGE, A(2, 3), R(2, 3), 0.5),
        Edge(FFN_EDGE, A(2, 3), M(2, 3), 0.3),
        Edge(FFN_EDGE, M(2, 3), R(2, 3), 0.3),
        Edge(ATTENTION_EDGE, R(1, 1), A(2, 3), 0.6, (0.4, 0.2)),
        Edge(ATTENTION_EDGE, R(1, 3), A(2, 3), 0.1, (0.1, 0.0)),  # self-attention
        Edge(RESIDUAL_EDGE, R(1, 3), A(2, 3), 0.3),
        Edge(RESIDUAL_EDGE, A(1, 1), R(1, 1), 1.0),
        Edge(RESIDUAL_EDGE, R(0, 1), A(1, 1), 1.0),
        Edge(RESIDUAL_EDGE, A(1, 3), R(1, 3), 1.0),
        Edge(RESIDUAL_EDGE, R(0, 3), A(1, 3), 1.0),
        Edge(RESIDUAL_EDGE, A(0, 1), R(0, 1), 1.0),
        Edge(ATTENTION_EDGE, X(0), A(0, 1), 0.05, (0.05,)),
        Edge(RESIDUAL_EDGE, X(1), A(0, 1), 0.95),
        Edge(RESIDUAL_EDGE, A(0, 3), R(0, 3), 1.0),
        Edge(RESIDUAL_EDGE, X(3), A(0, 3), 1.0),
    ]
    return Route(3, 0.04, "renormalize", 3, 4, False, edges)


def parallel_route() -> Route:
    """Parallel blocks: prev -> R directly (attention and residual), prev -> M -> R."""
    edges = [
        Edge(ATTENTION_EDGE, R(0, 0), R(1, 2), 0.4, (0.4,)),
        Edge(ATTENTION_EDGE, R(0, 2), R(1, 2), 0.2, (0.2,)),
        Edge(RESIDUAL_EDGE, R(0, 2), R(1, 2), 0.2),
        Edge(FFN_EDGE, R(0, 2), M(1, 2), 0.2),
        Edge(FFN_EDGE, M(1, 2), R(1, 2), 0.2),
        Edge(RESIDUAL_EDGE, X(0), R(0, 0), 1.0),
        Edge(RESIDUAL_EDGE, X(2), R(0, 2), 1.0),
    ]
    return Route(2, 0.04, "raw", 2, 3, True, edges)


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))


def edge_elements(root: ET.Element) -> list[ET.Element]:
    return [el for el in root.iter() if "edge" in el.get("class", "").split()]


def drawn_nodes(root: ET.Element) -> set[Node]:
    found = set()
    for el in root.iter():
        if el.get("data-node") and "node" in el.get("class", "").split():
            kind, layer, position = el.get("data-node").split(":")
            found.add(Node(kind, int(layer), int(position)))
    return found


def texts(root: ET.Element) -> list[str]:
    """Text of every <text> and <title> element."""
    return [el.text or "" for el in root.iter() if el.tag in (f"{NS}text", f"{NS}title")]


@pytest.mark.parametrize("make", [sequential_route, parallel_route])
def test_output_parses_as_svg(make):
    route = make()
    root = parse(route_svg(route, TOKENS[: route.n_tokens]))
    assert root.tag == f"{NS}svg"
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0


@pytest.mark.parametrize("make", [sequential_route, parallel_route])
def test_one_element_per_edge_with_its_kind(make):
    route = make()
    elements = edge_elements(parse(route_svg(route, TOKENS[: route.n_tokens])))
    assert len(elements) == len(route.edges)
    drawn = sorted(
        (el.get("class").split()[1], el.get("data-source"), el.get("data-target"))
        for el in elements
    )
    expected = sorted(
        (
            e.kind,
            f"{e.source.kind}:{e.source.layer}:{e.source.position}",
            f"{e.target.kind}:{e.target.layer}:{e.target.position}",
        )
        for e in route.edges
    )
    assert drawn == expected


@pytest.mark.parametrize("make", [sequential_route, parallel_route])
def test_drawn_nodes_are_exactly_the_route_nodes(make):
    route = make()
    root = parse(route_svg(route, TOKENS[: route.n_tokens]))
    assert drawn_nodes(root) == route.nodes
    outputs = [el for el in root.iter() if "output" in el.get("class", "").split()]
    assert [el.get("data-node") for el in outputs] == [
        f"residual:{route.n_layers - 1}:{route.token}"
    ]


def test_parallel_route_has_no_post_attention_nodes():
    root = parse(route_svg(parallel_route(), TOKENS[:3]))
    assert all(n.kind != POST_ATTENTION for n in drawn_nodes(root))


def test_empty_route_draws_only_the_output_node():
    route = Route(1, 0.04, "renormalize", 3, 4, False, [])
    root = parse(route_svg(route, TOKENS))
    assert edge_elements(root) == []
    assert drawn_nodes(root) == {R(2, 1)}


def test_self_attention_edge_is_drawn_apart_from_the_residual_edge():
    root = parse(route_svg(sequential_route(), TOKENS))
    same_column = [
        el
        for el in edge_elements(root)
        if el.get("data-source") == "residual:1:3" and el.get("data-target") == "post_attention:2:3"
    ]
    assert sorted(el.get("class") for el in same_column) == ["edge attention", "edge residual"]
    paths = {el.get("class"): el.get("d") for el in same_column}
    assert paths["edge attention"] != paths["edge residual"]


def test_heavier_edge_has_wider_and_more_opaque_stroke():
    root = parse(route_svg(sequential_route(), TOKENS))
    by_pair = {
        (el.get("data-source"), el.get("data-target"), el.get("class")): el
        for el in edge_elements(root)
    }
    heavy = by_pair[("residual:1:1", "post_attention:2:3", "edge attention")]  # 0.6
    light = by_pair[("embedding:0:0", "post_attention:0:1", "edge attention")]  # 0.05
    assert float(heavy.get("stroke-width")) > float(light.get("stroke-width"))
    assert float(heavy.get("stroke-opacity")) > float(light.get("stroke-opacity"))
    assert float(light.get("stroke-width")) >= 0.5  # tiny weights stay visible


def test_edge_widths_are_clamped_for_out_of_range_weights():
    route = sequential_route()
    route.edges[0] = Edge(RESIDUAL_EDGE, A(2, 3), R(2, 3), 7.0)
    route.edges[1] = Edge(FFN_EDGE, A(2, 3), M(2, 3), -1.0)
    widths = [
        float(el.get("stroke-width")) for el in edge_elements(parse(route_svg(route, TOKENS)))
    ]
    assert min(widths) >= 0.5 and max(widths) <= 6.0


HOSTILE = ["<img src=x onerror=alert(1)>", "]]>", "&amp;", "\"'><script>x</script>"]


def test_hostile_tokens_render_as_literal_text():
    route = Route(3, 0.04, "renormalize", 2, 4, False, [])
    svg = route_svg(route, HOSTILE, title="<b>t</b> & co", predicted="<img src=y>")
    root = parse(svg)
    tags = {el.tag for el in root.iter()}
    assert f"{NS}img" not in tags and "img" not in tags
    assert f"{NS}script" not in tags and "script" not in tags
    assert "<img" not in svg and "<script" not in svg
    shown = texts(root)
    assert "<img·src=x·…" in shown  # space made visible, truncated with an ellipsis
    assert "<img·src=x·onerror=alert(1)>" in shown  # in full in the hover title
    assert "]]>" in shown
    assert "&amp;" in shown
    assert any("<b>t</b> & co" in t and "predicted “<img·src=y>”" in t for t in shown)


def test_invalid_xml_characters_are_replaced_visibly():
    tokens = ["a\x07b", "\x00", "\ud800x", "\x85\ufffe"]
    route = Route(0, 0.04, "raw", 1, 4, False, [])
    root = parse(route_svg(route, tokens, title="bell\x07", predicted="\udcff"))
    shown = texts(root)
    assert "a\\x07b" in shown and "\\x00" in shown  # the one token display's escapes
    assert "\\ud800x" in shown and "\\x85\\ufffe" in shown
    title = next(t for t in shown if t.startswith("bell"))
    assert title.startswith("bell␇") and "predicted “\\udcff”" in title


def test_token_labels_use_the_one_token_display():
    route = Route(3, 0.04, "renormalize", 1, 4, False, [])
    tokens = [" a\tb\n", "", "x" * 30, "\u202e"]
    labels = [el.text for el in parse(route_svg(route, tokens)).iter(f"{NS}text")]
    assert "·a→b⏎" in labels and "∅" in labels and "x" * 11 + "…" in labels
    assert "\\u202e" in labels
    assert display_token(" a\tb\n") == "·a→b⏎"


def test_byte_pieces_show_their_bytes_with_a_hint():
    route = Route(1, 0.04, "renormalize", 1, 2, False, [])
    svg = route_svg(
        route,
        ["\ufffd", " \ufffd"],
        token_bytes=[b"\xe2\x80", b" \xf0\x9f\x98"],
        predicted="\ufffd",
        predicted_bytes=b"\xe2",
    )
    shown = texts(parse(svg))
    assert "⟨E2 80⟩" in shown and "·⟨F0 9F 98⟩" in shown
    assert any("predicted “⟨E2⟩”" in t for t in shown)
    hint = vocabulary.TOKENS.hints["bytePiece"]
    assert any(t.startswith("R0.1 ·⟨F0 9F 98⟩") and hint in t for t in shown)  # the node's title


def test_legend_rows_and_colours_come_from_the_vocabulary():
    root = parse(route_svg(sequential_route(), TOKENS))
    legends = {
        tuple(el.get("class").split()[1:]): el
        for el in root.iter()
        if "legend" in el.get("class", "").split()
    }
    assert set(legends) == {("edge-kind", k) for k in vocabulary.EDGES} | {
        ("node-kind", k) for k in vocabulary.NODES
    } | {("output-node",), ("node-size",)}
    assert legends[("output-node",)].find(f"{NS}title").text == vocabulary.OUTPUT.legend
    assert legends[("node-size",)].find(f"{NS}title").text == vocabulary.SIZES.legend
    for kind, style in vocabulary.NODES.items():
        legend = legends[("node-kind", kind)]
        assert legend.find(f"{NS}title").text == style.legend
        assert f"{style.letter} {style.name}" in [t.text for t in legend.iter(f"{NS}text")]
    for kind, edge_style in vocabulary.EDGES.items():
        legend = legends[("edge-kind", kind)]
        assert legend.find(f"{NS}title").text == edge_style.legend
        assert edge_style.name in [t.text for t in legend.iter(f"{NS}text")]
    for el in edge_elements(root):
        style = vocabulary.EDGES[el.get("class").split()[1]]
        assert el.get("stroke") == style.colour.hex
        assert el.get("stroke-dasharray") == style.dash
    for el in root.iter():
        if "node" in el.get("class", "").split():
            assert el.get("fill") == vocabulary.NODES[el.get("class").split()[1]].colour.hex
    rows = [el.text for el in root.iter(f"{NS}text") if el.get("class") == "layer-label"]
    assert vocabulary.EMBEDDING_ROW in rows and "L0" in rows


def test_node_size_follows_its_share_of_the_prediction_ffn_nodes_included():
    """An FFN node carrying most of the prediction is drawn large and strong, not as a small
    pale square."""
    edges = [
        Edge(FFN_EDGE, A(0, 1), M(0, 1), 0.9),
        Edge(FFN_EDGE, M(0, 1), R(0, 1), 0.9),
        Edge(RESIDUAL_EDGE, A(0, 1), R(0, 1), 0.1),
        Edge(RESIDUAL_EDGE, X(1), A(0, 1), 0.95),
        Edge(ATTENTION_EDGE, X(0), A(0, 1), 0.05, (0.05,)),
    ]
    route = Route(1, 0.04, "renormalize", 1, 2, False, edges)
    root = parse(route_svg(route, TOKENS[:2]))
    by_node = {el.get("data-node"): el for el in root.iter() if el.get("data-node")}
    ffn, small = by_node["ffn:0:1"], by_node["embedding:0:0"]
    assert float(ffn.get("data-share")) == pytest.approx(0.9, abs=1e-4)
    assert float(small.get("data-share")) == pytest.approx(0.05, abs=1e-4)
    assert float(ffn.get("width")) > 1.6 * float(small.get("r"))  # a square of the circle's area
    assert float(ffn.get("fill-opacity")) > float(small.get("fill-opacity"))


def test_output_is_deterministic():
    svgs = {route_svg(sequential_route(), TOKENS, title="t", predicted=" mat") for _ in range(3)}
    assert len(svgs) == 1


def test_title_names_threshold_mode_edges_and_prediction():
    svg_root = parse(route_svg(sequential_route(), TOKENS, title="demo", predicted=" mat"))
    title = next(el.text for el in svg_root.iter(f"{NS}text") if el.get("class") == "title")
    assert "demo" in title and "τ=0.04" in title and "renormalize" in title
    assert f"{len(sequential_route().edges)} edges" in title and "·mat" in title


def test_layers_are_labelled_bottom_up():
    root = parse(route_svg(sequential_route(), TOKENS))
    labels = {
        el.text: float(el.get("y"))
        for el in root.iter(f"{NS}text")
        if el.get("class") == "layer-label"
    }
    assert labels["X"] > labels["L0"] > labels["L1"] > labels["L2"]


def test_mismatched_token_strings_are_rejected():
    with pytest.raises(ValueError):
        route_svg(sequential_route(), TOKENS[:2])


def test_large_route_renders_in_bounded_size_and_time():
    n_layers, n_tokens, token = 30, 200, 199
    edges = []
    for layer in range(n_layers):
        for i in range(0, n_tokens, 3):
            prev = X(i) if layer == 0 else R(layer - 1, i)
            edges += [
                Edge(RESIDUAL_EDGE, prev, A(layer, i), 0.5),
                Edge(ATTENTION_EDGE, prev, A(layer, token), 0.01 + (i % 7) / 10),
                Edge(RESIDUAL_EDGE, A(layer, i), R(layer, i), 0.7),
                Edge(FFN_EDGE, A(layer, i), M(layer, i), 0.3),
                Edge(FFN_EDGE, M(layer, i), R(layer, i), 0.3),
            ]
    route = Route(token, 0.01, "raw", n_layers, n_tokens, False, edges)
    tokens = [f" tok{i}" for i in range(n_tokens)]
    start = time.perf_counter()
    svg = route_svg(route, tokens)
    elapsed = time.perf_counter() - start
    root = parse(svg)
    assert float(root.get("width")) < 20000 and float(root.get("height")) < 20000
    assert len(edge_elements(root)) == len(edges)
    assert elapsed < 5.0
