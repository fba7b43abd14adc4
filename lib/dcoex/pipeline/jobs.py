"""Job scripts and the chain of submissions: stages, per-task dependencies, finalisers."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from dcoex.genes import index_entry
from dcoex.pipeline.plan import RunPlan, StagePlan, first_request
from dcoex.pipeline.sizing import scaled_request, worth_resizing, worth_retiming
from dcoex.pipeline.stages import PER_GENE_CHAIN, STAGES, dependencies
from dcoex.pipeline.task import LINGER_ENV
from hpc.manifest import (
    RunManifest,
    StageEntry,
    attempt_record,
    locked_manifest,
    manifest_path,
    new_manifest,
    now_iso,
    state_dir,
    write_json_atomic,
)
from hpc.schedulers import MIN_REQUEST_ENV, JobSpec, Scheduler, SubmitError, compress_tasks, thread_env

#: Peak RSS of a finaliser job (a small Python process that reads JSON and runs qsub/sbatch;
#: measured 17 MiB) with room to spare.
FINALISER_BYTES = 128 << 20


def job_tag(out_dir: Path) -> str:
    """A short name part without spaces or colons, from the output folder."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", out_dir.name)[:24] or "run"


def _tool_dirs() -> str:
    """Folders of the scheduler commands on the submit host (for the jobs' PATH)."""
    dirs: list[str] = []
    for tool in ("sbatch", "scontrol", "sacct", "qsub", "qrls", "qalter", "qacct"):
        found = shutil.which(tool)
        if found and os.path.dirname(found) not in dirs:
            dirs.append(os.path.dirname(found))
    return ":".join(dirs) or "/usr/bin"


def write_script(path: Path, module: str, args: list[str], *, slots: int, mem_safety: float,
                 write: bool = True) -> Path:
    """A bash job script: thread counts = slots, no HDF5 file locking, absolute Python."""
    lines = [
        "#!/bin/bash",
        "# written by dcoex.pipeline; runs one task of the pipeline",
        "export " + " ".join(f"{var}={value}" for var, value in thread_env(slots).items()),
        "export HDF5_USE_FILE_LOCKING=FALSE",
        f"export MEMFIT_SAFETY={mem_safety:g}",
        'export TMPDIR="${TMPDIR:-${TMP:-/tmp}}"',
        # finalisers and tasks call the scheduler's commands: SGE jobs do not inherit PATH
        f'export PATH={shlex.quote(_tool_dirs())}"${{PATH:+:$PATH}}"',
        "export PYTHONUNBUFFERED=1",
        *([f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}"] if os.environ.get("PYTHONPATH") else []),
        # testing knob (dcoex.pipeline.task) and the request floor (resizes in jobs): SGE jobs do
        # not inherit the environment
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(os.environ.items())
          if k.startswith(LINGER_ENV) or k == MIN_REQUEST_ENV),
        "exec " + shlex.join([sys.executable, "-m", module, *args]),
    ]
    if not write:  # dry run: name the script, write nothing
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def stage_entry(plan: RunPlan, p: StagePlan) -> StageEntry:
    out = Path(plan.options.out_dir)
    spec = STAGES[p.stage]
    if spec.per_gene:
        sidecars = f"{spec.output}/memory/{p.stage}.genes_*.memory.json"
    elif spec.parts is not None:
        sidecars = f"{spec.output}/memory/{p.stage}.perms_*.memory.json"
    else:
        sidecars = f"{spec.output}.memory.json"
    return {
        "genes_per_task": p.genes_per_task, "n_tasks": p.n_tasks, "slots": p.slots, "time_limit": p.time_limit,
        "raw_estimate_bytes": p.raw_estimate.total_bytes, "calibration_factor": p.calibration_factor,
        "minimum_estimate_bytes": p.minimum_estimate.total_bytes, "planned_peak_bytes": p.planned_peak_bytes,
        "estimate": p.estimate.to_dict(), "requested_bytes": p.requested_bytes, "request": p.request,
        "sidecars": sidecars, "stage_command": [sys.executable, "-m", spec.module, *p.argv],
        "gpu_request": plan.options.gpu_request(p.stage),
        "tasks_planned": compress_tasks(p.tasks) if p.tasks is not None else None,
        "output": str(out / spec.output), "attempts": [], "cancelled_tasks": [], "failures": [],
        **({"sizing": p.sizing} if p.sizing else {}),
        **({"task_requests": {str(t): r for t, r in p.task_requests.items()},
            "task_raw_estimate_bytes": {str(t): r for t, r in p.task_raw_estimates.items()}} if p.task_requests else {}),
        **({"test_scale": p.test_scale} if p.test_scale else {}),
        **({"time_limit_bound": p.time_limit_bound} if p.time_limit_bound else {}),
        **({"test_time_scale": p.test_time_scale} if p.test_time_scale else {}),
        **({"task_time_limits": {str(t): v for t, v in p.task_time_limits.items()},
            "task_seconds": {str(t): round(v, 3) for t, v in p.task_seconds.items()}} if p.task_time_limits else {}),
    }


def base_manifest(plan: RunPlan, scheduler: Scheduler) -> RunManifest:
    o = plan.options
    return new_manifest(
        scheduler=scheduler.name, out_dir=o.out_dir,
        parameters=dict(o.stage_params(), genes_per_task=plan.genes_per_task, mem_safety=o.mem_safety,
                        max_retries=o.max_retries, slots=o.slots, queue=o.queue, account=o.account,
                        force=o.force, stages=list(plan.stages), ignore_disk_check=o.ignore_disk_check),
        data_shape={"n_genes": plan.shape.n_genes, "n_samples": plan.shape.n_samples},
        calibration={"file": plan.calibration_file, "factors": plan.factors},
        python=sys.executable, skipped=plan.skipped, stage_order=list(plan.stages),
        stages={s: stage_entry(plan, p) for s, p in plan.stages.items()},
    )


def stage_job(plan_entry: dict, stage: str, out_dir: Path, *, attempt: int, tasks: list[int] | None,
              request_bytes: int, mem_safety: float, queue: str | None, account: str | None,
              only_tasks: list[int] | None = None, write: bool = True, time_limit: str | None = None) -> JobSpec:
    """The job of one attempt of a stage; ``time_limit`` (H:MM:SS) defaults to the stage's."""
    args = ["--out-dir", str(out_dir), "--stage", stage, "--attempt", str(attempt)]
    if only_tasks is not None:
        args += ["--only-tasks", compress_tasks(only_tasks)]
    script = write_script(state_dir(out_dir) / "jobs" / f"{stage}.a{attempt}.sh", "dcoex.pipeline.task", args,
                          slots=plan_entry["slots"], mem_safety=mem_safety, write=write)
    suffix = f"_r{attempt - 1}" if attempt > 1 else ""
    return JobSpec(name=f"dcoex_{stage}{suffix}_{job_tag(out_dir)}", script=script, log=out_dir / "logs",
                   log_stem=stage, mem_bytes=request_bytes, slots=plan_entry["slots"],
                   time_limit=time_limit or plan_entry["time_limit"], tasks=tasks, queue=queue, account=account,
                   gpu=plan_entry.get("gpu_request"))


def finaliser_job(scheduler: Scheduler, stage: str, out_dir: Path, *, attempt: int, after: str, mem_safety: float,
                  queue: str | None, account: str | None, write: bool = True) -> JobSpec:
    script = write_script(state_dir(out_dir) / "jobs" / f"fin-{stage}.a{attempt}.sh", "dcoex.pipeline.finalise",
                          ["--out-dir", str(out_dir), "--stage", stage, "--attempt", str(attempt)], slots=1,
                          mem_safety=mem_safety, write=write)
    return JobSpec(name=f"dcoex_fin{stage}_a{attempt}_{job_tag(out_dir)}", script=script, log=out_dir / "logs",
                   log_stem=f"fin-{stage}", mem_bytes=scheduler.request_bytes(FINALISER_BYTES, 1.0, 1), slots=1, time_limit="01:00:00",
                   after_any=[after], queue=queue, account=account)


def submit_all(plan: RunPlan, scheduler: Scheduler, on_submit: Callable[[str], None] | None = None
               ) -> RunManifest:
    """Write the manifest and job scripts, submit every stage and its finaliser, release the first.

    ``on_submit(job_id)`` is called after each submission (the driver lock records it). Returns
    the manifest. On a submission error, cancels what was already submitted and raises SubmitError.
    """
    o = plan.options
    out = Path(o.out_dir)
    manifest = base_manifest(plan, scheduler)
    submitted: list[str] = []
    ids: dict[str, tuple[str, str]] = {}  # stage -> (job id, finaliser id)
    roots: list[str] = []  # jobs that wait for nothing: held until the manifest lists every job
    planned = list(plan.stages)
    try:
        for s, p in plan.stages.items():
            entry = manifest["stages"][s]
            request = first_request(p)
            gaps = p.tasks is not None and len(p.tasks) != max(p.tasks) - min(p.tasks) + 1
            job = stage_job(entry, s, out, attempt=1, tasks=p.tasks, request_bytes=request, mem_safety=o.mem_safety,
                            queue=o.queue, account=o.account,
                            only_tasks=p.tasks if gaps and scheduler.name == "sge" else None,
                            write=not scheduler.dry_run)
            job.mem_bytes = request
            after = dependencies(s, planned)
            if len(after) == 1 and s in PER_GENE_CHAIN and after[0] in PER_GENE_CHAIN:
                job.per_task_after = ids[after[0]][0]
                job.hold = scheduler.per_task_holds  # SGE: task i is released by its predecessor
            elif after:
                job.after_ok = [ids[u][1] for u in after]
            else:
                job.hold = True  # released once the manifest lists every job
            job_id, argv = scheduler.submit(job)
            submitted.append(job_id)
            if on_submit is not None:
                on_submit(job_id)
            if not after:
                roots.append(job_id)
            record = attempt_record(1, job_id, p.tasks, requested=request,
                                    request=scheduler.request_string(request, p.slots), argv=argv, reason="initial",
                                    time_limit=p.time_limit)
            if p.task_requests and scheduler.name == "slurm":  # tasks sized from 02a counts (a resume)
                own, own_times = _size_tasks(scheduler, job_id, p, request)
                if own:
                    record["task_requests"] = own
                if own_times:
                    record["task_time_limits"] = own_times
            fin = finaliser_job(scheduler, s, out, attempt=1, after=job_id, mem_safety=o.mem_safety, queue=o.queue,
                                account=o.account, write=not scheduler.dry_run)
            fin_id, fin_argv = scheduler.submit(fin)
            submitted.append(fin_id)
            if on_submit is not None:
                on_submit(fin_id)
            record["finaliser_job_id"] = fin_id
            record["finaliser_command"] = fin_argv
            entry["attempts"].append(record)
            ids[s] = (job_id, fin_id)
    except BaseException:  # a refused submission, or an interrupt: leave nothing behind
        for job_id in reversed(submitted if not scheduler.dry_run else []):
            try:
                scheduler.cancel(job_id)
            except SubmitError:
                pass
        raise
    if not scheduler.dry_run:
        keep_history(out)
        with locked_manifest(out) as current:
            current.clear()
            current.update(manifest)
        for job_id in roots:
            scheduler.release(job_id)
    return manifest


def _size_tasks(scheduler: Scheduler, job_id: str, p: StagePlan, request: int) -> tuple[dict[str, int], dict[str, str]]:
    """SLURM: give each task sized from known 02a counts its own request and time limit (the
    array asked ``request`` and ``p.time_limit``, its largest task's); returns the changed
    requests (bytes) and time limits (H:MM:SS) by task id."""
    own: dict[str, int] = {}
    own_times: dict[str, str] = {}
    for t, sized in sorted(p.task_requests.items()):
        if t not in (p.tasks or []):
            continue
        wanted = scaled_request(sized, p.test_scale, p.slots)
        if worth_resizing(request, wanted, in_place=True):
            scheduler.set_task_memory(job_id, t, wanted)
            own[str(t)] = wanted
        limit = p.task_time_limits.get(t)
        if limit and worth_retiming(p.time_limit, limit, in_place=True):
            scheduler.set_task_time(job_id, t, limit)
            own_times[str(t)] = limit
    return own, own_times


def keep_history(out: Path) -> None:
    """Move an earlier run's manifest and task statuses to ``.dcoex/history/`` before a rerun
    replaces them (attempt numbers restart at 1: a stale status must not stand for a new task)."""
    old = manifest_path(out)
    if old.is_file():
        history = state_dir(out) / "history"
        history.mkdir(parents=True, exist_ok=True)
        n = len(list(history.glob("run_manifest.*.json"))) + 1
        old.replace(history / f"run_manifest.{n}.json")
        status = state_dir(out) / "status"
        if status.is_dir():
            status.replace(history / f"status.{n}")
            status.mkdir()


def prepare_out_dir(plan: RunPlan) -> None:
    """Folders, the gene list file the per-gene stages read, and an empty status area."""
    out = Path(plan.options.out_dir)
    for d in (out / "logs", state_dir(out) / "jobs", state_dir(out) / "status"):
        d.mkdir(parents=True, exist_ok=True)
    if plan.options.gene_subset:
        (state_dir(out) / "gene_list.txt").write_text("".join(f"{index_entry(gi)}\n" for gi in plan.universe))
    write_json_atomic(state_dir(out) / "plan.json", {"created": now_iso(), "stages": list(plan.stages)})
