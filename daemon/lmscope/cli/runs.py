"""`lmscope run` (trace a prompt file into a run folder) and `lmscope run-summary` (read one).

`run-summary` never imports torch (a test checks it): it reads the folder through the torch-free
`lmscope.runs.table`. `run` loads torch only once the prompt file has been read and its bad
lines reported.
"""

from __future__ import annotations

import argparse

from lmscope.cli.output import Progress, shown_path


def cmd_run(args: argparse.Namespace) -> int:
    from lmscope.runner.corpus import RunSettings, read_checked_source, run_corpus

    settings = RunSettings(
        top_neurons=args.top_neurons, prepend_bos=not args.no_bos, skip_bad=args.skip_bad
    )
    source = read_checked_source(args.prompts, args.skip_bad)  # before any model loads
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.bench:
        from lmscope.runner.bench import bench_run, report

        loaded = _load(args)
        print(report(bench_run(loaded, source, args.out, settings, quiet=args.quiet), args.json))
        return 0
    if args.ray is not None:
        from lmscope.runner.ray_workers import RayBackend

        def open_backend():
            return RayBackend(
                args.ray,
                model=args.model,
                dtype=args.dtype,
                device=args.device,
                adapter=args.adapter,
                prepend_bos=not args.no_bos,
            )
    else:
        from lmscope.runner.local import LocalBackend

        def open_backend():
            return LocalBackend(_load(args), prepend_bos=not args.no_bos)

    run = run_corpus(source, args.out, settings, open_backend, quiet=args.quiet)
    failed = f", {run.failed} failed" if run.failed else ""
    print(
        f"{shown_path(args.out)}: {len(run.done)} of {len(source.prompts)} prompts done{failed} "
        f"(lmscope run-summary {shown_path(args.out)})"
    )
    return 1 if run.failed else 0


def _load(args: argparse.Namespace):
    from lmscope.cli.traces import load_model_from

    return load_model_from(args, Progress(enabled=not args.quiet))


def cmd_run_summary(args: argparse.Namespace) -> int:
    from lmscope.runs.summary import component_report
    from lmscope.runs.table import load_run

    run = load_run(args.folder)
    if args.component is not None:
        print(component_report(run, args.component, args.tag))
    else:
        print(run.summary(tag=args.tag, top=args.top))
    return 0
