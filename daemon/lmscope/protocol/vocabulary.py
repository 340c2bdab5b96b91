"""The display vocabulary, read from `protocol/vocabulary.json`: written once for every view.

The graph webview (through the generated `extension/shared/protocol/vocabulary.ts`), the SVG
export, `lmscope show` and the hover cards name, colour and size the graph's nodes and edges
from here, and show tokens by its rules (`lmscope.traces.text.display_token`):

- `NODES[kind]`: the node's letter (X3, A23.14, M29.14, R22.2), a short name, a one-line
  legend, its colour and shape; `EDGES[kind]`: name, legend, colour and dash;
- `OUTPUT`: the output node's name, legend and colour (drawn largest, ringed);
- `COLOURS[name]`: a fixed hex (SVG, PNG) and the VS Code theme variable the webview uses;
- `EMBEDDING_ROW` / `LAYER_ROW`: the row labels (X; L0, L1, ...); `SIZES`: how a node's size
  follows its share of the prediction;
- `TOKENS`: the token display rules.

`protocol/vocabulary.schema.json` describes the file (the tests validate it); the loader checks
only what the code relies on (every kind present, colours named). Standard library only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from lmscope.protocol.files import VOCABULARY


@dataclass(frozen=True)
class Colour:
    name: str
    hex: str  # "#1a85ff": SVG and PNG exports, the webview's fallback
    theme_var: str  # "--vscode-charts-blue": the webview's colour

    def css(self) -> str:
        """The CSS value the webview uses: the theme colour, this hex as its fallback."""
        return f"var({self.theme_var}, {self.hex})"


@dataclass(frozen=True)
class NodeStyle:
    kind: str
    letter: str
    name: str
    legend: str
    colour: Colour
    shape: str  # "circle" | "square"


@dataclass(frozen=True)
class EdgeStyle:
    kind: str
    name: str
    legend: str
    colour: Colour
    dash: str | None  # SVG stroke-dasharray; None: solid


@dataclass(frozen=True)
class OutputStyle:
    name: str
    legend: str
    colour: Colour


@dataclass(frozen=True)
class Sizes:
    legend: str  # what a node's size and fill mean, for legends
    base: float  # radius fraction of a node with share 0
    min_radius: float
    opacity_base: float  # fill opacity of a node with share 0

    def radius(self, share: float, largest: float) -> float:
        """Radius of a node carrying `share` (clamped to [0, 1]) of the prediction, when a
        node carrying all of it has radius `largest`."""
        s = min(1.0, abs(share)) if math.isfinite(share) else 0.0
        return max(self.min_radius, largest * (self.base + (1 - self.base) * s**0.5))

    def opacity(self, share: float) -> float:
        """Fill opacity of a node carrying `share` of the prediction."""
        s = min(1.0, abs(share)) if math.isfinite(share) else 0.0
        return self.opacity_base + (1 - self.opacity_base) * s**0.5


@dataclass(frozen=True)
class TokenRules:
    visible: dict[str, str]  # character -> the sign shown for it
    empty: str
    ellipsis: str
    control: frozenset[str]  # general categories shown as \xNN
    invisible: frozenset[str]  # general categories shown as \uNNNN
    invisible_code_points: frozenset[int]  # also shown as \uNNNN
    bytes_open: str
    bytes_close: str
    bytes_separator: str
    hints: dict[str, str]  # bytePiece, maybeBytePiece, empty, escaped


def _load() -> dict[str, Any]:
    try:
        raw: dict[str, Any] = json.loads(VOCABULARY.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuntimeError(
            f"lmscope is installed without its display vocabulary {VOCABULARY} (reinstall lmscope)"
        ) from None
    named = [
        (f"{section}.{kind}", e)
        for section in ("nodes", "edges")
        for kind, e in raw[section].items()
    ]
    for where, entry in [*named, ("output", raw["output"])]:
        if entry["colour"] not in raw["colours"]:
            raise RuntimeError(
                f"protocol/vocabulary.json: {where} names colour {entry['colour']!r}, "
                "which `colours` does not define"
            )
    return raw


RAW: dict[str, Any] = _load()
"""protocol/vocabulary.json as it is."""

COLOURS: dict[str, Colour] = {
    name: Colour(name, entry["hex"], entry["themeVar"]) for name, entry in RAW["colours"].items()
}
NODES: dict[str, NodeStyle] = {
    kind: NodeStyle(kind, e["letter"], e["name"], e["legend"], COLOURS[e["colour"]], e["shape"])
    for kind, e in RAW["nodes"].items()
}
EDGES: dict[str, EdgeStyle] = {
    kind: EdgeStyle(kind, e["name"], e["legend"], COLOURS[e["colour"]], e["dash"])
    for kind, e in RAW["edges"].items()
}
OUTPUT = OutputStyle(
    RAW["output"]["name"], RAW["output"]["legend"], COLOURS[RAW["output"]["colour"]]
)
EMBEDDING_ROW: str = RAW["embeddingRow"]
LAYER_ROW: str = RAW["layerRow"]
SIZES = Sizes(
    RAW["sizes"]["legend"],
    RAW["sizes"]["base"],
    RAW["sizes"]["minRadius"],
    RAW["sizes"]["opacityBase"],
)
TOKENS = TokenRules(
    visible=dict(RAW["tokens"]["visible"]),
    empty=RAW["tokens"]["empty"],
    ellipsis=RAW["tokens"]["ellipsis"],
    control=frozenset(RAW["tokens"]["control"]),
    invisible=frozenset(RAW["tokens"]["invisible"]),
    invisible_code_points=frozenset(RAW["tokens"]["invisibleCodePoints"]),
    bytes_open=RAW["tokens"]["bytesOpen"],
    bytes_close=RAW["tokens"]["bytesClose"],
    bytes_separator=RAW["tokens"]["bytesSeparator"],
    hints=dict(RAW["tokens"]["hints"]),
)


def node_label(kind: str, layer: int, position: int) -> str:
    """A node's short label: X3 (embeddings have no layer), A23.14, M29.14, R22.2."""
    letter = NODES[kind].letter
    return f"{letter}{position}" if kind == "embedding" else f"{letter}{layer}.{position}"


def row_label(layer: int) -> str:
    """The label of a layer's row (L0, L1, ...); layer -1 is the embeddings' row (X)."""
    return EMBEDDING_ROW if layer < 0 else f"{LAYER_ROW}{layer}"
