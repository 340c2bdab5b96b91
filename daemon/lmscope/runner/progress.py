"""Progress of a corpus run on stderr: count, rate and ETA.

On a terminal a tqdm bar; otherwise (CI logs, files) one plain line per prompt, so logs stay
readable and still say how far the run is.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lmscope.traces.text import inert


class RunProgress:
    """`step(label)` after each prompt; `close()` at the end."""

    def __init__(self, total: int, already: int, enabled: bool) -> None:
        self.total, self.count, self.enabled = total, already, enabled
        self._started = time.perf_counter()
        self._this_session = 0
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=already, file=sys.stderr, unit="prompt", dynamic_ncols=True
            )

    def step(self, label: str) -> None:
        self.count += 1
        self._this_session += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            return
        elapsed = time.perf_counter() - self._started
        rate = self._this_session / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.count) / rate if rate > 0 else 0.0
        print(
            f"· [{self.count}/{self.total}] {inert(label)} — {rate:.2f} prompts/s, "
            f"ETA {_clock(left)}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
