"""Fit batch sizes and worker counts to a memory budget (bytes)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from memfit.allocation import Allocation
from memfit.estimate import MemoryEstimate
from memfit.units import format_bytes

EstimateFn = Callable[[int], MemoryEstimate]


class MemoryPlanError(RuntimeError):
    """Even the smallest unit of work does not fit the allocation."""

    def __init__(self, message: str, estimate: MemoryEstimate, allocation: Allocation):
        super().__init__(message)
        self.estimate = estimate
        self.allocation = allocation


@dataclass(frozen=True)
class BatchPlan:
    """The chosen batch size, its estimate, and whether the user chose it."""

    batch_size: int
    estimate: MemoryEstimate
    allocation: Allocation
    explicit: bool
    warning: str | None = None

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "explicit": self.explicit,
            "estimate": self.estimate.to_dict(),
            "allocation": self.allocation.to_dict(),
            "warning": self.warning,
        }


def largest_fitting(estimate_fn: EstimateFn, max_batch: int, budget_bytes: int) -> int:
    """Largest b in [1, max_batch] with estimate_fn(b).total_bytes <= budget_bytes, or 0.

    Assumes the estimate does not decrease with the batch size (binary search).
    """
    if max_batch < 1 or estimate_fn(1).total_bytes > budget_bytes:
        return 0
    low, high = 1, max_batch
    while low < high:
        mid = (low + high + 1) // 2
        if estimate_fn(mid).total_bytes <= budget_bytes:
            low = mid
        else:
            high = mid - 1
    return low


def plan_batch(
    requested: int | str | None,
    estimate_fn: EstimateFn,
    max_batch: int,
    allocation: Allocation,
    what: str = "batch",
) -> BatchPlan:
    """Choose a batch size: ``"auto"``/None fits the budget; an int is respected.

    An explicit size whose estimate exceeds the usable budget is kept with a warning
    on stderr. When not even a batch of 1 fits, raises MemoryPlanError with the numbers.
    """
    budget = allocation.usable_bytes
    if requested not in (None, "auto"):
        size = min(int(requested), max_batch)
        if size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {requested}")
        estimate = estimate_fn(size)
        warning = None
        if estimate.total_bytes > budget:
            warning = (
                f"warning: {what} size {size} is estimated at {format_bytes(estimate.total_bytes)}, "
                f"above the usable {format_bytes(budget)} ({allocation.describe()})"
            )
            print(warning, file=sys.stderr)
        return BatchPlan(size, estimate, allocation, True, warning)
    size = largest_fitting(estimate_fn, max_batch, budget)
    if size == 0:
        estimate = estimate_fn(1)
        raise MemoryPlanError(
            f"not even a {what} of 1 fits: estimated {format_bytes(estimate.total_bytes)} "
            f"> usable {format_bytes(budget)} ({allocation.describe()}); "
            "request more memory or lower --mem-safety's margin",
            estimate,
            allocation,
        )
    return BatchPlan(size, estimate_fn(size), allocation, False)


def plan_workers(
    per_worker_bytes: int, shared_bytes: int, budget_bytes: int, max_workers: int
) -> int:
    """How many worker processes fit: workers × per_worker + shared <= budget (at least 1)."""
    if per_worker_bytes <= 0:
        return max(1, max_workers)
    fitting = (budget_bytes - shared_bytes) // per_worker_bytes
    return int(max(1, min(max_workers, fitting)))
