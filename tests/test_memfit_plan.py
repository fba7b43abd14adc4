"""memfit.plan: largest fitting batch, explicit sizes, fail-fast, worker counts."""

from __future__ import annotations

import pytest

from memfit.allocation import Allocation
from memfit.estimate import MemoryEstimate
from memfit.plan import MemoryPlanError, largest_fitting, plan_batch, plan_workers
from memfit.units import MiB


def linear(fixed_mib: int, per_item_mib: int):
    def estimate(batch: int) -> MemoryEstimate:
        return MemoryEstimate("t", {"fixed": fixed_mib * MiB, "batch": batch * per_item_mib * MiB})

    return estimate


def alloc(limit_mib: int, safety: float = 0.5) -> Allocation:
    return Allocation(limit_mib * MiB, "test", safety, True)


def test_largest_fitting_is_exact_boundary():
    fn = linear(100, 10)
    budget = 100 * MiB + 37 * 10 * MiB
    assert largest_fitting(fn, 1000, budget) == 37
    assert largest_fitting(fn, 20, budget) == 20
    assert largest_fitting(fn, 1000, 99 * MiB) == 0


def test_auto_chooses_largest_under_safety_times_limit():
    plan = plan_batch("auto", linear(100, 10), 10_000, alloc(2000, 0.5))
    assert plan.batch_size == 90  # 100 + 10*b <= 1000
    assert not plan.explicit and plan.warning is None
    assert plan.estimate.total_bytes <= 1000 * MiB
    assert linear(100, 10)(plan.batch_size + 1).total_bytes > 1000 * MiB


def test_explicit_size_respected_with_warning(capsys):
    plan = plan_batch(500, linear(100, 10), 10_000, alloc(2000, 0.5))
    assert plan.batch_size == 500 and plan.explicit
    assert plan.warning and "500" in plan.warning
    assert "warning" in capsys.readouterr().err


def test_explicit_size_that_fits_has_no_warning(capsys):
    plan = plan_batch(10, linear(100, 10), 10_000, alloc(2000, 0.5))
    assert plan.warning is None and capsys.readouterr().err == ""


def test_explicit_size_capped_at_max_batch():
    assert plan_batch(500, linear(1, 1), 30, alloc(2000)).batch_size == 30


def test_nothing_fits_raises_with_numbers():
    with pytest.raises(MemoryPlanError) as info:
        plan_batch("auto", linear(2000, 10), 100, alloc(1000, 0.5))
    message = str(info.value)
    assert "GiB" in message or "MiB" in message
    assert info.value.estimate.total_bytes == 2010 * MiB


def test_plan_workers():
    assert plan_workers(100, 200, 1000, 16) == 8
    assert plan_workers(100, 200, 1000, 4) == 4
    assert plan_workers(2000, 200, 1000, 4) == 1
    assert plan_workers(0, 0, 1000, 3) == 3
