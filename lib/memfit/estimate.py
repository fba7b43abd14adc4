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
    """

    stage: str
    components: Mapping[str, int]
    params: Mapping[str, object] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Predicted peak RSS in bytes."""
        return int(sum(int(v) for v in self.components.values()))

    def scaled(self, factor: float) -> MemoryEstimate:
        """Every component multiplied by ``factor`` (calibration)."""
        return MemoryEstimate(
            self.stage,
            {k: int(v * factor) for k, v in self.components.items()},
            dict(self.params, calibration_factor=factor),
        )

    def to_dict(self) -> dict:
        """JSON-friendly form: stage, total_bytes, components (bytes), params."""
        return {
            "stage": self.stage,
            "total_bytes": self.total_bytes,
            "components": {k: int(v) for k, v in self.components.items()},
            "params": {k: _jsonable(v) for k, v in self.params.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> MemoryEstimate:
        return cls(data["stage"], dict(data["components"]), dict(data.get("params", {})))

    def table(self) -> str:
        """A two-column table (component, human size), largest first, then the total."""
        rows = sorted(self.components.items(), key=lambda kv: -int(kv[1]))
        width = max([len(k) for k, _ in rows] + [len("total")])
        lines = [f"memory estimate for stage {self.stage}"]
        lines += [f"  {k:<{width}}  {format_bytes(v):>12}" for k, v in rows]
        lines.append(f"  {'total':<{width}}  {format_bytes(self.total_bytes):>12}")
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
