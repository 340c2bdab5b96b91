"""Peak memory above a baseline, for the benchmark.

On a GPU the allocator's own peak counter is exact. On a CPU there is no resettable peak (the
kernel's high-water mark only grows), so a thread samples the resident set size every
millisecond while the measured code runs; torch's large kernels release the GIL, so the
sampler sees their allocations. The figure can miss a spike shorter than the interval.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def available_bytes(device: torch.device) -> int:
    """Memory still free for new tensors on `device` (CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.extra_bytes`: the most memory in use
    above what was in use when the block started."""

    def __init__(self, device: torch.device, interval_s: float = 0.001) -> None:
        self.device = device
        self.interval_s = interval_s
        self.extra_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = resident_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, resident_bytes())

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            peak = max(self._peak, resident_bytes())
        self.extra_bytes = max(0, peak - self._base)
