"""The `lmscope` command line: trace, show, export, bench, serve.

    lmscope trace PROMPT [--model default] [--out FILE.lmtrace] [--svg]
    lmscope trace --file PROMPTS.txt --out-dir DIR [--svg]
    lmscope show FILE.lmtrace [--token N] [--threshold T] [--raw]
    lmscope export FILE.lmtrace --format json|svg [--out FILE]
    lmscope diff A.lmtrace B.lmtrace [--threshold T] [--align-last K | --align PAIRS] [--json F]
    lmscope verify FILE.lmtrace [--threshold T] [--kind zero|mean] [--ablate L23H0,L5.ffn@14]
    lmscope run PROMPTS.prompts.jsonl --out runs/NAME/ [--skip-bad] [--ray auto|ADDRESS]
    lmscope run-summary runs/NAME/ [--tag T] [--component L23H0]
    lmscope bench [--model default] [--lengths 10,50,200,1000] [--json FILE]
    lmscope serve [--stdio | --tcp HOST:PORT] [--model SPEC]

User errors print one line `lmscope: <problem>` on stderr and exit 1 (usage errors exit 2);
every text that comes from a file, a model or a path is printed inert (`lmscope.traces.text`:
no raw control, escape or bidi characters reach the terminal);
files are written atomically, so an error or Ctrl-C never leaves half a file. Progress goes to
stderr; results to stdout. Modules: `arguments` (the parser), `traces` (trace, show, export),
`serve` (serve, bench), `runs` (run, run-summary), `output` (progress, atomic text
files).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lmscope.allocator import keep_freed_memory
from lmscope.cli.arguments import build_parser, check_trace_arguments
from lmscope.errors import LmscopeError
from lmscope.traces.text import inert

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # lmscope's own process: reuse freed blocks (lmscope.allocator)
    args = build_parser().parse_args(argv)
    if args.command == "trace":
        check_trace_arguments(args.usage, args)
    try:
        return args.run(args)
    except LmscopeError as exc:
        print(f"lmscope: {inert(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmscope: interrupted (nothing half-written is left)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
