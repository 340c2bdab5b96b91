"""`lmscope trace`, `show` and `export`: trace prompts, print a saved route, export a trace.

`show` and `export` never import torch (a test checks it): they read the file, and routes,
summaries and SVG are torch-free.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmscope.chats import Message, as_dicts, check_messages
from lmscope.cli.output import Progress, shown_path, size, slug, write_text
from lmscope.errors import LmscopeError
from lmscope.prompts import check_prompt
from lmscope.protocol import defaults
from lmscope.traces.text import inert

TraceSource = str | list[Message]  # a prompt, or a conversation


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


def read_prompt_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LmscopeError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LmscopeError(f"prompt file {path} is not UTF-8 text") from None


def prompts_from_file(path: Path) -> list[tuple[int, str]]:
    """(line number, prompt) for each prompt line; blank lines and '#' comments skipped."""
    text = read_prompt_file(path)
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
        adapter=args.adapter,
    )


def conversations_from_file(path: Path) -> tuple[list[tuple[int, list[Message]]], int]:
    """(line number, messages) for each conversation of a `*.chat.jsonl` file, and how many
    lines gave none (each reported on stderr with its line and why)."""
    from lmscope.promptfiles import problems_in, prompts_in

    text = read_prompt_file(path)
    as_chat = "conversations.chat.jsonl"  # `--chat` reads any file name as a chat file
    problems = problems_in(text, as_chat)
    for line, problem in problems:
        print(f"lmscope: {where(path, line + 1)}: {inert(problem)}", file=sys.stderr)
    found = [
        (span.line + 1, list(span.messages))
        for span in prompts_in(text, as_chat)
        if span.messages is not None
    ]
    if not found and not problems:
        raise LmscopeError(
            f'chat file {path} has no conversations (one {{"messages": [...]}} per line)'
        )
    return found, len(problems)


def messages_argument(text: str) -> list[Message]:
    """`--messages JSON`, checked."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise LmscopeError(f"--messages is not valid JSON: {exc}") from None
    return check_messages(value)


def _label(source: TraceSource) -> str:
    return source if isinstance(source, str) else source[-1].content


def cmd_trace(args: argparse.Namespace) -> int:
    from lmscope.api import trace as run
    from lmscope.promptfiles import prompt_file_kind

    failures = 0
    items: list[tuple[int, TraceSource]]
    chat_file = args.chat or (
        args.file if args.file is not None and prompt_file_kind(str(args.file)) == "chat" else None
    )
    batch = args.file or args.chat
    if args.prompt is not None or args.messages is not None:
        source: TraceSource = (
            args.prompt if args.prompt is not None else messages_argument(args.messages)
        )
        if isinstance(source, str):
            check_prompt(source)  # before the model loads: a bad prompt costs nothing
        items = [(0, source)]
        outputs = [args.out or args.out_dir / f"{slug(_label(source))}.lmtrace"]
    else:
        if chat_file is not None:
            conversations, failures = conversations_from_file(chat_file)
            items = [(line, messages) for line, messages in conversations]
        else:
            items = [(line, prompt) for line, prompt in prompts_from_file(args.file)]
        outputs = [
            args.out_dir / f"{number:03d}-{slug(_label(source))}.lmtrace"
            for number, (_line, source) in enumerate(items, start=1)
        ]
    if batch is not None:  # bad lines are reported at once, before the model loads
        good = []
        for (line, source), out in zip(items, outputs):
            try:
                if isinstance(source, str):
                    check_prompt(source)
                good.append(((line, source), out))
            except LmscopeError as exc:
                failures += 1
                print(f"lmscope: {where(batch, line)}: {inert(str(exc))}", file=sys.stderr)
        if not good:
            return 1
        items, outputs = [p for p, _ in good], [o for _, o in good]
    progress = Progress(enabled=not args.quiet)
    loaded = load_model_from(args, progress)
    for number, ((line, source), out) in enumerate(zip(items, outputs), start=1):
        if batch is not None:
            print(f"\n[{number}/{len(items)}] line {line}")
        svg = out.with_name(out.name.removesuffix(".lmtrace") + ".svg") if args.svg else None
        try:
            traced = run(
                source if isinstance(source, str) else None,
                loaded,
                messages=None if isinstance(source, str) else as_dicts(source),
                generate=args.generate,
                seed=args.seed,
                prepend_bos=not args.no_bos,
                detail=args.detail,
                progress=progress,
            )
            progress.close()
            traced.save(out)
            report_trace(traced, out, svg, args.threshold)
        except LmscopeError as exc:
            progress.close()
            if batch is None:
                raise
            failures += 1
            print(f"lmscope: {where(batch, line)}: {inert(str(exc))}", file=sys.stderr)
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
