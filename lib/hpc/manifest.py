"""``OUT_DIR/run_manifest.json``: what was planned and submitted, updated on every retry.

One manifest format for the co-expression driver and label transfer: a JSON object whose top
level is :class:`RunManifest`, each stage a :class:`StageEntry` with its :class:`Attempt` s.
It is versioned (``manifest_version``; every read checks it, and the layout, and a manifest of
another version or a corrupt one is a :class:`ManifestError` of one line) and locked: finaliser
jobs of different stages may update it at the same time, so every change is a read-modify-write
under an exclusive ``flock`` on ``OUT_DIR/.dcoex/manifest.lock``, written under a temporary name
and renamed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypedDict

from hpc.atomic import atomic_output
from hpc.calibration import package_version
from hpc.errors import InputError
from hpc.schedulers import compress_tasks

MANIFEST = "run_manifest.json"
#: The layout written and the only one read. A change of layout increments it.
MANIFEST_VERSION = 1
STATE_DIR = ".dcoex"
SCHEDULERS = ("slurm", "sge", "local")


class ManifestError(InputError):
    """A run manifest of another version, or corrupt: one line naming the file and the problem."""


class Attempt(TypedDict, total=False):
    """One submission of a stage (or of some of its tasks)."""

    attempt: int  # 1, 2, ... within the stage
    job_id: str  # the scheduler's job id, "local", or "DRYRUN<n>"
    tasks: str | None  # "1-3,7" (array tasks), None for a single job
    task_list: list[int] | None
    requested_bytes: int  # the scheduler's memory request, bytes (whole job)
    request: str  # as given to the scheduler ("--mem=1024M", "h_vmem=512M")
    time_limit: str | None  # HH:MM:SS asked for this attempt (doubled on a time-limit retry)
    command: list[str] | None  # the submission command line
    submitted: str  # ISO 8601, UTC
    reason: str  # "initial", "memory", ...
    finaliser_job_id: str | None
    finaliser_command: list[str]
    #: tasks whose request was changed before they started (SLURM scontrol update), bytes by
    #: task id (JSON keys are strings); the others asked ``requested_bytes``
    task_requests: dict[str, int]
    #: tasks whose time limit was changed before they started (SLURM scontrol update), H:MM:SS
    #: by task id; the others have ``time_limit``
    task_time_limits: dict[str, str]
    #: SGE: the attempt whose tasks this one took over to give them their own request
    #: ("resize"); that attempt's finaliser finalises both
    split_of: int


class StageEntry(TypedDict, total=False):
    """What was planned for one stage, and its attempts."""

    genes_per_task: int | None
    n_tasks: int
    slots: int
    time_limit: str
    raw_estimate_bytes: int  # the estimator's peak (bytes), before calibration
    calibration_factor: float
    estimate: dict[str, Any]  # memfit MemoryEstimate.to_dict() after calibration
    requested_bytes: int
    request: str
    sidecars: str  # glob of the memory sidecars, relative to OUT_DIR
    attempts: list[Attempt]
    # co-expression stages
    minimum_estimate_bytes: int  # the estimate of a batch of 1
    planned_peak_bytes: int  # what the request covers
    stage_command: list[str]
    tasks_planned: str | None
    output: str
    failures: list[dict[str, Any]]
    cancelled_tasks: list[int]
    finalised: list[dict[str, Any]]  # one record per finaliser run
    # 02b, 03: sized from 02a's edge counts (dcoex.pipeline.sizing), by task id (string keys)
    sizing: str  # what requested_bytes rests on
    task_requests: dict[str, int]  # each task's sized request, bytes (before any test scale)
    task_edges: dict[str, int]  # the largest |E0| of each task's genes
    task_raw_estimate_bytes: dict[str, int]  # each sized task's raw estimate (memory review calibrates on it)
    time_limit_bound: str  # the upper bound of every sized time limit (--time-<stage> or the default)
    task_time_limits: dict[str, str]  # each task's sized time limit (H:MM:SS, before any test scale)
    task_seconds: dict[str, float]  # each task's modelled run time (seconds, before safety and bounds)
    test_time_scale: float | None  # DCOEX_TEST_TIME_SCALE_<STAGE> at planning (the resize uses it too)
    test_scale: float | None  # DCOEX_TEST_MEM_SCALE_<STAGE> of the first attempt
    disk_check: dict[str, Any]  # 02a: the check of the disk from the real counts (finaliser)
    gpu_request: str | None  # 02a, 02b, 07 with --device gpu: the scheduler's GPU request (--gres / -l)
    # label transfer
    gpu: bool


class CalibrationRecord(TypedDict):
    """The calibration the plan used: its file (None: none) and factor per stage."""

    file: str | None
    factors: dict[str, float]


class _RequiredTop(TypedDict):
    manifest_version: int
    scheduler: str  # one of SCHEDULERS
    stages: dict[str, StageEntry]


class RunManifest(_RequiredTop, total=False):
    """The top level of ``run_manifest.json``; only the first three keys are required to read."""

    dcoex_version: str
    created: str  # ISO 8601, UTC
    out_dir: str
    parameters: dict[str, Any]
    data_shape: dict[str, int]
    calibration: CalibrationRecord
    python: str  # the interpreter of the jobs (co-expression)
    skipped: dict[str, str]  # stage -> why it does not run (co-expression)
    stage_order: list[str]  # co-expression
    status: str  # "complete" / "failed" (co-expression)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def state_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / STATE_DIR


def manifest_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / MANIFEST


def new_manifest(*, scheduler: str, out_dir: str | os.PathLike, parameters: Mapping[str, Any],
                 data_shape: Mapping[str, int], calibration: CalibrationRecord,
                 stages: Mapping[str, StageEntry], **extra: Any) -> RunManifest:
    """A manifest of this version, created now by this dcoex; ``extra``: the optional keys."""
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION, "scheduler": scheduler, "dcoex_version": package_version(),
        "created": now_iso(), "out_dir": str(out_dir), "parameters": dict(parameters),
        "data_shape": dict(data_shape), "calibration": calibration, **extra, "stages": dict(stages),
    }
    unknown = set(manifest) - set(RunManifest.__annotations__)
    if unknown:
        raise TypeError(f"not run manifest keys: {sorted(unknown)}")
    return manifest  # type: ignore[return-value]


def attempt_record(n: int, job_id: str, tasks: list[int] | None, *, requested: int, request: str,
                   argv: list[str] | None, reason: str, time_limit: str | None = None) -> Attempt:
    """Attempt ``n`` of a stage: job ``job_id`` running ``tasks`` (None: a single job) with a
    request of ``requested`` bytes and ``time_limit`` (HH:MM:SS), submitted now by ``argv``."""
    return {"attempt": n, "job_id": job_id, "tasks": compress_tasks(tasks) if tasks is not None else None,
            "task_list": tasks, "requested_bytes": requested, "request": request, "time_limit": time_limit,
            "command": argv, "submitted": now_iso(), "reason": reason, "finaliser_job_id": None}


def check_manifest(manifest: Any, path: str | os.PathLike) -> RunManifest:
    """``manifest`` if it has this version's layout, else ManifestError naming ``path``."""
    where = f"run manifest {path}"
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where} is corrupt: the top level is not a JSON object")
    version = manifest.get("manifest_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ManifestError(f"{where} is corrupt: manifest_version {version!r} is not a whole number")
    if version > MANIFEST_VERSION:
        raise ManifestError(f"{where} has manifest_version {version}, newer than this dcoex reads "
                            f"({MANIFEST_VERSION}): use the dcoex that wrote it")
    if version != MANIFEST_VERSION:
        raise ManifestError(f"{where} has manifest_version {version}; this dcoex reads version {MANIFEST_VERSION}")
    if manifest.get("scheduler") not in SCHEDULERS:
        raise ManifestError(f"{where} is corrupt: scheduler {manifest.get('scheduler')!r} is not slurm, sge or local")
    stages = manifest.get("stages")
    if not isinstance(stages, dict):
        raise ManifestError(f"{where} is corrupt: no 'stages' object")
    for stage_id, stage in stages.items():
        attempts = stage.get("attempts", []) if isinstance(stage, dict) else None
        if not isinstance(attempts, list):
            raise ManifestError(f"{where} is corrupt: stage {stage_id!r} has no 'attempts' list")
        if not all(isinstance(a, dict) for a in attempts):
            raise ManifestError(f"{where} is corrupt: stage {stage_id!r} has a non-object attempt")
    return manifest  # type: ignore[return-value]


def read_manifest(out_dir: str | os.PathLike) -> RunManifest:
    """The checked manifest of ``out_dir``; ManifestError (one line) if missing, corrupt or of
    another version."""
    path = manifest_path(out_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestError(f"run manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"run manifest {path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"run manifest {path} is corrupt: not valid JSON ({exc})") from None
    return check_manifest(data, path)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` under a temporary name, then rename."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


@contextlib.contextmanager
def locked_manifest(out_dir: str | os.PathLike) -> Iterator[RunManifest]:
    """Yield the manifest for changes (an empty dict if there is none yet, to be filled); it is
    checked and written back when the block ends without error."""
    lock_file = state_dir(out_dir) / "manifest.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = read_manifest(out_dir) if manifest_path(out_dir).exists() else {}
            yield data  # type: ignore[misc]
            write_json_atomic(manifest_path(out_dir), check_manifest(data, manifest_path(out_dir)))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def latest_attempt(stage_entry: Mapping[str, Any], task: int | None) -> Attempt | None:
    """The last attempt of a stage that covers ``task`` (any attempt if ``task`` is None)."""
    for attempt in reversed(stage_entry.get("attempts", [])):
        tasks = attempt.get("task_list")
        if task is None or tasks is None or task in tasks:
            return attempt
    return None


def attempt_time_limit(attempt: Mapping[str, Any], task: int | None) -> str | None:
    """The time limit (H:MM:SS) task ``task`` of ``attempt`` had: its own if it was changed
    before it started (``task_time_limits``), else the attempt's."""
    own = (attempt.get("task_time_limits") or {}).get(str(task)) if task is not None else None
    return str(own) if own is not None else attempt.get("time_limit")


def attempt_request(attempt: Mapping[str, Any], task: int | None) -> int | None:
    """Bytes that task ``task`` of ``attempt`` asked for: its own request if it was changed
    before it started (``task_requests``), else the attempt's."""
    own = (attempt.get("task_requests") or {}).get(str(task)) if task is not None else None
    return int(own) if own is not None else attempt.get("requested_bytes")

