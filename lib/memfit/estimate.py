"""The MemoryEstimate type: a predicted peak RSS in bytes with a named breakdown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from memfit.units import MiB, format_bytes

#: Resident bytes of a Python process after importing numpy, scipy, h5py and click
#: (measured on CPython 3.11 / Debian 12: 55-75 MiB). Every stage estimate includes it.
PYTHON_BASELINE_BYTES = 80 * MiB


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak resident set size of one stage run.

    ``components`` maps a name (e.g. ``"expr"``, ``"corr_tile"``) to bytes; the total is
    their sum. ``params`` records the shapes and parameters the estimate was made from.
    ``device_components``: bytes the stage holds in accelerator (GPU) memory at its peak
    (e.g. tile buffers on the GPU), empty when it computes on the host; they are not part of
    ``total_bytes`` (host RSS) and are fitted to the device's limit (memfit.device).
    """

    stage: str
    components: Mapping[str, int]
    params: Mapping[str, object] = field(default_factory=dict)
    device_components: Mapping[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Predicted peak RSS in bytes."""
        return int(sum(int(v) for v in self.components.values()))

    @property
    def device_bytes(self) -> int:
        """Predicted peak accelerator memory in bytes (0 on the host only)."""
        return int(sum(int(v) for v in self.device_components.values()))

    def scaled(self, factor: float) -> MemoryEstimate:
        """Every host component multiplied by ``factor`` (calibration of peak RSS; the device
        components are not measured by the review and stay as they are)."""
        return MemoryEstimate(
            self.stage,
            {k: int(v * factor) for k, v in self.components.items()},
            dict(self.params, calibration_factor=factor),
            dict(self.device_components),
        )

    def to_dict(self) -> dict:
        """JSON-friendly form: stage, total_bytes, components (bytes), params; with device
        components also device_bytes and device_components."""
        out = {
            "stage": self.stage,
            "total_bytes": self.total_bytes,
            "components": {k: int(v) for k, v in self.components.items()},
            "params": {k: _jsonable(v) for k, v in self.params.items()},
        }
        if self.device_components:
            out["device_bytes"] = self.device_bytes
            out["device_components"] = {k: int(v) for k, v in self.device_components.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> MemoryEstimate:
        return cls(data["stage"], dict(data["components"]), dict(data.get("params", {})),
                   dict(data.get("device_components", {})))

    def table(self) -> str:
        """A two-column table (component, human size), largest first, then the total; device
        components follow under their own heading."""
        rows = sorted(self.components.items(), key=lambda kv: -int(kv[1]))
        device = sorted(self.device_components.items(), key=lambda kv: -int(kv[1]))
        width = max([len(k) for k, _ in rows + device] + [len("total")])
        lines = [f"memory estimate for stage {self.stage}"]
        lines += [f"  {k:<{width}}  {format_bytes(v):>12}" for k, v in rows]
        lines.append(f"  {'total':<{width}}  {format_bytes(self.total_bytes):>12}")
        if device:
            lines.append("  on the GPU:")
            lines += [f"  {k:<{width}}  {format_bytes(v):>12}" for k, v in device]
            lines.append(f"  {'total':<{width}}  {format_bytes(self.device_bytes):>12}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _jsonable(value: object) -> object:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    try:
        return value.item()  # numpy scalar
    except AttributeError:
        return str(value)
