"""Plain-text summaries of a trace and a route, for the terminal (`lmscope trace`, `show`).

Tokens and the prompt are shown quoted with Python's repr rules, so spaces, newlines and control
characters are visible and nothing a prompt contains can drive the terminal (no raw escape
sequences); the model's name, which comes from a file too, is shown inert
(`lmscope.traces.text`). Work is bounded by the shown length, however long the text is.
"""

from __future__ import annotations

from lmscope.errors import NeedsModelError
from lmscope.graph import ATTENTION_EDGE, FFN, FFN_EDGE, RENORMALIZE, RESIDUAL_EDGE, Route
from lmscope.traces.text import shorten
from lmscope.traces.trace import Trace


def quote(token: str, limit: int = 24) -> str:
    """A token as visible, inert text: repr-quoted (every non-printable character escaped, bidi
    and other format characters included), long ones cut. Only the first `limit` characters are
    looked at, so a huge string costs no more than a short one."""
    shown = repr(token[:limit])
    if len(token) <= limit and len(shown) <= limit:
        return shown
    return shown[: limit - 2] + "…" + shown[-1]


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def prediction_line(trace: Trace, token: int = -1) -> str:
    preds = trace.predictions(token)
    best, *rest = preds
    others = ", ".join(f"{quote(t)} {_percent(p)}" for t, p in rest[:3])
    after = quote(trace.tokens[trace.position(token)])
    return f"prediction after {after}: {quote(best[0])} {_percent(best[1])}  (then {others})"


def route_summary(trace: Trace, route: Route, top_edges: int = 8, top_ffn: int = 6) -> str:
    """The route of one output token: counts, strongest attention edges with their top heads,
    and the strongest FFN nodes with their top neurons."""
    tokens = trace.tokens
    attention = route.edges_of_kind(ATTENTION_EDGE)
    counts = (
        f"{len(route.edges)} edges ({len(attention)} attention, "
        f"{len(route.edges_of_kind(RESIDUAL_EDGE))} residual, "
        f"{len(route.edges_of_kind(FFN_EDGE))} ffn) over {len(route.nodes)} nodes"
    )
    mode = "renormalized" if route.mode == RENORMALIZE else "raw"
    lines = [
        f"route of token {route.token} {quote(tokens[route.token])} at τ = {route.threshold:g} "
        f"({mode}): {counts}"
    ]
    flow = route.flow()
    if attention:
        lines.append(
            "attention edges carrying most of the prediction "
            "(layer: source → target, edge weight, share of output, top heads):"
        )
        ranked = sorted(attention, key=lambda e: (-flow.get(e.target, 0.0) * e.weight, e.weight))
        for edge in ranked[:top_edges]:
            src, dst = edge.source.position, edge.target.position
            heads = sorted(enumerate(edge.heads), key=lambda hw: -hw[1])
            top = ", ".join(f"H{h} {w:.3f}" for h, w in heads[:3] if w > 0)
            lines.append(
                f"  L{edge.target.layer:<3} {quote(tokens[src])}({src}) → "
                f"{quote(tokens[dst])}({dst})  {edge.weight:.3f}  "
                f"{flow.get(edge.target, 0.0) * edge.weight:6.1%}   {top}"
            )
    ffn_nodes = {e.target: e.weight for e in route.edges_of_kind(FFN_EDGE) if e.target.kind == FFN}
    if ffn_nodes:
        lines.append(
            "FFN nodes carrying most of the prediction "
            "(layer: token, edge weight, share of output, top neurons with activation):"
        )
        ranked_ffn = sorted(ffn_nodes.items(), key=lambda nw: (-flow.get(nw[0], 0.0), -nw[1]))
        for node, weight in ranked_ffn[:top_ffn]:
            try:
                page = trace.ffn_neurons(node.layer, node.position, limit=3)
                neurons = ", ".join(
                    f"N{n['neuron']} {n['contribution']:.3f} (a={n['activation']:+.2f})"
                    for n in page["neurons"]
                )
            except NeedsModelError:
                neurons = "(neurons not stored)"
            lines.append(
                f"  L{node.layer:<3} {quote(tokens[node.position])}({node.position})  "
                f"{weight:.3f}  {flow.get(node, 0.0):6.1%}   {neurons}"
            )
    return "\n".join(lines)


def trace_header(trace: Trace) -> str:
    model = trace.data.model
    return (
        f"{shorten(model.name, 80)}: {model.n_layers} layers × {model.n_heads} heads, "
        f"{trace.n_tokens} tokens ({'BOS + ' if trace.data.settings.bos_prepended else ''}"
        f"prompt {quote(trace.prompt, 60)})"
    )
