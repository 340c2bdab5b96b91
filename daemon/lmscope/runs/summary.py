"""What `lmscope run-summary` prints: the heads and FFN blocks of a run by mean share, how often
each is on the route, the spread over prompts, per tag, and the top prompts of one component.

Plain text, torch-free, every string from the run (ids, tags, paths) printed inert.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmscope.components import ComponentRef
from lmscope.errors import LmscopeError
from lmscope.traces.text import inert

if TYPE_CHECKING:
    from lmscope.runs.table import ComponentStats, RunTable

HEADER = (
    f"  {'component':<10} {'mean':>7} {'std':>7} {'q25':>7} {'median':>7} {'q75':>7}"
    f"  on route τ 0.01 / 0.04 / 0.1"
)


def _label(kind: str, layer: int, head: int | None) -> str:
    return f"L{layer}H{head}" if kind == "head" else f"L{layer}.ffn"


def _line(run: RunTable, kind: str, layer: int, head: int | None, tag: str | None) -> str:
    stats = run.component_stats(kind, layer, head, tag)
    on = [_on_route(run, kind, layer, head, stat, tag) for stat in ROUTE_STATS]
    q1, q2, q3 = stats.quartiles
    return (
        f"  {_label(kind, layer, head):<10} {stats.mean_share:7.3f} {stats.std_share:7.3f} "
        f"{q1:7.3f} {q2:7.3f} {q3:7.3f}  {on[0]:5.0%} / {on[1]:5.0%} / {on[2]:5.0%}"
    )


ROUTE_STATS = ("on_route_001", "on_route_004", "on_route_010")


def _on_route(run: RunTable, kind: str, layer: int, head: int | None, stat: str, tag) -> float:
    if kind == "head":
        return run.head_matrix(stat, tag)[layer][head or 0]
    return run.ffn_vector(stat, tag)[layer]


def ranked(run: RunTable, kind: str, tag: str | None = None) -> list[tuple[int, int | None]]:
    """(layer, head) of every head, or (layer, None) of every FFN block, by mean share."""
    if kind == "head":
        matrix = run.head_matrix("mean_share", tag)
        cells = [
            (matrix[layer][head], layer, head)
            for layer in range(run.n_layers)
            for head in range(run.n_heads)
        ]
        return [(layer, head) for _, layer, head in sorted(cells, key=lambda c: (-c[0], c[1:]))]
    vector = run.ffn_vector("mean_share", tag)
    order = sorted(range(run.n_layers), key=lambda layer: (-vector[layer], layer))
    return [(layer, None) for layer in order]


def _section(run: RunTable, tag: str | None, top: int) -> list[str]:
    lines = [f"Heads by mean share of the prediction (top {top}):", HEADER]
    lines += [_line(run, "head", layer, h, tag) for layer, h in ranked(run, "head", tag)[:top]]
    lines += ["FFN blocks by mean share:", HEADER]
    lines += [_line(run, "ffn", layer, None, tag) for layer, _ in ranked(run, "ffn", tag)[:top]]
    return lines


def run_summary(run: RunTable, tag: str | None = None, top: int = 10) -> str:
    """The whole summary; with `tag`, only that tag's prompts."""
    info = run.info
    counts = info.get("counts", {})
    options = info.get("options", {})
    model = info.get("model", {}).get("name", "?")
    lines = [
        f"Run {inert(str(info.get('name', run.folder.name)))}: {inert(str(model))}, "
        f"{run.n_prompts} of {counts.get('prompts', '?')} prompts done"
        + (f", {counts['failed']} failed" if counts.get("failed") else ""),
        f"Shares: the last token's route at τ {options.get('shareThreshold', 0.04)}, "
        "renormalised; spread over prompts (std, quartiles)",
    ]
    if tag is not None:
        if tag not in run.tags():
            raise LmscopeError(
                f"no prompt of this run has tag {tag!r} (tags: {', '.join(run.tags()) or 'none'})"
            )
        lines.append(f"Tag {inert(tag)}: {len(run.indices(tag))} prompts")
    if run.n_prompts == 0:
        return "\n".join([*lines, "No prompt is done yet."])
    lines += _section(run, tag, top)
    if tag is None:
        for each in run.tags():
            lines += ["", f"Tag {inert(each)} ({len(run.indices(each))} prompts):"]
            lines += _section(run, each, min(top, 3))
    return "\n".join(lines)


def parse_component(text: str) -> tuple[str, int, int | None]:
    """("head", layer, head) for `L23H0`, ("ffn", layer, None) for `L5.ffn` / `L5.mlp`."""
    from lmscope.components import find_references

    found = find_references(text.strip())
    ref: ComponentRef | None = found[0][0] if len(found) == 1 else None
    if ref is not None and found[0][1:] == (0, len(text.strip())):
        if ref.kind == "head":
            return "head", ref.layer, ref.index
        if ref.kind == "ffn":
            return "ffn", ref.layer, None
    raise LmscopeError(f"--component takes a head (L23H0) or an FFN block (L5.ffn), not {text!r}")


def component_report(run: RunTable, text: str, tag: str | None = None) -> str:
    """One component's statistics and the prompts where its share is largest."""
    kind, layer, head = parse_component(text)
    stats: ComponentStats = run.component_stats(kind, layer, head, tag)
    q1, q2, q3 = stats.quartiles
    lines = [
        f"{_label(kind, layer, head)} over {stats.n_prompts} prompts"
        + (f" tagged {inert(tag)}" if tag else "")
        + f": mean share {stats.mean_share:.3f} (std {stats.std_share:.3f}; quartiles "
        f"{q1:.3f} / {q2:.3f} / {q3:.3f}), on the route at τ 0.04 in "
        f"{stats.on_route_fraction:.0%}",
        "Top prompts by share:",
    ]
    lines += [
        f"  {share:7.3f}  #{index:<5} {inert(prompt_id):<16} {inert(trace)}"
        for index, prompt_id, share, trace in stats.top_prompts
    ]
    return "\n".join(lines)
