"""memfit.device and device-aware fitting: a GPU's free memory is a limit like the host's.

No GPU here: the device number comes from a fake probe (a function returning (free, total)),
the same seam ``dcoex.backend.TorchBackend.device_limit`` fills with torch.cuda.mem_get_info.
"""

from __future__ import annotations

import pytest

from memfit.allocation import Allocation
from memfit.device import DEVICE_SAFETY, DeviceLimit, cuda_memory, detect_device_limit
from memfit.estimate import MemoryEstimate
from memfit.plan import MemoryPlanError, largest_fitting, plan_batch
from memfit.units import GiB, MiB


def no_gpu():
    return None


def gpu(free_mib: int, total_mib: int = 80 * 1024):
    return lambda: (free_mib * MiB, total_mib * MiB)


def test_no_gpu_and_no_override_is_no_limit():
    assert detect_device_limit(probe=no_gpu, environ={}) is None


def test_free_memory_is_the_limit_with_the_device_safety():
    limit = detect_device_limit(probe=gpu(1000), environ={})
    assert limit == DeviceLimit(1000 * MiB, "cuda:mem_get_info(free)", DEVICE_SAFETY, 80 * GiB)
    assert limit.usable_bytes == int(1000 * MiB * DEVICE_SAFETY)
    assert "GPU limit" in limit.describe()


def test_the_smaller_of_override_and_free_binds():
    assert detect_device_limit(probe=gpu(1000), environ={"MEMFIT_DEVICE_MEM_LIMIT": "500M"}).limit_bytes == 500 * MiB
    bigger = detect_device_limit(probe=gpu(1000), environ={"MEMFIT_DEVICE_MEM_LIMIT": "4G"})
    assert bigger.limit_bytes == 1000 * MiB and bigger.source.startswith("cuda:")
    alone = detect_device_limit(probe=no_gpu, environ={"MEMFIT_DEVICE_MEM_LIMIT": "2G"})
    assert alone.limit_bytes == 2 * GiB and alone.total_bytes is None


def test_safety_from_environment_and_checked():
    assert detect_device_limit(probe=gpu(1000), environ={"MEMFIT_DEVICE_SAFETY": "0.5"}).safety == 0.5
    with pytest.raises(ValueError, match="safety"):
        detect_device_limit(probe=gpu(1000), environ={}, safety=1.5)


def test_cuda_probe_without_cuda_is_none(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_memory() is None


def tiles(rows: int) -> MemoryEstimate:
    """A 02a-like estimate: host 100 MiB + 1 MiB per tile row; GPU 50 MiB resident ranks +
    4 MiB per tile row."""
    return MemoryEstimate("t", {"fixed": 100 * MiB, "tile": rows * MiB},
                          device_components={"ranks": 50 * MiB, "tile": 4 * rows * MiB})


def host(limit_mib: int) -> Allocation:
    return Allocation(limit_mib * MiB, "test", 1.0, True)


def device(limit_mib: int) -> DeviceLimit:
    return DeviceLimit(limit_mib * MiB, "test", 1.0)


def test_batch_fits_the_smaller_of_host_and_device():
    assert plan_batch("auto", tiles, 1024, host(400)).batch_size == 300  # host only
    plan = plan_batch("auto", tiles, 1024, host(400), device=device(450))
    assert plan.batch_size == 100  # 50 + 4·100 = 450 on the GPU binds
    assert tiles(101).device_bytes > 450 * MiB
    assert plan.to_dict()["device"]["limit_bytes"] == 450 * MiB
    assert plan_batch("auto", tiles, 1024, host(150), device=device(10_000)).batch_size == 50  # host binds
    assert largest_fitting(tiles, 1024, 400 * MiB, device_budget_bytes=450 * MiB) == 100


def test_nothing_fits_on_the_gpu_names_the_gpu():
    with pytest.raises(MemoryPlanError) as info:
        plan_batch("auto", tiles, 1024, host(4000), device=device(40), what="tile")
    message = str(info.value)
    assert "on the GPU" in message and "GPU limit" in message and "tile of 1" in message
    assert info.value.device.limit_bytes == 40 * MiB


def test_explicit_size_over_the_gpu_warns(capsys):
    plan = plan_batch(200, tiles, 1024, host(4000), device=device(450), what="tile")
    assert plan.batch_size == 200 and plan.explicit
    assert "on the GPU" in plan.warning and "on the GPU" in capsys.readouterr().err


def test_estimate_device_components_round_trip_and_table():
    est = tiles(10)
    assert est.total_bytes == 110 * MiB and est.device_bytes == 90 * MiB
    data = est.to_dict()
    assert data["device_bytes"] == 90 * MiB
    assert MemoryEstimate.from_dict(data) == est
    assert "on the GPU" in est.table()
    scaled = est.scaled(2.0)
    assert scaled.total_bytes == 220 * MiB and scaled.device_bytes == 90 * MiB  # host calibration only
    host_only = MemoryEstimate("t", {"a": 1})
    assert "device_components" not in host_only.to_dict() and "GPU" not in host_only.table()
