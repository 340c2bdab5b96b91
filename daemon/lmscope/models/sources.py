"""Read a model and its tokenizer from local files: a folder saved with save_pretrained, or a
GGUF file; and what every source shares (quiet transformers, the errors that become one line,
the finishing touches: eval mode, no gradients, weights out of their memory-mapped files).

Never any remote code, and always eager attention: the tracer needs the attention
probabilities, which SDPA/flash kernels never materialise.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import pickle
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from lmscope.errors import ModelLoadError
from lmscope.models.devices import Placement

ProgressFn = Callable[[str, "float | None"], None]

# transformers' logging and the GGUF progress hook are process-global; one load at a time.
_LOAD_LOCK = threading.RLock()

# Files any tokenizer saved with save_pretrained leaves behind (fast, sentencepiece, BPE).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)


def report(progress: ProgressFn | None, message: str, fraction: float | None = None) -> None:
    """Tell `progress` (if any) which stage loading is in."""
    if progress is not None:
        progress(message, fraction)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors often run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


@contextlib.contextmanager
def quiet_transformers(
    progress: ProgressFn | None = None, what: str = "reading GGUF"
) -> Iterator[None]:
    """Silence transformers and huggingface_hub while loading: no warnings, no retry notices,
    no progress bars, nothing on stdout.

    transformers' GGUF reader uses its own tqdm bar (not switchable through transformers'
    logging), so that bar is swapped for one that reports through `progress` instead.
    """
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hub_verbosity = hub_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    gguf_module: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    gguf_tqdm = getattr(gguf_module, "tqdm", None)

    def tracked(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        total = len(iterable) if hasattr(iterable, "__len__") else 0
        step = max(total // 20, 1)
        for i, item in enumerate(iterable):
            if total and i % step == 0:
                report(progress, what, i / total)
            yield item

    with _LOAD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_logging.set_verbosity_error()
        hub_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if gguf_tqdm is not None:
            gguf_module.tqdm = tracked
        try:
            yield
        finally:
            if gguf_tqdm is not None:
                gguf_module.tqdm = gguf_tqdm
            hub_logging.set_verbosity(hub_verbosity)
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()


def load_errors() -> tuple[type[BaseException], ...]:
    """Errors transformers, safetensors and the OS raise for bad files, missing files, bad
    configs, size mismatches and memory exhaustion: all the user's to fix, so all become one
    line."""
    import safetensors

    return (OSError, ValueError, KeyError, ImportError, RuntimeError, safetensors.SafetensorError)


def finish(
    model: Any,
    dtype: torch.dtype,
    placement: Placement,
    progress: ProgressFn | None,
    *,
    memory_mapped: bool = True,
) -> Any:
    """Eval mode, no gradients, on the placement's device; `memory_mapped` weights are copied
    into plain memory. A model accelerate dispatched stays where it put it."""
    if getattr(model, "hf_quantizer", None) is not None:
        # GGUF weights are dequantised on load; the quantizer only blocks save/move.
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()
    model.requires_grad_(False)
    if placement.dispatched:
        return model
    device = placement.device
    if device == "cpu" and memory_mapped:
        # safetensors leaves CPU weights memory-mapped; the kernel may evict those file-backed
        # pages under memory pressure, which shows up as multi-second stalls mid-trace.
        # `parameters()`/`buffers()` yield shared tensors once, so tied weights stay tied.
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()
    if str(next(model.parameters()).device) != device:
        report(progress, f"moving model to {device}")
        model.to(device)
    if model.dtype != dtype:
        model.to(dtype)
    return model


def check_missing(model_info: dict[str, Any], where: str) -> None:
    """Refuse a checkpoint that left parameters of its config without weights."""
    missing = sorted(model_info.get("missing_keys") or ())
    if missing:
        raise ModelLoadError(
            f"{where} lacks weights for {len(missing)} parameter(s) (e.g. {missing[0]}): "
            "the checkpoint does not match its config.json"
        )


def refuse_remote_code(what: str, config: Any, file: str = "config.json") -> None:
    """Refuse a model whose config (a dict read from `file`, or a transformers config) asks for
    its own code: lmscope never runs remote code."""
    auto_map = (
        config.get("auto_map") if isinstance(config, dict) else getattr(config, "auto_map", None)
    )
    if auto_map:
        kind = "tokenizer" if file.startswith("tokenizer") else "model"
        raise ModelLoadError(
            f"{what} needs its own {kind} code (auto_map in {file}); lmscope never runs "
            "remote code (trust_remote_code is always off)"
        )


# --- folders ----------------------------------------------------------------------------------


def inspect_folder(folder: Path, where: str) -> list[Path]:
    """Check a save_pretrained folder (called `where` in messages) before transformers sees
    it; return its weight files."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        if (folder / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"{where} holds a PEFT adapter, not a full model: load its folder as the model "
                "(its base loads with it) or with --adapter over its base"
            )
        raise ModelLoadError(
            f"no config.json in {where}: expected a folder saved with save_pretrained"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {first_line(exc)}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"cannot read {config_file}: not a JSON object")
    refuse_remote_code(where, config)
    tokenizer_config = folder / "tokenizer_config.json"
    try:
        tokenizer_settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tokenizer_settings = {}  # absent or unreadable: transformers reports it when it loads
    if isinstance(tokenizer_settings, dict):
        refuse_remote_code(where, tokenizer_settings, "tokenizer_config.json")
    safetensors = sorted(
        p for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_model")
    )
    weights = safetensors or sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise ModelLoadError(
            f"no model weights in {where}: expected model.safetensors (or pytorch_model.bin) "
            "saved with save_pretrained"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"no tokenizer in {where}: save the tokenizer there too (tokenizer.save_pretrained)"
        )
    return weights


def load_folder(
    folder: Path,
    *,
    dtype: torch.dtype,
    placement: Placement,
    progress: ProgressFn | None = None,
    label: str | None = None,
) -> tuple[Any, Any, list[Path]]:
    """Load model and tokenizer from a save_pretrained folder (or a hub cache snapshot, which
    messages call `label`); return them and the weight files. Reads nothing but the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = label or str(folder)
    weights = inspect_folder(folder, where)
    use_safetensors = True if weights[0].suffix == ".safetensors" else None
    with quiet_transformers(progress):
        try:
            report(progress, "loading tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(
                str(folder), trust_remote_code=False, local_files_only=True
            )
            report(progress, "loading model")
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                str(folder),
                dtype=dtype,
                attn_implementation="eager",
                trust_remote_code=False,
                local_files_only=True,
                use_safetensors=use_safetensors,
                **placement.from_pretrained_kwargs(),
                output_loading_info=True,
            )
            model, info = loaded
        except pickle.UnpicklingError:
            # torch.load(weights_only=True) met a pickle that builds other Python objects.
            raise ModelLoadError(
                f"refused the pickle checkpoint in {where}: it holds Python objects other than "
                "weights, and lmscope loads pickles only with weights_only=True (they can run "
                "code); convert it to safetensors where you trust it"
            ) from None
        except load_errors() as exc:
            raise ModelLoadError(f"cannot load the model in {where}: {first_line(exc)}") from None
    check_missing(info, where)
    return finish(model, dtype, placement, progress), tokenizer, weights


# --- GGUF -------------------------------------------------------------------------------------


def read_gguf(
    path: Path, *, dtype: torch.dtype = torch.float32, progress: ProgressFn | None = None
) -> tuple[Any, Any]:
    """Model and tokenizer from a GGUF file through transformers (slow: ~15 s for 135 M),
    dequantised in CPU RAM (so never under a device map)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers(progress, "reading GGUF weights"):
        try:
            report(progress, "reading GGUF tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, trust_remote_code=False
            )
            report(progress, "reading GGUF weights", 0.0)
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent),
                gguf_file=path.name,
                dtype=dtype,
                attn_implementation="eager",
                trust_remote_code=False,
            )
        except Exception as exc:
            # The GGUF reader parses untrusted bytes in Python: a truncated or damaged file
            # raises whatever its parser meets (struct.error, IndexError, ValueError, ...).
            # Anything it raises is about the file, so it is the user's one-line error.
            reason = first_line(exc)
            if not isinstance(exc, load_errors()):
                reason = f"damaged or truncated ({type(exc).__name__}: {reason})"
            raise ModelLoadError(f"cannot load GGUF file {path}: {reason}") from None
    return model, tokenizer


GGUF_MAGIC = b"GGUF"


def inspect_gguf(path: Path) -> None:
    """Check a .gguf file before a model is let go or loaded: it starts with the GGUF magic,
    and its header, metadata and tensor table parse and fit in the file (gguf's reader maps the
    file and reads no weights: ~2 s for the 100 MB default model, against ~15 s to load it)."""
    try:
        with path.open("rb") as f:
            head = f.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelLoadError(f"cannot read GGUF file {path}: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        raise ModelLoadError(
            f"cannot load GGUF file {path}: it is not one (it does not start with 'GGUF')"
        )
    from gguf import GGUFReader

    try:
        GGUFReader(str(path))
    except Exception as exc:  # a parser of untrusted bytes: whatever it meets is the file's
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise ModelLoadError(
            f"cannot load GGUF file {path}: damaged or truncated ({reason})"
        ) from None
