"""Which token positions of two traces are the same position, for comparing them (`traces.diff`).

The rule (docs/method.md, "Comparing two traces"): when both traces have as many tokens, position
i of A is position i of B. Otherwise the user says how they align, either the last K tokens of
each, or an explicit list of (position in A, position in B) pairs. Nothing is ever guessed: two
traces of different lengths without an alignment are refused, with a message saying how to give
one.

An explicit alignment must be strictly increasing in both positions: an edge always goes from an
earlier token to a later one (the model is causal), so a mapping that crossed would turn edges of
B backwards in A's positions. Each position appears at most once on each side. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lmscope.errors import LmscopeError

IDENTITY = "identity"  # equal token counts: i <-> i
LAST = "last"  # the last K tokens of each
PAIRS = "pairs"  # an explicit list

HOW_TO_ALIGN = (
    "give an alignment: the last K tokens of each (--align-last K) or explicit pairs of "
    'positions A:B (--align "0:0,1:1,...")'
)


@dataclass(frozen=True)
class Alignment:
    """Pairs (position in A, position in B), increasing in both."""

    how: str  # IDENTITY | LAST | PAIRS
    pairs: tuple[tuple[int, int], ...]
    a_to_b: dict[int, int] = field(init=False, repr=False, compare=False)
    b_to_a: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "a_to_b", dict(self.pairs))
        object.__setattr__(self, "b_to_a", {b: a for a, b in self.pairs})

    def describe(self) -> str:
        if self.how == IDENTITY:
            return f"positions one to one ({len(self.pairs)} tokens)"
        if self.how == LAST:
            return f"the last {len(self.pairs)} tokens of each"
        return f"{len(self.pairs)} explicit pairs"


def align(
    n_a: int,
    n_b: int,
    last: int | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> Alignment:
    """The alignment of a trace of `n_a` tokens with one of `n_b`: one to one when the counts
    match and no alignment is given, else the `last` K tokens or the explicit `pairs`."""
    if last is not None and pairs is not None:
        raise LmscopeError("give one alignment: the last K tokens or explicit pairs, not both")
    if last is not None:
        if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= min(n_a, n_b):
            raise LmscopeError(
                f"cannot align the last {last!r} tokens: A has {n_a} tokens and B has {n_b}, "
                f"so K must be within 1..{min(n_a, n_b)}"
            )
        return Alignment(LAST, tuple((n_a - last + k, n_b - last + k) for k in range(last)))
    if pairs is not None:
        return Alignment(PAIRS, _checked_pairs(pairs, n_a, n_b))
    if n_a != n_b:
        raise LmscopeError(
            f"the traces have different token counts (A {n_a}, B {n_b}): lmscope does not "
            f"guess which tokens correspond; {HOW_TO_ALIGN}"
        )
    return Alignment(IDENTITY, tuple((i, i) for i in range(n_a)))


def _checked_pairs(
    pairs: Sequence[tuple[int, int]], n_a: int, n_b: int
) -> tuple[tuple[int, int], ...]:
    if len(pairs) == 0:
        raise LmscopeError("an explicit alignment needs at least one pair of positions")
    checked: list[tuple[int, int]] = []
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in pair):
            raise LmscopeError(f"alignment pair {pair!r} is not two whole positions (A, B)")
        a, b = pair
        if not 0 <= a < n_a:
            raise LmscopeError(f"alignment pair {a}:{b}: position {a} is not in A (0..{n_a - 1})")
        if not 0 <= b < n_b:
            raise LmscopeError(f"alignment pair {a}:{b}: position {b} is not in B (0..{n_b - 1})")
        if checked and (a <= checked[-1][0] or b <= checked[-1][1]):
            before = checked[-1]
            raise LmscopeError(
                f"alignment pair {a}:{b} after {before[0]}:{before[1]}: pairs must increase in "
                "both positions (each position once; the model is causal, so crossing pairs "
                "would turn edges backwards)"
            )
        checked.append((a, b))
    return tuple(checked)


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """`"0:0,1:2,5:6"` -> [(0, 0), (1, 2), (5, 6)] (checked against the traces by `align`)."""
    pairs = []
    for part in text.split(","):
        a, sep, b = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((int(a), int(b)))
        except ValueError:
            raise LmscopeError(
                f'alignment {part.strip()!r} is not a pair A:B of positions (e.g. "0:0,1:2")'
            ) from None
    return pairs
