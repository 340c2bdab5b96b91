"""Chats: the one rule for a conversation's messages, and the trace's record of a chat and a
generation (`TraceData.extra`), torch-free.

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": str}`
(the shape every chat template takes). `check_messages` is applied by every entry point (API,
CLI, daemon, prompt files) before any work, like `lmscope.prompts.check_prompt` for text.

A trace of a chat stores, in `extra["lmscope.chat"]`:

    {"messages": [{"role", "content"}, ...],
     "tokenMessage": [k or -1, ...]   one per token: the message whose content the token holds
                                      characters of, or -1 when the chat template added it
                                      (role headers, separators, BOS, the generation prompt),
     "exact": bool}                   true: the mask comes from the tokenizer's offsets over the
                                      rendered template, whose ids equal apply_chat_template's;
                                      false: those ids differ (or the tokenizer has no offsets),
                                      and the mask comes from decoding the template's ids one by
                                      one (`tracing.tokens`): right for the usual templates, but
                                      approximate, so views say so.

Tokens past the chat (a generation) are -1 too: they are in no message. A trace with generated
tokens stores, in `extra["lmscope.generation"]`:

    {"promptTokens": P, "generated": N, "requested": R, "seed": int | null, "stoppedAtEos": bool}

positions P .. P+N-1 are generated; position P+k-1 predicted generated token k (0-based). Both
keys are read with `chat_of` / `generation_of`, which check them and return None for a trace
without them; a malformed value is refused by the file readers (`check_extra`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmscope.errors import PromptError
from lmscope.prompts import check_prompt

ROLES = ("system", "user", "assistant")
CHAT_KEY = "lmscope.chat"
GENERATION_KEY = "lmscope.generation"
MAX_MESSAGES = 1000
MAX_GENERATE = 1024  # protocol/schemas/trace.params.schema.json `generate`
MAX_SEED = 2**32 - 1  # the protocol's `seed`: any unsigned 32-bit integer
TEMPLATE = -1  # tokenMessage of a token the chat template added


@dataclass(frozen=True)
class Message:
    role: str
    content: str


def check_messages(messages: object) -> list[Message]:
    """The messages of a conversation, checked: a non-empty list of {"role", "content"} objects
    with a known role and content that `check_prompt` accepts. Each problem is one line naming
    the message."""
    if not isinstance(messages, list):
        raise PromptError(
            f"messages must be a list of {{role, content}} objects, not {_kind(messages)}"
        )
    if not messages:
        raise PromptError("messages is empty: a conversation needs at least one message")
    if len(messages) > MAX_MESSAGES:
        raise PromptError(f"{len(messages)} messages, more than the {MAX_MESSAGES} allowed")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        where = f"message {index + 1}"
        if not isinstance(message, dict):
            raise PromptError(
                f"{where} must be an object with role and content, not {_kind(message)}"
            )
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise PromptError(f"{where}: unknown field {extra[0]!r} (only role and content)")
        role, content = message.get("role"), message.get("content")
        if role is None or content is None:
            missing = "role" if role is None else "content"
            raise PromptError(f"{where} has no {missing!r}")
        if role not in ROLES:
            raise PromptError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(content, str):
            raise PromptError(f"{where}: content must be text, not {_kind(content)}")
        try:
            check_prompt(content)
        except PromptError as exc:
            raise PromptError(f"{where}: {exc}") from None
        checked.append(Message(role, content))
    return checked


def as_dicts(messages: list[Message]) -> list[dict[str, str]]:
    """The messages as chat templates and JSON take them."""
    return [{"role": m.role, "content": m.content} for m in messages]


def check_generate(generate: object, seed: object) -> None:
    """Refuse a generation count or seed outside the protocol's bounds."""
    if type(generate) is not int or not 0 <= generate <= MAX_GENERATE:
        raise PromptError(f"generate must be a whole number in 0..{MAX_GENERATE}, not {generate!r}")
    if seed is not None and (type(seed) is not int or not 0 <= seed <= MAX_SEED):
        raise PromptError(f"seed must be a whole number in 0..{MAX_SEED}, not {seed!r}")


# --- what a trace records -----------------------------------------------------------------------
@dataclass(frozen=True)
class ChatRecord:
    """`extra["lmscope.chat"]`, read."""

    messages: list[Message]
    token_message: list[int]  # per token: message index, or TEMPLATE
    exact: bool


@dataclass(frozen=True)
class GenerationRecord:
    """`extra["lmscope.generation"]`, read."""

    prompt_tokens: int
    generated: int
    requested: int
    seed: int | None
    stopped_at_eos: bool

    def generated_index(self, position: int) -> int | None:
        """Which generated token (0-based) sits at `position`, or None for a prompt token."""
        k = position - self.prompt_tokens
        return k if 0 <= k < self.generated else None

    def predicted_index(self, position: int) -> int | None:
        """Which generated token (0-based) the output of `position` predicted, or None."""
        return self.generated_index(position + 1)


def chat_extra(messages: list[Message], token_message: list[int], exact: bool) -> dict[str, Any]:
    return {"messages": as_dicts(messages), "tokenMessage": list(token_message), "exact": exact}


def generation_extra(
    prompt_tokens: int, generated: int, requested: int, seed: int | None, stopped_at_eos: bool
) -> dict[str, Any]:
    return {
        "promptTokens": prompt_tokens,
        "generated": generated,
        "requested": requested,
        "seed": seed,
        "stoppedAtEos": stopped_at_eos,
    }


def check_extra(extra: dict[str, Any], n_tokens: int) -> str | None:
    """What is wrong with `extra["lmscope.chat"]` or `extra["lmscope.generation"]` of a trace
    of `n_tokens` tokens, or None (also when they are absent). TypeScript twin:
    extension/shared/traces/chat.ts `checkChatExtra`, same messages."""
    if CHAT_KEY in extra:
        problem = _chat_problem(extra[CHAT_KEY], n_tokens)
        if problem is not None:
            return f"extra.{CHAT_KEY}: {problem}"
    if GENERATION_KEY in extra:
        problem = _generation_problem(extra[GENERATION_KEY], n_tokens)
        if problem is not None:
            return f"extra.{GENERATION_KEY}: {problem}"
    return None


def chat_of(extra: dict[str, Any], n_tokens: int) -> ChatRecord | None:
    """The chat a trace records, or None (no chat, or a malformed record)."""
    value = extra.get(CHAT_KEY)
    if value is None or _chat_problem(value, n_tokens) is not None:
        return None
    messages = [Message(m["role"], m["content"]) for m in value["messages"]]
    return ChatRecord(messages, list(value["tokenMessage"]), bool(value["exact"]))


def generation_of(extra: dict[str, Any], n_tokens: int) -> GenerationRecord | None:
    """The generation a trace records, or None (none, or a malformed record)."""
    value = extra.get(GENERATION_KEY)
    if value is None or _generation_problem(value, n_tokens) is not None:
        return None
    return GenerationRecord(
        value["promptTokens"],
        value["generated"],
        value["requested"],
        value["seed"],
        value["stoppedAtEos"],
    )


def _chat_problem(value: object, n_tokens: int) -> str | None:
    if not isinstance(value, dict) or set(value) != {"messages", "tokenMessage", "exact"}:
        return "not a map of messages, tokenMessage and exact"
    try:
        messages = check_messages(value["messages"])
    except PromptError as exc:
        return str(exc)
    per_token = value["tokenMessage"]
    if not isinstance(per_token, list) or len(per_token) != n_tokens:
        return f"tokenMessage must list one message index per token ({n_tokens})"
    for i, k in enumerate(per_token):
        if type(k) is not int or not TEMPLATE <= k < len(messages):
            return f"tokenMessage[{i}]: not -1 or the index of one of the {len(messages)} messages"
    if type(value["exact"]) is not bool:
        return "exact must be true or false"
    return None


def _generation_problem(value: object, n_tokens: int) -> str | None:
    keys = {"promptTokens", "generated", "requested", "seed", "stoppedAtEos"}
    if not isinstance(value, dict) or set(value) != keys:
        return "not a map of promptTokens, generated, requested, seed and stoppedAtEos"
    counts = [value["promptTokens"], value["generated"], value["requested"]]
    if any(type(c) is not int or c < 0 for c in counts):
        return "promptTokens, generated and requested must be whole numbers"
    prompt_tokens, generated, requested = counts
    if prompt_tokens < 1 or prompt_tokens + generated != n_tokens or generated > requested:
        return f"promptTokens + generated must be the {n_tokens} tokens, generated <= requested"
    seed = value["seed"]
    if seed is not None and (type(seed) is not int or not 0 <= seed <= MAX_SEED):
        return f"seed must be null or a whole number in 0..{MAX_SEED}"
    if type(value["stoppedAtEos"]) is not bool:
        return "stoppedAtEos must be true or false"
    return None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
