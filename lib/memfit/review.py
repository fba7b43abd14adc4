"""Memory review of a pipeline run: run manifest + sidecars + accounting -> per-stage table.

Every figure is in bytes (seconds for times). Per task, the review joins:

* the manifest's attempts (job id, array tasks, requested bytes, reason);
* the scheduler's accounting of each attempt (:mod:`memfit.accounting`): state, OOM
  kill, ``used`` = SLURM MaxRSS (largest step) or SGE maxvmem, elapsed time;
* the stage's memory sidecars (``peak_rss_bytes`` measured in the job), matched by
  ``job_id`` / ``task_id``, else by their gene range (``genes_<a>-<b>``).

Per stage it reports tasks done / failed / OOM-killed / retried, requested, estimate,
used (max, median, p95 over tasks), efficiency (used / requested), estimate error
(peak RSS / estimate), wall time and a recommended request: the ``quantile`` of used
times ``margin`` (1 / the memfit safety factor for pipeline runs, so the stage's own
budget covers the peak again; 1.2 for other jobs), raised to max used × margin when a
task was OOM-killed, always above the largest request that was OOM-killed, rounded up
to the scheduler's units.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hpc.errors import EXIT_OUT_OF_MEMORY, InputError
from hpc.manifest import (
    MANIFEST_VERSION,
    ManifestError,
    attempt_request,
    attempt_time_limit,
    manifest_path,
    read_manifest,
)
from hpc.schedulers import time_limit_seconds
from memfit.accounting import TaskAccounting, expand_task_range
from memfit.accounting.records import AccountingError
from memfit.allocation import SAFETY_SCHEDULER, VIRTUAL_OVERHEAD_BYTES
from memfit.units import GiB, MiB

REVIEW_VERSION = 1
#: Margin of the recommendation for arbitrary jobs (``--jobs``).
DEFAULT_MARGIN = 1.2
DEFAULT_QUANTILE = 0.95
_GENES = re.compile(r"\.genes_(\d+)-(\d+)\.memory\.json$")


class ReviewError(InputError, ValueError):
    """Bad input to the review (manifest, files, flags): one line naming what is wrong."""


@dataclass
class AttemptReview:
    """One submission of one task: what was asked, what the scheduler and sidecar saw."""

    attempt: int
    job_id: str | None
    reason: str
    requested_bytes: int | None
    accounting: TaskAccounting | None = None
    sidecar: dict[str, Any] | None = None
    #: the time limit the task had (seconds): its own when the driver sized it from 02a's counts
    time_limit_s: int | None = None

    @property
    def used_bytes(self) -> int | None:
        return self.accounting.used_bytes if self.accounting else None

    @property
    def peak_rss_bytes(self) -> int | None:
        value = (self.sidecar or {}).get("peak_rss_bytes")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def rss_bytes(self) -> int | None:
        """Peak RSS: the sidecar's, else SLURM MaxRSS (SGE maxvmem is not an RSS)."""
        if self.peak_rss_bytes:
            return self.peak_rss_bytes
        acct = self.accounting
        return acct.max_rss_bytes if acct and acct.scheduler == "slurm" else None

    @property
    def oom(self) -> bool:
        return bool(self.accounting and self.accounting.oom)

    @property
    def status(self) -> str:
        """done / oom / failed / pending / running / unknown."""
        acct = self.accounting
        if acct is None:
            return "done" if self.sidecar is not None else "unknown"
        if acct.oom:
            return "oom"
        if acct.state in ("PENDING", "REQUEUED"):
            return "pending"
        if not acct.finished:
            return "running"
        return "done" if acct.ok else "failed"

    @property
    def elapsed_s(self) -> float | None:
        if self.accounting and self.accounting.elapsed_s is not None:
            return self.accounting.elapsed_s
        wall = (self.sidecar or {}).get("wall_s")
        return float(wall) if isinstance(wall, (int, float)) else None

    def to_dict(self) -> dict[str, Any]:
        acct = self.accounting
        return {
            "attempt": self.attempt,
            "job_id": self.job_id,
            "job": acct.label() if acct else self.job_id,
            "reason": self.reason,
            "status": self.status,
            "state": acct.state_raw if acct else None,
            "exit_code": acct.exit_code if acct else None,
            "signal": acct.signal if acct else None,
            "oom": self.oom,
            "oom_reason": acct.oom_reason if acct else None,
            "requested_bytes": self.requested_bytes,
            "used_bytes": self.used_bytes,
            "used_metric": acct.used_metric if acct else None,
            "peak_rss_bytes": self.peak_rss_bytes,
            "elapsed_s": self.elapsed_s,
            "time_limit_s": self.time_limit_s,
        }


@dataclass
class TaskReview:
    task: int
    attempts: list[AttemptReview] = field(default_factory=list)

    @property
    def final(self) -> AttemptReview:
        return self.attempts[-1]

    def best(self, value: str) -> int | None:
        """Largest ``used_bytes`` / ``rss_bytes`` over the attempts (None if none)."""
        values = [getattr(a, value) for a in self.attempts if getattr(a, value)]
        return max(values) if values else None


@dataclass
class StageReview:
    stage: str
    scheduler: str
    slots: int
    estimate_bytes: int | None
    raw_estimate_bytes: int | None
    calibration_factor: float | None
    requested_bytes: int | None
    tasks: list[TaskReview] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: raw estimates of tasks sized on their own (02b, 03 from 02a's counts), by task id
    task_raw_estimates: dict[str, int] = field(default_factory=dict)
    stale_sidecars: int = 0
    title: str | None = None


def load_manifest(out_dir: str | Path) -> dict[str, Any]:
    """``<out_dir>/run_manifest.json``, read and checked by hpc.manifest (version, layout), of
    one scheduler; ReviewError naming the file and problem."""
    path = manifest_path(out_dir)
    if not path.is_file():
        raise ReviewError(f"run manifest not found: {path} (is {out_dir} a pipeline out dir? use --jobs without one)")
    try:
        manifest = read_manifest(out_dir)
    except ManifestError as exc:
        raise ReviewError(str(exc)) from None
    _check_one_scheduler(manifest, path)
    return dict(manifest)


def _check_one_scheduler(manifest: Mapping[str, Any], path: Path | str) -> None:
    """ReviewError if an attempt ran under another scheduler than the run's."""
    scheduler = manifest["scheduler"]
    for stage_id, stage in manifest["stages"].items():
        for attempt in stage.get("attempts", []):
            other = attempt.get("scheduler", stage.get("scheduler", scheduler))
            if other != scheduler:
                raise ReviewError(
                    f"run manifest {path} mixes schedulers: stage {stage_id!r} ran under {other!r}, "
                    f"the run under {scheduler!r}; review each scheduler's run separately"
                )


def manifest_job_ids(manifest: Mapping[str, Any]) -> list[str]:
    """Every job id of every attempt, in order, without repeats."""
    ids: dict[str, None] = {}
    for stage in manifest["stages"].values():
        for attempt in stage.get("attempts", []):
            if attempt.get("job_id") not in (None, ""):
                ids[str(attempt["job_id"])] = None
    return list(ids)


def _attempt_tasks(attempt: Mapping[str, Any], n_tasks: int | None, records: list[TaskAccounting]) -> list[int]:
    listed = attempt.get("task_list")
    if isinstance(listed, list) and all(isinstance(t, int) for t in listed):
        return list(listed)
    spec = attempt.get("tasks")
    if spec not in (None, ""):
        try:
            return expand_task_range(str(spec))
        except AccountingError as exc:
            raise ReviewError(f"run manifest: attempt tasks {spec!r}: {exc}") from None
    if n_tasks:
        return list(range(1, int(n_tasks) + 1))
    ids = sorted({r.task_id for r in records if r.task_id is not None})
    return ids or [1]


def _attempt_records(
    attempt: Mapping[str, Any], n_tasks: int | None, job_records: list[TaskAccounting]
) -> list[tuple[int, TaskAccounting | None]]:
    """(task, its accounting record or None) for every task of ``attempt``; a single-task
    attempt takes the job's only record whatever task id accounting gave it."""
    task_ids = _attempt_tasks(attempt, n_tasks, job_records)
    by_task = {r.task_id: r for r in job_records}
    pairs = []
    for task in task_ids:
        record = by_task.get(task)
        if record is None and len(task_ids) == 1 and len(job_records) == 1:
            record = job_records[0]
        pairs.append((task, record))
    return pairs


def _index_accounting(records: Iterable[TaskAccounting]) -> dict[str, list[TaskAccounting]]:
    """Records by job id; pending array ranges expanded into per-task records."""
    by_job: dict[str, list[TaskAccounting]] = {}
    for record in records:
        by_job.setdefault(record.job_id, []).append(record)
    for job_records in by_job.values():
        known = {r.task_id for r in job_records if r.task_id is not None}
        for record in list(job_records):
            if record.pending_tasks:
                job_records.remove(record)
                for task in expand_task_range(record.pending_tasks):
                    if task not in known:
                        job_records.append(
                            TaskAccounting(scheduler=record.scheduler, job_id=record.job_id, task_id=task,
                                           name=record.name, state=record.state, state_raw=record.state_raw,
                                           requested_bytes=record.requested_bytes)
                        )
    return by_job


def _sidecar_paths(out_dir: Path, stage: Mapping[str, Any]) -> list[Path]:
    """Files matching the stage's ``sidecars`` glob: relative to the out dir, else to the
    stage's output folder (per-gene stages write ``<output dir>/memory/...``), looked up
    under the out dir first in case the run was moved."""
    pattern = stage.get("sidecars")
    if not pattern:
        return []
    bases = [out_dir]
    if stage.get("output"):
        output = Path(str(stage["output"]))
        bases += [out_dir / output.name, output]
    for base in bases:
        found = sorted(base.glob(pattern))
        if found:
            return found
    return []


def _read_sidecars(out_dir: Path, stage: Mapping[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in _sidecar_paths(out_dir, stage):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            found.append((path, data))
    return found


def _sidecar_task(path: Path, data: Mapping[str, Any], genes_per_task: int | None, n_tasks: int) -> int | None:
    task = str(data.get("task_id") or "")
    if task.isdigit():
        return int(task)
    match = _GENES.search(path.name)
    if match and genes_per_task:
        return int(match.group(1)) // int(genes_per_task) + 1
    return 1 if n_tasks <= 1 else None


def review_stage(
    stage_id: str,
    stage: Mapping[str, Any],
    scheduler: str,
    out_dir: Path | None,
    accounting: Mapping[str, list[TaskAccounting]],
) -> StageReview:
    """Join one stage's attempts with accounting and sidecars."""
    estimate = stage.get("estimate") or {}
    review = StageReview(
        stage=stage_id,
        scheduler=scheduler,
        slots=int(stage.get("slots") or 1),
        estimate_bytes=estimate.get("total_bytes") if isinstance(estimate, dict) else None,
        raw_estimate_bytes=stage.get("raw_estimate_bytes"),
        calibration_factor=stage.get("calibration_factor"),
        requested_bytes=stage.get("requested_bytes"),
        title=stage.get("title"),
        task_raw_estimates=dict(stage.get("task_raw_estimate_bytes") or {}),
    )
    tasks: dict[int, TaskReview] = {}
    for number, attempt in enumerate(stage.get("attempts", []), start=1):
        job_id = str(attempt["job_id"]) if attempt.get("job_id") not in (None, "") else None
        records = accounting.get(job_id, []) if job_id else []
        for task, record in _attempt_records(attempt, stage.get("n_tasks"), records):
            entry = AttemptReview(
                attempt=int(attempt.get("attempt") or number),
                job_id=job_id,
                reason=str(attempt.get("reason") or "initial"),
                requested_bytes=(
                    attempt_request(attempt, task)
                    or stage.get("requested_bytes")
                    or (record.requested_bytes if record else None)
                ),
                accounting=record,
                time_limit_s=_limit_seconds(attempt_time_limit(attempt, task)),
            )
            tasks.setdefault(task, TaskReview(task)).attempts.append(entry)
    if not tasks and stage.get("n_tasks"):
        for task in range(1, int(stage["n_tasks"]) + 1):
            tasks[task] = TaskReview(task, [AttemptReview(1, None, "initial", stage.get("requested_bytes"))])
    if out_dir is not None:
        _attach_sidecars(review, stage, out_dir, tasks)
    review.tasks = [tasks[t] for t in sorted(tasks)]
    return review


def _limit_seconds(text: str | None) -> int | None:
    """Seconds of a time limit H:MM:SS (None when absent or unreadable)."""
    try:
        return time_limit_seconds(text) if text else None
    except ValueError:
        return None


def _attach_sidecars(
    review: StageReview,
    stage: Mapping[str, Any],
    out_dir: Path,
    tasks: dict[int, TaskReview],
) -> None:
    """Give each attempt its sidecar.

    A sidecar names its job (``array_job_id`` / ``job_id``) and array task. It belongs to
    the attempt of its task with the same job id; else (SLURM array tasks written before
    ``array_job_id`` existed carry their own per-task job id, which is never lower than
    the array's) to the attempt of its task with the largest job id not above it. A
    sidecar whose job id is below every attempt's is left over from an earlier run and is
    ignored. Sidecars without a numeric job id (local runs) go to their task's last attempt.
    """
    n_tasks = int(stage.get("n_tasks") or len(tasks) or 1)
    for path, data in _read_sidecars(out_dir, stage):
        task = _sidecar_task(path, data, stage.get("genes_per_task"), n_tasks)
        if task is None and len(tasks) == 1:
            task = next(iter(tasks))
        if task not in tasks:
            continue
        attempts = tasks[task].attempts
        ids = [str(data[k]) for k in ("array_job_id", "job_id") if data.get(k) not in (None, "")]
        exact = [a for a in attempts if a.job_id is not None and a.job_id in ids]
        if exact:
            exact[-1].sidecar = data
            continue
        own = next((int(i) for i in ids if i.isdigit()), None)
        numbered = [a for a in attempts if a.job_id is not None and a.job_id.isdigit()]
        if own is None or not numbered:
            attempts[-1].sidecar = data
            continue
        earlier = [a for a in numbered if int(a.job_id) <= own]
        if earlier:
            max(earlier, key=lambda a: int(a.job_id)).sidecar = data
        else:
            review.stale_sidecars += 1
    if review.stale_sidecars:
        review.notes.append(
            f"{review.stale_sidecars} sidecar(s) come from jobs older than this run's: ignored"
        )


def quantile(values: list[int], q: float) -> int | None:
    return int(np.quantile(np.asarray(values, dtype=float), q)) if values else None


def round_request(n_bytes: float, scheduler: str, slots: int = 1) -> tuple[int, str]:
    """Round a request up to the scheduler's units: (total bytes, request text).

    Per slot (SGE h_vmem is per slot; SLURM ``--mem`` is per node, i.e. total): up to a
    multiple of 64 MiB below 4 GiB, 256 MiB below 64 GiB, 1 GiB above.
    """
    slots = max(1, int(slots))
    per_unit = n_bytes / slots if scheduler == "sge" else n_bytes
    step = 64 * MiB if per_unit < 4 * GiB else 256 * MiB if per_unit < 64 * GiB else GiB
    rounded = max(step, int(math.ceil(per_unit / step)) * step)
    size = f"{rounded // GiB}G" if rounded % GiB == 0 else f"{rounded // MiB}M"
    if scheduler == "sge":
        text = f"-l h_vmem={size}" + (f" -pe smp {slots}" if slots > 1 else "")
        return rounded * slots, text
    if scheduler == "slurm":
        return rounded, f"--mem={size}"
    return rounded, size


def summarize_stage(review: StageReview, margin: float = DEFAULT_MARGIN, q: float = DEFAULT_QUANTILE) -> dict[str, Any]:
    """The per-stage row: counts, requested, estimate, used statistics, recommendation."""
    tasks = review.tasks
    finals = [t.final for t in tasks]
    used = [u for u in (t.best("used_bytes") for t in tasks) if u]
    peak = [p for p in (t.best("peak_rss_bytes") for t in tasks) if p]
    oom_attempts = [a for t in tasks for a in t.attempts if a.oom]
    requests = [a.requested_bytes for t in tasks for a in t.attempts if a.requested_bytes]
    firsts = [t.attempts[0].requested_bytes for t in tasks if t.attempts and t.attempts[0].requested_bytes]
    basis, basis_values = _need(review, tasks)
    efficiency = [
        a.used_bytes / a.requested_bytes for a in finals if a.used_bytes and a.requested_bytes
    ]
    error = [a.rss_bytes / review.estimate_bytes for a in finals if a.rss_bytes and review.estimate_bytes]
    ratios = calibration_ratios(review)
    walls = [a.elapsed_s for a in finals if a.elapsed_s is not None]
    limits = [a.time_limit_s for a in finals if a.time_limit_s]
    used_time = [a.elapsed_s / a.time_limit_s for a in finals if a.elapsed_s is not None and a.time_limit_s]
    recommended, request_text, why = _recommend(review, basis_values, oom_attempts, tasks, margin=margin, q=q)
    statuses = [a.status for a in finals]
    return {
        "stage": review.stage,
        "title": review.title,
        "scheduler": review.scheduler,
        "slots": review.slots,
        "tasks": len(tasks),
        "done": statuses.count("done"),
        "failed": statuses.count("failed") + statuses.count("oom"),
        "oom_killed": len(oom_attempts),
        "retried": sum(1 for t in tasks if len(t.attempts) > 1),
        "pending": statuses.count("pending") + statuses.count("running"),
        "unknown": statuses.count("unknown"),
        "requested_bytes": max(requests) if requests else review.requested_bytes,
        "initial_requested_bytes": min(firsts) if firsts else review.requested_bytes,
        "estimate_bytes": review.estimate_bytes,
        "raw_estimate_bytes": review.raw_estimate_bytes,
        "calibration_factor": review.calibration_factor,
        "used_metric": _used_metric(tasks),
        "used_max_bytes": max(used) if used else None,
        "used_median_bytes": int(np.median(used)) if used else None,
        "used_p95_bytes": quantile(used, 0.95),
        "peak_rss_max_bytes": max(peak) if peak else None,
        "peak_rss_median_bytes": int(np.median(peak)) if peak else None,
        "peak_rss_p95_bytes": quantile(peak, 0.95),
        "efficiency_median": round(float(np.median(efficiency)), 4) if efficiency else None,
        "efficiency_max": round(max(efficiency), 4) if efficiency else None,
        "estimate_error_median": round(float(np.median(error)), 4) if error else None,
        "estimate_error_max": round(max(error), 4) if error else None,
        "calibration_ratio_n": len(ratios),
        "wall_max_s": max(walls) if walls else None,
        "wall_median_s": float(np.median(walls)) if walls else None,
        "time_limit_max_s": max(limits) if limits else None,
        "time_limit_min_s": min(limits) if limits else None,
        "wall_over_time_limit_max": round(max(used_time), 4) if used_time else None,
        "recommendation_basis": basis,
        "recommended_bytes": recommended,
        "recommended_request": request_text,
        "recommendation_reason": why,
        "notes": list(review.notes),
    }


def _need(review: StageReview, tasks: list[TaskReview]) -> tuple[str | None, list[int]]:
    """Per task the memory the scheduler must grant, and a description of where it comes from.

    The accounting's used figure (SLURM MaxRSS, SGE maxvmem), else the sidecar's peak
    RSS. Under SGE, h_vmem limits virtual memory, and a memfit stage budgets
    ``VIRTUAL_OVERHEAD_BYTES`` of it beyond its RSS: the need is at least peak RSS + that.
    """
    values, sources = [], set()
    for task in tasks:
        used, rss = task.best("used_bytes"), task.best("rss_bytes")
        need = used or rss
        source = "accounting" if used else "sidecar peak RSS"
        if review.scheduler == "sge" and rss and rss + VIRTUAL_OVERHEAD_BYTES > (used or 0):
            need, source = rss + VIRTUAL_OVERHEAD_BYTES, "sidecar peak RSS + virtual overhead"
        if need:
            values.append(need)
            sources.add(source)
    return (" / ".join(sorted(sources)) or None), values


def _used_metric(tasks: list[TaskReview]) -> str | None:
    for task in tasks:
        for attempt in task.attempts:
            if attempt.accounting and attempt.accounting.used_metric:
                return attempt.accounting.used_metric
    return None


def _recommend(
    review: StageReview,
    values: list[int],
    oom_attempts: list[AttemptReview],
    tasks: list[TaskReview],
    *,
    margin: float,
    q: float,
) -> tuple[int | None, str | None, str | None]:
    failing = max((a.requested_bytes for a in oom_attempts if a.requested_bytes), default=0)
    unresolved = any(t.final.oom for t in tasks)
    if not values and not failing:
        return None, None, None
    target, why = 0.0, ""
    if values:
        target, why = quantile(values, q) * margin, f"p{round(q * 100)} used x {margin:g}"
        if oom_attempts:
            target, why = max(values) * margin, f"max used x {margin:g} (a task was OOM-killed)"
    if failing:
        floor = failing * 2 if unresolved else failing * 1.05
        if target <= floor:
            target = floor
            why = (
                "2 x the OOM-killed request (the task never finished: its real need is unknown)"
                if unresolved else "above the OOM-killed request"
            )
    total, text = round_request(target, review.scheduler, review.slots)
    return total, text, why


def calibration_ratios(review: StageReview) -> list[float]:
    """Per task peak RSS / raw estimate, for tasks whose final attempt finished well.

    The raw estimate is the task's own (``task_raw_estimate_bytes``: sized from upstream
    counts), else the manifest's ``raw_estimate_bytes`` (before any calibration); without
    either, the sidecar's estimate divided by the factor it was made with.
    """
    ratios = []
    for task in review.tasks:
        final = task.final
        if final.status != "done" or not final.rss_bytes:
            continue
        raw = review.task_raw_estimates.get(str(task.task)) or review.raw_estimate_bytes
        if not raw and final.sidecar and final.sidecar.get("estimate_bytes"):
            params = (final.sidecar.get("estimate") or {}).get("params") or {}
            raw = final.sidecar["estimate_bytes"] / float(params.get("calibration_factor") or 1.0)
        if raw:
            ratios.append(final.rss_bytes / raw)
    return ratios


def review_stages(
    manifest: Mapping[str, Any],
    out_dir: Path | None,
    records: Iterable[TaskAccounting],
) -> list[StageReview]:
    """Review every stage of a manifest against accounting records and sidecars."""
    scheduler = manifest["scheduler"]
    accounting = _index_accounting(records)
    return [
        review_stage(stage_id, stage, scheduler, out_dir, accounting)
        for stage_id, stage in manifest["stages"].items()
    ]


def jobs_manifest(job_ids: Iterable[str], scheduler: str) -> dict[str, Any]:
    """A manifest-like view of arbitrary jobs (``--jobs``): one pseudo-stage per job id
    (``123``, or ``123_4`` / ``123_[2-5]`` for some tasks of an array)."""
    stages = {}
    for label in job_ids:
        job_id, _, task = str(label).partition("_")
        stages[str(label)] = {"attempts": [{"attempt": 1, "job_id": job_id, "tasks": task.strip("[]") or None}]}
    return {"manifest_version": MANIFEST_VERSION, "scheduler": scheduler, "stages": stages}


#: Accounting of tasks that ended longer ago than this (seconds) is taken as final.
RECENT_END_S = 300.0


def _recent(stamp: Any, now: datetime, within_s: float) -> bool:
    try:
        when = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return (now - when).total_seconds() <= within_s


def unsettled_tasks(manifest: Mapping[str, Any], records: Iterable[TaskAccounting],
                    within_s: float = RECENT_END_S) -> list[str]:
    """Labels (``123_4``) of tasks the manifest says ended in the last ``within_s`` seconds (their
    attempt was finalised, the task not cancelled) whose accounting record is missing or not final."""
    accounting = _index_accounting(records)
    now = datetime.now(timezone.utc)
    waiting = []
    for stage in manifest.get("stages", {}).values():
        if stage.get("cancelled"):
            continue
        finalised = {f.get("attempt") for f in stage.get("finalised", [])
                     if isinstance(f, Mapping) and _recent(f.get("time"), now, within_s)}
        cancelled = set(stage.get("cancelled_tasks", []))
        for number, attempt in enumerate(stage.get("attempts", []), start=1):
            job_id = str(attempt.get("job_id") or "")
            if not job_id or int(attempt.get("attempt") or number) not in finalised:
                continue
            pairs = _attempt_records(attempt, stage.get("n_tasks"), accounting.get(job_id, []))
            for task, record in pairs:
                if task not in cancelled and (record is None or not record.settled):
                    waiting.append(f"{job_id}_{task}" if len(pairs) > 1 else job_id)
    return waiting


def unknown_job_ids(manifest: Mapping[str, Any], records: Iterable[TaskAccounting]) -> list[str]:
    """Job ids of the manifest that the accounting does not know."""
    known = {r.job_id for r in records}
    return [j for j in manifest_job_ids(manifest) if j not in known]


def pipeline_margin(manifest: Mapping[str, Any]) -> float:
    """Margin for a pipeline run: 1 / the memfit safety factor the stages ran with.

    A memfit stage plans its work for safety × its limit, so a request that lets it do
    again what it did must be the peak divided by that safety (the drivers' rule too).
    """
    safety = (manifest.get("parameters") or {}).get("mem_safety") or SAFETY_SCHEDULER
    try:
        safety = float(safety)
    except (TypeError, ValueError):
        safety = SAFETY_SCHEDULER
    return round(1.0 / safety, 4) if 0 < safety <= 1 else 1.0 / SAFETY_SCHEDULER


def oom_exit_codes(with_manifest: bool) -> tuple[int, ...]:
    """Exit codes that mean "out of memory": memfit stages' code, only for pipeline runs."""
    return (EXIT_OUT_OF_MEMORY,) if with_manifest else ()
