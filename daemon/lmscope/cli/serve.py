"""`lmscope serve` (the daemon, over stdio or TCP) and `lmscope bench` (speed and memory)."""

from __future__ import annotations

import argparse
import os
import sys

from lmscope.cli.output import Progress, shown_path, write_text
from lmscope.cli.traces import load_model_from
from lmscope.errors import LmscopeError
from lmscope.traces.text import inert


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    import torch

    from lmscope.benchmark.run import format_report, run_bench, table_row

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.shape is not None:
        from lmscope.benchmark.run import TEXT
        from lmscope.benchmark.shapes import shaped_model

        if args.adapter is not None or args.device_map is not None:
            raise LmscopeError("--shape builds its own model: no --adapter or --device-map")
        if args.responsiveness is not None:
            raise LmscopeError("--responsiveness starts a daemon, which cannot load a --shape")
        loaded = shaped_model(args.shape, getattr(torch, args.dtype), args.device, TEXT)
    else:
        progress = Progress(enabled=not args.quiet)
        loaded = load_model_from(args, progress)
        progress.close()

    def say(message: str) -> None:
        if not args.quiet:
            print(f"  {inert(message)}", file=sys.stderr, flush=True)

    def done(result) -> None:
        say("done: " + " · ".join(table_row(result)[:4]) + "x forward")

    report = run_bench(
        loaded,
        args.lengths,
        repeats=args.repeats,
        dense=not args.no_dense,
        cold_start=not args.no_cold_start and args.shape is None,  # a daemon loads specs
        responsiveness_tokens=args.responsiveness,
        progress=say,
        on_length=done,
    )
    print(inert(format_report(report), keep_newlines=True))  # it names the model
    if args.json is not None:
        write_text(args.json, json.dumps(report.wire(), indent=2) + "\n")
        print(f"wrote {shown_path(args.json)}")
    return 0


def serve_token(args: argparse.Namespace) -> str:
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

    token = serve_token(args) if args.tcp is not None else None
    server = build_server(token=token)
    if args.model is not None:
        server.preload = (args.model, args.dtype, args.device, args.device_map, args.adapter)
    if args.tcp is None:
        server.start_io(sys.stdin.buffer, rpc_out)
        # The client is gone (stdin closed) or said `exit`: no thread may be left inside torch.
        server.stop_work(exit_code=server.exit_code)
        return server.exit_code
    host, port = args.tcp
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("lmscope").warning(
            "listening on %s:%d, beyond this machine: anyone who can reach it and knows the "
            "token can run models here",
            host,
            port,
        )
    server.start_tcp(host, port, args.login_timeout)
    return 0
