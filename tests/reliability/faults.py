"""Fault injection for the reliability tests: run the real daemon (`lmscope serve --stdio`)
with faults installed at named seams, chosen by the environment variable LMSCOPE_TEST_FAULTS.

Only this script reads that variable; the daemon itself knows nothing of it. Run as
`python tests/reliability/faults.py [serve arguments]` with LMSCOPE_TEST_FAULTS set to a
comma-separated list of:

- `pause-before-rename:<marker>`: a trace write whose file name contains "victim" writes
  `<marker>` once its temp file is complete and fsynced, then blocks before the rename (the
  seam `lmscope.files._before_rename`), so the test can SIGKILL the daemon at that point.
- `write-error:<substring>:<ERRNO>`: writing a temp file whose path contains <substring>
  writes half the bytes, then fails with OSError(ERRNO) (`lmscope.files._write_all`): ENOSPC
  is a full disk.
- `open-error:<substring>:<ERRNO>`: creating such a temp file fails (`lmscope.files._open_temp`):
  EROFS or EACCES is a read-only traces folder.
- `engine:<kind>[+<kind>...]`: the first calls of `attribute_layer` by the engine (one per
  kind, in order) allocate 256 MiB of activations in their frame, then raise: `oom` is
  torch.OutOfMemoryError, `cuda` a CUDA RuntimeError, `memory` a MemoryError. Later calls run
  normally, so the same daemon shows that it still serves.
- `hold-model-lock:<marker>`: a trace whose prompt contains "victim" takes the model's lock,
  writes `<marker>`, and holds the lock until the trace is cancelled (then answers
  RequestCancelled, as a cancelled trace does): queries that need the model wait meanwhile.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path


def install(spec: str) -> None:
    from lmscope import files

    for fault in filter(None, spec.split(",")):
        name, _, arg = fault.partition(":")
        if name == "pause-before-rename":
            marker = Path(arg)
            original_hook = files._before_rename

            def pause(tmp: Path, marker: Path = marker, original=original_hook) -> None:
                if "victim" in tmp.name:
                    marker.write_text(str(tmp), encoding="utf-8")
                    threading.Event().wait()  # until SIGKILL
                original(tmp)

            files._before_rename = pause
        elif name == "write-error":
            where, _, code = arg.rpartition(":")
            number = getattr(errno, code)
            original_write = files._write_all

            def write(fd: int, payload: bytes, where=where, number=number, original=original_write):
                if where in os.readlink(f"/proc/self/fd/{fd}"):
                    original(fd, payload[: len(payload) // 2])
                    raise OSError(number, os.strerror(number))
                original(fd, payload)

            files._write_all = write
        elif name == "open-error":
            where, _, code = arg.rpartition(":")
            number = getattr(errno, code)
            original_open = files._open_temp

            def open_temp(tmp: Path, where=where, number=number, original=original_open) -> int:
                if where in str(tmp):
                    raise OSError(number, os.strerror(number), str(tmp))
                return original(tmp)

            files._open_temp = open_temp
        elif name == "engine":
            install_engine_faults(arg.split("+"))
        elif name == "hold-model-lock":
            install_lock_holder(Path(arg))
        else:
            raise SystemExit(f"unknown fault {fault!r}")


def install_engine_faults(kinds: list[str]) -> None:
    import torch

    from lmscope.tracing import engine

    pending = list(kinds)
    original = engine.attribute_layer

    def failing(*args, **kwargs):
        if pending:
            kind = pending.pop(0)
            activations = torch.ones(64 * 2**20)  # 256 MiB the failed trace must not keep
            activations.add_(1)
            if kind == "oom":
                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 20.00 GiB (simulated)"
                )
            if kind == "cuda":
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            if kind == "memory":
                raise MemoryError("simulated")
            raise SystemExit(f"unknown engine fault {kind!r}")
        return original(*args, **kwargs)

    engine.attribute_layer = failing


def install_lock_holder(marker: Path) -> None:
    from lmscope.tracing import engine

    original = engine.run_trace

    def holding(loaded, prompt, *args, should_cancel=None, **kwargs):
        if "victim" not in prompt or should_cancel is None:
            return original(loaded, prompt, *args, should_cancel=should_cancel, **kwargs)
        with loaded.lock:
            marker.write_text("held", encoding="utf-8")
            while not should_cancel():  # the engine's own check, as often as between layers
                threading.Event().wait(0.01)
        raise engine.TraceCancelled("trace cancelled")

    engine.run_trace = holding


if __name__ == "__main__":
    install(os.environ.get("LMSCOPE_TEST_FAULTS", ""))
    from lmscope.cli import main

    sys.exit(main(["serve", "--stdio", *sys.argv[1:]]))
