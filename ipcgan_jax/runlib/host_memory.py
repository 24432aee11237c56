"""Host memory: keep what a step frees for the next step instead of handing it back.

Every compiled step allocates and frees the same buffers. By default glibc's malloc gives
freed memory back to the kernel once enough of it sits free at the top of a heap (and
serves large blocks by mmap), so the next step faults those pages in again, zeroed: the
demo's 1,600 GAN steps took 41 million page faults and a sixth of its CPU time in the
kernel. With the trim and mmap thresholds raised, the pages stay in the process and the
demo's GAN step ran about 7% faster on a 2-core CPU (benchmarks/README.md, "Host memory").
The process keeps its peak use instead of shrinking between steps.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters (glibc malloc.h) and the values set.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD_BYTES = 1 << 30   # free memory at a heap's top returned only beyond 1 GiB
MMAP_THRESHOLD_BYTES = 32 << 20  # blocks up to 32 MiB (glibc's ceiling) come from the heaps


@functools.cache
def keep_freed_memory() -> bool:
    """Sets glibc malloc's thresholds for this process (once); False where the C library is
    not glibc (nothing changed). Affects allocations from then on, by every library."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):  # no C library found, or not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
