"""Where a model's weights go: the dtype, one device or an accelerate device map, and where a
loaded model's token ids must be sent.

`Placement` is the one answer loading passes to every source, so a folder, a hub id and the
default model read the same way whether they land on one device or are split over several.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from lmscope.errors import LmscopeError, ModelLoadError
from lmscope.protocol import defaults

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

# accelerate's device-map plans, as the protocol lists them (loadModel's deviceMap).
PLANS = defaults.DEVICE_MAP_PLANS


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


def input_device(model: Any) -> torch.device:
    """Where the token ids go: the device of the input embeddings (first shard of a map)."""
    return model.get_input_embeddings().weight.device


@dataclass(frozen=True)
class Placement:
    """Where loaded weights go: one `device`, or accelerate's `device_map` (then `device` is
    "cpu", where nothing but accelerate's own bookkeeping happens)."""

    device: str
    device_map: DeviceMap | None = None
    # Disk-offloaded weights of a map; the LoadedModel keeps it (and so the folder) alive.
    offload: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def mapped(cls, device_map: DeviceMap) -> Placement:
        """A placement over `device_map`, or one ModelLoadError line if it cannot be used."""
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
        return cls("cpu", device_map, offload)

    @property
    def dispatched(self) -> bool:
        """accelerate places the weights (the model must not be moved afterwards)."""
        return self.device_map is not None

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """The placement arguments of transformers' from_pretrained."""
        if self.device_map is None:
            return {"device_map": None if self.device == "cpu" else {"": self.device}}
        return {
            "device_map": self.device_map.plan,
            "max_memory": self.device_map.max_memory,
            "offload_folder": self.offload.name if self.offload is not None else None,
        }

    def where(self, model: Any) -> tuple[str, dict[str, str] | None]:
        """(where token ids go, module -> device under a map) of a model loaded here."""
        if self.device_map is None:
            return self.device, None
        where = str(input_device(model))
        where = "cpu" if where == "meta" else where
        # transformers records no map when everything landed on one device.
        mapping = getattr(model, "hf_device_map", None) or {"": where}
        return where, {k: str(v) for k, v in mapping.items()}
