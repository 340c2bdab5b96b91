"""Turn a model spec ("default", a hub id, a folder, a .gguf file) into a ready model + tokenizer.

Every model lmscope traces comes through `load_model`: eval mode, gradients off, eager attention
(the tracer needs the attention probabilities, which SDPA/flash kernels never materialise), and
never any remote code. Everything the user can get wrong ends as one `ModelLoadError` line.

Also here: the lmscope cache directory and the weight-file hashes that identify a model in a
trace (`content_hash`), cached per file so that a start does not rehash hundreds of megabytes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmscope.errors import LmscopeError, ModelLoadError
from lmscope.models.hashing import weights_hash

if TYPE_CHECKING:
    import transformers

ProgressFn = Callable[[str, "float | None"], None]

SPEC_HELP = (
    'expected "default", a Hugging Face hub id (org/name), a folder saved with save_pretrained, '
    "or a .gguf file"
)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

# A hub id is `name` or `org/name` made of letters, digits, '.', '_' and '-'.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")

# Above this total, hashing every byte costs seconds per start; sample instead.

# transformers' logging and the GGUF progress hook are process-global; one load at a time.
_LOAD_LOCK = threading.RLock()

# Files any tokenizer saved with save_pretrained leaves behind (fast, sentencepiece, BPE).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)


@dataclass
class LoadedModel:
    """A model ready for tracing, and where it came from."""

    model: transformers.PreTrainedModel  # eval mode, eager attention, requires_grad off
    tokenizer: transformers.PreTrainedTokenizerBase
    spec: str  # what the user asked for
    name: str  # display name
    source: str  # "default" | "hub" | "folder" | "gguf"
    content_hash: str  # "sha256:<hex>", "sha256-sampled:<hex>" or "revision:<sha>"
    dtype: torch.dtype
    device: str  # "cpu", "cuda:0", ...: where token ids go (the first shard under a map)
    # Held for every forward pass with hooks (a trace, a live query's recapture): hooks are
    # per module, so two hooked passes at once would see each other's layers.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    # Under a device map: module name -> device ("cuda:1", "cpu", "disk"), as accelerate placed it.
    device_map: dict[str, str] | None = None
    # Keeps the folder of disk-offloaded weights alive as long as the model.
    offload_dir: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DeviceMap:
    """Split a model over devices with accelerate instead of putting it on one.

    plan: "auto" | "balanced" | "balanced_low_0" | "sequential" (accelerate fills the GPUs in
    order, then CPU RAM, then disk) or an explicit {module name: device} map; max_memory caps
    each device ({0: "20GiB", "cpu": "64GiB"}). Each layer then runs, and is attributed, on the
    device that holds it; offloaded weights stay in accelerate's map (see adapter.param).
    """

    plan: str | dict[str, Any]
    max_memory: dict[Any, Any] | None = None

    def kwargs(self, offload_dir: str | None) -> dict[str, Any]:
        """Arguments for from_pretrained."""
        return {
            "device_map": self.plan,
            "max_memory": self.max_memory,
            "offload_folder": offload_dir,
        }


PLANS = ("auto", "balanced", "balanced_low_0", "sequential")


def _placement(model: Any) -> tuple[str, dict[str, str]]:
    """(where token ids go, module -> device) of a model accelerate dispatched."""
    from lmscope.tracing.capture import input_device

    where = str(input_device(model))
    where = "cpu" if where == "meta" else where
    # transformers records no map when everything landed on one device.
    mapping = getattr(model, "hf_device_map", None) or {"": where}
    return where, {k: str(v) for k, v in mapping.items()}


def _report(progress: ProgressFn | None, message: str, fraction: float | None = None) -> None:
    if progress is not None:
        progress(message, fraction)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


# --- dtype and device -------------------------------------------------------------------------


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """Map "float32"/"fp32", "float16"/"fp16", "bfloat16"/"bf16" (or None: float32) to a dtype."""
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        if name in _DTYPES.values():
            return name
        raise LmscopeError(f"unsupported dtype {name}: expected float32, float16 or bfloat16")
    dtype = _DTYPES.get(str(name).strip().lower().removeprefix("torch."))
    if dtype is None:
        raise LmscopeError(f"unknown dtype '{name}': expected float32, float16 or bfloat16")
    return dtype


def resolve_device(name: str | None) -> str:
    """Map "cpu", "cuda", "cuda:N", "mps" or "auto" to a concrete device string, or raise."""
    text = (name or "cpu").strip().lower()
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise LmscopeError("device 'mps' asked for, but Apple MPS is not available here")
        return "mps"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise LmscopeError(f"unknown device '{name}': expected cpu, cuda, cuda:N, mps or auto")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise LmscopeError(
            f"device '{name}' asked for, but no CUDA GPU is available (torch {torch.__version__}, "
            f"{build}); use --device cpu"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise LmscopeError(f"device '{name}' does not exist: this machine has {count} CUDA GPU(s)")
    return f"cuda:{index}"


# --- quiet loading ----------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_transformers(
    progress: ProgressFn | None = None, what: str = "reading GGUF"
) -> Iterator[None]:
    """Silence transformers while loading: no warnings, no progress bars, nothing on stdout.

    transformers' GGUF reader uses its own tqdm bar (not switchable through transformers'
    logging), so that bar is swapped for one that reports through `progress` instead.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    gguf_module: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    gguf_tqdm = getattr(gguf_module, "tqdm", None)

    def tracked(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        total = len(iterable) if hasattr(iterable, "__len__") else 0
        step = max(total // 20, 1)
        for i, item in enumerate(iterable):
            if total and i % step == 0:
                _report(progress, what, i / total)
            yield item

    with _LOAD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if gguf_tqdm is not None:
            gguf_module.tqdm = tracked
        try:
            yield
        finally:
            if gguf_tqdm is not None:
                gguf_module.tqdm = gguf_tqdm
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()


# Errors transformers, safetensors and the OS raise for bad files, missing files, bad configs,
# size mismatches and memory exhaustion: all the user's to fix, so all become one line.
def _load_errors() -> tuple[type[BaseException], ...]:
    import safetensors

    return (OSError, ValueError, KeyError, ImportError, RuntimeError, safetensors.SafetensorError)


def _finish(
    model: Any,
    dtype: torch.dtype,
    device: str,
    progress: ProgressFn | None,
    *,
    mapped: bool = True,
    dispatched: bool = False,
) -> Any:
    """Eval mode, no gradients, on the device; `mapped` weights are copied into plain memory.
    A `dispatched` model (device map) stays where accelerate put it."""
    if getattr(model, "hf_quantizer", None) is not None:
        # GGUF weights are dequantised on load; the quantizer only blocks save/move.
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()
    model.requires_grad_(False)
    if dispatched:
        return model
    if device == "cpu" and mapped:
        # safetensors leaves CPU weights memory-mapped; the kernel may evict those file-backed
        # pages under memory pressure, which shows up as multi-second stalls mid-trace.
        # `parameters()`/`buffers()` yield shared tensors once, so tied weights stay tied.
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.data = tensor.data.clone()
    if str(next(model.parameters()).device) != device:
        _report(progress, f"moving model to {device}")
        model.to(device)
    if model.dtype != dtype:
        model.to(dtype)
    return model


def _check_missing(model_info: dict[str, Any], where: str) -> None:
    missing = sorted(model_info.get("missing_keys") or ())
    if missing:
        raise ModelLoadError(
            f"{where} lacks weights for {len(missing)} parameter(s) (e.g. {missing[0]}): "
            "the checkpoint does not match its config.json"
        )


# --- folders ----------------------------------------------------------------------------------


def _inspect_folder(folder: Path) -> list[Path]:
    """Check a save_pretrained folder before transformers sees it; return its weight files."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        if (folder / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"{folder} holds a PEFT adapter, not a full model: merge it into its base model "
                "(merge_and_unload) and save_pretrained the result"
            )
        raise ModelLoadError(
            f"no config.json in {folder}: expected a folder saved with save_pretrained"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config_file}: {_first_line(exc)}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"cannot read {config_file}: not a JSON object")
    if config.get("auto_map"):
        raise ModelLoadError(
            f"{folder} needs its own model code (auto_map in config.json); lmscope never runs "
            "remote code (trust_remote_code is always off)"
        )
    tokenizer_config = folder / "tokenizer_config.json"
    try:
        asks_code = tokenizer_config.is_file() and bool(
            json.loads(tokenizer_config.read_text(encoding="utf-8")).get("auto_map")
        )
    except (OSError, ValueError, AttributeError):
        asks_code = False  # unreadable: transformers reports it when it loads the tokenizer
    if asks_code:
        raise ModelLoadError(
            f"{folder} needs its own tokenizer code (auto_map in tokenizer_config.json); "
            "lmscope never runs remote code (trust_remote_code is always off)"
        )
    safetensors = sorted(
        p for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_model")
    )
    weights = safetensors or sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise ModelLoadError(
            f"no model weights in {folder}: expected model.safetensors (or pytorch_model.bin) "
            "saved with save_pretrained"
        )
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"no tokenizer in {folder}: save the tokenizer there too (tokenizer.save_pretrained)"
        )
    return weights


def load_folder(
    folder: Path,
    *,
    dtype: torch.dtype,
    device: str,
    progress: ProgressFn | None = None,
    device_map: DeviceMap | None = None,
    offload_dir: str | None = None,
) -> tuple[Any, Any, list[Path]]:
    """Load model and tokenizer from a save_pretrained folder; return them and the weight files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = _inspect_folder(folder)
    use_safetensors = True if weights[0].suffix == ".safetensors" else None
    with quiet_transformers(progress):
        try:
            _report(progress, "loading tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(
                str(folder), trust_remote_code=False, local_files_only=True
            )
            _report(progress, "loading model")
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                str(folder),
                dtype=dtype,
                attn_implementation="eager",
                trust_remote_code=False,
                local_files_only=True,
                use_safetensors=use_safetensors,
                **_placement_kwargs(device, device_map, offload_dir),
                output_loading_info=True,
            )
            model, info = loaded
        except pickle.UnpicklingError:
            # torch.load(weights_only=True) met a pickle that builds other Python objects.
            raise ModelLoadError(
                f"refused the pickle checkpoint in {folder}: it holds Python objects other than "
                "weights, and lmscope loads pickles only with weights_only=True (they can run "
                "code); convert it to safetensors where you trust it"
            ) from None
        except _load_errors() as exc:
            raise ModelLoadError(f"cannot load the model in {folder}: {_first_line(exc)}") from None
    _check_missing(info, str(folder))
    finished = _finish(model, dtype, device, progress, dispatched=device_map is not None)
    return finished, tokenizer, weights


def _placement_kwargs(
    device: str, device_map: DeviceMap | None, offload_dir: str | None
) -> dict[str, Any]:
    if device_map is not None:
        return device_map.kwargs(offload_dir)
    return {"device_map": None if device == "cpu" else {"": device}}


# --- GGUF -------------------------------------------------------------------------------------


def read_gguf(
    path: Path, *, dtype: torch.dtype = torch.float32, progress: ProgressFn | None = None
) -> tuple[Any, Any]:
    """Model and tokenizer from a GGUF file through transformers (slow: ~15 s for 135 M)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers(progress, "reading GGUF weights"):
        try:
            _report(progress, "reading GGUF tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, trust_remote_code=False
            )
            _report(progress, "reading GGUF weights", 0.0)
            model = AutoModelForCausalLM.from_pretrained(
                str(path.parent),
                gguf_file=path.name,
                dtype=dtype,
                attn_implementation="eager",
                trust_remote_code=False,
            )
        except _load_errors() as exc:
            raise ModelLoadError(f"cannot load GGUF file {path}: {_first_line(exc)}") from None
    return model, tokenizer


# --- hub --------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_error(spec: str, exc: BaseException, offline: bool) -> ModelLoadError:
    text = str(exc)
    if offline and ("cached" in text or "offline" in text.lower() or "local" in text.lower()):
        return ModelLoadError(
            f"unknown model '{spec}': no such folder, and not in the local Hugging Face cache "
            f"(HF_HUB_OFFLINE is set); {SPEC_HELP}"
        )
    if "valid model identifier" in text or "404" in text:
        return ModelLoadError(
            f"unknown model '{spec}': not on the Hugging Face hub (if it is gated or private, "
            f"log in with `hf auth login`); {SPEC_HELP}"
        )
    if "couldn't connect" in text.lower() or "connection" in text.lower():
        return ModelLoadError(
            f"cannot reach the Hugging Face hub to fetch '{spec}', and it is not in the local cache"
        )
    return ModelLoadError(f"cannot load '{spec}' from the Hugging Face hub: {_first_line(exc)}")


def _hub_revision(hub_id: str) -> str:
    """The commit of the cached snapshot that was loaded: its folder is snapshots/<commit>/."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "config.json")
    return Path(found).parent.name if isinstance(found, str) else "unknown"


def _load_hub(
    hub_id: str,
    *,
    dtype: torch.dtype,
    device: str,
    progress: ProgressFn | None,
    device_map: DeviceMap | None = None,
    offload_dir: str | None = None,
) -> tuple[Any, Any, str]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    offline = _hub_offline()
    common = {"trust_remote_code": False, "local_files_only": offline}
    with quiet_transformers(progress):
        try:
            _report(progress, f"fetching {hub_id}")
            config = AutoConfig.from_pretrained(hub_id, **common)
            if getattr(config, "auto_map", None):
                raise ModelLoadError(
                    f"'{hub_id}' needs its own model code (auto_map in config.json); lmscope "
                    "never runs remote code (trust_remote_code is always off)"
                )
            _report(progress, "loading tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(hub_id, **common)
            _report(progress, "loading model")
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                hub_id,
                config=config,
                dtype=dtype,
                attn_implementation="eager",
                **_placement_kwargs(device, device_map, offload_dir),
                output_loading_info=True,
                **common,
            )
            model, info = loaded
        except ModelLoadError:
            raise
        except _load_errors() as exc:
            raise _hub_error(hub_id, exc, offline) from None
    _check_missing(info, f"'{hub_id}'")
    finished = _finish(model, dtype, device, progress, dispatched=device_map is not None)
    return finished, tokenizer, f"revision:{_hub_revision(hub_id)}"


# --- entry point ------------------------------------------------------------------------------


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~", "\\")) or "\\" in spec or spec.count("/") > 1


def load_model(
    spec: str = "default",
    *,
    dtype: str | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    device_map: DeviceMap | None = None,
) -> LoadedModel:
    """Load the model `spec` names, ready for tracing.

    With `device_map` the model is split over devices by accelerate (`device` is then unused);
    see DeviceMap.

    spec: "default" (the embedded SmolLM2-135M-Instruct), a path to a .gguf file, a folder saved
    with save_pretrained, or a Hugging Face hub id (`org/name`). Raises ModelLoadError (or
    another LmscopeError) with one line for anything the user can get wrong.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    if device_map is not None:
        return _load_mapped(spec, torch_dtype, device_map, progress)
    spec = str(spec).strip()
    if not spec:
        raise ModelLoadError(f"no model given: {SPEC_HELP}")
    _report(progress, "resolving model")

    if spec == "default":
        from lmscope.models import default_model

        return default_model.load_default(dtype=torch_dtype, device=device, progress=progress)

    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        model, tokenizer = read_gguf(path, dtype=torch_dtype, progress=progress)
        model = _finish(model, torch_dtype, device, progress, mapped=False)
        _report(progress, "hashing weights")
        return LoadedModel(
            model, tokenizer, spec, path.stem, "gguf", weights_hash([path]), torch_dtype, device
        )
    if path.is_dir():
        folder = path.resolve()
        model, tokenizer, weights = load_folder(
            folder, dtype=torch_dtype, device=device, progress=progress
        )
        _report(progress, "hashing weights")
        content_hash = weights_hash(weights)
        return LoadedModel(
            model, tokenizer, spec, folder.name, "folder", content_hash, torch_dtype, device
        )
    if path.exists():
        raise ModelLoadError(
            f"'{spec}' is a file, not a model: expected a folder saved with save_pretrained "
            "or a .gguf file"
        )
    if _looks_like_path(spec) or not _HUB_ID.fullmatch(spec) or ".." in spec:
        raise ModelLoadError(f"unknown model '{spec}': no such folder or file; {SPEC_HELP}")
    model, tokenizer, content_hash = _load_hub(
        spec, dtype=torch_dtype, device=device, progress=progress
    )
    return LoadedModel(model, tokenizer, spec, spec, "hub", content_hash, torch_dtype, device)


def _load_mapped(
    spec: str, dtype: torch.dtype, device_map: DeviceMap, progress: ProgressFn | None
) -> LoadedModel:
    """`load_model` with a device map: the folder, hub and default sources stream their weights
    straight to the mapped devices (a GGUF is dequantised in CPU RAM first, so it is not
    offered here)."""
    try:
        import accelerate  # noqa: F401  (transformers dispatches through it)
    except ImportError:
        raise ModelLoadError(
            "a device map needs the accelerate package: pip install accelerate"
        ) from None
    if isinstance(device_map.plan, str) and device_map.plan not in PLANS:
        raise ModelLoadError(
            f"unknown device map '{device_map.plan}': expected one of {', '.join(PLANS)}"
        )
    offload = tempfile.TemporaryDirectory(prefix="lmscope-offload-")
    path = Path(spec).expanduser()
    if spec == "default":
        from lmscope.models import default_model

        folder, content_hash = default_model.converted_folder(progress)
        source, name = "default", default_model.DISPLAY_NAME
    elif spec.lower().endswith(".gguf"):
        raise ModelLoadError(
            "a device map is not supported for .gguf files (they are dequantised in CPU RAM "
            "first); save the model with save_pretrained and map that folder"
        )
    elif path.is_dir():
        folder, content_hash, source, name = path.resolve(), "", "folder", path.resolve().name
    else:
        folder = None
        source, name = "hub", spec
    if folder is None:
        model, tokenizer, content_hash = _load_hub(
            spec, dtype=dtype, device="cpu", progress=progress,
            device_map=device_map, offload_dir=offload.name,
        )  # fmt: skip
    else:
        model, tokenizer, weights = load_folder(
            folder, dtype=dtype, device="cpu", progress=progress,
            device_map=device_map, offload_dir=offload.name,
        )  # fmt: skip
        if source == "folder":
            _report(progress, "hashing weights")
            content_hash = weights_hash(weights)
    where, mapping = _placement(model)
    return LoadedModel(
        model, tokenizer, spec, name, source, content_hash, dtype, where,
        device_map=mapping, offload_dir=offload,
    )  # fmt: skip
