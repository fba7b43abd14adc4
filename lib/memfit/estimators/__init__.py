"""Per-stage memory estimators: pure functions of shapes and parameters -> MemoryEstimate.

Each module exposes ``estimate(**params) -> MemoryEstimate``; ``get_estimator(stage)``
finds it by stage id so the drivers can plan without importing the science.
"""

from __future__ import annotations

import importlib
from typing import Callable

from memfit.estimate import MemoryEstimate

STAGE_MODULES = {
    "00": "memfit.estimators.convert",
    "01": "memfit.estimators.bootstrap_indices",
    "02a": "memfit.estimators.base_correlations",
    "02b": "memfit.estimators.bootstrap_edges",
    "03": "memfit.estimators.network",
    "03b": "memfit.estimators.collect",
    "label_transfer": "memfit.estimators.label_transfer",
}


def get_estimator(stage: str) -> Callable[..., MemoryEstimate]:
    """The ``estimate`` function of a stage id ("00", "01", "02a", "02b", "03", "03b", ...)."""
    try:
        module = importlib.import_module(STAGE_MODULES[stage])
    except KeyError:
        raise KeyError(f"no estimator for stage {stage!r}; known: {sorted(STAGE_MODULES)}") from None
    return module.estimate
