"""`lmscope diff A.lmtrace B.lmtrace`: what changed between two traces of one model.

Prints the prediction change, the attention edges and FFN nodes that gained and lost most of the
prediction, and the heads and FFN blocks whose share changed most (`traces.diff`); `--json FILE`
writes the whole diff (the protocol's DiffResult). Reads the files only: never imports torch (a
test checks it). Text from the files is shown inert, like `lmscope show`.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lmscope.cli.output import shown_path, size, write_text
from lmscope.graph.nodes import ATTENTION_EDGE, FFN
from lmscope.summary import quote
from lmscope.traces.alignment import parse_pairs
from lmscope.traces.diff import BOTH, ONLY_A, ONLY_B, DiffNode, TraceDiff
from lmscope.traces.text import shorten

MEMBERSHIP_SHOWN = {ONLY_A: "A only", ONLY_B: "B only", BOTH: "both"}


def cmd_diff(args: argparse.Namespace) -> int:
    from lmscope.api import load_trace

    a, b = load_trace(args.a), load_trace(args.b)
    pairs = None if args.align is None else parse_pairs(args.align)
    diff = a.diff(
        b,
        token_a=args.token_a,
        token_b=args.token_b,
        threshold=args.threshold,
        renormalize=not args.raw,
        align_last=args.align_last,
        pairs=pairs,
    )
    print(diff_summary(diff, a.tokens, b.tokens, top=args.top))
    if args.json is not None:
        write_text(args.json, json.dumps(diff.wire(), indent=1) + "\n")
        print(f"wrote {shown_path(args.json)} ({size(args.json)})")
    return 0


def _token(tokens_a: list[str], tokens_b: list[str], node: DiffNode) -> str:
    if node.position_a is not None:
        return quote(tokens_a[node.position_a], limit=16)
    assert node.position_b is not None
    return "B:" + quote(tokens_b[node.position_b], limit=16)


def diff_summary(diff: TraceDiff, tokens_a: list[str], tokens_b: list[str], top: int = 8) -> str:
    """The diff as a few readable blocks for the terminal."""
    mode = "renormalized" if diff.mode == "renormalize" else "raw"
    lines = [
        f"{shorten(diff.model, 80)}: A {_prompt(diff.prompt_a)} vs B {_prompt(diff.prompt_b)}",
        f"routes of A's token {diff.token_a} {quote(tokens_a[diff.token_a])} and B's token "
        f"{diff.token_b} {quote(tokens_b[diff.token_b])} at τ = {diff.threshold:g} ({mode}); "
        f"alignment: {diff.alignment.describe()}",
    ]
    lines += _prediction_lines(diff)
    counts = {m: sum(1 for e in diff.edges if e.membership == m) for m in MEMBERSHIP_SHOWN}
    unaligned = sum(1 for n in diff.nodes if not n.node.aligned)
    lines.append(
        f"edges: {counts[BOTH]} on both routes, {counts[ONLY_A]} on A's only, "
        f"{counts[ONLY_B]} on B's only; {len(diff.nodes)} nodes"
        + (f" ({unaligned} at unaligned positions)" if unaligned else "")
    )
    # Residual edges and A/R nodes carry whatever reaches them, so they dominate any ranking by
    # share without saying what changed; the summary ranks what moves information (attention
    # edges, FFN nodes) and --json has every row.
    lines.append(
        "attention edges whose share of the prediction changed most "
        "(Δ = B − A; edge weight A → B; every edge and node is in --json):"
    )
    attention = [e for e in diff.edges if e.kind == ATTENTION_EDGE]
    ranked = sorted(attention, key=lambda e: -abs(e.share_delta))[:top]
    for e in ranked:
        lines.append(
            f"  {e.share_delta:+7.1%}  {e.label():<34} {_token(tokens_a, tokens_b, e.source)} → "
            f"{_token(tokens_a, tokens_b, e.target)}  {e.weight_a:.3f} → {e.weight_b:.3f}  "
            f"{MEMBERSHIP_SHOWN[e.membership]}"
        )
    lines.append("FFN nodes whose share of the prediction changed most (A → B):")
    ffn_nodes = [n for n in diff.nodes if n.node.kind == FFN]
    for n in sorted(ffn_nodes, key=lambda r: -abs(r.delta))[:top]:
        lines.append(
            f"  {n.delta:+7.1%}  {n.node.label():<9} {_token(tokens_a, tokens_b, n.node)}  "
            f"{n.share_a:6.1%} → {n.share_b:6.1%}  {MEMBERSHIP_SHOWN[n.membership]}"
        )
    lines += _share_lines(diff, top)
    return "\n".join(lines)


def _prompt(text: str) -> str:
    shown = repr(text[:60])
    return shown if len(text) <= 60 else shown[:-1] + "…" + shown[-1]


def _prediction_lines(diff: TraceDiff) -> list[str]:
    change = diff.prediction
    first_a, first_b = change.top_a[0][0], change.top_b[0][0]
    lines = ["prediction (A → B):"]
    for token_id in dict.fromkeys([first_a, first_b, *(i for i, _ in change.top_a[:3])]):
        t = change.of(token_id)
        mark = (" (A's prediction)" if token_id == first_a else "") + (
            " (B's prediction)" if token_id == first_b else ""
        )
        lines.append(f"  {quote(t.text)} {t.shown('a')} → {t.shown('b')}{mark}")
    if any(t.p_b is None for t in change.tokens) or any(t.p_a is None for t in change.tokens):
        lines.append(
            "  (“< p”: not among that trace's stored top predictions, so below its last one)"
        )
    return lines


def _share_lines(diff: TraceDiff, top: int) -> list[str]:
    heads = diff.head_deltas  # [L, H]
    order = np.argsort(-np.abs(heads), axis=None, kind="stable")[:top]
    lines = ["heads whose share of the prediction changed most (A → B):"]
    for layer, head in zip(*np.unravel_index(order, heads.shape)):
        a, b = diff.shares_a.heads[layer, head], diff.shares_b.heads[layer, head]
        if a == 0 and b == 0:
            break
        lines.append(f"  {b - a:+7.1%}  L{layer}H{head:<4} {a:6.1%} → {b:6.1%}")
    ffn = diff.ffn_deltas  # [L]
    lines.append("FFN blocks whose share changed most (A → B):")
    for layer in np.argsort(-np.abs(ffn), kind="stable")[:top]:
        a, b = diff.shares_a.ffn[layer], diff.shares_b.ffn[layer]
        if a == 0 and b == 0:
            break
        lines.append(f"  {b - a:+7.1%}  L{layer}.ffn  {a:6.1%} → {b:6.1%}")
    return lines
