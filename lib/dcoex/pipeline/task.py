"""Run one task of a stage inside a job (or locally): ``python -m dcoex.pipeline.task``.

Runs the stage's command (from the run manifest) in this process, writes a status file
``OUT_DIR/.dcoex/status/<stage>/<task>.a<attempt>.json`` and maps the exit status so a
stage never exits 99 or 100 (requeue / error state under SGE). Under SGE, a task that
succeeds releases the user hold of the same task of the next per-gene stage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from dcoex.genes import task_id_from_env
from dcoex.pipeline.stages import PER_GENE_CHAIN, STAGES, is_array
from hpc.errors import EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY, write_refused_message
from hpc.manifest import ManifestError, latest_attempt, now_iso, read_manifest, state_dir, write_json_atomic

#: Exit statuses SGE reserves (99: requeue, 100: error state); mapped to 1.
SGE_RESERVED = (99, 100)
#: Testing knob: ``DCOEX_TEST_LINGER_<STAGE>=S`` (e.g. ``DCOEX_TEST_LINGER_02A=200``) keeps the
#: first attempt's tasks of that stage alive S seconds after they wrote their final status, so a
#: short time limit kills a task that has finished (tests/test_cluster_faults.py).
LINGER_ENV = "DCOEX_TEST_LINGER_"


def status_path(out_dir: Path, stage: str, task: int | None, attempt: int) -> Path:
    return state_dir(out_dir) / "status" / stage / f"{task if task is not None else 1}.a{attempt}.json"


def parse_tasks(text: str | None) -> set[int] | None:
    if not text:
        return None
    tasks: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        tasks.update(range(int(a), int(b or a) + 1))
    return tasks


def job_id_from_env() -> str:
    return os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID") or os.environ.get("JOB_ID") or "local"


def run_stage(argv: list[str]) -> int:
    """Run ``[python, -m, module, args...]`` in this process; return its exit status."""
    from hpc.cli import run_command

    try:
        module = importlib.import_module(f"{argv[2]}.cli")
    except MemoryError:
        print(f"dcoex task: out of memory while importing {argv[2]}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except Exception as exc:  # noqa: BLE001 - e.g. a shared library that cannot be mapped under h_vmem
        text = str(exc).lower()
        if isinstance(exc, (ImportError, OSError)) and ("memory" in text or "failed to map" in text
                                                       or (_address_space_limited() and "shared object" in text)):
            print(f"dcoex task: out of memory while importing {argv[2]}: {exc}", file=sys.stderr)
            return EXIT_OUT_OF_MEMORY
        traceback.print_exc()
        print(f"dcoex task: cannot import {argv[2]}: {exc}", file=sys.stderr)
        return 1
    try:
        run_command(module.main, argv[3:])
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def _array_spanning(stage_entry: dict, task: int) -> dict | None:
    """The last attempt whose SGE array range (``-t min-max``) holds ``task`` although its task
    list skips it (a resume with gaps): that array task exists, held, and must be released to
    pass the chain on."""
    for attempt in reversed(stage_entry.get("attempts", [])):
        tasks = attempt.get("task_list")
        if tasks and min(tasks) <= task <= max(tasks):
            return attempt
    return None


def release_successor(out_dir: Path, stage: str, task: int) -> None:
    """SGE: release task ``task`` of the next per-gene stage (held with -h)."""
    manifest = read_manifest(out_dir)
    if manifest.get("scheduler") != "sge" or stage not in PER_GENE_CHAIN:
        return
    order = manifest.get("stage_order", [])
    later = [s for s in order[order.index(stage) + 1:]] if stage in order else []
    if not later or later[0] not in PER_GENE_CHAIN:
        return
    attempt = latest_attempt(manifest["stages"][later[0]], task) or _array_spanning(manifest["stages"][later[0]], task)
    if attempt is None:
        return
    from hpc.schedulers import SubmitError, get_scheduler

    try:
        get_scheduler("sge").release(attempt["job_id"], task)
    except SubmitError as exc:  # the finaliser releases it too
        print(f"dcoex task: could not release {later[0]} task {task}: {exc}", file=sys.stderr)


def resize_after_02a(out_dir: Path, task: int) -> None:
    """Size this task's 02b and 03 requests from the edges 02a found (before they can start:
    this task has not ended, and under SGE its successor is still held)."""
    from dcoex.pipeline.resize import resize_successors
    from hpc.schedulers import SubmitError

    try:
        for line in resize_successors(out_dir, task):
            print(f"dcoex task: {line}", flush=True)
    except (OSError, ValueError, ManifestError, SubmitError) as exc:  # the planned requests stay
        print(f"dcoex task: could not resize the 02b/03 tasks of task {task}: {exc}", file=sys.stderr)


def write_status(path: Path, record: dict) -> bool:
    """Write the task's status file; False (after one line on stderr) if the file system
    refuses the write (full, read-only), so the task ends with an exit status, not a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
    except Exception as exc:  # noqa: BLE001 - OSError, or InputError raised from one (a folder)
        refused = write_refused_message(exc)
        if refused is None and not isinstance(exc, FileNotFoundError):
            raise
        print(f"dcoex task: error: {refused or f'cannot write {path}: the output folder was removed'}",
              file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcoex.pipeline.task")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--stage", required=True, choices=sorted(STAGES))
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--task", type=int, default=None, help="array task id (default: from the scheduler)")
    parser.add_argument("--only-tasks", default=None, help="run only these task ids, e.g. 2,5-7")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    try:
        manifest = read_manifest(out)
        entry = manifest["stages"][args.stage]
    except (OSError, ValueError, KeyError, ManifestError) as exc:
        print(f"dcoex task: error: {out}: no run of stage {args.stage} in its run manifest "
              f"({getattr(exc, 'strerror', None) or exc}): the output folder was deleted, replaced or made "
              "unreadable while this job was queued; nothing was run", file=sys.stderr)
        return 2
    array = is_array(args.stage)  # per gene, or over the stage's own parts: a task id
    task = (args.task if args.task is not None else task_id_from_env()) if array else None
    only = parse_tasks(args.only_tasks)
    if only is not None and task not in only:
        # an SGE array covers a range: ids outside the attempt's list only pass their hold on
        print(f"dcoex task: stage {args.stage} task {task} is not part of this attempt; nothing to do")
        if task is not None:
            release_successor(out, args.stage, task)
        return 0
    if array and task is not None:
        os.environ["DCOEX_TASK_ID"] = str(task)
    command = list(entry["stage_command"])
    if array and task is not None:
        command += ["--task-id", str(task)]
    status = status_path(out, args.stage, task, args.attempt)
    record = {"stage": args.stage, "task": task, "attempt": args.attempt, "job_id": job_id_from_env(),
              "host": socket.gethostname(), "started": now_iso(), "state": "running"}
    if not write_status(status, record):
        return EXIT_BAD_INPUT
    print(f"dcoex task: stage {args.stage} task {task} attempt {args.attempt} on {record['host']}: "
          + " ".join(command), flush=True)
    t0 = time.time()
    code = run_stage(command)
    if code in SGE_RESERVED:
        print(f"dcoex task: stage exited {code}; reported as 1 (99/100 are reserved by SGE)", file=sys.stderr)
        code = 1
    state = "ok" if code == 0 else ("oom" if code == EXIT_OUT_OF_MEMORY else "failed")
    record.update(ended=now_iso(), wall_s=round(time.time() - t0, 3), exit=code, state=state)
    if not write_status(status, record):
        return code or EXIT_BAD_INPUT
    print(f"dcoex task: stage {args.stage} task {task} {state} (exit {code})", flush=True)
    if code == 0 and task is not None and args.stage == "02a":
        resize_after_02a(out, task)
    if code == 0 and task is not None:
        release_successor(out, args.stage, task)
    linger = os.environ.get(LINGER_ENV + args.stage.upper())
    if linger and args.attempt == 1:
        print(f"dcoex task: {LINGER_ENV}{args.stage.upper()}: staying {linger} s (testing knob)", flush=True)
        time.sleep(float(linger))
    return code


def _address_space_limited() -> bool:
    """Whether the process runs under an address-space limit (SGE h_vmem sets RLIMIT_AS): a
    shared library that cannot be loaded there (llvmlite's names no reason) is the limit."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return soft != resource.RLIM_INFINITY


if __name__ == "__main__":
    sys.exit(main())
