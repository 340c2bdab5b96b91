"""Standard LSP features for editors: hover cards on component references, CodeLens on
prompt files."""

from __future__ import annotations

from lsprotocol import types

from lmscope.errors import LmscopeError
from lmscope.server.app import LmscopeServer
from lmscope.server.documents import open_document, path_of_uri
from lmscope.server.runs import shelf_of


def register_editor(server: LmscopeServer) -> None:
    """Register hover and CodeLens on `server`."""
    session = server.session

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @server.thread()
    def hover(params: types.HoverParams) -> types.Hover | None:
        from lmscope.cards import component_card
        from lmscope.components import reference_at

        doc = open_document(server, params.text_document.uri)
        if doc is None:
            return None  # LSP: no hover for a document the editor has not opened
        try:
            line_number = params.position.line
            if line_number >= len(doc.lines):
                return None
            line = doc.lines[line_number]
            position = doc.position_codec.position_from_client_units(doc.lines, params.position)
            found = reference_at(line, position.character)
            if found is None:
                return None
            ref, start, end = found
            handle = session.latest_for(path_of_uri(params.text_document.uri))
            trace = session.traces.get(handle) if handle else None
            live, notes = session.live_for(trace)
            card = component_card(
                ref, trace, live=live, handle=handle, notes=notes, run=shelf_of(server).cited()
            )
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
        from lmscope.chats import as_dicts
        from lmscope.promptfiles import is_prompt_file, prompts_in

        uri = params.text_document.uri
        doc = open_document(server, uri)
        if doc is None or not is_prompt_file(uri):
            return None
        lenses = []
        for span in prompts_in(doc.source, uri):
            rng = doc.position_codec.range_to_client_units(
                doc.lines,
                types.Range(
                    types.Position(span.line, span.start), types.Position(span.line, span.end)
                ),
            )
            argument: dict[str, object] = {"uri": uri, "line": span.line, "prompt": span.prompt}
            if span.messages is not None:  # a conversation: traced as messages, not as text
                argument["messages"] = as_dicts(list(span.messages))
            lenses.append(
                types.CodeLens(
                    range=rng,
                    command=types.Command(
                        title="Trace", command="lmscope.tracePrompt", arguments=[argument]
                    ),
                )
            )
        return lenses
