"""Text from a trace file or a model, shown inert.

Model names, prompts, token strings and paths come from files and models nobody vetted. Printed
raw, an ESC or CSI sequence clears the terminal or sets its title, OSC 8 fakes a link, a bidi
override reorders what the reader sees ("Trojan Source"). Wherever lmscope writes such
text for a person (the command line's summaries and messages, JSON exports, SVG labels), every
character `str.isprintable()` rejects is written as its Python escape instead: C0 and C1
controls, DEL, format characters (bidi embeddings, overrides and isolates, zero-width
characters, the BOM, tag characters), line and paragraph separators, surrogates, private-use
and unassigned code points, and spaces other than U+0020. Everything else, accents, CJK and
emoji included, is shown as it is. Torch-free, no imports beyond the standard library.
"""

from __future__ import annotations

import functools
import re


def escape(ch: str) -> str:
    """One character as Python's repr escapes it: \\x1b, \\u202e, \\U000e0001."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def inert(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every non-printable character escaped (see the module docstring). With
    `keep_newlines`, line breaks stay (multi-line output); they are escaped otherwise, so a
    message stays one line."""
    if text.isprintable():  # the common case, at C speed
        return text
    if keep_newlines:
        return "\n".join(inert(line) for line in text.split("\n"))
    return "".join(ch if ch.isprintable() else escape(ch) for ch in text)


def shorten(text: str, limit: int) -> str:
    """`inert(text)`, cut to about `limit` characters with an ellipsis; costs O(limit), however
    long `text` is."""
    shown = inert(text[:limit])
    return shown + "…" if len(text) > limit else shown


@functools.lru_cache(maxsize=1)
def _non_printable() -> re.Pattern[str]:
    """A character class of every code point `str.isprintable()` rejects (built once, ~0.3 s)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        if not chr(code).isprintable():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    parts = "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )
    return re.compile(f"[{parts}]")


def _json_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON writes characters past U+FFFF
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def inert_json(text: str) -> str:
    """JSON text (as `json.dumps` writes it, no raw line breaks) with every non-printable
    character written as a `\\u` escape: the same JSON value, safe to print. Only strings can
    hold such characters (JSON's own syntax is printable ASCII), so this changes no structure."""
    if text.isprintable():
        return text
    return _non_printable().sub(_json_escape, text)
