"""Text from a trace file or a model, shown inert.

Model names, prompts, token strings and paths come from files and models nobody vetted. Printed
raw, an ESC or CSI sequence clears the terminal or sets its title, OSC 8 fakes a link, a bidi
override reorders what the reader sees ("Trojan Source"). Wherever lmscope writes such
text for a person (the command line's summaries and messages, JSON exports, SVG labels), every
character `str.isprintable()` rejects is written as its Python escape instead: C0 and C1
controls, DEL, format characters (bidi embeddings, overrides and isolates, zero-width
characters, the BOM, tag characters), line and paragraph separators, surrogates, private-use
and unassigned code points, and spaces other than U+0020. Everything else, accents, CJK and
emoji included, is shown as it is.

Tokens are shown by one rule everywhere (`display_token`, the twin of
extension/shared/display.ts `displayToken`; the rules are `protocol/vocabulary.json`'s
`tokens`, the shared test vectors tests/fixtures/token_display.json): spaces `·`, newline `⏎`,
tab `→`, CR `↵`, other controls `\\xNN`, invisible and format characters `\\uNNNN`, empty `∅`,
and a byte piece (bytes that are not valid UTF-8 alone) as its bytes, `⟨E2 80⟩`. Its output is
inert as well. Torch-free; the standard library and `lmscope.protocol.vocabulary` only.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

from lmscope.protocol.vocabulary import TOKENS


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


# ---- tokens ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def _unit(ch: str) -> str:
    """How one character of a token is shown (the vocabulary's rules, in order)."""
    shown = TOKENS.visible.get(ch)
    if shown is not None:
        return shown
    code = ord(ch)
    category = unicodedata.category(ch)
    if category in TOKENS.control:
        return f"\\x{code:02x}"
    if category in TOKENS.invisible or code in TOKENS.invisible_code_points:
        return f"\\u{code:04x}" if code < 0x10000 else f"\\u{{{code:x}}}"
    return ch


def utf8_length(data: bytes, i: int) -> int:
    """The length of the well-formed UTF-8 sequence starting at `data[i]` (Unicode's table
    3-7: no overlong forms, no surrogates, nothing past U+10FFFF), 0 if there is none."""
    lead = data[i]
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        n, low, high = 2, 0x80, 0xBF
    elif lead == 0xE0:
        n, low, high = 3, 0xA0, 0xBF
    elif lead == 0xED:
        n, low, high = 3, 0x80, 0x9F
    elif 0xE1 <= lead <= 0xEF:
        n, low, high = 3, 0x80, 0xBF
    elif lead == 0xF0:
        n, low, high = 4, 0x90, 0xBF
    elif 0xF1 <= lead <= 0xF3:
        n, low, high = 4, 0x80, 0xBF
    elif lead == 0xF4:
        n, low, high = 4, 0x80, 0x8F
    else:
        return 0
    if i + n > len(data) or not low <= data[i + 1] <= high:
        return 0
    return n if all(0x80 <= data[k] <= 0xBF for k in range(i + 2, i + n)) else 0


def is_byte_piece(data: bytes | None) -> bool:
    """Whether a token's bytes are not valid UTF-8 alone: part of a multi-byte character."""
    if data is None:
        return False
    try:
        data.decode("utf-8")  # strict: the same well-formedness as `utf8_length`
    except UnicodeDecodeError:
        return True
    return False


def _characters(data: bytes) -> Iterator[str]:
    """The whole characters of a byte piece (the bytes around them skipped)."""
    i = 0
    while i < len(data):
        n = utf8_length(data, i)
        if n:
            yield data[i : i + n].decode("utf-8")
        i += max(1, n)


def _byte_units(data: bytes) -> Iterator[str]:
    """The display units of a byte piece: its characters, and each run of bytes that are not
    a whole character as ⟨E2 80⟩."""
    i, run = 0, []
    while i < len(data):
        n = utf8_length(data, i)
        if n == 0:
            run.append(f"{data[i]:02X}")
            i += 1
            continue
        if run:
            yield TOKENS.bytes_open + TOKENS.bytes_separator.join(run) + TOKENS.bytes_close
            run = []
        yield _unit(data[i : i + n].decode("utf-8"))
        i += n
    if run:
        yield TOKENS.bytes_open + TOKENS.bytes_separator.join(run) + TOKENS.bytes_close


def display_token(text: str, data: bytes | None = None, *, limit: int | None = None) -> str:
    """A token as every lmscope view shows it (the module docstring; the rules are the
    vocabulary's). `data` is the token's bytes when the trace stores them (a byte piece: they
    are shown instead of `text`, whose U+FFFD hides them). With `limit`, at most `limit`
    characters: whole display units and an ellipsis (an escape or a run of bytes is cut only
    when not even the first unit fits); the cost is O(limit) however long the token."""
    if is_byte_piece(data):
        assert data is not None
        units: Iterator[str] = _byte_units(data)
    else:
        units = map(_unit, text if limit is None else text[: limit + 1])
    if limit is None:
        return "".join(units) or TOKENS.empty
    limit = max(1, limit)
    kept: list[str] = []
    length = 0
    for unit in units:
        if length + len(unit) > limit:  # it does not fit whole: cut here
            fitting: list[str] = []
            used = 0
            for piece in kept:
                if used + len(piece) > limit - 1:
                    break
                fitting.append(piece)
                used += len(piece)
            if not fitting:  # not even one whole unit fits: cut the first one
                return (kept[0] if kept else unit)[: limit - 1] + TOKENS.ellipsis
            return "".join(fitting) + TOKENS.ellipsis
        kept.append(unit)
        length += len(unit)
    return "".join(kept) or TOKENS.empty


def clip(text: str, limit: int) -> str:
    """At most `limit` characters (code points) of already displayed text, with an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: max(1, limit - 1)] + TOKENS.ellipsis


def token_hints(text: str, data: bytes | None = None) -> list[str]:
    """What a tooltip or card says about how a token is shown, in the vocabulary's words: a
    byte piece; a U+FFFD that probably hides one (no bytes stored); an empty token; escaped
    control or invisible characters."""
    hints = TOKENS.hints
    found: list[str] = []
    if is_byte_piece(data):
        found.append(hints["bytePiece"])
        assert data is not None
        text = "".join(_characters(data))
    elif data is None and "\ufffd" in text:
        found.append(hints["maybeBytePiece"])
    if not found and text == "":
        found.append(hints["empty"])
    if any(_unit(ch) != ch and ch not in TOKENS.visible for ch in set(text)):
        found.append(hints["escaped"])
    return found
