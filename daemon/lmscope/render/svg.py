"""Render a `Route` as a standalone SVG: tokens are columns, layers are horizontal bands.

Layout (docs/method.md, "Nodes of the graph"): layer 0 at the bottom, the last layer at the top.
In the band of layer `l` the residual R(l,i) sits on the band's top edge, so R(l-1,i) — which
is prev(l,i) — is the bottom edge; A(l,i) is in the lower half and the FFN node M(l,i) is a
small square offset to the right between A and R, so FFN edges never overlap the vertical
residual line. Embeddings X(i) sit in an extra band under layer 0.

Names, colours, the legend and node sizes are the display vocabulary's (protocol/vocabulary.json,
`lmscope.protocol.vocabulary`), as in the editor's graph: a node's size and fill follow its share
of the prediction (`Route.flow`), FFN nodes included. Tokens are shown by the one token display
(`lmscope.traces.text.display_token`), byte pieces as their bytes when the trace stores them.

The output is a pure function of its inputs (fixed number formatting, sorted draw order) so
SVGs can be diffed, and every piece of untrusted text is sanitised and XML-escaped.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from xml.sax.saxutils import escape

from lmscope.chats import TEMPLATE
from lmscope.graph import (
    ATTENTION_EDGE,
    EMBEDDING,
    POST_ATTENTION,
    RESIDUAL,
    Edge,
    Node,
    Route,
)
from lmscope.protocol.vocabulary import (
    EDGES,
    EMBEDDING_ROW,
    NODES,
    OUTPUT,
    SIZES,
    row_label,
)
from lmscope.traces.pieces import StoredBytes
from lmscope.traces.text import display_token, token_hints
from lmscope.traces.text import escape as inert_escape
from lmscope.traces.trace import Trace

EDGE_COLOURS = {kind: style.colour.hex for kind, style in EDGES.items()}
NODE_COLOURS = {kind: style.colour.hex for kind, style in NODES.items()}
OUTPUT_COLOUR = OUTPUT.colour.hex

MAX_LABEL_CHARS = 12  # longer token strings are truncated with an ellipsis
MAX_TIP_CHARS = 80  # the same in hover titles
TEMPLATE_TIP = "added by the chat template"
CHAR_W = 6.6  # approximate advance of an 11px monospace glyph, for margin sizing
TOP = 70.0  # room for the title line and the two rows of the legend
LEFT = 40.0  # room for the L0, L1, ... labels (more when rotated labels overhang)


def _xml_safe(text: str) -> str:
    """Replace characters that are invalid in XML 1.0, or invisible but active.

    C0 controls become their Unicode "control picture" (U+2400 + code, e.g. BEL -> ␇), DEL
    becomes ␡; every other character `str.isprintable()` rejects but a space becomes its
    `\\xNN`/`\\uNNNN`/`\\UNNNNNNNN` text (`lmscope.traces.text.escape`): C1 controls, lone
    surrogates, U+FFFE/U+FFFF, and format characters such as bidi overrides, which would
    reorder a label as the browser draws it. Tab, newline and carriage return are legal and
    left alone here.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 and ch not in "\t\n\r":
            out.append(chr(0x2400 + code))
        elif code == 0x7F:
            out.append("␡")
        elif ch.isprintable() or ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(ch)
        else:
            out.append(inert_escape(ch))
    return "".join(out)


def _esc(text: str) -> str:
    """Sanitise then escape for use in both text content and double-quoted attributes."""
    return escape(_xml_safe(text), {'"': "&quot;", "'": "&apos;"})


def _f(value: float) -> str:
    """Fixed-precision coordinate text: deterministic and compact."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class _Layout:
    """Pixel geometry for one route: adaptive column width and row height."""

    def __init__(self, route: Route, labels: list[str]) -> None:
        n, layers = max(route.n_tokens, 1), max(route.n_layers, 1)
        # ~2400px of columns and ~1200px of layer bands at most before the clamps kick in:
        # 200 tokens x 32 layers stays a few thousand px and 4 x 3 stays legible.
        self.cw = _clamp(2400 / n, 28, 60)
        self.rh = _clamp(1200 / layers, 18, 40)
        self.parallel = route.parallel_blocks
        self.n_layers = route.n_layers
        longest = max((len(s) for s in labels), default=1)
        # Rotate labels only when the longest would not fit its column horizontally.
        self.rotate = longest * CHAR_W > self.cw - 4
        self.base = TOP + layers * self.rh  # bottom edge of layer 0's band
        # Labels rotated by -55° hang down-left of their column: sin ~ 0.82, cos ~ 0.58.
        label_h = (longest * CHAR_W * 0.82 + 8) if self.rotate else 16
        overhang = longest * CHAR_W * 0.58 - self.cw / 2 if self.rotate else 0.0
        self.left = max(LEFT, overhang + 4)
        self.width = self.left + n * self.cw + 16
        self.height = self.base + self.rh + label_h + 8
        self.r = _clamp(min(self.cw, self.rh) * 0.2, 3.0, 7.0)  # radius of a node of share 1

    def x(self, position: int) -> float:
        return self.left + (position + 0.5) * self.cw

    def band_bottom(self, layer: int) -> float:
        return self.base - layer * self.rh

    def point(self, node: Node) -> tuple[float, float]:
        """Where a node is drawn."""
        x, bottom = self.x(node.position), self.band_bottom(node.layer)
        if node.kind == EMBEDDING:
            return x, self.base + 0.45 * self.rh
        if node.kind == RESIDUAL:
            return x, bottom - self.rh
        if node.kind == POST_ATTENTION:
            return x, bottom - 0.45 * self.rh
        # FFN: to the right of the column, between A and R (mid-band without A).
        frac = 0.5 if self.parallel else 0.72
        return x + 0.28 * self.cw, bottom - frac * self.rh


def _edge_path(edge: Edge, lay: _Layout) -> str:
    """Path data for an edge; attention curves, residual/FFN are straight segments."""
    (xs, ys), (xt, yt) = lay.point(edge.source), lay.point(edge.target)
    if edge.kind != ATTENTION_EDGE:
        return f"M{_f(xs)},{_f(ys)}L{_f(xt)},{_f(yt)}"
    if edge.source.position == edge.target.position:
        # Self-attention: a bulge to the left so it never hides under the residual line.
        bx = xs - 0.38 * lay.cw
        return f"M{_f(xs)},{_f(ys)}C{_f(bx)},{_f(ys)} {_f(bx)},{_f(yt)} {_f(xt)},{_f(yt)}"
    ym = (ys + yt) / 2  # S-curve: leaves the source upward, arrives at the target upward
    return f"M{_f(xs)},{_f(ys)}C{_f(xs)},{_f(ym)} {_f(xt)},{_f(ym)} {_f(xt)},{_f(yt)}"


def _edge_style(weight: float, lay: _Layout) -> tuple[str, str]:
    """Stroke width and opacity: clamped so tiny weights stay visible and 1 is not huge."""
    w = _clamp(weight, 0.0, 1.0)
    widest = _clamp(lay.cw * 0.12, 3.0, 6.0)
    return f"{0.6 + (widest - 0.6) * w:.2f}", f"{0.35 + 0.65 * w:.2f}"


def _node_id(node: Node) -> str:
    # Kinds normally come from code, but a route may be read back from a trace file: escape.
    return _esc(f"{node.kind}:{node.layer}:{node.position}")


def _token_tip(text: str, data: bytes | None) -> str:
    """A token in full (up to MAX_TIP_CHARS) with what its display needs explained."""
    return "\n".join([display_token(text, data, limit=MAX_TIP_CHARS), *token_hints(text, data)])


def route_svg(
    route: Route,
    token_strings: list[str],
    *,
    title: str | None = None,
    predicted: str | None = None,
    token_bytes: list[bytes | None] | None = None,
    predicted_bytes: bytes | None = None,
    template_tokens: set[int] | None = None,
) -> str:
    """Render `route` as a standalone SVG document (no scripts, no external resources).

    `template_tokens` are the positions a chat template added (`lmscope.chats`): their labels
    are italic and faint, with "added by the chat template" in their hover title.

    `token_strings` holds one display string per prompt position (untrusted text), and
    `token_bytes` the bytes of those that are byte pieces (`lmscope.traces.pieces`; None: not
    stored). Edges carry `class="edge <kind>"`, nodes `class="node <kind>"` and
    `data-node="kind:layer:position"`.
    """
    if len(token_strings) != route.n_tokens:
        raise ValueError(f"{len(token_strings)} token strings for a {route.n_tokens}-token route")
    for node in route.nodes:  # a caller bug, not user input: fail loudly, not off-canvas
        if not (0 <= node.position < route.n_tokens and 0 <= node.layer < route.n_layers):
            raise ValueError(f"node {node} outside a {route.n_layers}x{route.n_tokens} grid")
    pieces = token_bytes if token_bytes is not None else [None] * route.n_tokens
    labels = [display_token(s, b, limit=MAX_LABEL_CHARS) for s, b in zip(token_strings, pieces)]
    tips = [_token_tip(s, b) for s, b in zip(token_strings, pieces)]
    template = template_tokens or set()
    tips = [f"{tip}\n{TEMPLATE_TIP}" if i in template else tip for i, tip in enumerate(tips)]
    lay = _Layout(route, labels)
    shown = None if predicted is None else display_token(predicted, predicted_bytes, limit=40)
    header, header_width = _header(route, title, shown, labels)
    lay.width = max(lay.width, header_width)  # small grids must not clip the title line
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(lay.width)}" '
        f'height="{_f(lay.height)}" viewBox="0 0 {_f(lay.width)} {_f(lay.height)}" '
        'font-family="monospace" font-size="11">',
        f'<rect width="{_f(lay.width)}" height="{_f(lay.height)}" fill="#fff"/>',
    ]
    out += header
    out += _grid(route, lay, labels, tips, template)

    # Light edges first so heavy ones stay on top; ties broken by identity for determinism.
    out.append('<g fill="none" stroke-linecap="round">')
    for e in sorted(route.edges, key=lambda e: (e.weight, e.kind, e.source, e.target)):
        width, opacity = _edge_style(e.weight, lay)
        style = EDGES.get(e.kind)
        name = style.name if style is not None else e.kind
        dash = f' stroke-dasharray="{style.dash}"' if style is not None and style.dash else ""
        tip = f"{e.source.label()} → {e.target.label()} {name} {e.weight:.3f}"
        out.append(
            f'<path class="edge {_esc(e.kind)}" data-source="{_node_id(e.source)}" '
            f'data-target="{_node_id(e.target)}" d="{_edge_path(e, lay)}" '
            f'stroke="{EDGE_COLOURS.get(e.kind, "#000")}" stroke-width="{width}" '
            f'stroke-opacity="{opacity}"{dash}><title>{_esc(tip)}</title></path>'
        )
    out.append("</g>")
    out += _nodes(route, lay, tips)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nodes(route: Route, lay: _Layout, tips: list[str]) -> list[str]:
    """Every node of the route: its kind's colour and shape, sized and filled by its share of
    the prediction; the output node largest, outlined in the output colour."""
    flow = route.flow()
    output = route.output_node
    out = ['<g stroke="#fff" stroke-width="0.8">']
    for node in sorted(route.nodes):
        x, y = lay.point(node)
        kind = _esc(node.kind)
        share = flow.get(node, 0.0)
        style = NODES.get(node.kind)
        attrs = (
            f'data-node="{_node_id(node)}" data-share="{share:.4f}" '
            f'fill="{NODE_COLOURS.get(node.kind, "#000")}" '
            f'fill-opacity="{SIZES.opacity(share):.2f}"'
        )
        tip = f"<title>{_esc(node.label())} {_esc(tips[node.position])}\nshare {share:.1%}</title>"
        if node == output:
            r = lay.r + 1.5
            extra = f' stroke="{OUTPUT_COLOUR}" stroke-width="2.5"'
            classes = f"node {kind} output"
        else:
            r = SIZES.radius(share, lay.r)
            extra, classes = "", f"node {kind}"
        if style is not None and style.shape == "square":
            half = r * 0.886  # the area of the circle of radius r
            out.append(
                f'<rect class="{classes}" {attrs} x="{_f(x - half)}" y="{_f(y - half)}" '
                f'width="{_f(2 * half)}" height="{_f(2 * half)}"{extra}>{tip}</rect>'
            )
        else:
            out.append(
                f'<circle class="{classes}" {attrs} cx="{_f(x)}" cy="{_f(y)}" '
                f'r="{_f(r)}"{extra}>{tip}</circle>'
            )
    out.append("</g>")
    return out


def _header(
    route: Route, title: str | None, predicted: str | None, labels: list[str]
) -> tuple[list[str], float]:
    """Title line (title, τ, mode, edge count, prediction) and a two-row legend, each entry
    with its one-line legend as a hover title: the node kinds and the output node, then the
    edge kinds and what a node's size means. Returns the lines and the width they need."""
    head = title if title is not None else f"route of token {route.token} “{labels[route.token]}”"
    if len(head) > 100:  # a caller may pass the whole prompt; keep the line bounded
        head = head[:99] + "…"
    parts = [head, f"τ={route.threshold:g} ({route.mode})", f"{len(route.edges)} edges"]
    if predicted is not None:
        parts.append(f"predicted “{predicted}”")
    line = " · ".join(parts)
    out = [f'<text class="title" x="8" y="18" font-size="13">{_esc(line)}</text>']
    ring = f' stroke="{OUTPUT.colour.hex}" stroke-width="2"'
    nodes = [
        _Entry(
            f"node-kind {kind}",
            n.legend,
            f"{n.letter} {n.name}",
            *_node_symbol(n.shape, n.colour.hex),
        )
        for kind, n in NODES.items()
    ]
    nodes.append(
        _Entry("output-node", OUTPUT.legend, OUTPUT.name, *_node_symbol("circle", "#fff", ring))
    )
    edges = [
        _Entry(f"edge-kind {kind}", e.legend, e.name, *_edge_symbol(e.colour.hex, e.dash))
        for kind, e in EDGES.items()
    ]
    small_and_large = (
        '<circle cx="2" cy="-3.5" r="2" fill="#888" fill-opacity="0.6"/>'
        '<circle cx="12" cy="-3.5" r="4.5" fill="#888"/>'
    )
    edges.append(_Entry("node-size", SIZES.legend, SIZES.legend, small_and_large, 17.0))
    width = 16 + len(line) * CHAR_W * 13 / 11
    for entries, y in ((nodes, 38.0), (edges, 56.0)):
        x = 8.0
        for entry in entries:
            out.append(entry.svg(x, y))
            x += entry.width + 14
        width = max(width, x)
    return out, width


@dataclass(frozen=True)
class _Entry:
    """One legend entry: a symbol, a short text, and the one-line legend as its hover title.
    The texts are ours (protocol/vocabulary.json), escaped all the same."""

    classes: str
    legend: str
    text: str
    symbol: str  # SVG markup, its left edge at x=0 and the text's baseline at y=0
    symbol_width: float

    @property
    def width(self) -> float:
        return self.symbol_width + 5 + len(self.text) * CHAR_W

    def svg(self, x: float, y: float) -> str:
        return (
            f'<g class="legend {self.classes}" transform="translate({_f(x)} {_f(y)})">'
            f"<title>{_esc(self.legend)}</title>{self.symbol}"
            f'<text x="{_f(self.symbol_width + 5)}" y="0">{_esc(self.text)}</text></g>'
        )


def _node_symbol(shape: str, fill: str, stroke: str = "") -> tuple[str, float]:
    """A node kind's legend symbol and its width."""
    if shape == "square":
        return f'<rect x="0" y="-8" width="9" height="9" fill="{fill}"{stroke}/>', 9.0
    return f'<circle cx="4.5" cy="-3.5" r="4.5" fill="{fill}"{stroke}/>', 9.0


def _edge_symbol(colour: str, dash: str | None) -> tuple[str, float]:
    """An edge kind's legend symbol (a short line in its colour and dash) and its width."""
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="0" y1="-4" x2="22" y2="-4" stroke="{colour}" stroke-width="3"{dashed}/>',
        22.0,
    )


def _grid(
    route: Route, lay: _Layout, labels: list[str], tips: list[str], template: set[int]
) -> list[str]:
    """Alternating layer bands, column guides, row labels (L0, L1, ...; X) and token labels."""
    right = lay.left + route.n_tokens * lay.cw
    out = ['<g class="grid">']
    ox = lay.left + route.token * lay.cw  # highlight the output token's column
    out.append(
        f'<rect class="output-column" x="{_f(ox)}" y="{_f(TOP)}" width="{_f(lay.cw)}" '
        f'height="{_f(lay.base + lay.rh - TOP)}" fill="{OUTPUT_COLOUR}" fill-opacity="0.06"/>'
    )
    for layer in range(route.n_layers):
        y = lay.band_bottom(layer) - lay.rh
        if layer % 2 == 0:
            out.append(
                f'<rect x="{_f(lay.left)}" y="{_f(y)}" width="{_f(right - lay.left)}" '
                f'height="{_f(lay.rh)}" fill="#000" fill-opacity="0.035"/>'
            )
        out.append(
            f'<text class="layer-label" x="{_f(lay.left - 4)}" y="{_f(y + lay.rh / 2 + 4)}" '
            f'text-anchor="end" fill="#666">{_esc(row_label(layer))}</text>'
        )
    out.append(
        f'<text class="layer-label" x="{_f(lay.left - 4)}" y="{_f(lay.base + 0.45 * lay.rh + 4)}" '
        f'text-anchor="end" fill="#666">{_esc(EMBEDDING_ROW)}</text>'
    )
    # One path for all column guides keeps 200-token documents small.
    guides = "".join(
        f"M{_f(lay.x(i))},{_f(TOP)}V{_f(lay.base + 0.45 * lay.rh)}" for i in range(route.n_tokens)
    )
    if guides:
        out.append(f'<path d="{guides}" stroke="#000" stroke-opacity="0.07" stroke-width="1"/>')
    ty = lay.base + lay.rh + 12
    for i, label in enumerate(labels):
        weight = ' font-weight="bold"' if i == route.token else ""
        if i in template:
            weight += ' font-style="italic" fill-opacity="0.55"'
        place = (
            f'x="{_f(lay.x(i) + 3)}" y="{_f(ty)}" text-anchor="end" '
            f'transform="rotate(-55 {_f(lay.x(i) + 3)} {_f(ty)})"'
            if lay.rotate
            else f'x="{_f(lay.x(i))}" y="{_f(ty)}" text-anchor="middle"'
        )
        tip = f"<title>{_esc(tips[i])}</title>" if tips[i] != label else ""  # what was cut
        kind = "token template" if i in template else "token"
        out.append(
            f'<text class="{kind}" data-position="{i}" {place}{weight}>{_esc(label)}{tip}</text>'
        )
    out.append("</g>")
    return out


def trace_route_svg(trace: Trace, route: Route, *, title: str | None = None) -> str:
    """`route_svg` of a route of `trace`: its tokens, the stored bytes of its byte pieces, and
    the top prediction after the route's output token."""
    stored = StoredBytes.of(trace.data)
    predicted_id = int(trace.data.predictions.ids[route.token][0])
    chat, generation = trace.chat, trace.generation
    prompt_tokens = trace.n_tokens if generation is None else generation.prompt_tokens
    template = (
        set()
        if chat is None
        else {i for i, k in enumerate(chat.token_message[:prompt_tokens]) if k == TEMPLATE}
    )
    return route_svg(
        route,
        trace.tokens,
        title=title,
        predicted=trace.token_text(predicted_id),
        token_bytes=stored.prompt,
        predicted_bytes=stored.vocabulary.get(predicted_id),
        template_tokens=template,
    )
