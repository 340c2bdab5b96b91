"""Every file lmscope writes is written atomically: a reader sees the old file or the new one,
never half of it, whatever happens (an error, a full disk, a kill).

The bytes go to a hidden temp file in the same folder (same filesystem, so the rename is
atomic), are fsynced, then renamed over the target, and the folder is fsynced so the rename
itself survives a crash. On failure the temp file is removed and any previous file is untouched.
Traces (`traces.lmtrace`), SVG and JSON exports, benchmark reports and the model hash cache all
come through `atomic_write`.

`_open_temp`, `_write_all` and `_before_rename` are the fault-injection seams of
`tests/reliability/faults.py`, which replaces them in a spawned daemon to simulate a full disk, a
read-only folder or a kill between the temp file and the rename. They do nothing else, and
nothing in lmscope replaces them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def encodable(path: Path) -> bool:
    """A path the OS can be asked about: no NUL, no unpaired surrogate."""
    text = str(path)
    if "\0" in text:
        return False
    try:
        os.fsencode(text)
    except UnicodeError:
        return False
    return True


def _open_temp(tmp: Path) -> int:
    """Create the temp file (never an existing one)."""
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _before_rename(tmp: Path) -> None:
    """The temp file is complete and fsynced; the rename comes next (a fault-injection seam)."""


def atomic_write(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write `payload` to `path` atomically (creating its folder); return the path.

    Raises OSError (the temp file removed, any previous file untouched) when the folder cannot
    be made or written, and ValueError for a path the OS cannot represent (NUL, surrogates).
    """
    path = Path(path)
    if not encodable(path):
        raise ValueError(f"not a valid file path: {str(path)!a}")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_temp(tmp)
    try:
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        _before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not possible everywhere
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """`atomic_write` of UTF-8 text."""
    return atomic_write(path, text.encode("utf-8"))
