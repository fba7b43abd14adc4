"""Resize the pending 02b and 03 tasks of a reference-gene task once its 02a task has counted
the edges: their memory and their time limit (docs/drivers.md, "Requests from what 02a found").

Called by the task runner of a 02a task that succeeded, before it exits (SLURM starts the
``aftercorr`` successor only then) and before it releases its SGE successor (held until then),
so the tasks it changes have not started:

* SLURM: ``scontrol update JobId=<job>_<task> MinMemoryNode=<MiB>`` and ``TimeLimit=<H:MM:SS>``;
* SGE (``qalter`` changes every pending task of an array, never one): the task moves to an array
  of its own, ``-t i-i``, submitted user-held with the new request (attempt reason ``resize``,
  ``split_of`` the attempt it left); the task is deleted from its old array, whose finaliser is
  made to wait for the new array too (``qalter -hold_jid``) and finalises both. 03 moves before
  02b, so the moved 02b task releases the moved 03 task.

A request or time limit changes when it differs (SLURM), or (SGE) when the sized request is larger
or smaller by more than RESIZE_SLACK or the sized time limit is longer; a moved SGE task takes
both. Every sized request
is recorded in the manifest (``task_requests``, ``task_time_limits``, ``task_seconds``,
``task_edges`` of the stage, and the attempt's ``task_requests`` / ``task_time_limits`` or the
new attempt).
"""

from __future__ import annotations

from pathlib import Path

from dcoex.genes import read_gene_list
from dcoex.pipeline.jobs import stage_job
from dcoex.pipeline.shapes import DataShape, shape_from_h5
from dcoex.pipeline.sizing import (
    EDGE_SIZED,
    request_for,
    scaled_request,
    task_edge_counts,
    task_genes_of,
    time_for,
    worth_resizing,
    worth_retiming,
)
from dcoex.pipeline.stages import STAGES
from hpc.manifest import (
    RunManifest,
    attempt_record,
    attempt_request,
    attempt_time_limit,
    latest_attempt,
    locked_manifest,
    read_manifest,
    state_dir,
)
from hpc.schedulers import Scheduler, SubmitError, compress_tasks, get_scheduler
from memfit.units import format_bytes


def run_shape(out: Path, manifest: RunManifest) -> DataShape:
    """The run's shape and gene names, from its expression store's header."""
    expr = manifest["parameters"].get("expr_h5") or STAGES["00"].output_path(out)
    return shape_from_h5(expr)


def run_universe(out: Path, manifest: RunManifest, shape: DataShape) -> list[int] | None:
    """The run's reference genes (None: all), from the gene list the driver wrote."""
    if not manifest["parameters"].get("gene_subset"):
        return None
    return read_gene_list(state_dir(out) / "gene_list.txt", shape.gene_names)


def resize_successors(out: Path, task: int) -> list[str]:
    """Size task ``task`` of 02b and 03 from the 02a counts of its genes; lines for the log."""
    manifest = read_manifest(out)
    later = [s for s in EDGE_SIZED if s in manifest["stages"]]
    if not later:
        return []
    shape = run_shape(out, manifest)
    params = manifest["parameters"]
    genes = task_genes_of(shape.n_genes, int(params["genes_per_task"]), run_universe(out, manifest, shape), task)
    counts = task_edge_counts(STAGES["02a"].output_path(out), genes, shape.gene_names, params["edge_selection"])
    if counts is None:
        return [f"02a task {task}: an edge count is missing; the requests of its 02b/03 tasks stay as planned"]
    n_edges = max(counts)
    scheduler = get_scheduler(manifest["scheduler"])
    lines = []
    with locked_manifest(out) as m:
        factors = (m.get("calibration") or {}).get("factors") or {}
        for s in reversed(later):  # 03 first: a moved 02b task releases the 03 task it finds
            entry = m["stages"][s]
            req = request_for(s, shape, params, scheduler, factor=factors.get(s, 1.0),
                              safety=params["mem_safety"], slots=entry["slots"], n_edges=n_edges)
            sized = req.requested_bytes
            timed = time_for(s, params, counts, shape=shape,
                             bound=entry.get("time_limit_bound") or entry["time_limit"],
                             scale=entry.get("test_time_scale"))
            entry.setdefault("task_requests", {})[str(task)] = sized
            entry.setdefault("task_raw_estimate_bytes", {})[str(task)] = req.raw.total_bytes
            entry.setdefault("task_edges", {})[str(task)] = n_edges
            entry.setdefault("task_time_limits", {})[str(task)] = timed.time_limit
            entry.setdefault("task_seconds", {})[str(task)] = round(timed.seconds, 3)
            a = latest_attempt(entry, task)
            if scheduler.name == "local" or a is None or entry.get("cancelled") or task in entry.get("cancelled_tasks", []):
                continue
            wanted = scaled_request(sized, entry.get("test_scale") if a["reason"] in ("initial", "resize") else None,
                                    entry["slots"])
            current = attempt_request(a, task) or 0
            current_time = attempt_time_limit(a, task) or entry["time_limit"]
            in_place = scheduler.name == "slurm"
            memory, timing = (worth_resizing(current, wanted, in_place=in_place),
                              worth_retiming(current_time, timed.time_limit, in_place=in_place))
            what = (f"{s} task {task}: {n_edges} edges (largest gene), {sum(counts)} in all -> "
                    f"{scheduler.request_string(wanted, entry['slots'])}, time limit {timed.time_limit}")
            was = f"was {format_bytes(current)}, {current_time}"
            if not memory and not timing:
                lines.append(f"{what}; keeps {scheduler.request_string(current, entry['slots'])}, {current_time}")
                continue
            try:
                if scheduler.name == "slurm":
                    if memory:
                        scheduler.set_task_memory(a["job_id"], task, wanted)
                        a.setdefault("task_requests", {})[str(task)] = wanted
                    if timing:
                        scheduler.set_task_time(a["job_id"], task, timed.time_limit)
                        a.setdefault("task_time_limits", {})[str(task)] = timed.time_limit
                    lines.append(f"{what} ({was}; scontrol update of job {a['job_id']}_{task})")
                elif scheduler.name == "sge":
                    job_id = _move_task(m, scheduler, out, s, a=a, task=task, request=wanted,
                                        time_limit=timed.time_limit)
                    lines.append(f"{what} ({was}; moved from job {a['job_id']} to job {job_id})")
            except SubmitError as exc:
                lines.append(f"{what}: could not resize ({exc}); it keeps {format_bytes(current)}, {current_time}")
    return lines


def _move_task(m: RunManifest, scheduler: Scheduler, out: Path, stage: str, *, a: dict, task: int,
               request: int, time_limit: str) -> str:
    """SGE: task ``task`` of attempt ``a`` becomes an array of its own with ``request`` bytes and
    ``time_limit`` (H:MM:SS)."""
    entry = m["stages"][stage]
    root_no = a.get("split_of", a["attempt"])
    root = entry["attempts"][root_no - 1]
    params = m["parameters"]
    number = len(entry["attempts"]) + 1
    job = stage_job(entry, stage, out, attempt=number, tasks=[task], request_bytes=request,
                    mem_safety=params["mem_safety"], queue=params.get("queue"), account=params.get("account"),
                    only_tasks=[task], time_limit=time_limit)
    job.hold = True  # released by its predecessor task, as the task it replaces
    job_id, argv = scheduler.submit(job)
    record = attempt_record(number, job_id, [task], requested=request,
                            request=scheduler.request_string(request, entry["slots"]), argv=argv, reason="resize",
                            time_limit=time_limit)
    record["split_of"] = root_no
    record["finaliser_job_id"] = root.get("finaliser_job_id")
    waits = [root["job_id"], *(b["job_id"] for b in entry["attempts"] if b.get("split_of") == root_no), job_id]
    try:
        if root.get("finaliser_job_id"):
            scheduler.repoint_job(root["finaliser_job_id"], waits)
        scheduler.cancel(a["job_id"], task)
    except SubmitError:
        scheduler.cancel(job_id)
        raise
    a["task_list"] = [t for t in a["task_list"] if t != task]
    a["tasks"] = compress_tasks(a["task_list"])
    entry["attempts"].append(record)
    return job_id
