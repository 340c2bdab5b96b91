"""Text of the editor's documents: the prompt a `lmscope/trace` names by a document range.

Only documents the editor has open are read through pygls' workspace (with their unsaved
changes); any other file is read from disk only if it is UTF-8 text under 16 MiB (pygls would
read any file whole, binary ones included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from lsprotocol import types

from lmscope.chats import Message, check_messages
from lmscope.errors import LmscopeError

if TYPE_CHECKING:
    from lmscope.server.app import LmscopeServer

MAX_DOCUMENT_BYTES = 16 * 2**20


def path_of_uri(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def open_document(server: LmscopeServer, uri: str) -> Any | None:
    """The document as the editor has it open (pygls' TextDocument), or None when the editor
    has not opened it: pygls would otherwise read any file from disk, whole, or fail."""
    if unquote(uri) not in server.workspace.text_documents:
        return None
    return server.workspace.get_text_document(uri)


def read_document(path: Path, uri: str) -> str:
    """A document the editor has not opened, read from disk: UTF-8 text of a sane size."""
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise LmscopeError(
                f"document {uri} is over {MAX_DOCUMENT_BYTES >> 20} MiB: not a prompt"
            )
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LmscopeError(f"document {uri} is not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise LmscopeError(f"cannot read document {uri}: {exc}") from None


def position(value: dict[str, int]) -> types.Position:
    return types.Position(line=value["line"], character=value["character"])


def text_between(lines: Sequence[str], start: Any, end: Any) -> str:
    """The text between two positions (Python str offsets) of a document's lines."""
    if (end.line, end.character) < (start.line, start.character):
        raise LmscopeError("the range ends before it starts")
    if start.line >= len(lines):
        return ""
    if start.line == end.line:
        return lines[start.line][start.character : end.character]
    parts = [lines[start.line][start.character :]]
    parts.extend(lines[start.line + 1 : min(end.line, len(lines))])
    if end.line < len(lines):
        parts.append(lines[end.line][: end.character])
    return "".join(parts)


def prompt_of(
    server: LmscopeServer, params: dict[str, Any]
) -> tuple[str | list[Message], Path | None]:
    """The prompt text (or the checked conversation) of `lmscope/trace` params, and the folder
    of its document (if any)."""
    if "prompt" in params:
        return params["prompt"], None
    if "messages" in params:
        return check_messages(params["messages"]), None
    document = params["document"]
    uri, span = document["uri"], document["range"]
    start: Any
    end: Any
    try:
        doc = open_document(server, uri)
        if doc is None:
            raise KeyError(uri)
        lines: Sequence[str] = doc.lines
        start = doc.position_codec.position_from_client_units(lines, position(span["start"]))
        end = doc.position_codec.position_from_client_units(lines, position(span["end"]))
    except Exception:
        path = path_of_uri(uri)
        if path is None or not path.is_file():
            raise LmscopeError(f"document {uri} is not open and not a readable file") from None
        lines = read_document(path, uri).splitlines(keepends=True)
        start, end = position(span["start"]), position(span["end"])
    text = text_between(lines, start, end)
    path = path_of_uri(uri)
    return text, None if path is None else path.parent
