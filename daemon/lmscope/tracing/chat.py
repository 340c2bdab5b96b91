"""A conversation -> the token ids its chat template gives, and which of them the template added.

The ids are always `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`'s: the
tokenizer's own template writes its own special tokens (SmolLM2's starts with `<|im_start|>`,
its BOS), so lmscope prepends a BOS only when asked and the template's ids do not already
start with it: never a second one (docs/method.md, "BOS").

Which tokens the template added (`lmscope.chats`, `tokenMessage`): the template is rendered to
text, each message's content is found in it (in order), and the rendered text is tokenized
again without special tokens added, with the fast tokenizer's character offsets. When those ids
equal the template's, a token belongs to the message whose content it holds characters of, and
every other token was added by the template: exact. When they differ (a template whose text
does not tokenize back to its ids, a tokenizer without offsets) the offsets come from decoding
the template's ids one prefix at a time, and the record says `exact: false`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmscope.chats import TEMPLATE, Message, as_dicts
from lmscope.errors import PromptError
from lmscope.models.loading import LoadedModel


@dataclass(frozen=True)
class ChatTokens:
    ids: list[int]
    text: str  # the rendered template (with the BOS's text when lmscope prepended one)
    token_message: list[int]  # per id: message index, or TEMPLATE
    exact: bool
    bos_prepended: bool


def chat_tokens(loaded: LoadedModel, messages: list[Message], prepend_bos: bool) -> ChatTokens:
    """The ids of `messages` through the model's chat template, and what added each one."""
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            f"model {loaded.name} has no chat template: trace a plain prompt instead, or use "
            "an instruct model whose tokenizer defines one"
        )
    conversation = as_dicts(messages)
    try:
        text = str(
            tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        )
        ids = [
            int(i)
            for i in _ids(
                tokenizer.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=True, return_dict=False
                )
            )
        ]
    except Exception as exc:  # a Jinja template raising (e.g. "roles must alternate")
        raise PromptError(
            f"the chat template of {loaded.name} refused the messages: {exc}"
        ) from None
    if not ids:
        raise PromptError("the chat template renders the messages to no tokens")
    spans = _content_spans(text, messages)
    offsets = _offsets(tokenizer, text, ids)
    exact = offsets is not None
    if offsets is None:
        text, offsets = _decoded_offsets(tokenizer, ids)
        spans = _content_spans(text, messages)
    token_message = [_message_of(start, end, spans) for start, end in offsets]
    bos = tokenizer.bos_token_id
    bos_prepended = prepend_bos and bos is not None and ids[0] != bos
    if bos_prepended:
        ids = [bos, *ids]
        token_message = [TEMPLATE, *token_message]
        text = str(tokenizer.decode([bos], skip_special_tokens=False)) + text
    return ChatTokens(ids, text, token_message, exact, bos_prepended)


def _ids(value: Any) -> list[int]:
    """apply_chat_template's ids: a list, or (some versions) a mapping with input_ids."""
    if isinstance(value, dict) or hasattr(value, "keys"):
        value = value["input_ids"]
    if value and isinstance(value[0], list):  # a batch of one
        value = value[0]
    return list(value)


def _content_spans(text: str, messages: list[Message]) -> list[tuple[int, int, int]]:
    """(start, end, message index) of each message's content in the rendered text, searched in
    order; a content the template changed (e.g. stripped) is found without its outer spaces,
    and one it dropped is in no span (its tokens count as the template's)."""
    spans: list[tuple[int, int, int]] = []
    cursor = 0
    for index, message in enumerate(messages):
        for needle in (message.content, message.content.strip()):
            at = text.find(needle, cursor) if needle else -1
            if at >= 0:
                spans.append((at, at + len(needle), index))
                cursor = at + len(needle)
                break
    return spans


def _offsets(tokenizer: Any, text: str, ids: list[int]) -> list[tuple[int, int]] | None:
    """Character offsets of each token of `text` tokenized again, or None when that does not
    give the template's `ids` (or the tokenizer has no offsets)."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer
        return None
    if list(encoded["input_ids"]) != ids:
        return None
    return [(int(start), int(end)) for start, end in encoded["offset_mapping"]]


def _decoded_offsets(tokenizer: Any, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The approximation: the decoded text of the ids, and each token's offsets in it as the
    growth of the decoded prefix (one decode per token: O(n²) characters, fine for a prompt)."""
    offsets: list[tuple[int, int]] = []
    previous = 0
    for end in range(1, len(ids) + 1):
        length = len(str(tokenizer.decode(ids[:end], skip_special_tokens=False)))
        offsets.append((min(previous, length), length))
        previous = max(previous, length)
    return str(tokenizer.decode(ids, skip_special_tokens=False)), offsets


def _message_of(start: int, end: int, spans: list[tuple[int, int, int]]) -> int:
    """The message whose content holds any character of [start, end), else TEMPLATE."""
    for span_start, span_end, index in spans:
        if start < span_end and span_start < end:
            return index
    return TEMPLATE
