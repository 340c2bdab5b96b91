"""What the command line prints and writes: progress on stderr, files written atomically.
Text from files, models and paths is printed inert (`lmscope.traces.text.inert`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from lmscope.errors import LmscopeError
from lmscope.files import atomic_write_text
from lmscope.traces.text import inert


class Progress:
    """A progress bar on stderr (tqdm) for fractions, a status line for stages."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def __call__(self, message: str, fraction: float | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        message = inert(message)  # may name a model, a path, a file's content
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


def slug(prompt: str, limit: int = 40) -> str:
    """A file-name-safe stem from a prompt's words."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-").lower()
    return words[:limit].rstrip("-") or "prompt"


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (`lmscope.files`); one-line LmscopeError on failure."""
    try:
        return atomic_write_text(path, text)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise LmscopeError(f"cannot write {path}: {reason}") from None


def shown_path(path: Path) -> str:
    """A path as printed: inert (a file name may hold escape sequences)."""
    return inert(str(path))


def size(path: Path) -> str:
    nbytes = path.stat().st_size
    return f"{nbytes / 2**20:.1f} MB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KB"
