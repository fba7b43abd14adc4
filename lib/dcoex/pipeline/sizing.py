"""Memory requests from the data shape and from what upstream stages found.

Stages 02b and 03 hold a reference gene's selected edges (|E0|, the edges 02a stored), so their
memory grows with a count that only 02a knows. Before 02a has run the planner sizes them at the
planning bound of :mod:`dcoex.pipeline.estimates`; once a gene's 02a file exists its count is
read from the file's attributes (:func:`dcoex.edge_files.read_selected_count`, never the edges)
and the tasks are sized from it:

* at planning, for tasks whose 02a outputs are current (a resume, or ``--stages 02b,03``);
* at run time, by the 02a task itself when it succeeds (:func:`resize_successors`, called by
  the task runner before its successors can start): SLURM changes the pending task's memory
  (``scontrol update JobId=<job>_<task> MinMemoryNode=<MiB>``); SGE cannot change one task of an
  array, so the pending task is moved to an array of its own with the new request (submitted
  held, its predecessor task deleted, the stage attempt's finaliser made to wait for it too).

Every request is ``request_for``: the stage's own estimate × calibration, never under its
minimum, through the scheduler's ``request_bytes`` (one formula for the plan and the resize).

The time limits of the same tasks are sized alongside (``time_for``): the stage's run-time model
(``runtime_seconds`` in its estimator.py: a fixed part, per gene, per edge or edge·replicate)
summed over the task's genes, × TIME_SAFETY, rounded up to minutes, at least TIME_FLOOR_SECONDS
and at most ``--time-<stage>`` (else the default), which stays the upper bound: SLURM lets a user
lower a pending job's time limit, not raise it, so its arrays ask for the bound and each task is
lowered; SGE arrays ask for the time of the planning bound of edges, and a task moves to an array
of its own for a longer limit (or for its memory, taking its sized limit along).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dcoex.edge_files import read_selected_count
from dcoex.genes import gene_file_path
from dcoex.pipeline.estimates import stage_estimate
from dcoex.pipeline.shapes import DataShape
from dcoex.stages.s01_bootstrap_indices.science import group_sizes
from dcoex.stages.s02b_bootstrap_edges import estimator as estimator_02b
from dcoex.stages.s03_network import estimator as estimator_03
from hpc.errors import InputError
from hpc.schedulers import Scheduler, format_time_limit, time_limit_seconds
from memfit.estimate import MemoryEstimate
from memfit.units import MiB

#: Stages whose memory (and output) grows with 02a's edge counts.
EDGE_SIZED = ("02b", "03")
#: Under SGE a pending task's request changes when the sized one is larger, or smaller by more
#: than this fraction (SGE moves the task to an array of its own: not worth it for a few MiB).
RESIZE_SLACK = 0.25
#: Testing knob: ``DCOEX_TEST_ESTIMATE_SCALE_<STAGE>=0.5`` scales the planned raw estimate of one stage.
TEST_ESTIMATE_SCALE_ENV = "DCOEX_TEST_ESTIMATE_SCALE_"
#: Sized time limits are the modelled run time × this (slower nodes, load, file systems).
TIME_SAFETY = 3.0
#: No sized time limit is below this (seconds): start-up, scheduler and file-system delays.
TIME_FLOOR_SECONDS = 15 * 60
#: Testing knob: ``DCOEX_TEST_TIME_SCALE_<STAGE>=100`` scales the modelled run time of one stage
#: (so that tests on tiny data see the sizes above the floor).
TEST_TIME_SCALE_ENV = "DCOEX_TEST_TIME_SCALE_"


def apply_test_estimate_scale(stage: str, raw: MemoryEstimate) -> MemoryEstimate:
    """Testing knob ``DCOEX_TEST_ESTIMATE_SCALE_<STAGE>=F``: the planned raw estimate times F
    (an estimator off by 1/F, for the calibration round-trip test of ``memfit review``). Stage
    02a applies it to its own estimate too (the job inherits the driver's environment), so the
    stage and the plan see the same wrong estimator."""
    scale = os.environ.get(f"{TEST_ESTIMATE_SCALE_ENV}{stage.upper()}")
    if not scale:
        return raw
    try:
        factor = float(scale)
    except ValueError:
        raise InputError(f"{TEST_ESTIMATE_SCALE_ENV}{stage.upper()}={scale!r}: not a number") from None
    return dataclasses.replace(raw.scaled(factor), params=dict(raw.params, test_estimate_scale=factor))


@dataclass(frozen=True)
class Request:
    """A stage's (or one task's) memory: the raw and minimum estimates, the calibration factor,
    the peak the request covers and the scheduler's request (bytes)."""

    raw: MemoryEstimate
    minimum: MemoryEstimate
    factor: float
    peak_bytes: int
    requested_bytes: int


def request_for(stage: str, shape: DataShape, params: Mapping[str, Any], scheduler: Scheduler, *,
                factor: float, safety: float, slots: int, n_edges: int | None = None) -> Request:
    """The request of ``stage`` for the run's parameters (``params``: the driver's parameters by
    name); ``n_edges``: the largest |E0| of the task's genes for 02b and 03 (None: the bound)."""
    own = stage_estimate(stage, shape, n_bootstrap=params["n_bootstrap"], low_frac=params["low_frac"],
                         high_frac=params["high_frac"], bootstrap_frac=params["bootstrap_frac"],
                         fdr_alpha=params["fdr_alpha"], batch_size=params.get("batch_size"), slots=slots,
                         n_edges=n_edges, n_permutations=params["n_permutations"],
                         perms_per_task=params["perms_per_task"], focus_genes=params["focus_genes"],
                         n_hubs=params["n_hubs"], device=params.get("device", "cpu"))
    raw, minimum = apply_test_estimate_scale(stage, own.planned), apply_test_estimate_scale(stage, own.minimum)
    peak = max(int(raw.total_bytes * factor), minimum.total_bytes)
    return Request(raw, minimum, factor, peak, scheduler.request_bytes(peak, safety, slots))


@dataclass(frozen=True)
class TimeRequest:
    """A task's time limit sized from its genes' edge counts: the modelled run time (seconds,
    before the safety factor and bounds) and the limit asked for (H:MM:SS)."""

    seconds: float
    time_limit: str


def time_scale_knob(stage: str) -> float | None:
    """The testing knob ``DCOEX_TEST_TIME_SCALE_<STAGE>`` (None when unset). Read at planning
    and recorded in the manifest, so that the resize, run inside a 02a job whose environment
    the scheduler may not pass on (SGE), uses the same."""
    scale = os.environ.get(f"{TEST_TIME_SCALE_ENV}{stage.upper()}")
    if not scale:
        return None
    try:
        return float(scale)
    except ValueError:
        raise InputError(f"{TEST_TIME_SCALE_ENV}{stage.upper()}={scale!r}: not a number") from None


def time_for(stage: str, params: Mapping[str, Any], gene_edges: Sequence[int], *, shape: DataShape,
             bound: str, scale: float | None = None) -> TimeRequest:
    """The time limit of a ``stage`` (02b, 03) task whose genes have ``gene_edges`` edges (|E0|
    each; the task runs them one after another): the stage's model (× ``scale``, the testing
    knob) × TIME_SAFETY, in whole minutes, at least TIME_FLOOR_SECONDS, at most ``bound`` (H:MM:SS).
    02b's model takes the resample sizes from ``shape`` and the group fractions in ``params``."""
    edges = [int(e) for e in gene_edges]
    if stage == "02b":
        sizes = group_sizes(shape.n_samples, params["low_frac"], params["high_frac"], params["bootstrap_frac"])
        seconds = estimator_02b.runtime_seconds(n_genes=shape.n_genes, gene_edges=edges,
                                                n_bootstrap=int(params["n_bootstrap"]), kr_low=sizes.kr_low,
                                                kr_high=sizes.kr_high)
    elif stage == "03":
        seconds = estimator_03.runtime_seconds(gene_edges=edges)
    else:
        raise ValueError(f"stage {stage}: no run-time model")
    if scale:
        seconds *= float(scale)
    wanted = max(TIME_FLOOR_SECONDS, 60 * math.ceil(TIME_SAFETY * seconds / 60))
    return TimeRequest(seconds, format_time_limit(min(wanted, time_limit_seconds(bound))))


def worth_retiming(current: str, sized: str, *, in_place: bool) -> bool:
    """Whether to change a pending task's time limit (H:MM:SS): when it differs and the
    scheduler changes a task in place (SLURM), else only when it is longer (SGE moves the task
    to an array of its own: not worth it for a shorter limit alone; a task moved for its memory
    takes its sized limit too)."""
    now, new = time_limit_seconds(current), time_limit_seconds(sized)
    return new != now if in_place else new > now


def scaled_request(requested_bytes: int, scale: float | None, slots: int) -> int:
    """The first attempt's request under the test knob ``DCOEX_TEST_MEM_SCALE_<STAGE>`` (whole MiB
    per slot, as the schedulers are asked); ``requested_bytes`` when ``scale`` is None."""
    if not scale:
        return requested_bytes
    unit = MiB * slots
    return max(int(math.ceil(requested_bytes * scale / unit)), 1) * unit


def worth_resizing(current: int, sized: int, *, in_place: bool) -> bool:
    """Whether to change a pending request: when the sized one differs and the scheduler changes
    a task in place (``in_place``: SLURM), else when it is larger or smaller by more than
    RESIZE_SLACK (SGE moves the task to an array of its own)."""
    if in_place:
        return sized != current
    return sized > current or sized < current * (1 - RESIZE_SLACK)


def task_edge_counts(base_dir: Path, genes: Sequence[int], gene_names: Sequence[str],
                     edge_selection: str) -> list[int] | None:
    """|E0| of each of a task's genes from their 02a files (attributes only); None when a gene's
    file or count is missing. A task runs its genes one after another, so its peak is its
    largest gene's and its run time the sum of its genes'."""
    n = len(gene_names)
    counts = [read_selected_count(gene_file_path(base_dir, g, gene_names[g], n), edge_selection) for g in genes]
    if not counts or any(c is None for c in counts):
        return None
    return [int(c) for c in counts if c is not None]


def task_genes_of(n_genes: int, genes_per_task: int, gene_list: Sequence[int] | None, task: int) -> list[int]:
    """The genes of array task ``task`` (1-based), as the stages cut them."""
    universe = list(gene_list) if gene_list is not None else list(range(n_genes))
    return universe[(task - 1) * genes_per_task: task * genes_per_task]
