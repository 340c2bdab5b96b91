"""Peak memory above a baseline, for the benchmark.

On a GPU the allocator's own peak counter is exact. On a CPU there is no resettable peak, so a
thread samples the memory in use every millisecond while the measured code runs; torch's large
kernels release the GIL, so the sampler sees their allocations. The figure can miss a spike
shorter than the interval. "In use" is what malloc has handed out and not taken back
(glibc's mallinfo2: heap blocks in use plus mapped blocks), not the resident set: lmscope keeps
freed blocks for reuse (`lmscope.allocator`), so a warm trace may grow no resident memory at
all while it uses plenty. Without glibc, the resident set size.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from types import TracebackType

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2  # glibc 2.33 and later
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []
    return function


_MALLINFO2 = _mallinfo2()


def in_use_bytes() -> int:
    """Bytes malloc has handed out and not taken back (heap blocks in use and mapped blocks);
    the resident set size where glibc's mallinfo2 is missing."""
    if _MALLINFO2 is None:
        return resident_bytes()
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


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
            self._base = self._peak = in_use_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, in_use_bytes())

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
            peak = max(self._peak, in_use_bytes())
        self.extra_bytes = max(0, peak - self._base)
