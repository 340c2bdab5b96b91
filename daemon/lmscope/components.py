"""References to model components written in ordinary text: `L12H3`, `model.layers[5].mlp`, ...

The daemon offers a hover card wherever one of these appears, in any file: Python, Markdown,
plain text, JSON/JSONL, notebook cells. This module only finds and parses them; `cards` says
what they mean for a trace.

Accepted forms (layers and indices are decimal, non-negative, without '+' or leading zeros):

| written                                        | component            | canonical  |
|------------------------------------------------|----------------------|------------|
| `L12H3`, `L12.H3`                              | head 3 of layer 12   | `L12H3`    |
| `L5N1234`, `L5.N1234`                          | FFN neuron 1234      | `L5.N1234` |
| `L5.E3`                                        | expert 3 (MoE)       | `L5.E3`    |
| `L5.E3.N120`                                   | its neuron 120       |            |
| `L5.S0`, `L5.S0.N120`                          | shared expert 0 (+N) |            |
| `L5.attn`, `L5.attention`                      | attention block      | `L5.attn`  |
| `L5.ffn`, `L5.mlp`                             | FFN block            | `L5.ffn`   |
| `blocks.5.attn`, `blocks.5.hook_attn_out`      | attention block (TL) | `L5.attn`  |
| `blocks.5.mlp`, `blocks.5.hook_mlp_out`        | FFN block (TL)       | `L5.ffn`   |
| `model.layers[5].self_attn`, `layers.5.attn`   | attention block      | `L5.attn`  |
| `model.layers[5].mlp`, `model.layers.5.mlp`    | FFN block            | `L5.ffn`   |
| `transformer.h.5.attn`, `transformer.h[5].mlp` | GPT-2 blocks         |            |
| `gpt_neox.layers.5.attention`, `....5.mlp`     | GPT-NeoX blocks      |            |
| `model.decoder.layers.5.fc1`, `....5.fc2`      | OPT's FFN            | `L5.ffn`   |

Module paths: an optional dotted prefix (`model.`, `self.model.model.`, `transformer.`, ...),
a container `layers` / `blocks` / `h` (`h` only after a '.', as in `transformer.h`), the layer as
`.5` or `[5]`, then the block: `self_attn`, `attn`, `attention`, `self_attention` (attention) or
`mlp`, `ffn`, `feed_forward`, Mixtral 4.x's `block_sparse_moe`, OPT's `fc1` / `fc2` (FFN), or
TransformerLens' `hook_attn_out` / `hook_mlp_out`. An MoE layer's `mlp.experts`, `mlp.gate` or
`mlp.shared_expert` is its FFN block (experts are named `L5.E3`, never by module path).
Any further `.name` segments belong to the same reference and the same block, so
`model.layers[5].self_attn.o_proj`, `layers[5].mlp.down_proj.weight` and
`blocks.5.attn.hook_z` are the attention / FFN block of layer 5 and hovering any part of them
shows its card.

Deliberately not accepted, to keep ordinary text quiet:
- lower or mixed case short forms (`l12h3`, `L12h3`): hashes and identifiers are full of them;
- anything glued to a letter, digit or '_' on either side (`XL12H3Y`, `L12H3x`, `CL5N10V`,
  `0xL1H2`, `L5.attn_out`), leading zeros (`L05H3`), signs (`L+1H2`, `layers[-1]`);
- references inside a URL (`https://example.com/L1H2`);
- neurons in module-path form: no library names a single neuron that way; write `L5.N1234`;
- a bare `h.5.attn` (a variable named `h` is too common) and `blocks.5` alone (the residual).

Offsets are Python `str` indices (code points). LSP positions count UTF-16 code units; the
server converts at the boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

ComponentKind = Literal["head", "neuron", "attention", "ffn", "expert", "expert_neuron"]
COMPONENT_KINDS: tuple[ComponentKind, ...] = (
    "head", "neuron", "attention", "ffn", "expert", "expert_neuron",
)  # fmt: skip
_INDEXED: frozenset[str] = frozenset({"head", "neuron", "expert_neuron"})
_OF_EXPERT: frozenset[str] = frozenset({"expert", "expert_neuron"})


@dataclass(frozen=True)
class ComponentRef:
    """One model component: a head or neuron (`index` set), a whole block (`index` None), or,
    in a mixture-of-experts layer, an expert (`expert` set; `shared` for a shared expert) or a
    neuron of one (`expert` and `index` set; docs/method.md, "Experts")."""

    kind: ComponentKind
    layer: int
    index: int | None = None
    expert: int | None = None  # routed expert e, or shared expert s when `shared`
    shared: bool = False

    def __post_init__(self) -> None:
        if self.kind not in COMPONENT_KINDS:
            raise ValueError(f"unknown component kind {self.kind!r}")
        if not _is_count(self.layer):
            raise ValueError(f"layer must be an int >= 0, got {self.layer!r}")
        if self.kind in _INDEXED:
            if not _is_count(self.index):
                raise ValueError(f"a {self.kind} needs an index >= 0, got {self.index!r}")
        elif self.index is not None:
            raise ValueError(f"an {self.kind} has no index, got {self.index!r}")
        if self.kind in _OF_EXPERT:
            if not _is_count(self.expert) or not isinstance(self.shared, bool):
                raise ValueError(f"an {self.kind} needs an expert >= 0, got {self.expert!r}")
        elif self.expert is not None or self.shared:
            raise ValueError(f"a {self.kind} belongs to no expert")

    def expert_name(self) -> str:
        """ "E3" or "S0" (experts only)."""
        return f"{'S' if self.shared else 'E'}{self.expert}"

    def label(self) -> str:
        """Canonical short form: "L12H3", "L5.N1234", "L5.attn", "L5.ffn", "L5.E3",
        "L5.E3.N120", "L5.S0", "L5.S0.N120"."""
        if self.kind == "head":
            return f"L{self.layer}H{self.index}"
        if self.kind == "neuron":
            return f"L{self.layer}.N{self.index}"
        if self.kind == "expert":
            return f"L{self.layer}.{self.expert_name()}"
        if self.kind == "expert_neuron":
            return f"L{self.layer}.{self.expert_name()}.N{self.index}"
        return f"L{self.layer}.{'attn' if self.kind == 'attention' else 'ffn'}"

    def to_wire(self) -> dict[str, Any]:
        """The wire ComponentRef: {"kind", "layer", "index"?, "expert"?, "shared"?} ("index"
        absent for blocks and experts; "expert" and "shared" only for experts and their
        neurons)."""
        wire: dict[str, Any] = {"kind": self.kind, "layer": self.layer}
        if self.index is not None:
            wire["index"] = self.index
        if self.kind in _OF_EXPERT:
            wire["expert"], wire["shared"] = self.expert, self.shared
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> ComponentRef:
        """Parse a wire ComponentRef (already schema-checked by the server; ValueError if not)."""
        kind, layer, index = wire.get("kind"), wire.get("layer"), wire.get("index")
        if kind not in COMPONENT_KINDS:
            raise ValueError(f"unknown component kind {kind!r}")
        if kind in _OF_EXPERT:
            return cls(kind, layer, index, wire.get("expert"), wire.get("shared", False))  # type: ignore[arg-type]
        return cls(kind, layer, index)  # type: ignore[arg-type]  # checked in __post_init__


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --- parsing ---------------------------------------------------------------------------------
_NUM = r"(?:0|[1-9][0-9]*)"  # ASCII digits only; no sign, no leading zeros
_ATTN_NAMES = ("self_attn", "self_attention", "attention", "attn", "hook_attn_out")
# OPT has no FFN module: its layer holds fc1 and fc2 themselves.
_FFN_NAMES = ("mlp", "ffn", "feed_forward", "block_sparse_moe", "hook_mlp_out", "fc1", "fc2")

_SHORT = re.compile(
    rf"(?<!\w)L(?P<layer>{_NUM})(?:"
    rf"\.?H(?P<head>{_NUM})|\.?N(?P<neuron>{_NUM})|\.(?P<block>attn|attention|ffn|mlp)"
    rf"|\.(?P<group>[ES])(?P<expert>{_NUM})(?:\.N(?P<expert_neuron>{_NUM}))?"
    rf")(?![\w])"
)
_BLOCK_NAMES = "|".join(sorted(_ATTN_NAMES + _FFN_NAMES, key=len, reverse=True))
_MODULE = re.compile(
    # Start a dotted chain at its beginning (or after `].` / `).`): linear time on long lines.
    r"(?:(?<![\w.])|(?<=[\])]\.))"
    r"(?:[A-Za-z_]\w*\.)*"  # optional dotted prefix: model. / self.model.model. / ...
    rf"(?:layers|blocks|(?<=\.)h)(?:\.(?P<dot>{_NUM})|\[(?P<bracket>{_NUM})\])"
    rf"\.(?P<block>{_BLOCK_NAMES})"
    r"(?:\.[A-Za-z_]\w*)*"  # o_proj, down_proj.weight, hook_z: still the same block
    r"(?!\w)"
)
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://\S*")


def find_references(line: str) -> list[tuple[ComponentRef, int, int]]:
    """Every component reference in one line of text, as (ref, start, end), in order.

    `start`/`end` are Python str indices (end exclusive); the server converts to UTF-16.
    """
    found: list[tuple[ComponentRef, int, int]] = []
    for match in _SHORT.finditer(line):
        layer = int(match["layer"])
        if match["head"] is not None:
            ref = ComponentRef("head", layer, int(match["head"]))
        elif match["neuron"] is not None:
            ref = ComponentRef("neuron", layer, int(match["neuron"]))
        elif match["expert"] is not None:
            expert, shared = int(match["expert"]), match["group"] == "S"
            if match["expert_neuron"] is None:
                ref = ComponentRef("expert", layer, None, expert, shared)
            else:
                ref = ComponentRef(
                    "expert_neuron", layer, int(match["expert_neuron"]), expert, shared
                )
        else:
            ref = _block(match["block"], layer)
        found.append((ref, match.start(), match.end()))
    for match in _MODULE.finditer(line):
        layer = int(match["dot"] if match["dot"] is not None else match["bracket"])
        found.append((_block(match["block"], layer), match.start(), match.end()))
    urls = [m.span() for m in _URL.finditer(line)]
    kept = [hit for hit in found if not any(start < hit[2] and hit[1] < end for start, end in urls)]
    return sorted(kept, key=lambda hit: hit[1])


def reference_at(line: str, character: int) -> tuple[ComponentRef, int, int] | None:
    """The reference covering `character` (a str index into `line`: start <= c < end)."""
    for ref, start, end in find_references(line):
        if start <= character < end:
            return ref, start, end
    return None


def _block(name: str, layer: int) -> ComponentRef:
    return ComponentRef("attention" if name in _ATTN_NAMES else "ffn", layer)


__all__ = ["COMPONENT_KINDS", "ComponentRef", "find_references", "reference_at"]
