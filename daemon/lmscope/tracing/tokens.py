"""Prompt text -> token ids, and token ids -> display strings.

BOS is prepended exactly once when the tokenizer defines one (docs/method.md, "BOS"); the text
itself is checked by `lmscope.prompts.check_prompt`, the one rule every entry point applies.
"""

from __future__ import annotations

from lmscope.errors import PromptError
from lmscope.models.loading import LoadedModel
from lmscope.prompts import check_prompt


def tokenize(loaded: LoadedModel, prompt: str, prepend_bos: bool, context: int) -> list[int]:
    """Prompt -> token ids, BOS prepended exactly once when asked and defined."""
    check_prompt(prompt)
    ids = list(loaded.tokenizer.encode(prompt, add_special_tokens=False))
    bos = loaded.tokenizer.bos_token_id
    if prepend_bos and bos is not None:
        ids = [bos, *ids]
    if not ids:
        raise PromptError("the prompt tokenizes to no tokens")
    if len(ids) > context:
        raise PromptError(
            f"prompt too long: {len(ids)} tokens, but the model's context is {context} tokens"
        )
    return ids


def display_strings(loaded: LoadedModel, ids: list[int]) -> list[str]:
    """Each token decoded alone (spaces kept; partial UTF-8 shows as U+FFFD)."""
    return [str(loaded.tokenizer.decode([i], skip_special_tokens=False)) for i in ids]
