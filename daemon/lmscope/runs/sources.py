"""The prompts of a corpus run: each valid prompt of a prompt file, numbered, with its source
line, id and tags; and the lines that give none, with why.

A run takes `*.prompts.txt` (one prompt a line), `*.prompts.jsonl` ({"prompt", "id"?, "tags"?})
and `*.chat.jsonl` ({"messages", "id"?, "tags"?}), read by `lmscope.promptfiles` (the same rules
as the editor's CodeLenses). A prompt's `index` is its 0-based position among the valid prompts;
its `id` is the line's "id", else `line-<n>`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lmscope.chats import Message
from lmscope.errors import LmscopeError
from lmscope.promptfiles import problems_in, prompt_file_kind, prompts_in
from lmscope.prompts import check_prompt

RUN_KINDS = ("lines", "jsonl", "chat")  # *.prompts.txt, *.prompts.jsonl, *.chat.jsonl


@dataclass(frozen=True)
class RunPrompt:
    """One prompt of a run."""

    index: int  # 0-based among the valid prompts
    line: int  # 1-based line in the source file
    id: str
    tags: tuple[str, ...]
    prompt: str  # the text (a conversation: its last message, for names)
    messages: tuple[Message, ...] | None  # a conversation, traced through the chat template


@dataclass(frozen=True)
class RunSource:
    """A prompt file read for a run: its valid prompts, its bad lines, its bytes' sha256."""

    path: Path
    prompts: list[RunPrompt]
    bad_lines: list[tuple[int, str]]  # (1-based line, why it gives no prompt)
    sha256: str


def read_source(path: Path) -> RunSource:
    """Read a prompt file for a run; LmscopeError when it cannot be read or is of no run kind."""
    kind = prompt_file_kind(str(path))
    if kind not in RUN_KINDS:
        raise LmscopeError(
            f"{path} is not a prompt file of a run: name it *.prompts.txt, *.prompts.jsonl or "
            "*.chat.jsonl"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LmscopeError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LmscopeError(f"prompt file {path} is not UTF-8 text") from None
    bad = [(line + 1, problem) for line, problem in problems_in(text, str(path))]
    prompts: list[RunPrompt] = []
    for span in prompts_in(text, str(path)):
        if span.messages is None:
            try:
                check_prompt(span.prompt)
            except LmscopeError as exc:
                bad.append((span.line + 1, str(exc)))
                continue
        prompts.append(
            RunPrompt(
                index=len(prompts),
                line=span.line + 1,
                id=span.id if span.id is not None else f"line-{span.line + 1}",
                tags=span.tags,
                prompt=span.prompt,
                messages=span.messages,
            )
        )
    bad.sort()
    if not prompts and not bad:
        raise LmscopeError(f"prompt file {path} has no prompts")
    return RunSource(path, prompts, bad, hashlib.sha256(raw).hexdigest())
