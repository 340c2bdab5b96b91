"""The command line's arguments: one parser, usage errors as one line, every default the
protocol's (`protocol.defaults`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from lmscope.__about__ import __version__
from lmscope.chats import MAX_GENERATE, MAX_SEED
from lmscope.cli.diff import cmd_diff
from lmscope.cli.runs import cmd_run, cmd_run_summary
from lmscope.cli.serve import cmd_bench, cmd_serve
from lmscope.cli.traces import cmd_export, cmd_show, cmd_trace
from lmscope.cli.verify import cmd_verify
from lmscope.protocol import defaults
from lmscope.traces.text import inert


class Parser(argparse.ArgumentParser):
    """Usage errors as one line `lmscope: <problem> (see lmscope ... --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"lmscope: {inert(message)} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


ADAPTER_HELP = (
    "a PEFT/LoRA adapter folder to merge into the --model before tracing (an adapter folder "
    "given as --model loads over the base its adapter_config.json names)"
)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_trace_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Argument combinations argparse cannot express; each is a usage error (exit 2)."""
    given = [args.prompt, args.file, args.chat, args.messages]
    if sum(value is not None for value in given) != 1:
        parser.error(
            "give one of a PROMPT, --file PROMPTS.txt, --chat CHATS.chat.jsonl or --messages JSON"
        )
    if (args.file is not None or args.chat is not None) and args.out is not None:
        parser.error("--out names one file; with --file or --chat use --out-dir DIR")
    if args.seed is not None and not args.generate:
        parser.error("--seed samples the generated tokens: give --generate N too")
    if args.out is not None and args.svg and args.out.suffix == ".svg":
        parser.error("--out must be the .lmtrace file; --svg writes the SVG beside it")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lmscope", description="Information Flow Routes of a transformer language model."
    )
    parser.add_argument("--version", action="version", version=f"lmscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    trace = commands.add_parser("trace", help="trace a prompt (or a file of prompts)")
    trace.add_argument("prompt", nargs="?", help="the prompt text")
    trace.add_argument(
        "--file",
        type=Path,
        help="a text file with one prompt per line (a *.chat.jsonl file: one conversation a line)",
    )
    trace.add_argument(
        "--chat",
        type=Path,
        metavar="FILE",
        help='conversations, one JSON object a line: {"messages": [{"role", "content"}, ...]}',
    )
    trace.add_argument(
        "--messages",
        metavar="JSON",
        help='one conversation: [{"role": "user", "content": "..."}, ...] (the chat template)',
    )
    trace.add_argument(
        "--generate",
        type=_generate_count,
        default=0,
        metavar="N",
        help="generate N tokens after the prompt, then trace prompt + generation (greedy)",
    )
    trace.add_argument(
        "--seed", type=_seed, help="sample the generated tokens with this seed (temperature 1)"
    )
    trace.add_argument(
        "--model",
        default="default",
        help="default | hub id | save_pretrained folder | PEFT adapter folder | .gguf",
    )
    trace.add_argument("--adapter", metavar="FOLDER", help=ADAPTER_HELP)
    trace.add_argument("--out", type=Path, help="the .lmtrace file to write")
    trace.add_argument(
        "--out-dir", type=Path, default=Path("traces"), help="folder for traces (default traces/)"
    )
    trace.add_argument("--svg", action="store_true", help="also write the route as an SVG")
    trace.add_argument("--dtype", choices=defaults.DTYPES, default=None)
    trace.add_argument("--device", default=defaults.DEVICE, help="cpu | cuda | cuda:N | auto")
    trace.add_argument(
        "--device-map",
        choices=defaults.DEVICE_MAP_PLANS,
        help="split the model over GPUs/CPU/disk with accelerate (auto | balanced | sequential)",
    )
    trace.add_argument("--threshold", type=_threshold, default=defaults.THRESHOLD)
    trace.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    trace.add_argument(
        "--detail",
        choices=defaults.DETAIL_SCOPES,
        default=defaults.DETAIL,
        help="which nodes' neurons and projections the file stores: the last token's route at "
        f"{defaults.THRESHOLD} (default, fast) or every node of any route at the trace's "
        f"minimum threshold, {defaults.MIN_THRESHOLD} (~10x slower on a CPU)",
    )
    trace.add_argument("--quiet", action="store_true", help="no progress on stderr")
    trace.set_defaults(run=cmd_trace, usage=trace)

    def route_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--token", type=int, default=defaults.TOKEN, help="output position (default last)"
        )
        sub.add_argument("--threshold", type=_threshold, default=defaults.THRESHOLD)
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

    diff = commands.add_parser(
        "diff", help="compare two saved traces of one model: routes, prediction, shares (no model)"
    )
    diff.add_argument("a", type=Path, help="trace A (.lmtrace)")
    diff.add_argument("b", type=Path, help="trace B (.lmtrace), of the same model")
    diff.add_argument("--token-a", type=int, default=defaults.TOKEN, help="A's output position")
    diff.add_argument("--token-b", type=int, default=defaults.TOKEN, help="B's output position")
    diff.add_argument("--threshold", type=_threshold, default=defaults.THRESHOLD)
    diff.add_argument("--raw", action="store_true", help="raw threshold mode")
    aligned = diff.add_mutually_exclusive_group()
    aligned.add_argument(
        "--align-last", type=_positive, metavar="K", help="align the last K tokens of each"
    )
    aligned.add_argument(
        "--align", metavar="PAIRS", help='explicit pairs of positions A:B, e.g. "0:0,1:1,2:3"'
    )
    diff.add_argument("--top", type=_positive, default=8, help="rows listed per section")
    diff.add_argument("--json", type=Path, help="also write the whole diff as JSON here")
    diff.set_defaults(run=cmd_diff)

    add_run_commands(commands)

    verify = commands.add_parser(
        "verify", help="causal checks on the model: verify a route, or ablate components"
    )
    verify.add_argument("file", type=Path)
    route_options(verify)
    verify.add_argument("--kind", choices=["zero", "mean", "patch"], default="zero")
    verify.add_argument(
        "--ablate", metavar="TARGETS", help="e.g. L23H0,L23H0:14<-2,L23:14<-2,L5.ffn@14,L5.N120@14"
    )
    verify.add_argument("--patch", metavar="PROMPT", help="--kind patch: the prompt patched from")
    verify.add_argument("--random", type=int, default=5, help="random sets of the baseline")
    verify.add_argument("--seed", type=int, default=0, help="seed of the random sets")
    verify.add_argument("--model", help="model spec (default: the trace's)")
    verify.add_argument("--json", type=Path, help="also write the result as JSON here")
    verify.add_argument("--quiet", action="store_true", help="no progress on stderr")
    verify.set_defaults(run=cmd_verify)

    bench = commands.add_parser(
        "bench", help="measure trace speed and memory against a forward pass and LM-TT's way"
    )
    which = bench.add_mutually_exclusive_group()
    which.add_argument("--model", default="default", help="model spec (default: embedded)")
    which.add_argument(
        "--shape",
        metavar="NAME",
        help="a random-init model of a published shape instead (llama3-8b, llama2-7b, "
        "mistral-7b, qwen2.5-7b, smollm2, gpt2): the figures without the weights",
    )
    bench.add_argument("--adapter", metavar="FOLDER", help=ADAPTER_HELP)
    bench.add_argument(
        "--lengths", type=_lengths, default=[10, 50, 200, 1000], help="prompt lengths in tokens"
    )
    bench.add_argument("--repeats", type=_positive, default=3, help="runs per figure (median)")
    bench.add_argument("--json", type=Path, help="also write the figures as JSON here")
    bench.add_argument("--dtype", choices=defaults.DTYPES, default="float32")
    bench.add_argument("--device", default=defaults.DEVICE, help="cpu | cuda | cuda:N")
    bench.add_argument(
        "--device-map",
        choices=defaults.DEVICE_MAP_PLANS,
        help="split the model over GPUs/CPU/disk with accelerate (auto | balanced | sequential)",
    )
    bench.add_argument("--threads", type=_positive, help="torch CPU threads (default: all)")
    bench.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    bench.add_argument("--no-cold-start", action="store_true", help="skip the daemon start")
    bench.add_argument(
        "--responsiveness",
        type=_positive,
        metavar="TOKENS",
        help="also time hovers and status while the daemon traces a prompt of TOKENS tokens",
    )
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
    serve.add_argument(
        "--login-timeout",
        type=_positive,
        metavar="SECONDS",
        help="close a TCP connection that has not logged in by then (default 30)",
    )
    serve.add_argument("--model", help="load this model at start (default: when asked)")
    serve.add_argument("--adapter", metavar="FOLDER", help=ADAPTER_HELP)
    serve.add_argument("--dtype", choices=defaults.DTYPES, default=None)
    serve.add_argument("--device", default=defaults.DEVICE)
    serve.add_argument(
        "--device-map", choices=defaults.DEVICE_MAP_PLANS, help="split the --model with accelerate"
    )
    serve.add_argument("--log-file", type=Path, help="log here instead of stderr")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=cmd_serve)
    return parser


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be within [0, 1], got {value}")
    return value


def _generate_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_GENERATE:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_GENERATE}, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_SEED}, got {value}")
    return value


def add_run_commands(commands) -> None:
    """`lmscope run` and `lmscope run-summary` (cli/runs.py; the folder: lmscope.runs)."""
    run = commands.add_parser("run", help="trace every prompt of a file into a run folder")
    run.add_argument(
        "prompts", type=Path, help="a *.prompts.txt, *.prompts.jsonl or *.chat.jsonl file"
    )
    run.add_argument("--out", type=Path, required=True, help="the run folder (runs/NAME/)")
    run.add_argument(
        "--model",
        default="default",
        help="default | hub id | save_pretrained folder | PEFT adapter folder | .gguf",
    )
    run.add_argument("--adapter", metavar="FOLDER", help=ADAPTER_HELP)
    run.add_argument("--dtype", choices=defaults.DTYPES, default=None)
    run.add_argument("--device", default=defaults.DEVICE, help="cpu | cuda | cuda:N | auto")
    run.add_argument(
        "--device-map",
        choices=defaults.DEVICE_MAP_PLANS,
        help="split the model over GPUs/CPU/disk with accelerate (auto | balanced | sequential)",
    )
    run.add_argument("--no-bos", action="store_true", help="do not prepend the BOS token")
    run.add_argument(
        "--top-neurons", type=_positive, default=10, help="neurons kept per route FFN node"
    )
    run.add_argument("--skip-bad", action="store_true", help="run the good lines of a file")
    run.add_argument("--threads", type=_positive, help="torch CPU threads (default: all)")
    run.add_argument(
        "--ray",
        metavar="auto|ADDRESS",
        help="shard the prompts over a Ray cluster, one model per worker (pip install "
        "lmscope[ray])",
    )
    run.add_argument(
        "--bench",
        action="store_true",
        help="measure: the run's time against the sum of single traces, and its memory",
    )
    run.add_argument("--json", type=Path, help="--bench: also write the figures as JSON here")
    run.add_argument("--quiet", action="store_true", help="no progress on stderr")
    run.set_defaults(run=cmd_run)

    summary = commands.add_parser(
        "run-summary", help="heads and FFN blocks of a run folder by share (no model)"
    )
    summary.add_argument("folder", type=Path, help="the run folder (runs/NAME/)")
    summary.add_argument("--tag", help="only the prompts with this tag")
    summary.add_argument("--component", metavar="REF", help="one head or block: L23H0, L5.ffn")
    summary.add_argument("--top", type=_positive, default=10, help="components listed")
    summary.set_defaults(run=cmd_run_summary)


def _tcp_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or PORT, got {text!r}") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"port must be within 1..65535, got {number}")
    return host or "127.0.0.1", number


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
