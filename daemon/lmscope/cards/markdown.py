"""A card as Markdown, where every piece of untrusted text is inert.

Tokens are shown as in every lmscope view (`lmscope.traces.text.display_token`: `·Mary`, `⏎`,
`\\u202e`, byte pieces as `⟨E2 80⟩`) inside code spans: nothing inside a code span is Markdown
or HTML (no emphasis, link, autolink or tag), the display has no line break, and the fence is
longer than any run of backticks in the token. In a table cell a `|` is escaped (GFM splits
cells before it reads code spans; `_escaped_pipe`). Editors that show the Markdown raw (Neovim)
show the same readable `·Mary`. Other text (model names, notes) is escaped: HTML specials become
entities, every other ASCII punctuation is backslash-escaped, control and invisible characters
are shown as `\\n` / `\\u202e`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from lmscope.graph.nodes import RENORMALIZE
from lmscope.protocol.vocabulary import TOKENS
from lmscope.traces.text import display_token, is_byte_piece

TOP_EDGES = 5  # route edges listed in the Markdown
TOKEN_CHARS = 40  # longer tokens are cut in the Markdown


def card_markdown(
    card: dict[str, Any],
    *,
    subtitle: str = "",
    tokens: list[str] | None = None,
    predicted: str | None = None,
    pattern: list[tuple[int, int, float]] | None = None,
    token_bytes: list[bytes | None] | None = None,
    vocabulary_bytes: dict[int, bytes] | None = None,
    predicted_bytes: bytes | None = None,
    run_line: str | None = None,
) -> str:
    """A Card (without "markdown") as Markdown; every piece of untrusted text is escaped.

    `tokens` (the prompt's tokens) label edge positions, `predicted` is the output token's top
    prediction, `pattern` a head's strongest attention (source, target, weight) on the route.
    `token_bytes`, `vocabulary_bytes` (by token id) and `predicted_bytes` are the stored bytes
    of byte pieces (`lmscope.traces.pieces`), shown as ⟨E2 80⟩ with a note saying what that is.
    `run_line` is what a corpus run says of the component (`cards.runs`; its name is untrusted).
    """
    tokens = tokens or []
    pieces = token_bytes or []
    by_id = vocabulary_bytes or {}
    hints: dict[str, None] = {}  # what the shown tokens need explained, in order

    def token(text: str, data: bytes | None, *, in_table: bool = False) -> str:
        if is_byte_piece(data):
            hints[TOKENS.hints["bytePiece"]] = None
        elif data is None and "\ufffd" in text[: TOKEN_CHARS + 1]:
            hints[TOKENS.hints["maybeBytePiece"]] = None
        return md_token(text, data, in_table=in_table)

    def at(position: int) -> str:
        if 0 <= position < len(tokens):
            data = pieces[position] if position < len(pieces) else None
            return f"{token(tokens[position], data)}\u00a0@{position}"
        return f"@{position}"

    # The title is ours (a label and a kind); the subtitle names the model: escaped.
    lines = [f"**{card['title']}**" + (f" — {md_text(subtitle)}" if subtitle else "")]
    context = card.get("context")
    if context is not None:
        share = context["share"]
        amount = f"**{100 * share:.1f}%**" if context["mode"] == RENORMALIZE else f"**{share:.3g}**"
        of = f" of {token(predicted, predicted_bytes)}" if predicted is not None else ""
        lines.append(
            f"carries {amount} of the prediction{of} after {at(context['token'])} "
            f"at τ = {context['threshold']:g} ({md_text(context['mode'])})"
        )
        if context.get("activation") is not None:
            lines.append(f"activation here: {context['activation']:.4g}")
        if context.get("gate") is not None:  # experts: the router's gate, shown apart
            lines.append(f"router gate here: {context['gate']:.4g}")
        edges = context.get("edges") or []
        if edges:
            shown = ", ".join(
                f"{at(e['target'])} ← {at(e['source'])} {e['weight']:.3f}"
                for e in edges[:TOP_EDGES]
            )
            more = f" and {len(edges) - TOP_EDGES} more" if len(edges) > TOP_EDGES else ""
            lines.append(f"route edges: {shown}{more}")
    if run_line:
        lines.append(md_text(run_line))
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
                    entry = column[r]
                    shown = token(entry["token"], by_id.get(entry["id"]), in_table=True)
                    cells += [shown, f"{entry['score']:+.2f}"]
                else:
                    cells += ["", ""]
            table.append("| " + " | ".join(cells) + " |")
        lines.append("\n".join(table))
    lines += [f"_{md_text(note)}_" for note in card.get("notes") or []]
    lines += [f"_{md_text(hint)}_" for hint in hints]
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


def md_token(token: str, data: bytes | None = None, *, in_table: bool = False) -> str:
    """A token as every lmscope view shows it (`display_token`, cut to TOKEN_CHARS), in a code
    span; `data` is its bytes when it is a byte piece. `in_table`: for a GFM table cell."""
    return md_code(display_token(token, data, limit=TOKEN_CHARS), in_table=in_table)


def md_code(text: str, *, in_table: bool = False) -> str:
    """One line of text as a code span: a fence longer than any run of backticks inside, and
    a space inside each end when the text starts or ends with a backtick (CommonMark strips
    one). In a GFM table cell every `|` is escaped (`_escaped_pipe`)."""
    if in_table:
        text = _PIPE.sub(_escaped_pipe, text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_PIPE = re.compile(r"(\\*)\|")


def _escaped_pipe(match: re.Match[str]) -> str:
    """A `|` of a GFM table cell, escaped. GFM splits a row at each unescaped `|` before it reads
    code spans, then drops the escaping backslash. Renderers differ on `\\\\|`: markdown-it and
    cmark-gfm take any backslash before a `|` as its escape, marked (VS Code's hovers) only an odd
    run of them; an odd run is an escape to all. So a `|` after k backslashes gets one more
    backslash, two when k is odd: shown exactly unless the token itself holds a backslash right
    before a `|`, which then shows one backslash more (never a split cell, whose other half would
    be Markdown outside the code span)."""
    run = match.group(1)
    return run + ("\\" if len(run) % 2 == 0 else "\\\\") + "|"
