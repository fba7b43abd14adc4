"""Self-calibration: correction factors for stage estimates, learnt from a reviewed run.

The one reader and writer of calibration files: ``memfit review --calibrate`` writes them,
the co-expression planner (``dcoex.pipeline.plan``) and ``labeltransfer.submit`` read them.
A calibration file (``<out dir>/memfit_calibration.json``) holds, per stage (co-expression
stage ids such as ``02a``, and ``label_transfer``), a factor =
a high quantile of ``used / raw estimate`` over the run's tasks, clipped to bounds, with
the number of tasks it came from. The drivers multiply a stage's *raw* estimate (bytes)
by its factor when they plan the next run; the ratio is always taken against the raw
(uncalibrated) estimate, so a new factor replaces an old one instead of compounding it.

File layout (version 1)::

    {"calibration_version": 1, "memfit_version": "0.1.0", "created": "...Z",
     "quantile": 0.95, "bounds": [0.5, 4.0], "source": "<reviewed out dir>",
     "stages": {"02a": {"factor": 1.93, "n": 12, "raw_quantile": 1.93,
                        "ratio_min": 1.7, "ratio_median": 1.85, "ratio_max": 1.95}}}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

import numpy as np

from hpc.atomic import atomic_output
from hpc.errors import InputError

CALIBRATION_FILE = "memfit_calibration.json"
CALIBRATION_VERSION = 1
DEFAULT_QUANTILE = 0.95
DEFAULT_BOUNDS = (0.5, 4.0)


class CalibrationError(InputError, ValueError):
    """A calibration file that cannot be read or does not have the expected layout (one line)."""


def package_version() -> str:
    """Installed dcoex version (memfit ships inside it), or "unknown"."""
    try:
        return metadata.version("dcoex")
    except metadata.PackageNotFoundError:
        return "unknown"


def stage_factor(
    ratios: Iterable[float],
    quantile: float = DEFAULT_QUANTILE,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> dict[str, float | int]:
    """Factor for one stage from its tasks' ``used / raw estimate`` ratios.

    Returns ``{"factor", "n", "raw_quantile", "ratio_min", "ratio_median", "ratio_max"}``;
    ``factor`` is the ``quantile`` of the ratios clipped to ``bounds``.
    Non-finite and non-positive ratios are ignored; raises ValueError if none remain.
    """
    values = np.asarray([float(r) for r in ratios], dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise ValueError("no usable used/estimate ratio")
    low, high = bounds
    raw = float(np.quantile(values, quantile))
    return {
        "factor": round(float(min(max(raw, low), high)), 4),
        "n": int(values.size),
        "raw_quantile": round(raw, 4),
        "ratio_min": round(float(values.min()), 4),
        "ratio_median": round(float(np.median(values)), 4),
        "ratio_max": round(float(values.max()), 4),
    }


def build_calibration(
    ratios_by_stage: Mapping[str, Iterable[float]],
    quantile: float = DEFAULT_QUANTILE,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    source: str | None = None,
) -> dict:
    """The calibration document for every stage that has at least one usable ratio."""
    stages = {}
    for stage, ratios in sorted(ratios_by_stage.items()):
        try:
            stages[stage] = stage_factor(ratios, quantile, bounds)
        except ValueError:
            continue
    return {
        "calibration_version": CALIBRATION_VERSION,
        "memfit_version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quantile": quantile,
        "bounds": [float(bounds[0]), float(bounds[1])],
        "source": source,
        "stages": stages,
    }


def write_calibration(path: str | os.PathLike, document: Mapping) -> Path:
    """Write a calibration document atomically (temp name in the same folder, then rename)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")
    return path


def read_calibration(path: str | os.PathLike) -> dict:
    """The whole calibration document; CalibrationError (one line) if unreadable or malformed."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibration file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"calibration file {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("stages"), dict):
        raise CalibrationError(f"calibration file {path} has no 'stages' object")
    version = document.get("calibration_version")
    if version != CALIBRATION_VERSION:
        raise CalibrationError(
            f"calibration file {path} has calibration_version {version!r}, expected {CALIBRATION_VERSION}"
        )
    for stage, entry in document["stages"].items():
        factor = entry.get("factor") if isinstance(entry, dict) else None
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
            raise CalibrationError(f"calibration file {path}: stage {stage!r} has no positive 'factor'")
    return document


def load_calibration(path: str | os.PathLike) -> dict[str, float]:
    """Per-stage correction factors ``{stage id: factor}`` from a calibration file."""
    document = read_calibration(path)
    return {stage: float(entry["factor"]) for stage, entry in document["stages"].items()}


def find_calibration(out_dir: str | os.PathLike) -> Path | None:
    """``<out_dir>/memfit_calibration.json`` if it exists, else None."""
    candidate = Path(out_dir) / CALIBRATION_FILE
    return candidate if candidate.is_file() else None
