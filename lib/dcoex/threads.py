"""How many CPU threads a task may use, and limiting BLAS/OpenMP (and numba) to them."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def default_threads() -> int:
    """The CPUs this process may use (scheduler slots if set), 1..16."""
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    for name in ("SLURM_CPUS_PER_TASK", "NSLOTS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            counts.append(int(value))
    return max(1, min(16, min(counts)))


@contextlib.contextmanager
def blas_threads(n_threads: int | None = None) -> Iterator[int]:
    """Limit BLAS/OpenMP threads to ``n_threads`` (default: ``default_threads()``), and numba's
    parallel kernels too when numba is loaded (at most its NUMBA_NUM_THREADS); restored on exit."""
    threads = n_threads or default_threads()
    from threadpoolctl import threadpool_limits

    numba = sys.modules.get("numba")
    before = numba.get_num_threads() if numba is not None else None
    with threadpool_limits(limits=threads):
        if numba is not None:
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield threads
        finally:
            if numba is not None:
                numba.set_num_threads(before)
