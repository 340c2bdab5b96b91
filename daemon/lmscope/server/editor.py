"""Standard LSP features for editors: hover cards on component references, CodeLens on
prompt files, and document-text helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lsprotocol import types

from lmscope.errors import (
    LmscopeError,
)
from lmscope.server.app import (
    LmscopeServer,
    path_of_uri,
)
from lmscope.session import UnknownHandleError


def register_editor(server: LmscopeServer) -> None:
    """Register hover and CodeLens on `server`."""
    session = server.session

    # --- standard LSP features -------------------------------------------------------------------
    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @server.thread()
    def hover(params: types.HoverParams) -> types.Hover | None:
        from lmscope.cards import component_card
        from lmscope.components import reference_at

        try:
            doc = server.workspace.get_text_document(params.text_document.uri)
            line_number = params.position.line
            if line_number >= len(doc.lines):
                return None
            line = doc.lines[line_number]
            position = doc.position_codec.position_from_client_units(doc.lines, params.position)
            found = reference_at(line, position.character)
            if found is None:
                return None
            ref, start, end = found
            handle = context_handle(server, params.text_document.uri)
            trace_obj = session.traces.get(handle) if handle else None
            card = component_card(ref, trace_obj, model=session.model, handle=handle)
            span = doc.position_codec.range_to_client_units(
                doc.lines,
                types.Range(types.Position(line_number, start), types.Position(line_number, end)),
            )
            return types.Hover(
                contents=types.MarkupContent(
                    kind=types.MarkupKind.Markdown, value=card["markdown"]
                ),
                range=span,
            )
        except LmscopeError as exc:
            return types.Hover(
                contents=types.MarkupContent(kind=types.MarkupKind.PlainText, value=str(exc))
            )

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS)
    def code_lens(params: types.CodeLensParams) -> list[types.CodeLens] | None:
        from lmscope.promptfiles import is_prompt_file, prompts_in

        uri = params.text_document.uri
        if not is_prompt_file(uri):
            return None
        doc = server.workspace.get_text_document(uri)
        lenses = []
        for span in prompts_in(doc.source, uri):
            rng = doc.position_codec.range_to_client_units(
                doc.lines,
                types.Range(
                    types.Position(span.line, span.start), types.Position(span.line, span.end)
                ),
            )
            lenses.append(
                types.CodeLens(
                    range=rng,
                    command=types.Command(
                        title="Trace",
                        command="lmscope.tracePrompt",
                        arguments=[{"uri": uri, "line": span.line, "prompt": span.prompt}],
                    ),
                )
            )
        return lenses


def context_handle(server: LmscopeServer, uri: str) -> str | None:
    """The latest trace of the document's folder (or of any folder), if still cached."""
    path = path_of_uri(uri)
    candidates = []
    if path is not None:
        folder = path.parent
        candidates = [str(folder), str(folder.parent)]
    candidates.append("")
    for key in candidates:
        handle = server.latest_by_folder.get(key)
        if handle is not None:
            try:
                server.session.traces.get(handle)
            except UnknownHandleError:
                continue
            return handle
    return None


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
