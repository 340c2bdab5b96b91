"""Byte pieces in a trace: the bytes of tokens that are not whole characters.

A byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3, Qwen) or SentencePiece's byte fallback
splits a character it has no token for into tokens of its UTF-8 bytes: "😀" may be F0 9F and
98 80. Decoded alone such a token is "�" (or ""), which hides what it is. A trace made by this
lmscope stores, in `extra["lmscope.tokenBytes"]`, the bytes of every such token so views can
show `⟨F0 9F⟩` (`lmscope.traces.text.display_token`):

    {"tokens": [hex, ...] (one per prompt token, as tokens.strings),
     "vocabulary": [hex, ...] (one per vocabulary entry, as vocabulary.strings)}

each hex the token's bytes as lowercase hex pairs when they are not valid UTF-8 alone, else ""
(the string is the token). It lives in `extra`, the format's place for additions that older
readers may ignore (protocol/README.md, "Versioning"), so format 1 is unchanged: older files
have no bytes (views fall back to the string and say "probably a byte piece" for a U+FFFD), and
older lmscope versions read newer files. Both readers check it when present, with the same
messages (`check`; TypeScript: extension/shared/traces/lmtrace.ts `checkTokenBytes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmscope.traces.data import TraceData

TOKEN_BYTES_KEY = "lmscope.tokenBytes"
MAX_HEX = 2048
"""Characters of one hex string: 1024 bytes, 4x the longest token of real vocabularies."""

_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_WHERE = f"extra.{TOKEN_BYTES_KEY}"


def check(extra: dict[str, Any], n_tokens: int, n_vocabulary: int) -> str | None:
    """What is wrong with `extra["lmscope.tokenBytes"]`, or None (also when it is absent)."""
    if TOKEN_BYTES_KEY not in extra:
        return None
    value = extra[TOKEN_BYTES_KEY]
    if (
        not isinstance(value, dict)
        or set(value) != {"tokens", "vocabulary"}
        or not all(isinstance(v, list) for v in value.values())
    ):
        return f"{_WHERE}: not a map of the lists `tokens` and `vocabulary`"
    for key, expected, of in (
        ("tokens", n_tokens, "tokens.strings"),
        ("vocabulary", n_vocabulary, "vocabulary.strings"),
    ):
        items = value[key]
        if len(items) != expected:
            return f"{_WHERE}.{key}: {len(items)} items, but {of} has {expected}"
        for i, item in enumerate(items):
            if type(item) is not str or _HEX.fullmatch(item) is None:
                return f"{_WHERE}.{key}[{i}]: not a string of lowercase hex byte pairs"
            if len(item) > MAX_HEX:
                count = len(item)
                return f"{_WHERE}.{key}[{i}]: {count} characters, more than the {MAX_HEX} allowed"
    return None


def to_extra(token_bytes: list[bytes | None], vocabulary_bytes: list[bytes | None]) -> Any:
    """The `extra` value for the bytes of the prompt's tokens and of the vocabulary's entries
    (None, or valid UTF-8: not a byte piece); None when no token is a byte piece."""
    tokens = [_hex(b) for b in token_bytes]
    vocabulary = [_hex(b) for b in vocabulary_bytes]
    if not any(tokens) and not any(vocabulary):
        return None
    return {"tokens": tokens, "vocabulary": vocabulary}


def _hex(data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()[:MAX_HEX]
    return ""


def prompt_bytes(extra: dict[str, Any], n_tokens: int) -> list[bytes | None]:
    """The bytes of each prompt token that is a byte piece (None for the others, and for
    every token of a trace that stores none). `extra` was checked when the trace was read."""
    stored = extra.get(TOKEN_BYTES_KEY)
    if not isinstance(stored, dict):
        return [None] * n_tokens
    return [bytes.fromhex(h) if h else None for h in stored["tokens"]]


def vocabulary_bytes(extra: dict[str, Any], ids: list[int]) -> dict[int, bytes]:
    """Token id -> bytes, for the vocabulary entries that are byte pieces. `ids` are the
    trace's vocabulary ids in order (as stored)."""
    stored = extra.get(TOKEN_BYTES_KEY)
    if not isinstance(stored, dict):
        return {}
    return {i: bytes.fromhex(h) for i, h in zip(ids, stored["vocabulary"]) if h}


@dataclass(frozen=True)
class StoredBytes:
    """The bytes a trace stores for its byte pieces, ready for `display_token`."""

    prompt: list[bytes | None]  # [n]: a prompt token's bytes when it is a byte piece
    vocabulary: dict[int, bytes]  # token id -> bytes, for the byte pieces among them

    @classmethod
    def of(cls, data: TraceData) -> StoredBytes:
        return cls(
            prompt_bytes(data.extra, len(data.tokens.strings)),
            vocabulary_bytes(data.extra, sorted(data.vocabulary)),
        )
