"""Fit batch sizes and worker counts to a memory budget (bytes): the host's and, for a stage
computing on a GPU, the device's (an estimate's ``device_bytes`` against a DeviceLimit)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from memfit.allocation import Allocation
from memfit.device import DeviceLimit
from memfit.estimate import MemoryEstimate
from memfit.units import format_bytes

EstimateFn = Callable[[int], MemoryEstimate]


class MemoryPlanError(RuntimeError):
    """Even the smallest unit of work does not fit the allocation (host or device)."""

    def __init__(self, message: str, estimate: MemoryEstimate, allocation: Allocation,
                 device: DeviceLimit | None = None):
        super().__init__(message)
        self.estimate = estimate
        self.allocation = allocation
        self.device = device


@dataclass(frozen=True)
class BatchPlan:
    """The chosen batch size, its estimate, and whether the user chose it."""

    batch_size: int
    estimate: MemoryEstimate
    allocation: Allocation
    explicit: bool
    warning: str | None = None
    device: DeviceLimit | None = None

    def to_dict(self) -> dict:
        out = {
            "batch_size": self.batch_size,
            "explicit": self.explicit,
            "estimate": self.estimate.to_dict(),
            "allocation": self.allocation.to_dict(),
            "warning": self.warning,
        }
        if self.device is not None:
            out["device"] = self.device.to_dict()
        return out


def largest_fitting(estimate_fn: EstimateFn, max_batch: int, budget_bytes: int, *,
                    device_budget_bytes: int | None = None) -> int:
    """Largest b in [1, max_batch] with estimate_fn(b).total_bytes <= budget_bytes (and
    estimate_fn(b).device_bytes <= device_budget_bytes when given), or 0.

    Assumes the estimate does not decrease with the batch size (binary search).
    """

    def fits(batch: int) -> bool:
        estimate = estimate_fn(batch)
        return estimate.total_bytes <= budget_bytes and (
            device_budget_bytes is None or estimate.device_bytes <= device_budget_bytes)

    if max_batch < 1 or not fits(1):
        return 0
    low, high = 1, max_batch
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _over(estimate: MemoryEstimate, allocation: Allocation, device: DeviceLimit | None) -> str | None:
    """What an estimate exceeds ("estimated X > usable Y (...)" for host and/or device), or None."""
    parts = []
    if estimate.total_bytes > allocation.usable_bytes:
        parts.append(f"estimated {format_bytes(estimate.total_bytes)} > usable "
                     f"{format_bytes(allocation.usable_bytes)} ({allocation.describe()})")
    if device is not None and estimate.device_bytes > device.usable_bytes:
        parts.append(f"estimated {format_bytes(estimate.device_bytes)} on the GPU > usable "
                     f"{format_bytes(device.usable_bytes)} ({device.describe()})")
    return "; ".join(parts) or None


def plan_batch(
    requested: int | str | None,
    estimate_fn: EstimateFn,
    max_batch: int,
    allocation: Allocation,
    what: str = "batch",
    *,
    device: DeviceLimit | None = None,
) -> BatchPlan:
    """Choose a batch size: ``"auto"``/None fits the budget; an int is respected.

    With a ``device`` limit the batch must fit both budgets: host RSS (``total_bytes``
    <= allocation.usable_bytes) and GPU memory (``device_bytes`` <= device.usable_bytes).
    An explicit size whose estimate exceeds a usable budget is kept with a warning
    on stderr. When not even a batch of 1 fits, raises MemoryPlanError with the numbers.
    """
    budget = allocation.usable_bytes
    device_budget = None if device is None else device.usable_bytes
    if requested not in (None, "auto"):
        size = min(int(requested), max_batch)
        if size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {requested}")
        estimate = estimate_fn(size)
        warning = None
        over = _over(estimate, allocation, device)
        if over:
            warning = f"warning: {what} size {size}: {over}"
            print(warning, file=sys.stderr)
        return BatchPlan(size, estimate, allocation, True, warning, device)
    size = largest_fitting(estimate_fn, max_batch, budget, device_budget_bytes=device_budget)
    if size == 0:
        estimate = estimate_fn(1)
        raise MemoryPlanError(
            f"not even a {what} of 1 fits: {_over(estimate, allocation, device)}; "
            "request more memory or lower --mem-safety's margin",
            estimate,
            allocation,
            device,
        )
    return BatchPlan(size, estimate_fn(size), allocation, False, None, device)


def plan_workers(
    per_worker_bytes: int, shared_bytes: int, budget_bytes: int, max_workers: int
) -> int:
    """How many worker processes fit: workers × per_worker + shared <= budget (at least 1)."""
    if per_worker_bytes <= 0:
        return max(1, max_workers)
    fitting = (budget_bytes - shared_bytes) // per_worker_bytes
    return int(max(1, min(max_workers, fitting)))
