"""What a trace runs on: a prompt's or a conversation's token ids, plus any generated tokens,
and what `TraceData.extra` records about them (`lmscope.chats`).

Every length is checked against the model's context before any forward pass, the generated
tokens included, with one message naming the counts (`tokens.check_length`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmscope.chats import (
    CHAT_KEY,
    GENERATION_KEY,
    TEMPLATE,
    Message,
    chat_extra,
    check_generate,
    generation_extra,
)
from lmscope.models.loading import LoadedModel
from lmscope.tracing.chat import chat_tokens
from lmscope.tracing.generation import generate_tokens
from lmscope.tracing.tokens import check_length, tokenize

TraceSource = str | list[Message]  # a prompt, or a checked conversation (chats.check_messages)


@dataclass
class TraceInput:
    ids: list[int]
    text: str  # what the ids spell: the prompt, or the rendered chat template, + the generation
    bos_prepended: bool
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_input(
    loaded: LoadedModel,
    source: TraceSource,
    prepend_bos: bool,
    context: int,
    generate: int = 0,
    seed: int | None = None,
    should_stop: Callable[[], None] | None = None,
    report: Callable[[str, float | None], None] | None = None,
) -> TraceInput:
    """Tokenize `source` (checking it fits with `generate` more tokens), then generate."""
    check_generate(generate, seed)
    bos = loaded.tokenizer.bos_token_id
    if isinstance(source, str):
        ids = tokenize(loaded, source, prepend_bos, context, generate)
        traced = TraceInput(ids, source, prepend_bos and bos is not None)
        token_message: list[int] | None = None
        exact = True
    else:
        chat = chat_tokens(loaded, source, prepend_bos)
        check_length(len(chat.ids), context, generate)
        traced = TraceInput(chat.ids, chat.text, chat.bos_prepended)
        token_message, exact = chat.token_message, chat.exact
    prompt_tokens = len(traced.ids)
    if generate:
        with loaded.lock:
            made = generate_tokens(loaded, traced.ids, generate, seed, should_stop, report)
        traced.ids = [*traced.ids, *made.ids]
        traced.text += str(loaded.tokenizer.decode(made.ids, skip_special_tokens=False))
        traced.extra[GENERATION_KEY] = generation_extra(
            prompt_tokens, len(made.ids), generate, seed, made.stopped_at_eos
        )
    if token_message is not None and not isinstance(source, str):
        # Generated tokens lie in no message: the mask covers every traced token.
        token_message += [TEMPLATE] * (len(traced.ids) - prompt_tokens)
        traced.extra[CHAT_KEY] = chat_extra(source, token_message, exact)
    return traced
