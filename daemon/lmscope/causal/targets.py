"""Ablation targets: which component a causal check removes, as small frozen dataclasses, and
their written forms (torch-free: the CLI, the server and the API parse them here).

| written          | target                                                    |
|------------------|-----------------------------------------------------------|
| `L23H0`          | head 0 of layer 23, at every position                     |
| `L23H0:14<-2`    | one attention edge 14 ← 2 through head 0 of layer 23       |
| `L23:14<-2`      | the attention edge 14 ← 2 of layer 23, through every head  |
| `L5.ffn@14`      | the FFN block of layer 5 at position 14 (`L5.ffn`: all)    |
| `L5.N120@14`     | neuron 120 of layer 5 at position 14 (`L5.N120`: all)      |

Heads and neurons are read with `lmscope.components` (so `L23.H0`, `L5N120` and `L5.mlp` are
accepted as everywhere else); the `:i<-j` and `@i` suffixes are positions of the prompt (BOS
included). Several targets are separated by commas.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from lmscope.components import find_references
from lmscope.errors import LmscopeError

AblationKind = Literal["zero", "mean", "patch"]
ABLATION_KINDS: tuple[AblationKind, ...] = ("zero", "mean", "patch")


class AblationError(LmscopeError):
    """An ablation that cannot be done as asked (a bad target, kind or patch prompt)."""


@dataclass(frozen=True)
class HeadTarget:
    """Head `head` of `layer` at every position: its slice of the output projection's input."""

    layer: int
    head: int

    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True)
class HeadEdgeTarget:
    """The attention edge `target` ← `source` through one head: the term A[h,i,j]·v[j,g(h)]."""

    layer: int
    head: int
    target: int
    source: int

    def label(self) -> str:
        return f"L{self.layer}H{self.head}:{self.target}<-{self.source}"


@dataclass(frozen=True)
class EdgeTarget:
    """The attention edge `target` ← `source` of `layer` through every head."""

    layer: int
    target: int
    source: int

    def label(self) -> str:
        return f"L{self.layer}:{self.target}<-{self.source}"


@dataclass(frozen=True)
class FfnTarget:
    """The FFN block's update of `layer` at `position` (None: every position)."""

    layer: int
    position: int | None = None

    def label(self) -> str:
        return f"L{self.layer}.ffn" + ("" if self.position is None else f"@{self.position}")


@dataclass(frozen=True)
class NeuronTarget:
    """Neuron `neuron` of `layer` (its activation a[i,k]) at `position` (None: everywhere)."""

    layer: int
    neuron: int
    position: int | None = None

    def label(self) -> str:
        where = "" if self.position is None else f"@{self.position}"
        return f"L{self.layer}.N{self.neuron}{where}"


Target = HeadTarget | HeadEdgeTarget | EdgeTarget | FfnTarget | NeuronTarget
TARGET_TYPES = (HeadTarget, HeadEdgeTarget, EdgeTarget, FfnTarget, NeuronTarget)

_NUM = r"(?:0|[1-9][0-9]*)"
_EDGE = re.compile(rf"^(?P<component>.+?):(?P<target>{_NUM})<-(?P<source>{_NUM})$")
_LAYER = re.compile(rf"^L(?P<layer>{_NUM})$")
_AT = re.compile(rf"^(?P<component>.+?)@(?P<position>{_NUM})$")
FORMS = "L23H0, L23H0:14<-2, L23:14<-2, L5.ffn@14, L5.ffn, L5.N120@14, L5.N120"


def parse_target(text: str) -> Target:
    """One written target (see the module's table), or AblationError naming the forms."""
    written = text.strip()
    edge = _EDGE.match(written)
    if edge is not None:
        target, source = int(edge["target"]), int(edge["source"])
        if source > target:
            raise AblationError(f"{written!r}: no edge {target} <- {source}, the model is causal")
        layer = _LAYER.match(edge["component"])
        if layer is not None:
            return EdgeTarget(int(layer["layer"]), target, source)
        ref = _component(edge["component"], written)
        if ref.kind == "head" and ref.index is not None:
            return HeadEdgeTarget(ref.layer, ref.index, target, source)
        raise AblationError(f"{written!r}: an edge is written L23:14<-2 or L23H0:14<-2")
    at = _AT.match(written)
    component, position = (written, None) if at is None else (at["component"], int(at["position"]))
    ref = _component(component, written)
    if ref.kind == "head" and ref.index is not None and position is None:
        return HeadTarget(ref.layer, ref.index)
    if ref.kind == "ffn":
        return FfnTarget(ref.layer, position)
    if ref.kind == "neuron" and ref.index is not None:
        return NeuronTarget(ref.layer, ref.index, position)
    raise AblationError(f"{written!r} is not an ablation target; the forms are {FORMS}")


def _component(text: str, written: str):
    """The one component `text` names exactly (lmscope.components), or AblationError."""
    found = find_references(text)
    if len(found) != 1 or found[0][1] != 0 or found[0][2] != len(text):
        raise AblationError(f"{written!r} is not an ablation target; the forms are {FORMS}")
    return found[0][0]


def parse_targets(targets: str | Target | Iterable[str | Target]) -> list[Target]:
    """Targets from a comma-separated string, one target, or a list of either."""
    if isinstance(targets, str):
        items: list[str | Target] = [part for part in targets.split(",") if part.strip()]
    elif isinstance(targets, TARGET_TYPES):
        items = [targets]
    else:
        items = list(targets)
    parsed = [item if isinstance(item, TARGET_TYPES) else _parse_item(item) for item in items]
    return parsed


def _parse_item(item: object) -> Target:
    if not isinstance(item, str):
        raise AblationError(f"an ablation target is a string such as L23H0, got {item!r}")
    return parse_target(item)


def check_targets(
    targets: list[Target], n_layers: int, n_heads: int, n_tokens: int, d_ffn: int
) -> None:
    """AblationError for a target outside the model or the prompt (each limit named)."""
    for target in targets:
        name = target.label()
        if not 0 <= target.layer < n_layers:
            raise AblationError(f"{name}: layer {target.layer} is out of range (0..{n_layers - 1})")
        head = getattr(target, "head", None)
        if head is not None and not 0 <= head < n_heads:
            raise AblationError(f"{name}: head {head} is out of range (the model has {n_heads})")
        for position in (getattr(target, "position", None), getattr(target, "target", None)):
            if position is not None and position >= n_tokens:
                raise AblationError(
                    f"{name}: position {position} is out of range ({n_tokens} prompt tokens)"
                )
        neuron = getattr(target, "neuron", None)
        if neuron is not None and not 0 <= neuron < d_ffn:
            raise AblationError(f"{name}: neuron {neuron} is out of range (d_ffn is {d_ffn})")


def check_kind(kind: str) -> AblationKind:
    """`kind` as an AblationKind, or AblationError naming the kinds."""
    for known in ABLATION_KINDS:
        if kind == known:
            return known
    raise AblationError(f"unknown ablation kind {kind!r}: use one of {', '.join(ABLATION_KINDS)}")


__all__ = [
    "ABLATION_KINDS",
    "AblationError",
    "AblationKind",
    "EdgeTarget",
    "FfnTarget",
    "HeadEdgeTarget",
    "HeadTarget",
    "NeuronTarget",
    "Target",
    "check_kind",
    "check_targets",
    "parse_target",
    "parse_targets",
]
