"""lmscope's cache directory, and the content hashes that identify a model in a trace (a
model with an adapter merged in: `merged_hash`).

Weight files are hashed once and the result cached per (path, size, mtime) in
`<cache>/file-hashes.json`, so a start does not rehash hundreds of megabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lmscope.files import atomic_write_text

SAMPLE_ABOVE_BYTES = 2 * 1024**3  # above this total, hash each file's size + first/last bytes
SAMPLE_BYTES = 16 * 1024**2


def cache_dir() -> Path:
    """lmscope's cache: $LMSCOPE_CACHE_DIR, else $XDG_CACHE_HOME/lmscope, else ~/.cache/lmscope."""
    explicit = os.environ.get("LMSCOPE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "lmscope").resolve()


def _hash_cache_file() -> Path:
    return cache_dir() / "file-hashes.json"


def _read_hash_cache() -> dict[str, Any]:
    try:
        data = json.loads(_hash_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_hash_cache(entries: dict[str, Any]) -> None:
    # Best effort: a read-only cache only costs a rehash next time. Entries of vanished files
    # are dropped so the file stays small.
    entries = {k: v for k, v in entries.items() if os.path.exists(k.split("|", 1)[1])}
    with contextlib.suppress(OSError, ValueError):
        atomic_write_text(_hash_cache_file(), json.dumps(entries, indent=0, sort_keys=True))


def _digest_file(path: Path, sampled: bool) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if sampled:
            digest.update(str(size).encode())
            digest.update(f.read(SAMPLE_BYTES))
            f.seek(max(size - SAMPLE_BYTES, 0))
            digest.update(f.read(SAMPLE_BYTES))
        else:
            while chunk := f.read(4 * 1024**2):
                digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path, *, sampled: bool = False) -> str:
    """Hex sha256 of a file (or of its size + first and last 16 MiB), cached by path+size+mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{'sampled' if sampled else 'full'}|{path}"
    cache = _read_hash_cache()
    entry = cache.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == stat.st_size
        and entry.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
    ):
        return entry["sha256"]
    hexdigest = _digest_file(path, sampled)
    cache = _read_hash_cache()  # re-read: another process may have added entries meanwhile
    cache[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": hexdigest}
    _write_hash_cache(cache)
    return hexdigest


def weights_hash(files: list[Path]) -> str:
    """Content hash of a model's weight files: "sha256:<hex>" or, above 2 GB, "sha256-sampled:".

    One file hashes to its own sha256 (comparable with `sha256sum`); several files hash to the
    sha256 of their sorted "name size sha256" lines.
    """
    files = sorted(files, key=lambda p: p.name)
    sampled = sum(p.stat().st_size for p in files) > SAMPLE_ABOVE_BYTES
    prefix = "sha256-sampled" if sampled else "sha256"
    digests = [file_sha256(p, sampled=sampled) for p in files]
    if len(files) == 1 and not sampled:
        return f"{prefix}:{digests[0]}"
    lines = "".join(
        f"{p.name} {p.stat().st_size} {d}\n" for p, d in zip(files, digests, strict=True)
    )
    return f"{prefix}:{hashlib.sha256(lines.encode()).hexdigest()}"


def merged_hash(base_hash: str, adapter_hash: str) -> str:
    """Content hash of a base model with an adapter merged in: "sha256:" of the text
    "<base hash>\\n<adapter hash>\\n", so the merged model never shares the base's identity
    (a trace diff of "the same model only" tells them apart) and either part changing changes it.
    """
    text = f"{base_hash}\n{adapter_hash}\n"
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
