"""`lmscope verify FILE.lmtrace`: causal checks of a saved trace on its model.

    lmscope verify FILE.lmtrace [--threshold T] [--kind zero|mean] [--random N] [--seed S]
    lmscope verify FILE.lmtrace --ablate L23H0,L23H0:14<-2,L5.ffn@14 [--kind zero|mean|patch]
                                [--patch PROMPT]

Without `--ablate` it verifies the route at τ (`Trace.verify_route`): the prediction's
probability with everything off the route ablated, relative to the full model, and the mean
over `--random` random sets of the route's size. With `--ablate` it ablates the listed targets
(`lmscope.causal.targets`) and prints Δ log p of the prediction and the new top tokens. The
model is `--model` (default: the trace's own spec); a model other than the trace's (another
content hash) is refused, naming both.
"""

from __future__ import annotations

import argparse
import json
import math

from lmscope.cli.output import Progress, write_text
from lmscope.errors import LmscopeError
from lmscope.traces.causal import AblationResult, Faithfulness
from lmscope.traces.text import inert


def cmd_verify(args: argparse.Namespace) -> int:
    from lmscope.api import load_model, load_trace
    from lmscope.traces.trace import Trace
    from lmscope.tracing.live import queries_for

    saved = load_trace(args.file)
    progress = Progress(not args.quiet)
    spec = args.model or saved.data.model.spec
    loaded = load_model(spec, dtype=saved.data.environment.dtype, progress=progress)
    live, notes = queries_for(loaded, saved.data)
    if live is None:
        raise LmscopeError(
            f"{'; '.join(notes)} (the trace's content hash is {saved.data.model.content_hash}, "
            f"the loaded model's {loaded.content_hash})"
        )
    trace = Trace(saved.data, live)
    if args.ablate is not None:
        ablation = trace.ablate(args.ablate, args.kind, token=args.token, patch=args.patch)
        result: AblationResult | Faithfulness = ablation
        text = ablation_summary(ablation)
    else:
        if args.patch is not None:
            raise LmscopeError("--patch is for --ablate with --kind patch")
        faithfulness = trace.verify_route(
            args.threshold,
            args.kind,
            token=args.token,
            renormalize=not args.raw,
            n_random=args.random,
            seed=args.seed,
            progress=progress,
        )
        result, text = faithfulness, faithfulness_summary(faithfulness)
    progress.close()
    print(text)
    if args.json is not None:
        write_text(args.json, json.dumps(result.to_wire(), indent=1) + "\n")
    return 0


def ablation_summary(result: AblationResult) -> str:
    lines = [
        f"ablated ({result.kind}): {inert(', '.join(result.targets))}",
        f"prediction {inert(repr(result.token))} at token {result.position}: "
        f"log p {result.logprob:.4f} -> {result.ablated_logprob:.4f} "
        f"(Δ {result.delta_logprob:+.4f}, p {math.exp(result.logprob):.4f} -> "
        f"{math.exp(result.ablated_logprob):.4f})",
        "new top tokens: " + ", ".join(f"{inert(repr(t.token))} {t.prob:.4f}" for t in result.top),
    ]
    return "\n".join(lines)


def faithfulness_summary(result: Faithfulness) -> str:
    return "\n".join(
        [
            f"route at τ = {result.threshold} ({result.kind} ablation of everything else), "
            f"prediction {inert(repr(result.token))} at token {result.position}",
            f"kept {result.kept_edges} of {result.total_edges} attention terms (head, i<-j) "
            f"and {result.kept_ffn} of {result.total_ffn} FFN nodes",
            f"p full {result.full_prob:.4g}, route only {result.route_prob:.4g}: "
            f"faithfulness {result.kept:.4g}",
            f"random sets of the same size ({len(result.random_probs)}, seed {result.seed}): "
            f"{result.random_kept:.4g}",
        ]
    )
