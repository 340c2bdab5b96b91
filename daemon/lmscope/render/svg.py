"""Render a `Route` as a standalone SVG: tokens are columns, layers are horizontal bands.

Layout (docs/method.md, "Nodes of the graph"): layer 0 at the bottom, the last layer at the top.
In the band of layer `l` the residual R(l,i) sits on the band's top edge, so R(l-1,i) — which
is prev(l,i) — is the bottom edge; A(l,i) is in the lower half and the FFN node M(l,i) is a
small square offset to the right between A and R, so FFN edges never overlap the vertical
residual line. Embeddings X(i) sit in an extra band under layer 0.

The output is a pure function of its inputs (fixed number formatting, sorted draw order) so
SVGs can be diffed, and every piece of untrusted text is sanitised and XML-escaped.
"""

from __future__ import annotations

import unicodedata
from xml.sax.saxutils import escape

from lmscope.graph import (
    ATTENTION_EDGE,
    EMBEDDING,
    FFN,
    FFN_EDGE,
    POST_ATTENTION,
    RESIDUAL,
    RESIDUAL_EDGE,
    Edge,
    Node,
    Route,
)
from lmscope.traces.text import escape as inert_escape

# Colours by edge kind (also used by the legend) and by node kind.
EDGE_COLOURS = {ATTENTION_EDGE: "#2f6fd0", RESIDUAL_EDGE: "#7a7a7a", FFN_EDGE: "#e0701b"}
NODE_COLOURS = {EMBEDDING: "#3a9a5b", POST_ATTENTION: "#2f6fd0", FFN: "#e0701b", RESIDUAL: "#444"}
OUTPUT_COLOUR = "#d62d6a"

MAX_LABEL_CHARS = 12  # longer token strings are truncated with an ellipsis
CHAR_W = 6.6  # approximate advance of an 11px monospace glyph, for margin sizing
TOP = 52.0  # room for the title line and the legend
LEFT = 40.0  # room for the L0, L1, ... labels (more when rotated labels overhang)

# Whitespace made visible; everything else that XML 1.0 forbids becomes a visible escape.
_VISIBLE = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "␍"}


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


def display_token(token: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A token as shown in a label: whitespace visible, truncated with an ellipsis (unescaped).

    Every character shows as at least one, so the first `limit + 1` decide the label: the
    cost is O(limit) per label however long the token (a 1 MB token once made SVG export
    quadratic: its whole text was processed for every node of its column)."""
    head = token[: limit + 1]
    shown = _xml_safe("".join(_VISIBLE.get(ch, ch) for ch in head)) or "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


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
        self.r = _clamp(min(self.cw, self.rh) * 0.14, 2.5, 5.0)  # node radius

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


def route_svg(
    route: Route,
    token_strings: list[str],
    *,
    title: str | None = None,
    predicted: str | None = None,
) -> str:
    """Render `route` as a standalone SVG document (no scripts, no external resources).

    `token_strings` holds one display string per prompt position (untrusted text). Edges carry
    `class="edge <kind>"`, nodes `class="node <kind>"` and `data-node="kind:layer:position"`.
    """
    if len(token_strings) != route.n_tokens:
        raise ValueError(f"{len(token_strings)} token strings for a {route.n_tokens}-token route")
    for node in route.nodes:  # a caller bug, not user input: fail loudly, not off-canvas
        if not (0 <= node.position < route.n_tokens and 0 <= node.layer < route.n_layers):
            raise ValueError(f"node {node} outside a {route.n_layers}x{route.n_tokens} grid")
    labels = [display_token(s) for s in token_strings]
    lay = _Layout(route, labels)
    header, header_width = _header(route, title, predicted, labels)
    lay.width = max(lay.width, header_width)  # small grids must not clip the title line
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(lay.width)}" '
        f'height="{_f(lay.height)}" viewBox="0 0 {_f(lay.width)} {_f(lay.height)}" '
        'font-family="monospace" font-size="11">',
        f'<rect width="{_f(lay.width)}" height="{_f(lay.height)}" fill="#fff"/>',
    ]
    out += header
    out += _grid(route, lay, labels, token_strings)

    # Light edges first so heavy ones stay on top; ties broken by identity for determinism.
    out.append('<g fill="none" stroke-linecap="round">')
    for e in sorted(route.edges, key=lambda e: (e.weight, e.kind, e.source, e.target)):
        width, opacity = _edge_style(e.weight, lay)
        tip = f"{e.source.label()} → {e.target.label()} {e.kind} {e.weight:.3f}"
        out.append(
            f'<path class="edge {_esc(e.kind)}" data-source="{_node_id(e.source)}" '
            f'data-target="{_node_id(e.target)}" d="{_edge_path(e, lay)}" '
            f'stroke="{EDGE_COLOURS.get(e.kind, "#000")}" stroke-width="{width}" '
            f'stroke-opacity="{opacity}"><title>{_esc(tip)}</title></path>'
        )
    out.append("</g>")

    out.append('<g stroke="#fff" stroke-width="0.8">')
    output = route.output_node
    for node in sorted(route.nodes):
        x, y = lay.point(node)
        kind = _esc(node.kind)
        attrs = f'data-node="{_node_id(node)}" fill="{NODE_COLOURS.get(node.kind, "#000")}"'
        full = display_token(token_strings[node.position], 80)
        tip = f"<title>{_esc(node.label())} {_esc(full)}</title>"
        if node == output:
            out.append(
                f'<circle class="node {kind} output" {attrs} cx="{_f(x)}" cy="{_f(y)}" '
                f'r="{_f(lay.r * 1.6)}" stroke="{OUTPUT_COLOUR}" stroke-width="2.5">{tip}</circle>'
            )
        elif node.kind == FFN:
            s = lay.r * 1.7  # the FFN square's side
            out.append(
                f'<rect class="node {kind}" {attrs} x="{_f(x - s / 2)}" y="{_f(y - s / 2)}" '
                f'width="{_f(s)}" height="{_f(s)}">{tip}</rect>'
            )
        else:
            out.append(
                f'<circle class="node {kind}" {attrs} cx="{_f(x)}" cy="{_f(y)}" '
                f'r="{_f(lay.r)}">{tip}</circle>'
            )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _header(
    route: Route, title: str | None, predicted: str | None, labels: list[str]
) -> tuple[list[str], float]:
    """Title line (title, τ, mode, edge count, prediction), the legend, and the width they need."""
    head = title if title is not None else f"route of token {route.token} “{labels[route.token]}”"
    if len(head) > 100:  # a caller may pass the whole prompt; keep the line bounded
        head = head[:99] + "…"
    parts = [head, f"τ={route.threshold:g} ({route.mode})", f"{len(route.edges)} edges"]
    if predicted is not None:
        parts.append(f"predicted {display_token(predicted, 40)}")
    line = " · ".join(parts)
    out = [f'<text class="title" x="8" y="18" font-size="13">{_esc(line)}</text>']
    x = 8.0
    for kind in (ATTENTION_EDGE, RESIDUAL_EDGE, FFN_EDGE):
        out.append(
            f'<g class="legend {kind}"><line x1="{_f(x)}" y1="36" x2="{_f(x + 22)}" y2="36" '
            f'stroke="{EDGE_COLOURS[kind]}" stroke-width="3"/>'
            f'<text x="{_f(x + 27)}" y="40">{kind}</text></g>'
        )
        x += 40 + len(kind) * CHAR_W
    return out, max(x, 16 + len(line) * CHAR_W * 13 / 11)


def _grid(route: Route, lay: _Layout, labels: list[str], tokens: list[str]) -> list[str]:
    """Alternating layer bands, column guides, layer/X labels and token labels."""
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
            f'text-anchor="end" fill="#666">L{layer}</text>'
        )
    out.append(
        f'<text class="layer-label" x="{_f(lay.left - 4)}" y="{_f(lay.base + 0.45 * lay.rh + 4)}" '
        'text-anchor="end" fill="#666">X</text>'
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
        place = (
            f'x="{_f(lay.x(i) + 3)}" y="{_f(ty)}" text-anchor="end" '
            f'transform="rotate(-55 {_f(lay.x(i) + 3)} {_f(ty)})"'
            if lay.rotate
            else f'x="{_f(lay.x(i))}" y="{_f(ty)}" text-anchor="middle"'
        )
        full = display_token(tokens[i], 80)  # hover shows what truncation hid
        tip = f"<title>{_esc(full)}</title>" if full != label else ""
        out.append(
            f'<text class="token" data-position="{i}" {place}{weight}>{_esc(label)}{tip}</text>'
        )
    out.append("</g>")
    return out
