"""Keep camera-size message buffers in the heap instead of mapping fresh pages for every frame.

glibc serves an allocation above its mmap threshold (at most 32 MiB, adjusted as it goes) with
new pages and trims freed memory above its trim threshold back to the system; a process that
receives and sends 1-2 MB images at camera rate then page-faults on every frame's buffers
(measured: ~1000 minor faults and ~2 ms of CPU per received 1242x375 rgb8 frame, on the cores the
model needs). Raising both thresholds once at start-up lets freed buffers be reused; the heap
stays at its peak size instead (a few frames' worth).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 256 << 20


def reuse_large_buffers() -> bool:
    """Tune glibc malloc for per-frame image buffers; False where that is not glibc (no-op)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
