"""Keep freed memory for reuse in lmscope's own processes (the CLI, the daemon, the benchmark).

A trace allocates and frees many tensors of a few megabytes ([rows, V] projection chunks,
[targets, parts] attribution scratch, per-layer products). glibc serves each allocation above
its mmap threshold with fresh pages from the kernel and hands them back on free, so every such
tensor pays its page faults again: measured at ~5% of a 200-token trace of the embedded model
on a 2-core VM (tens of milliseconds), more where page faults cost more. Raising the threshold
to glibc's largest (32 MiB) and the trim threshold keeps those blocks in the heap for the next
tensor; larger allocations (weights, long prompts' buffers) are still mapped and returned.

Only lmscope's entry points call this: imported as a library into someone else's process,
lmscope leaves that process's allocator alone.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 * 2**20  # free heap top kept before it is handed back


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; False where there is no glibc (nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: their own allocators, left alone
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
