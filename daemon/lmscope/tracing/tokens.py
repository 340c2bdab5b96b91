"""Prompt text -> token ids, and token ids -> display strings and the bytes of byte pieces.

BOS is prepended exactly once when the tokenizer defines one (docs/method.md, "BOS"); the text
itself is checked by `lmscope.prompts.check_prompt`, the one rule every entry point applies.
"""

from __future__ import annotations

import functools
import json
import re

from lmscope.errors import PromptError
from lmscope.models.loading import LoadedModel
from lmscope.prompts import check_prompt
from lmscope.traces import pieces
from lmscope.traces.data import TraceData
from lmscope.traces.text import is_byte_piece


def tokenize(
    loaded: LoadedModel, prompt: str, prepend_bos: bool, context: int, generate: int = 0
) -> list[int]:
    """Prompt -> token ids, BOS prepended exactly once when asked and defined."""
    check_prompt(prompt)
    ids = list(loaded.tokenizer.encode(prompt, add_special_tokens=False))
    bos = loaded.tokenizer.bos_token_id
    if prepend_bos and bos is not None:
        ids = [bos, *ids]
    if not ids:
        raise PromptError("the prompt tokenizes to no tokens")
    check_length(len(ids), context, generate)
    return ids


def check_length(n_tokens: int, context: int, generate: int = 0) -> None:
    """Refuse input that, with `generate` tokens to come, does not fit the model's context
    (`max_position_embeddings`, never a sliding attention window: a window limits what a
    position attends to, not how many positions there are)."""
    if n_tokens + generate <= context:
        return
    if generate:
        raise PromptError(
            f"prompt too long to generate {generate} tokens: {n_tokens} prompt tokens + "
            f"{generate} = {n_tokens + generate}, but the model's context is {context} tokens"
        )
    raise PromptError(
        f"prompt too long: {n_tokens} tokens, but the model's context is {context} tokens"
    )


def display_strings(loaded: LoadedModel, ids: list[int]) -> list[str]:
    """Each token decoded alone (spaces kept; partial UTF-8 shows as U+FFFD)."""
    return [str(loaded.tokenizer.decode([i], skip_special_tokens=False)) for i in ids]


def token_bytes(loaded: LoadedModel, ids: list[int], strings: list[str]) -> list[bytes | None]:
    """The bytes of each token that is a byte piece (`strings[k]`, the token decoded alone, is
    then U+FFFD or empty); None for every other token and when the tokenizer's bytes cannot be
    told. Byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen, GPT-NeoX) writes each byte as one
    character of GPT-2's byte alphabet; SentencePiece's byte fallback writes `<0xE2>`."""
    tokenizer = loaded.tokenizer
    kinds = _decoder_types(tokenizer)
    byte_decoder = getattr(tokenizer, "byte_decoder", None)  # slow GPT-2 tokenizers
    byte_level = byte_decoder is not None or "ByteLevel" in kinds
    if not (byte_level or "ByteFallback" in kinds):
        return [None] * len(ids)
    alphabet: dict[str, int] = byte_decoder or _byte_alphabet()
    special = set(getattr(tokenizer, "all_special_ids", None) or ())
    out: list[bytes | None] = []
    for token_id, piece, text in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strings):
        data = None
        if isinstance(piece, str) and token_id not in special and ("\ufffd" in text or not text):
            if byte_level and all(ch in alphabet for ch in piece):
                data = bytes(alphabet[ch] for ch in piece)
            elif not byte_level and (match := _BYTE_FALLBACK.fullmatch(piece)):
                data = bytes([int(match.group(1), 16)])
        out.append(data if is_byte_piece(data) else None)
    return out


def add_token_bytes(loaded: LoadedModel, data: TraceData) -> None:
    """Store the bytes of the trace's byte pieces (prompt and vocabulary) in `data.extra`
    (`lmscope.traces.pieces`); nothing when there are none."""
    ids = [int(i) for i in data.tokens.ids]
    vocab_ids = sorted(data.vocabulary)
    stored = pieces.to_extra(
        token_bytes(loaded, ids, data.tokens.strings),
        token_bytes(loaded, vocab_ids, [data.vocabulary[i] for i in vocab_ids]),
    )
    if stored is not None:
        data.extra[pieces.TOKEN_BYTES_KEY] = stored


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_types(tokenizer: object) -> set[str]:
    """The `type`s of a fast tokenizer's decoder and of the decoders of its sequence."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    try:
        state = json.loads(decoder.__getstate__()) if decoder is not None else None
    except (AttributeError, TypeError, ValueError):
        return set()
    found: set[str] = set()
    stack = [state]
    while stack:
        entry = stack.pop()
        if isinstance(entry, dict):
            found.add(str(entry.get("type")))
            stack.extend(entry.get("decoders") or [])
    return found


@functools.cache
def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-character map, inverted: printable Latin-1 bytes are themselves, the
    others are shifted past U+0100 (Ġ is the space, Ċ the newline)."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = dict(zip(kept, kept))
    shifted = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = 256 + shifted
            shifted += 1
    return {chr(char): byte for byte, char in chars.items()}
