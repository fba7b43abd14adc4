"""The pipeline's stages, one package each: ``sNN_name/`` holds the stage's contract
(``contract.py``), its science (``science.py`` or a few named modules), its memory
estimator (``estimator.py``) and its runner and command line (``cli.py``; ``python -m
dcoex.stages.sNN_name``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from memfit.estimate import MemoryEstimate

if TYPE_CHECKING:
    from dcoex.stages.contract import StageContract

#: Stage id -> package under ``dcoex.stages``, in pipeline order. 05 (export and figures) reads
#: every other output, the permutation results included: it stays last.
STAGE_PACKAGES = {
    "00": "s00_convert",
    "01": "s01_bootstrap_indices",
    "02a": "s02a_base_correlations",
    "02b": "s02b_bootstrap_edges",
    "03": "s03_network",
    "03b": "s03b_collect",
    "04": "s04_focus_topology",
    "07": "s07_permutation_null",
    "08": "s08_permutation_pvalues",
    "05": "s05_export",
}


def stage_contract(stage: str) -> StageContract:
    """The declaration of stage ``stage`` (``dcoex.stages.<package>.contract.CONTRACT``)."""
    try:
        package = STAGE_PACKAGES[stage]
    except KeyError:
        raise KeyError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_PACKAGES)}") from None
    return importlib.import_module(f"dcoex.stages.{package}.contract").CONTRACT


def get_estimator(stage: str) -> Callable[..., MemoryEstimate]:
    """The ``estimate`` function (bytes) of a stage id (e.g. "02a", "03b", "05")."""
    return stage_contract(stage).estimator


def get_estimator_module(stage: str):
    """The ``estimator`` module of a stage id (its ``estimate`` and ``output_bytes``)."""
    stage_contract(stage)
    return importlib.import_module(f"dcoex.stages.{STAGE_PACKAGES[stage]}.estimator")
