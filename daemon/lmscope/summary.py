"""Plain-text summaries of a trace and a route, for the terminal (`lmscope trace`, `show`).

Tokens are shown by the one token display of every lmscope view (`lmscope.traces.text`,
protocol/vocabulary.json): “·Mary”, with spaces, line breaks, control and invisible characters
visible and byte pieces as their bytes (⟨E2 80⟩), so nothing a prompt contains can drive the
terminal (no raw escape sequences); edge kinds are named as in the graph's legend. The model's
name and the prompt, which come from a file too, are shown inert. Work is bounded by the shown
length, however long the text is.
"""

from __future__ import annotations

from lmscope.errors import NeedsModelError
from lmscope.graph import ATTENTION_EDGE, FFN, FFN_EDGE, RENORMALIZE, RESIDUAL_EDGE, Route
from lmscope.protocol.vocabulary import EDGES, TOKENS
from lmscope.traces.pieces import StoredBytes
from lmscope.traces.text import display_token, is_byte_piece, shorten
from lmscope.traces.trace import Trace


def quote(token: str, limit: int = 24, data: bytes | None = None) -> str:
    """A token as every view shows it, in quotes: “·Mary”; long ones cut to `limit`
    characters. Only the first `limit` characters are looked at, so a huge string costs no
    more than a short one."""
    return f"“{display_token(token, data, limit=limit)}”"


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


class _Tokens:
    """Quotes the trace's tokens with their stored bytes, and remembers whether a byte piece
    or a U+FFFD without bytes was shown (for the note below the summary)."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.stored = StoredBytes.of(trace.data)
        self.hints: dict[str, None] = {}

    def _seen(self, text: str, data: bytes | None) -> None:
        if is_byte_piece(data):
            self.hints[TOKENS.hints["bytePiece"]] = None
        elif data is None and "\ufffd" in text[:24]:
            self.hints[TOKENS.hints["maybeBytePiece"]] = None

    def at(self, position: int) -> str:
        text, data = self.trace.tokens[position], self.stored.prompt[position]
        self._seen(text, data)
        return quote(text, data=data)

    def of_id(self, token_id: int) -> str:
        text, data = self.trace.token_text(token_id), self.stored.vocabulary.get(token_id)
        self._seen(text, data)
        return quote(text, data=data)

    def notes(self) -> list[str]:
        return [f"({hint})" for hint in self.hints]


def _predicted(trace: Trace, row: int) -> list[tuple[int, float]]:
    """The four most probable next tokens after position `row`: (id, probability)."""
    preds = trace.data.predictions
    return [(int(i), float(p)) for i, p in zip(preds.ids[row][:4], preds.probs[row][:4])]


def prediction_line(trace: Trace, token: int = -1) -> str:
    """The top prediction after `token` and the three next; `route_summary` of the same token
    adds the note on byte pieces shown here."""
    shown = _Tokens(trace)
    row = trace.position(token)
    (best, p_best), *rest = _predicted(trace, row)
    others = ", ".join(f"{shown.of_id(i)} {_percent(p)}" for i, p in rest)
    return (
        f"prediction after {shown.at(row)}: {shown.of_id(best)} {_percent(p_best)}  (then {others})"
    )


def route_summary(trace: Trace, route: Route, top_edges: int = 8, top_ffn: int = 6) -> str:
    """The route of one output token: counts, strongest attention edges with their top heads,
    and the strongest FFN nodes with their top neurons."""
    shown = _Tokens(trace)
    for token_id, _ in _predicted(trace, route.token):  # the prediction line's tokens
        shown.of_id(token_id)
    attention = route.edges_of_kind(ATTENTION_EDGE)
    counts = (
        f"{len(route.edges)} edges ({len(attention)} {EDGES[ATTENTION_EDGE].name}, "
        f"{len(route.edges_of_kind(RESIDUAL_EDGE))} {EDGES[RESIDUAL_EDGE].name}, "
        f"{len(route.edges_of_kind(FFN_EDGE))} {EDGES[FFN_EDGE].name}) "
        f"over {len(route.nodes)} nodes"
    )
    mode = "renormalized" if route.mode == RENORMALIZE else "raw"
    lines = [
        f"route of token {route.token} {shown.at(route.token)} at τ = {route.threshold:g} "
        f"({mode}): {counts}"
    ]
    flow = route.flow()
    if attention:
        lines.append(
            f"{EDGES[ATTENTION_EDGE].name} edges carrying most of the prediction "
            "(layer: source → target, edge weight, share of output, top heads):"
        )
        ranked = sorted(attention, key=lambda e: (-flow.get(e.target, 0.0) * e.weight, e.weight))
        for edge in ranked[:top_edges]:
            src, dst = edge.source.position, edge.target.position
            heads = sorted(enumerate(edge.heads), key=lambda hw: -hw[1])
            top = ", ".join(f"H{h} {w:.3f}" for h, w in heads[:3] if w > 0)
            lines.append(
                f"  L{edge.target.layer:<3} {shown.at(src)}({src}) → "
                f"{shown.at(dst)}({dst})  {edge.weight:.3f}  "
                f"{flow.get(edge.target, 0.0) * edge.weight:6.1%}   {top}"
            )
    ffn_nodes = {e.target: e.weight for e in route.edges_of_kind(FFN_EDGE) if e.target.kind == FFN}
    if ffn_nodes:
        lines.append(
            f"{EDGES[FFN_EDGE].name} nodes carrying most of the prediction "
            "(layer: token, edge weight, share of output, top neurons with activation):"
        )
        ranked_ffn = sorted(ffn_nodes.items(), key=lambda nw: (-flow.get(nw[0], 0.0), -nw[1]))
        for node, weight in ranked_ffn[:top_ffn]:
            try:
                page = trace.ffn_neurons(node.layer, node.position, limit=3)
                neurons = ", ".join(  # MoE: "E3.N120", the neuron of an expert
                    f"{trace.neuron_label(node.layer, n['neuron']).split('.', 1)[1]} "
                    f"{n['contribution']:.3f} (a={n['activation']:+.2f})"
                    for n in page["neurons"]
                )
            except NeedsModelError:
                neurons = "(neurons not stored)"
            layout = trace.expert_layout
            if layout is not None and layout.is_sparse(node.layer):  # docs/method.md, "Experts"
                try:
                    listed = trace.ffn_experts(node.layer, node.position)["experts"]
                    experts = ", ".join(
                        f"{e['label']} {e['contribution']:.3f} (g={e['gate']:.2f})" for e in listed
                    )
                except NeedsModelError:
                    experts = "(experts not stored)"
                neurons = f"experts {experts}; {neurons}"
            lines.append(
                f"  L{node.layer:<3} {shown.at(node.position)}({node.position})  "
                f"{weight:.3f}  {flow.get(node, 0.0):6.1%}   {neurons}"
            )
    return "\n".join(lines + shown.notes())


def trace_header(trace: Trace) -> str:
    model = trace.data.model
    header = (
        f"{shorten(model.name, 80)}: {model.n_layers} layers × {model.n_heads} heads, "
        f"{trace.n_tokens} tokens ({'BOS + ' if trace.data.settings.bos_prepended else ''}"
        f"prompt {_repr_quote(trace.prompt, 60)})"
    )
    return "\n".join([header, *conversation_lines(trace)])


def conversation_lines(trace: Trace) -> list[str]:
    """The conversation a chat trace holds (one line a message) and what was generated."""
    lines: list[str] = []
    chat, generation = trace.chat, trace.generation
    if chat is not None:
        prompt_tokens = trace.n_tokens if generation is None else generation.prompt_tokens
        added = sum(1 for k in chat.token_message[:prompt_tokens] if k == -1)
        how = "" if chat.exact else ", approximately"
        lines.append(
            f"chat of {len(chat.messages)} messages ({added} tokens added by the chat "
            f"template{how}):"
        )
        lines += [f"  {m.role}: {_repr_quote(m.content, 70)}" for m in chat.messages]
    if generation is not None:
        start = generation.prompt_tokens
        text = "".join(trace.tokens[start : start + generation.generated])
        how = "greedy" if generation.seed is None else f"sampled, seed {generation.seed}"
        stop = ", stopped at end-of-sequence" if generation.stopped_at_eos else ""
        lines.append(
            f"generated {generation.generated} tokens ({how}{stop}), positions "
            f"{start}..{start + generation.generated - 1}: {_repr_quote(text, 60)}"
        )
    return lines


def _repr_quote(text: str, limit: int) -> str:
    """Text (a whole prompt) quoted with Python's repr rules, so every non-printable
    character is escaped, cut to `limit` characters."""
    shown = repr(text[:limit])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return shown[: limit - 2] + "…" + shown[-1]
