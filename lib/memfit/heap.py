"""Keep a process's resident set close to its live data (glibc).

glibc serves allocations above its mmap threshold from fresh mappings that are returned to the
OS when freed, and below it from the heap, whose freed holes stay resident until reused. The
threshold starts at 128 KiB but rises to the size of each large block freed (up to 32 MiB), so
a stage that frees a few million-edge temporaries and then allocates others gets them from the
heap: freed temporaries of one phase stay resident beside the next phase's, and the peak is
their sum rather than the larger. Setting the threshold explicitly stops that rise.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: mallopt parameter number of M_MMAP_THRESHOLD (glibc malloc.h).
M_MMAP_THRESHOLD = -3
#: Blocks of at least this many bytes get their own mapping (returned to the OS when freed).
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` (bytes) for this process, so that
    freed large arrays leave the resident set at once; False where glibc is not available."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)))
    except (OSError, AttributeError):
        return False
