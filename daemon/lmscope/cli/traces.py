"""`lmscope trace`, `show` and `export`: trace prompts, print a saved route, export a trace.

`show` and `export` never import torch (a test checks it): they read the file, and routes,
summaries and SVG are torch-free.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmscope.cli.output import Progress, shown_path, size, slug, write_text
from lmscope.errors import LmscopeError
from lmscope.prompts import check_prompt
from lmscope.protocol import defaults
from lmscope.traces.text import inert


def report_trace(trace, out: Path, svg: Path | None, threshold: float) -> None:
    from lmscope.render.svg import trace_route_svg
    from lmscope.summary import prediction_line, route_summary, trace_header

    route = trace.route(defaults.TOKEN, threshold)
    print(trace_header(trace))
    print(prediction_line(trace))
    print(route_summary(trace, route))
    written = f"wrote {shown_path(out)} ({size(out)})"
    if svg is not None:
        write_text(svg, trace_route_svg(trace, route))
        written += f" and {shown_path(svg)}"
    print(written)


def where(path: Path, line: int) -> str:
    return f"{shown_path(path)} line {line}"


def prompts_from_file(path: Path) -> list[tuple[int, str]]:
    """(line number, prompt) for each prompt line; blank lines and '#' comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LmscopeError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LmscopeError(f"prompt file {path} is not UTF-8 text") from None
    prompts = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.startswith("#")
    ]
    if not prompts:
        raise LmscopeError(f"prompt file {path} has no prompts (one per line; '#' comments)")
    return prompts


def load_model_from(args: argparse.Namespace, progress: Progress):
    """The model the `trace` and `bench` options name."""
    from lmscope.api import load_model

    return load_model(
        args.model,
        dtype=args.dtype,
        device=args.device,
        progress=progress,
        device_map=args.device_map,
    )


def cmd_trace(args: argparse.Namespace) -> int:
    from lmscope.api import trace as run

    if args.prompt is not None:
        check_prompt(args.prompt)  # before the model loads: a bad prompt costs nothing
        prompts = [(0, args.prompt)]
        out = args.out or args.out_dir / f"{slug(args.prompt)}.lmtrace"
        outputs = [out]
    else:
        prompts = prompts_from_file(args.file)
        outputs = [
            args.out_dir / f"{number:03d}-{slug(prompt)}.lmtrace"
            for number, (_line, prompt) in enumerate(prompts, start=1)
        ]
    failures = 0
    if args.file is not None:  # bad lines are reported at once, before the model loads
        good = []
        for (line, prompt), out in zip(prompts, outputs):
            try:
                check_prompt(prompt)
                good.append(((line, prompt), out))
            except LmscopeError as exc:
                failures += 1
                print(f"lmscope: {where(args.file, line)}: {inert(str(exc))}", file=sys.stderr)
        if not good:
            return 1
        prompts, outputs = [p for p, _ in good], [o for _, o in good]
    progress = Progress(enabled=not args.quiet)
    loaded = load_model_from(args, progress)
    for number, ((line, prompt), out) in enumerate(zip(prompts, outputs), start=1):
        if args.file is not None:
            print(f"\n[{number}/{len(prompts)}] line {line}")
        svg = out.with_name(out.name.removesuffix(".lmtrace") + ".svg") if args.svg else None
        try:
            traced = run(
                prompt, loaded, prepend_bos=not args.no_bos, detail=args.detail, progress=progress
            )
            progress.close()
            traced.save(out)
            report_trace(traced, out, svg, args.threshold)
        except LmscopeError as exc:
            progress.close()
            if args.file is None:
                raise
            failures += 1
            print(f"lmscope: {where(args.file, line)}: {inert(str(exc))}", file=sys.stderr)
    return 1 if failures else 0


def cmd_show(args: argparse.Namespace) -> int:
    from lmscope.api import load_trace
    from lmscope.summary import prediction_line, route_summary, trace_header

    trace = load_trace(args.file)
    route = trace.route(args.token, args.threshold, renormalize=not args.raw)
    print(trace_header(trace))
    print(prediction_line(trace, args.token))
    print(route_summary(trace, route, top_edges=args.top, top_ffn=args.top))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lmscope.api import load_trace

    trace = load_trace(args.file)
    if args.format == "json":
        from lmscope.traces.lmtrace import export_json

        text = export_json(trace.data)
    else:
        from lmscope.render.svg import trace_route_svg

        route = trace.route(args.token, args.threshold, renormalize=not args.raw)
        text = trace_route_svg(trace, route)
    if args.out is None or str(args.out) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        write_text(args.out, text)
        print(f"wrote {shown_path(args.out)} ({size(args.out)})", file=sys.stderr)
    return 0
