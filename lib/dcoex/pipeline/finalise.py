"""The finaliser job of a stage attempt: ``python -m dcoex.pipeline.finalise``.

It runs in the scheduler after every task of the attempt has ended (SLURM
``afterany``, SGE ``-hold_jid``), so recovery works when the user has logged out:

* tasks killed for memory (the stage's exit 3, SLURM OUT_OF_MEMORY or "exceeded memory
  limit", SGE ``failed 37``/exit 137) are resubmitted with 1.5x the memory (never less
  than the plan), up to ``--max-retries``, with a finaliser of their own; the dependents
  are re-pointed to the retry (SLURM ``scontrol update`` of the pending task or job,
  whose dependency can otherwise never be satisfied; SGE ``qalter -hold_jid`` for whole
  jobs, while per-task successors stay user-held until the retried task releases them);
* tasks killed at their time limit (SLURM TIMEOUT, SGE h_rt) — also after writing status
  ok: every task's status is reconciled with the scheduler's accounting — are resubmitted
  the same way with 2x the time limit;
* other failures are not retried: they are reported with their log path in the
  manifest, and the same task of the later per-gene stages is cancelled;
* successful tasks release the user hold of their SGE successor (a backstop: the task
  itself releases it first).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from dcoex.pipeline import runlock
from dcoex.pipeline.jobs import finaliser_job, stage_job
from dcoex.pipeline.leftovers import cancel_jobs, chain_jobs
from dcoex.pipeline.stages import PER_GENE_CHAIN, STAGES, dependencies
from dcoex.pipeline.task import status_path
from hpc.errors import InputError
from hpc.manifest import (
    ManifestError,
    attempt_record,
    attempt_request,
    attempt_time_limit,
    latest_attempt,
    locked_manifest,
    manifest_path,
    now_iso,
    read_manifest,
)
from hpc.schedulers import (
    Scheduler,
    SubmitError,
    format_time_limit,
    get_scheduler,
    log_shows_memory_kill,
    time_limit_seconds,
)
from memfit.accounting.records import TaskAccounting
from memfit.units import MiB, format_bytes

RETRY_FACTOR = 1.5
#: A task killed at its time limit is retried with this many times the limit.
TIME_RETRY_FACTOR = 2


def log_path(out: Path, stage: str, job_id: str, task: int | None) -> Path:
    return Scheduler.log_path(out / "logs", stage, job_id, task)


def classify(out: Path, scheduler: Scheduler, stage: str, attempt: dict, *, task: int | None,
             record: TaskAccounting | None = None) -> tuple[str, str]:
    """("ok" | "oom" | "timeout" | "failed", reason) for one task of one attempt: the task's own
    status reconciled with ``record``, what the scheduler's accounting says of it (memfit
    TaskAccounting, or None without accounting). A task killed at its time limit is "timeout"
    even when it had written status ok (it ended past the limit: SLURM's dependents of a
    TIMEOUT task never start); one the scheduler reports as failed or cancelled after it
    wrote ok is "failed", never counted ok."""
    status = status_path(out, stage, task, attempt["attempt"])
    log = log_path(out, stage, attempt["job_id"], task)
    state = ""
    if status.is_file():
        record_state = json.loads(status.read_text())
        state = record_state.get("state", "")
        if state == "oom":
            return "oom", "stage reported out of memory (exit 3)"
        if state == "failed":
            return "failed", f"exit status {record_state.get('exit')}"
    said = f"{scheduler.name.upper()} reports {' '.join((record.state_raw or record.state).split())}" \
        if record is not None else ""
    if record is not None and record.state == "TIMEOUT":
        limit = attempt_time_limit(attempt, task) or "its time limit"
        return "timeout", (f"TIMEOUT: killed at its time limit {limit} ({said}"
                           + (", after the task had written status ok)" if state == "ok" else ")"))
    text = ""
    if state != "ok":
        try:
            text = log.read_text(errors="replace")[-20000:]
        except OSError:
            pass
    if log_shows_memory_kill(text) or (record is not None and record.oom):
        return "oom", "killed by the scheduler for memory" + (f" ({record.oom_reason})" if record and record.oom else "")
    if state == "ok":
        if record is None or not record.finished or record.ok:
            return "ok", ""
        return "failed", f"the task wrote status ok but {said}"
    return "failed", "killed or did not run (no status written" + (f"; {said})" if said else ")")


def attempts_of(entry: dict, task: int | None) -> int:
    return sum(1 for a in entry["attempts"] if a.get("task_list") is None or task in a["task_list"])


def next_stages(manifest: dict, stage: str) -> list[str]:
    order = manifest["stage_order"]
    return order[order.index(stage) + 1:]


def finalise(out: Path, stage: str, attempt_no: int, scheduler: Scheduler | None = None) -> int:
    with locked_manifest(out) as m:
        scheduler = scheduler or get_scheduler(m["scheduler"])
        entry = m["stages"][stage]
        attempt = entry["attempts"][attempt_no - 1]
        cancelled = set(entry.get("cancelled_tasks", []))
        # the attempt's tasks, and those moved to arrays of their own (SGE resize) that it finalises
        owner: dict[int | None, dict] = {}
        for a in [attempt, *(b for b in entry["attempts"] if b.get("split_of") == attempt_no)]:
            listed = a.get("task_list")
            for t in (listed if listed is not None else [None]):
                if t not in cancelled and not entry.get("cancelled"):
                    owner[t] = a
        records: dict = {}
        for job_id in dict.fromkeys(a["job_id"] for a in owner.values()):
            records.update(scheduler.task_records(job_id, [t for t, a in owner.items() if a["job_id"] == job_id]))
        results = {t: classify(out, scheduler, stage, a, task=t, record=records.get(t)) for t, a in owner.items()}
        max_retries = int(m["parameters"]["max_retries"])
        retry = [t for t, (state, _) in results.items()
                 if state in ("oom", "timeout") and attempts_of(entry, t) <= max_retries]
        give_up = {t: why for t, (state, why) in results.items() if state != "ok" and t not in retry}
        later = next_stages(m, stage)
        per_task_next = later[0] if later and stage in PER_GENE_CHAIN and later[0] in PER_GENE_CHAIN else None
        actions: list[str] = []
        for t in retry:
            actions.append(f"stage {stage} task {t or 1}: {results[t][1]}; retrying")
        if retry:
            failed = max(attempt_request(owner[t], t) or 0 for t in retry)
            sized = [int((entry.get("task_requests") or {}).get(str(t), 0)) for t in retry]
            failed_time = max((attempt_time_limit(owner[t], t) or entry["time_limit"] for t in retry),
                              key=time_limit_seconds)
            try:
                _resubmit(m, scheduler, out, stage, retry=retry, kinds={results[t][0] for t in retry},
                          per_task_next=per_task_next, later=later, actions=actions,
                          failed_bytes=failed, floor_bytes=max([int(entry["requested_bytes"]), *sized]),
                          failed_time=failed_time)
            except SubmitError as exc:
                for t in retry:
                    give_up[t] = f"{results[t][1]}; the retry could not be submitted: {exc}"
                retry = []
        if per_task_next and scheduler.per_task_holds:
            nxt = m["stages"][per_task_next]
            for t, (state, _) in results.items():
                a = latest_attempt(nxt, t)
                if state == "ok" and a is not None:
                    try:
                        scheduler.release(a["job_id"], t)
                    except SubmitError:
                        pass  # already released by the task itself
        for t, why in sorted(give_up.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            log = log_path(out, stage, owner[t]["job_id"], t)
            entry.setdefault("failures", []).append(
                {"task": t, "attempt": owner[t]["attempt"], "job_id": owner[t]["job_id"], "reason": why,
                 "log": str(log), "time": now_iso()})
            actions.append(f"FAILED: stage {stage} task {t or 1} ({why}); log {log}")
            _cancel_downstream(m, scheduler, stage, task=t, later=later, actions=actions)
        entry.setdefault("finalised", []).append({"attempt": attempt_no, "time": now_iso(),
                                                 "ok": sum(1 for s, _ in results.values() if s == "ok"),
                                                 "retried": len(retry), "failed": len(give_up)})
        if None in give_up and later:
            m["status"] = "failed"  # everything after a failed single job was cancelled: the run is over
        elif not retry and all(e.get("cancelled") or _finalised(m, s) for s, e in m["stages"].items()):
            # the last finaliser of the chain (stages need not wait for each other: 07 beside 02a)
            failed = any(e.get("failures") for e in m["stages"].values())
            m["status"] = "failed" if failed else "complete"
        if stage == "02a" and not retry and m.get("status") not in ("complete", "failed"):
            _check_disk_after_02a(m, scheduler, out, later=later, actions=actions)
    if m.get("status") in ("complete", "failed"):
        runlock.release(out, job_ids=runlock.manifest_job_ids(m))  # the chain is over: the folder is free
    for line in actions:
        print(f"dcoex finalise {stage}: {line}")
    print(f"dcoex finalise {stage} attempt {attempt_no}: "
          f"{sum(1 for s, _ in results.values() if s == 'ok')} ok, {len(retry)} retried, {len(give_up)} failed")
    return 0


def _resubmit(m: dict, scheduler: Scheduler, out: Path, stage: str, *, retry: list, kinds: set[str],
              per_task_next: str | None, later: list[str], actions: list[str], failed_bytes: int,
              floor_bytes: int, failed_time: str) -> None:
    """Submit the retry of ``retry`` tasks, its finaliser, and re-point what waited on the failed
    attempt. ``kinds`` ("oom", "timeout"): out of memory gets 1.5x the memory the tasks had
    (``failed_bytes``, the largest), at least ``floor_bytes`` (the plan, and the tasks' requests
    sized from 02a's counts); a time-limit kill 2x the time limit the tasks had (``failed_time``, the
    longest, H:MM:SS; a task's own when it was sized from 02a's counts); one job retries both kinds."""
    entry = m["stages"][stage]
    new_attempt = len(entry["attempts"]) + 1
    request = failed_bytes
    if "oom" in kinds:
        request = max(int(math.ceil(request * RETRY_FACTOR / MiB)) * MiB, floor_bytes)
    time_limit = failed_time
    if "timeout" in kinds:
        time_limit = format_time_limit(TIME_RETRY_FACTOR * time_limit_seconds(time_limit))
    reason = "+".join(k for k in ("oom", "timeout") if k in kinds) + "-retry"
    task_list = None if retry == [None] else sorted(retry)
    params = m["parameters"]
    job = stage_job(entry, stage, out, attempt=new_attempt, tasks=task_list, request_bytes=request,
                    mem_safety=params["mem_safety"], queue=params.get("queue"), account=params.get("account"),
                    only_tasks=task_list if scheduler.name == "sge" and task_list else None, time_limit=time_limit)
    job_id, argv = scheduler.submit(job)
    record = attempt_record(new_attempt, job_id, task_list, requested=request,
                            request=scheduler.request_string(request, entry["slots"]), argv=argv, reason=reason,
                            time_limit=time_limit)
    fin = finaliser_job(scheduler, stage, out, attempt=new_attempt, after=job_id, mem_safety=params["mem_safety"],
                        queue=params.get("queue"), account=params.get("account"))
    try:
        fin_id, fin_argv = scheduler.submit(fin)
    except SubmitError:
        scheduler.cancel(job_id)
        raise
    record.update(finaliser_job_id=fin_id, finaliser_command=fin_argv)
    entry["attempts"].append(record)
    actions.append(f"resubmitted {stage} tasks {record['tasks'] or '1'} as job {job_id} with "
                   f"{record['request']}, time limit {time_limit} (attempt {new_attempt}, {reason}), "
                   f"finaliser {fin_id}")
    if per_task_next and not scheduler.per_task_holds:
        # SLURM: the successor task waits for a job that failed ("DependencyNeverSatisfied")
        nxt = m["stages"][per_task_next]
        for t in task_list or []:
            a = latest_attempt(nxt, t)
            if a is not None and t not in nxt.get("cancelled_tasks", []):
                try:
                    scheduler.repoint_task(a["job_id"], t, job_id)
                except SubmitError as exc:
                    actions.append(f"could not re-point {per_task_next} task {t}: {exc}")
    for dependent in later:
        after = dependencies(dependent, m["stage_order"])
        if stage not in after or dependent == per_task_next:
            continue
        a = latest_attempt(m["stages"][dependent], None)
        if a is None:
            continue
        # the retry's finaliser, and the other stages it waits for whose last attempt is not finalised yet
        waits = [fin_id if u == stage else _last_finaliser(m, u) for u in after]
        waits = [j for u, j in zip(after, waits) if j and (u == stage or not _finalised(m, u))]
        try:
            scheduler.repoint_job(a["job_id"], waits)
        except SubmitError as exc:
            actions.append(f"could not re-point stage {dependent} (job {a['job_id']}): {exc}")
            continue
        actions.append(f"stage {dependent} (job {a['job_id']}) now waits for finaliser(s) {', '.join(waits)}")


def _last_finaliser(m: dict, stage: str) -> str | None:
    attempts = m["stages"][stage]["attempts"]
    return attempts[-1].get("finaliser_job_id") if attempts else None


def _finalised(m: dict, stage: str) -> bool:
    """The last attempt of ``stage`` has been finalised (its finaliser job is done or ending)."""
    entry = m["stages"][stage]
    # a task moved to an array of its own (SGE resize) is finalised by its root attempt's finaliser
    own = [a.get("attempt", i) for i, a in enumerate(entry["attempts"], start=1) if a.get("reason") != "resize"]
    last = own[-1] if own else len(entry["attempts"])
    return any(f.get("attempt") == last for f in entry.get("finalised", []))


def _check_disk_after_02a(m: dict, scheduler: Scheduler, out: Path, *, later: list[str], actions: list[str]) -> None:
    """Check again, from 02a's real counts, that the outputs still to be written fit on the
    output folder's file system; when they cannot, and the run was not started with
    ``--ignore-disk-check``, cancel the later stages (the run fails with the numbers)."""
    from dcoex.pipeline.disk import check_after_02a

    try:
        record, refusal = check_after_02a(out, m, stages=later)
    except (OSError, ValueError, InputError) as exc:
        actions.append(f"disk not checked after 02a: {exc}")
        return
    if record is None:
        return
    m["stages"]["02a"]["disk_check"] = record
    actions.append(f"disk after 02a: {format_bytes(record['needed_bytes'])} still to write, "
                   f"{format_bytes(record['free_bytes'])} free")
    if refusal is None or record["ignored"]:
        return
    m["stages"]["02a"].setdefault("failures", []).append({"task": None, "reason": refusal, "time": now_iso()})
    actions.append(f"FAILED: {refusal}")
    _cancel_downstream(m, scheduler, "02a", task=None, later=later, actions=actions)
    m["status"] = "failed"


def _cancel_downstream(m: dict, scheduler: Scheduler, stage: str, *, task: int | None, later: list[str],
                       actions: list[str]) -> None:
    """Cancel what can no longer run: the same task of later per-gene stages, or everything after a
    single-job stage. A collect stage still runs on the genes that completed.

    Jobs are cancelled last stage first, each finaliser before its stage job: cancelling a job
    satisfies its dependents' holds (SGE ``-hold_jid``, SLURM ``afterany``), so a dependent still
    queued at that moment (the stage's finaliser) could otherwise start before its own cancel."""
    for s in reversed(later):
        nxt = m["stages"][s]
        if task is not None and STAGES[s].per_gene and stage in PER_GENE_CHAIN:
            a = latest_attempt(nxt, task)
            if a is None or task in nxt.get("cancelled_tasks", []):
                continue
            try:
                scheduler.cancel(a["job_id"], task)
            except SubmitError as exc:
                actions.append(f"could not cancel {s} task {task}: {exc}")
            nxt.setdefault("cancelled_tasks", []).append(task)
            actions.append(f"cancelled {s} task {task} (job {a['job_id']})")
        elif task is None:
            for a in reversed(nxt["attempts"]):
                for job_id in (a.get("finaliser_job_id"), a["job_id"]):
                    if job_id:
                        try:
                            scheduler.cancel(job_id)
                        except SubmitError:
                            pass
            nxt["cancelled"] = True
            actions.append(f"cancelled stage {s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcoex.pipeline.finalise")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--stage", required=True, choices=sorted(STAGES))
    parser.add_argument("--attempt", type=int, default=1)
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if not manifest_path(out).is_file():
        return abandon(out, args.stage, f"{manifest_path(out)} is missing (the output folder was deleted or "
                                        "replaced while this chain was queued)")
    try:
        return finalise(out, args.stage, args.attempt)
    except OSError as exc:
        return abandon(out, args.stage, f"cannot update the run in {out} ({exc.strerror or exc}; read-only or removed?)")


def abandon(out: Path, stage: str, why: str) -> int:
    """The chain cannot go on: say why, cancel its jobs still queued (so none waits for ever), exit 1."""
    print(f"dcoex finalise {stage}: error: {why}; cancelling the chain's remaining jobs", flush=True)
    scheduler = "slurm" if os.environ.get("SLURM_JOB_ID") else ("sge" if os.environ.get("JOB_ID") else "")
    own = os.environ.get("SLURM_JOB_ID") or os.environ.get("JOB_ID")
    try:
        manifest = read_manifest(out)
    except ManifestError:  # missing or unreadable: cancel by the lock and by name
        manifest = None
    try:
        jobs = [j for j in chain_jobs(out, scheduler, runlock.manifest_job_ids(manifest)) if j.job_id != own]
    except SubmitError as exc:
        print(f"dcoex finalise {stage}: could not list the queue: {exc}")
        return 1
    for line in cancel_jobs(jobs, wait_s=0):
        print(f"dcoex finalise {stage}: {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
