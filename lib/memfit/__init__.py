"""memfit: estimate, detect, fit and record memory for pipeline stages.

No science lives here: only bytes, limits, batch sizes and accounting.
"""

from memfit.allocation import Allocation, detect_allocation
from memfit.device import DeviceLimit, detect_device_limit
from memfit.estimate import MemoryEstimate
from memfit.plan import BatchPlan, MemoryPlanError, plan_batch, plan_workers
from memfit.record import PeakRecorder, write_sidecar

__all__ = [
    "Allocation",
    "detect_allocation",
    "DeviceLimit",
    "detect_device_limit",
    "MemoryEstimate",
    "BatchPlan",
    "MemoryPlanError",
    "plan_batch",
    "plan_workers",
    "PeakRecorder",
    "write_sidecar",
]
