"""Prompt files: where the editor shows a "Trace" CodeLens above each prompt.

Three kinds, told apart by the file name (case-insensitive):

| file              | prompts                                                                  |
|-------------------|--------------------------------------------------------------------------|
| `*.prompt`        | the whole file is one prompt (one final line break dropped), at line 0   |
| `*.prompts.txt`   | one prompt per line; blank lines and lines whose first non-blank         |
|                   | character is `#` are skipped; the line is the prompt, spaces included    |
| `*.prompts.jsonl` | one JSON object per line with a string field `prompt`; blank lines are   |
|                   | skipped, and so is any line that is not such an object (`problems_in`);  |
|                   | optional `id` (string or number) and `tags` (list of strings)            |
| `*.chat.jsonl`    | one conversation per line: `{"messages": [{"role", "content"}, ...]}`    |
|                   | (optional `id` string and `tags` list of strings, for corpus runs),      |
|                   | traced through the model's chat template (`lmscope.chats`); other lines  |
|                   | as in `.prompts.jsonl`                                                   |

A prompt that is empty or only whitespace is no prompt. Lines end at `\\n`, `\\r\\n` or `\\r` (as
in LSP). `PromptSpan.start`/`end` are Python str indices within `line` (the CodeLens range; for
a `.prompt` file its first line); the server converts them to UTF-16 at the boundary.
`prompts_in` returns only the prompts; `problems_in` says, per line, why a line of a
`.prompts.jsonl` or `.chat.jsonl` file gives none, for diagnostics. A conversation's span has
its `messages`, and as `prompt` the text of its last message (for titles and file names).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from lmscope.chats import Message, check_messages
from lmscope.errors import PromptError

PromptFileKind = Literal["prompt", "lines", "jsonl", "chat"]

_SUFFIXES: tuple[tuple[str, PromptFileKind], ...] = (
    (".chat.jsonl", "chat"),
    (".prompts.jsonl", "jsonl"),
    (".prompts.txt", "lines"),
    (".prompt", "prompt"),
)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True)
class PromptSpan:
    """One prompt of a prompt file: its text and where its CodeLens goes."""

    line: int  # 0-based
    start: int  # str index within the line
    end: int
    prompt: str
    messages: tuple[Message, ...] | None = None  # a conversation (`*.chat.jsonl`)
    # A jsonl line's optional "id" and "tags" (corpus runs name and group rows by them); not
    # part of what a span is for the editor, so equality ignores them.
    id: str | None = field(default=None, compare=False)
    tags: tuple[str, ...] = field(default=(), compare=False)


def prompt_file_kind(path_or_uri: str) -> PromptFileKind | None:
    """Which kind of prompt file a path or URI names, or None when it is none."""
    path = path_or_uri
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", path) and not re.match(r"[A-Za-z]:[\\/]", path):
        # A URI (file:///a/b.prompt, untitled:x); a Windows drive path is not one.
        path = unquote(urlsplit(path).path)
    name = re.split(r"[\\/]", path)[-1].lower()
    for suffix, kind in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind
    return None


def is_prompt_file(path_or_uri: str) -> bool:
    """Whether the editor should offer "Trace" lenses in this file."""
    return prompt_file_kind(path_or_uri) is not None


def prompts_in(text: str, path_or_uri: str) -> list[PromptSpan]:
    """The prompts of a prompt file's text, in order (empty for other files)."""
    return _scan(text, path_or_uri)[0]


def problems_in(text: str, path_or_uri: str) -> list[tuple[int, str]]:
    """(line, message) for each line of a `.prompts.jsonl` or `.chat.jsonl` file that gives no
    prompt."""
    return _scan(text, path_or_uri)[1]


def _scan(text: str, path_or_uri: str) -> tuple[list[PromptSpan], list[tuple[int, str]]]:
    kind = prompt_file_kind(path_or_uri)
    if kind is None:
        return [], []
    lines = _LINE_BREAK.split(text)
    if kind == "prompt":
        prompt = text[1:] if text.startswith(_BOM) else text
        prompt = re.sub(r"(\r\n|\r|\n)\Z", "", prompt)
        if not prompt.strip():
            return [], []
        start = 1 if text.startswith(_BOM) else 0
        return [PromptSpan(0, start, len(lines[0]), prompt)], []
    spans: list[PromptSpan] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        start = 1 if number == 0 and line.startswith(_BOM) else 0
        body = line[start:]
        if not body.strip():
            continue
        if kind == "lines":
            if not body.lstrip().startswith("#"):
                spans.append(PromptSpan(number, start, len(line), body))
            continue
        if kind == "chat":
            conversation, problem = _chat_line(body)
            if conversation is not None:
                last = conversation[-1].content
                label, tags = _id_and_tags(body)
                spans.append(
                    PromptSpan(number, start, len(line), last, tuple(conversation), label, tags)
                )
            else:
                problems.append((number, problem))
            continue
        found, problem = _jsonl_prompt(body)
        if found is not None:
            label, tags = _id_and_tags(body)
            spans.append(PromptSpan(number, start, len(line), found, None, label, tags))
        else:
            problems.append((number, problem))
    return spans, problems


def _json_line(body: str) -> tuple[object, str]:
    """One JSONL line's value, or (None, why it is not JSON)."""
    try:
        return json.loads(body), ""
    except ValueError as error:  # JSONDecodeError, or a number too long to convert
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        return None, f"not valid JSON: {reason}"
    except RecursionError:
        return None, "not valid JSON: nested too deeply"


def _chat_line(body: str) -> tuple[list[Message] | None, str]:
    """The conversation of one `.chat.jsonl` line, or (None, why not)."""
    value, problem = _json_line(body)
    if problem:
        return None, problem
    if not isinstance(value, dict):
        return None, 'expected a JSON object with a "messages" field'
    if "messages" not in value:
        return None, 'no "messages" field'
    unknown = sorted(set(value) - {"messages", "id", "tags"})
    if unknown:
        return None, f"unknown field {unknown[0]!r} (messages, id and tags only)"
    if "id" in value and not isinstance(value["id"], str):
        return None, f'"id" must be a string, not {_json_type(value["id"])}'
    tags = value.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return None, '"tags" must be a list of strings'
    try:
        return check_messages(value["messages"]), ""
    except PromptError as exc:
        return None, str(exc)


def _jsonl_prompt(body: str) -> tuple[str | None, str]:
    """The prompt of one JSONL line, or (None, why not)."""
    value, problem = _json_line(body)
    if problem:
        return None, problem
    if not isinstance(value, dict):
        return None, 'expected a JSON object with a "prompt" field'
    if "prompt" not in value:
        return None, 'no "prompt" field'
    prompt = value["prompt"]
    if not isinstance(prompt, str):
        return None, f'"prompt" must be a string, not {_json_type(prompt)}'
    if not prompt.strip():
        return None, '"prompt" is empty'
    tags = value.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        return None, '"tags" must be a list of strings'
    return prompt, ""


def _id_and_tags(body: str) -> tuple[str | None, tuple[str, ...]]:
    """The optional "id" and "tags" of a jsonl line already found good (a number id, which
    `.prompts.jsonl` lines have always been allowed, is named by its digits)."""
    value = json.loads(body)
    label = value.get("id")
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    return (label if isinstance(label, str) else None), tuple(value.get("tags", ()))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


__all__ = ["PromptSpan", "is_prompt_file", "problems_in", "prompt_file_kind", "prompts_in"]
