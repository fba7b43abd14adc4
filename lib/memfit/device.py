"""The memory limit of an accelerator (GPU), found and fitted like the host allocation.

A stage computing on a GPU has two budgets: host RSS (``memfit.allocation``) and the GPU's
memory. The GPU limit comes from, smallest first:

1. an explicit override (``MEMFIT_DEVICE_MEM_LIMIT`` or the ``limit_bytes`` argument; for
   tests and for users who share a GPU);
2. the device's **free** memory now, from ``torch.cuda.mem_get_info`` (bytes; after this
   process's CUDA context, other processes' allocations excluded).

Without CUDA (and without an override) there is no device limit: ``None``. The safety
factor (``DEVICE_SAFETY``, ``MEMFIT_DEVICE_SAFETY``) leaves room for the caching allocator's
rounding and the BLAS workspace. torch is imported only when the probe runs, so the core
install imports this module without it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from memfit.units import format_bytes, parse_bytes

#: Fraction of the device's free memory a stage may plan for.
DEVICE_SAFETY = 0.85
#: A probe: (free, total) bytes of the device, or None when there is none.
Probe = Callable[[], tuple[int, int] | None]


@dataclass(frozen=True)
class DeviceLimit:
    """The binding accelerator memory limit in bytes, where it came from, and the safety."""

    limit_bytes: int
    source: str
    safety: float
    total_bytes: int | None = None

    @property
    def usable_bytes(self) -> int:
        """Bytes of device memory a stage may plan for: safety × limit."""
        return max(int(self.limit_bytes * self.safety), 0)

    def describe(self) -> str:
        return (f"GPU limit {format_bytes(self.limit_bytes)} from {self.source}; "
                f"safety {self.safety:g} -> usable {format_bytes(self.usable_bytes)}")

    def to_dict(self) -> dict:
        return {"limit_bytes": self.limit_bytes, "source": self.source, "safety": self.safety,
                "total_bytes": self.total_bytes, "usable_bytes": self.usable_bytes}


def cuda_memory(index: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes of CUDA device ``index`` (``torch.cuda.mem_get_info``), or None when
    torch is not installed or sees no CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(index)
    return int(free), int(total)


def detect_device_limit(
    *,
    probe: Probe = cuda_memory,
    environ: Mapping[str, str] | None = None,
    limit_bytes: int | None = None,
    safety: float | None = None,
) -> DeviceLimit | None:
    """The binding device limit (the smaller of the override and the probe's free bytes),
    or None when neither exists."""
    env = os.environ if environ is None else environ
    found: list[tuple[int, str, int | None]] = []
    override = limit_bytes if limit_bytes is not None else env.get("MEMFIT_DEVICE_MEM_LIMIT")
    if override:
        found.append((parse_bytes(override), "override:MEMFIT_DEVICE_MEM_LIMIT", None))
    seen = probe()
    if seen is not None:
        free, total = seen
        found.append((int(free), "cuda:mem_get_info(free)", int(total)))
    if not found:
        return None
    value, source, _ = min(found, key=lambda item: item[0])
    total = next((t for _, _, t in found if t is not None), None)
    if safety is None:
        env_safety = env.get("MEMFIT_DEVICE_SAFETY")
        safety = float(env_safety) if env_safety else DEVICE_SAFETY
    if not 0 < safety <= 1:
        raise ValueError(f"device safety factor must be in (0, 1], got {safety}")
    return DeviceLimit(int(value), source, float(safety), total)
