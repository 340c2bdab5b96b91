"""The `lmscope` command line: trace, show, export.

    lmscope trace PROMPT [--model default] [--out FILE.lmtrace] [--svg FILE.svg]
    lmscope trace --file PROMPTS.txt --out-dir DIR [--svg]
    lmscope show FILE.lmtrace [--token N] [--threshold T] [--raw]
    lmscope export FILE.lmtrace --format json|svg [--out FILE]
    lmscope bench [--model default] [--lengths 10,50,200,1000] [--json FILE]

User errors print one line `lmscope: <problem>` on stderr and exit 1 (usage errors exit 2);
files are written atomically, so an error or Ctrl-C never leaves half a file. Progress goes to
stderr; results to stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lmscope.__about__ import __version__
from lmscope.errors import LmscopeError

DEFAULT_THRESHOLD = 0.04
# accelerate's device-map plans (lmscope.models.loading.PLANS; not imported: torch loads late).
PLANS = ("auto", "balanced", "balanced_low_0", "sequential")


class Progress:
    """A progress bar on stderr (tqdm) for fractions, a status line for stages."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def __call__(self, message: str, fraction: float | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if fraction is None:
            self.close()
            # "· " not "lmscope: ": errors alone start with the program name.
            print(f"· {message}…", file=sys.stderr, flush=True)
            return
        if self._bar is None:
            # disable=None: a bar only on a terminal, never a flood of redraws in logs.
            self._bar = tqdm(
                total=100, file=sys.stderr, leave=False, bar_format="{l_bar}{bar}", disable=None
            )
        self._bar.set_description_str(message)
        self._bar.n = round(100 * fraction)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _slug(prompt: str, limit: int = 40) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-").lower()
    return words[:limit].rstrip("-") or "prompt"


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be within [0, 1], got {value}")
    return value


def _write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise LmscopeError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


# --- trace -----------------------------------------------------------------------------------
def _report_trace(trace, out: Path, svg: Path | None, threshold: float) -> None:
    from lmscope.summary import prediction_line, route_summary, trace_header

    route = trace.route(-1, threshold)
    print(trace_header(trace))
    print(prediction_line(trace))
    print(route_summary(trace, route))
    written = f"wrote {out} ({_size(out)})"
    if svg is not None:
        from lmscope.render.svg import route_svg

        _write_text(svg, route_svg(route, trace.tokens, predicted=trace.predictions()[0][0]))
        written += f" and {svg}"
    print(written)


def _prompts_from_file(path: Path) -> list[tuple[int, str]]:
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


def _load_model(args: argparse.Namespace, progress: Progress):
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
        prompts = [(0, args.prompt)]
        out = args.out or args.out_dir / f"{_slug(args.prompt)}.lmtrace"
        outputs = [out]
    else:
        prompts = _prompts_from_file(args.file)
        outputs = [
            args.out_dir / f"{number:03d}-{_slug(prompt)}.lmtrace"
            for number, (_line, prompt) in enumerate(prompts, start=1)
        ]
    progress = Progress(enabled=not args.quiet)
    loaded = _load_model(args, progress)
    failures = 0
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
            _report_trace(traced, out, svg, args.threshold)
        except LmscopeError as exc:
            progress.close()
            if args.file is None:
                raise
            failures += 1
            print(f"lmscope: {args.file} line {line}: {exc}", file=sys.stderr)
    return 1 if failures else 0


# --- show / export ---------------------------------------------------------------------------
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
        from lmscope.traces.fileformat import export_json

        text = export_json(trace.data)
    else:
        from lmscope.render.svg import route_svg

        route = trace.route(args.token, args.threshold, renormalize=not args.raw)
        text = route_svg(route, trace.tokens, predicted=trace.predictions(args.token)[0][0])
    if args.out is None or str(args.out) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        _write_text(args.out, text)
        print(f"wrote {args.out} ({_size(args.out)})", file=sys.stderr)
    return 0


# --- serve ---------------------------------------------------------------------------------
def _lengths(text: str) -> list[int]:
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token counts, got {text!r}"
        ) from None
    if not lengths or any(n < 1 for n in lengths):
        raise argparse.ArgumentTypeError(f"expected positive token counts, got {text!r}")
    return lengths


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from lmscope.benchmark.run import format_report, run_bench, table_row

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    progress = Progress(enabled=not args.quiet)
    loaded = _load_model(args, progress)
    progress.close()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"  {message}", file=sys.stderr, flush=True)

    def done(result) -> None:
        say("done: " + " · ".join(table_row(result)[:4]) + "x forward")

    report = run_bench(
        loaded,
        args.lengths,
        repeats=args.repeats,
        dense=not args.no_dense,
        cold_start=not args.no_cold_start,
        progress=say,
        on_length=done,
    )
    print(format_report(report))
    if args.json is not None:
        _write_text(args.json, json.dumps(report.wire(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _tcp_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or PORT, got {text!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"port must be within 1..65535, got {number}")
    return host or "127.0.0.1", number


def _serve_token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LmscopeError(
                f"cannot read token file {args.token_file}: {exc.strerror}"
            ) from None
    else:
        token = os.environ.get("LMSCOPE_TOKEN", "").strip()
    if len(token) < 16:
        raise LmscopeError(
            "TCP mode needs a token of at least 16 characters: set LMSCOPE_TOKEN or --token-file"
        )
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    # stdout belongs to JSON-RPC: keep its bytes for the server and send every stray print
    # (ours or a library's) to stderr instead.
    rpc_out = sys.stdout.buffer
    sys.stdout = sys.stderr
    handler: logging.Handler = (
        logging.FileHandler(args.log_file, encoding="utf-8")
        if args.log_file
        else logging.StreamHandler(sys.stderr)
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pygls").setLevel(logging.WARNING)  # it logs every message at INFO
    from lmscope.server import build_server, quiet_expected_errors

    quiet_expected_errors()
    # Import the model stack now, on this thread: transformers' lazy modules are not safe to
    # import from two threads at once (the worker loading a model while a query thread imports
    # the adapters raised "cannot import name 'AutoModelForCausalLM'"). The model needs them
    # anyway; this moves ~2 s from the first load to start-up.
    import transformers

    from lmscope.models import loading  # noqa: F401
    from lmscope.tracing import engine  # noqa: F401

    _ = transformers.AutoModelForCausalLM, transformers.AutoTokenizer

    token = _serve_token(args) if args.tcp is not None else None
    server = build_server(token=token)
    if args.model is not None:
        server.preload = (args.model, args.dtype, args.device, args.device_map)
    if args.tcp is None:
        server.start_io(sys.stdin.buffer, rpc_out)
        return 0
    host, port = args.tcp
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("lmscope").warning(
            "listening on %s:%d, beyond this machine: anyone who can reach it and knows the "
            "token can run models here",
            host,
            port,
        )
    server.start_tcp(host, port)
    return 0


# --- arguments -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Usage errors as one line `lmscope: <problem> (see lmscope ... --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"lmscope: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _check_trace_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argument combinations argparse cannot express; each is a usage error (exit 2)."""
    if (args.prompt is None) == (args.file is None):
        parser.error("give either a PROMPT or --file PROMPTS.txt (not both)")
    if args.file is not None and args.out is not None:
        parser.error("--out names one file; with --file use --out-dir DIR")
    if args.out is not None and args.svg and args.out.suffix == ".svg":
        parser.error("--out must be the .lmtrace file; --svg writes the SVG beside it")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lmscope", description="Information Flow Routes of a transformer language model."
    )
    parser.add_argument("--version", action="version", version=f"lmscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    trace = commands.add_parser("trace", help="trace a prompt (or a file of prompts)")
    trace.add_argument("prompt", nargs="?", help="the prompt text")
    trace.add_argument("--file", type=Path, help="a text file with one prompt per line")
    trace.add_argument(
        "--model", default="default", help="default | hub id | save_pretrained folder | .gguf"
    )
    trace.add_argument("--out", type=Path, help="the .lmtrace file to write")
    trace.add_argument(
        "--out-dir", type=Path, default=Path("traces"), help="folder for traces (default traces/)"
    )
    trace.add_argument("--svg", action="store_true", help="also write the route as an SVG")
    trace.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    trace.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    trace.add_argument(
        "--device-map",
        choices=PLANS,
        help="split the model over GPUs/CPU/disk with accelerate (auto | balanced | sequential)",
    )
    trace.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD)
    trace.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    trace.add_argument(
        "--detail",
        choices=["route", "all"],
        default="route",
        help="which nodes' neurons and projections the file stores: the last token's route at "
        "0.04 (default, fast) or every node of any route at 0.01 (~10x slower on a CPU)",
    )
    trace.add_argument("--quiet", action="store_true", help="no progress on stderr")
    trace.set_defaults(run=cmd_trace, usage=trace)

    def route_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--token", type=int, default=-1, help="output position (default last)")
        sub.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD)
        sub.add_argument("--raw", action="store_true", help="raw threshold mode")

    show = commands.add_parser("show", help="print a route from a saved trace (no model)")
    show.add_argument("file", type=Path)
    route_options(show)
    show.add_argument("--top", type=_positive, default=8, help="edges and FFN nodes listed")
    show.set_defaults(run=cmd_show)

    export = commands.add_parser("export", help="write a saved trace as JSON or a route as SVG")
    export.add_argument("file", type=Path)
    export.add_argument("--format", choices=["json", "svg"], required=True)
    export.add_argument("--out", type=Path, help="output file (default stdout)")
    route_options(export)
    export.set_defaults(run=cmd_export)

    bench = commands.add_parser(
        "bench", help="measure trace speed and memory against a forward pass and LM-TT's way"
    )
    bench.add_argument("--model", default="default", help="model spec (default: embedded)")
    bench.add_argument(
        "--lengths", type=_lengths, default=[10, 50, 200, 1000], help="prompt lengths in tokens"
    )
    bench.add_argument("--repeats", type=_positive, default=3, help="runs per figure (median)")
    bench.add_argument("--json", type=Path, help="also write the figures as JSON here")
    bench.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    bench.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    bench.add_argument(
        "--device-map",
        choices=PLANS,
        help="split the model over GPUs/CPU/disk with accelerate (auto | balanced | sequential)",
    )
    bench.add_argument("--threads", type=_positive, help="torch CPU threads (default: all)")
    bench.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    bench.add_argument("--no-cold-start", action="store_true", help="skip the daemon start")
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bench.set_defaults(run=cmd_bench)

    serve = commands.add_parser("serve", help="run the daemon (JSON-RPC over stdio or TCP)")
    serve.add_argument("--stdio", action="store_true", help="stdio transport (the default)")
    serve.add_argument(
        "--tcp",
        type=_tcp_address,
        metavar="HOST:PORT",
        help="TCP transport (binds 127.0.0.1 unless HOST is given; needs LMSCOPE_TOKEN)",
    )
    serve.add_argument("--token-file", type=Path, help="file holding the TCP token")
    serve.add_argument("--model", help="load this model at start (default: when asked)")
    serve.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    serve.add_argument("--device", default="cpu")
    serve.add_argument("--device-map", choices=PLANS, help="split the --model with accelerate")
    serve.add_argument("--log-file", type=Path, help="log here instead of stderr")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "trace":
        _check_trace_arguments(args.usage, args)
    try:
        return args.run(args)
    except LmscopeError as exc:
        print(f"lmscope: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmscope: interrupted (nothing half-written is left)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
