"""A card as Markdown, where every piece of untrusted text is inert.

Every token and name is escaped: HTML specials become entities, every other ASCII punctuation is
backslash-escaped (no emphasis, links, autolinks or table breaks), control and invisible
characters are shown as `\\n` / `\\u202e`. Tokens are quoted “like this” rather than put in
code spans, because nothing inside a code span can be escaped (a `<` stays a `<`, a `|` still
splits a table row in GFM).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from lmscope.graph.nodes import RENORMALIZE

TOP_EDGES = 5  # route edges listed in the Markdown
TOKEN_CHARS = 40  # longer tokens are cut in the Markdown


def card_markdown(
    card: dict[str, Any],
    *,
    subtitle: str = "",
    tokens: list[str] | None = None,
    predicted: str | None = None,
    pattern: list[tuple[int, int, float]] | None = None,
) -> str:
    """A Card (without "markdown") as Markdown; every piece of untrusted text is escaped.

    `tokens` (the prompt's tokens) label edge positions, `predicted` is the output token's top
    prediction, `pattern` a head's strongest attention (source, target, weight) on the route.
    """
    tokens = tokens or []

    def at(position: int) -> str:
        if 0 <= position < len(tokens):
            return f"{md_token(tokens[position])}\u00a0@{position}"
        return f"@{position}"

    # The title is ours (a label and a kind); the subtitle names the model: escaped.
    lines = [f"**{card['title']}**" + (f" — {md_text(subtitle)}" if subtitle else "")]
    context = card.get("context")
    if context is not None:
        share = context["share"]
        amount = f"**{100 * share:.1f}%**" if context["mode"] == RENORMALIZE else f"**{share:.3g}**"
        of = f" of {md_token(predicted)}" if predicted is not None else ""
        lines.append(
            f"carries {amount} of the prediction{of} after {at(context['token'])} "
            f"at τ = {context['threshold']:g} ({md_text(context['mode'])})"
        )
        if context.get("activation") is not None:
            lines.append(f"activation here: {context['activation']:.4g}")
        edges = context.get("edges") or []
        if edges:
            shown = ", ".join(
                f"{at(e['target'])} ← {at(e['source'])} {e['weight']:.3f}"
                for e in edges[:TOP_EDGES]
            )
            more = f" and {len(edges) - TOP_EDGES} more" if len(edges) > TOP_EDGES else ""
            lines.append(f"route edges: {shown}{more}")
    if pattern:
        shown = ", ".join(f"{at(i)} ← {at(j)} {a:.2f}" for j, i, a in pattern)
        lines.append(f"attends most (attention weight): {shown}")
    promoted, suppressed = card.get("promoted") or [], card.get("suppressed") or []
    if promoted or suppressed:
        table = ["| promoted | score | suppressed | score |", "|---|---:|---|---:|"]
        for r in range(max(len(promoted), len(suppressed))):
            cells = []
            for column in (promoted, suppressed):
                if r < len(column):
                    cells += [md_token(column[r]["token"]), f"{column[r]['score']:+.2f}"]
                else:
                    cells += ["", ""]
            table.append("| " + " | ".join(cells) + " |")
        lines.append("\n".join(table))
    lines += [f"_{md_text(note)}_" for note in card.get("notes") or []]
    return "\n\n".join(lines) + "\n"


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_VISIBLE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def md_text(text: str) -> str:
    """Untrusted text as inert Markdown: `& < >` as entities, every other ASCII punctuation
    backslash-escaped, control and invisible format characters (bidi overrides, zero-width,
    line separators) shown as escapes, so nothing can open a tag, link, emphasis or table cell."""
    out = []
    for char in text:
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _VISIBLE:
            out.append("\\" + _VISIBLE[char])  # the backslash itself escaped: shows "\n"
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(f"\\\\u{ord(char):04x}")
        elif char.isascii() and not char.isalnum() and not char.isspace():
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def md_token(token: str) -> str:
    """A token as inert, visible Markdown: escaped, quoted “…”, runs of spaces kept, long
    tokens cut."""
    if len(token) > TOKEN_CHARS:
        token = token[: TOKEN_CHARS - 1] + "…"
    # A space after another space would collapse when rendered: make it a no-break space.
    shown = re.sub(r"(?<= ) ", "\u00a0", md_text(token))
    return f"“{shown}”"
