"""Per-step accounting: measured peak RSS (bytes) and wall time of each pipeline step."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
import time
from collections.abc import Iterator

from memfit.record import PeakRecorder
from memfit.units import format_bytes


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class StepLog:
    """Collects {step: {"peak_rss_bytes", "wall_s"}} and prints one line per step on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.steps: dict[str, dict] = {}
        self.quiet = quiet

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        with PeakRecorder(interval_s=0.02) as recorder:
            yield
        release_memory()
        self.steps[name] = {
            "peak_rss_bytes": int(recorder.sampled_peak_bytes),
            "wall_s": round(time.monotonic() - start, 3),
        }
        self.say(f"{name}: {self.steps[name]['wall_s']:.1f} s, peak RSS {format_bytes(recorder.sampled_peak_bytes)}")

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"label_transfer: {message}", file=sys.stderr, flush=True)
