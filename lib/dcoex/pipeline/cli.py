"""The drivers' entry point: ``python -m dcoex.pipeline --scheduler slurm|sge [flags]``."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from dcoex.pipeline.jobs import base_manifest, keep_history, prepare_out_dir, submit_all
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import RunPlan, make_plan, print_plan
from hpc.errors import EXIT_BAD_INPUT, InputError
from hpc.manifest import locked_manifest, manifest_path, read_manifest
from hpc.schedulers import SubmitError, get_scheduler, thread_env


def local_commands(plan: RunPlan) -> list[tuple[str, int | None, list[str], Path]]:
    """What ``--local`` runs, in order: (stage, task or None, argv, log file) per task."""
    out = Path(plan.options.out_dir)
    commands = []
    for s, p in plan.stages.items():
        for task in (p.tasks if p.tasks is not None else [None]):
            argv = [sys.executable, "-m", "dcoex.pipeline.task", "--out-dir", str(out), "--stage", s]
            if task is not None:
                argv += ["--task", str(task)]
            commands.append((s, task, argv, out / "logs" / f"{s}.local.{task or 1}.log"))
    return commands


def run_local(plan: RunPlan, *, dry_run: bool = False) -> int:
    """Run every planned task here, in order, through the same task runner as the jobs.

    ``dry_run``: print each command (and its log file) instead, and write nothing."""
    out = Path(plan.options.out_dir)
    commands = local_commands(plan)
    settings = {"HDF5_USE_FILE_LOCKING": "FALSE", "MEMFIT_SAFETY": f"{plan.options.mem_safety:g}",
                **thread_env(plan.options.slots)}
    if dry_run:
        print("dry run: these commands would run here, in order, with "
              + " ".join(f"{k}={v}" for k, v in settings.items()) + " (stdout and stderr to the log named)")
        for _, _, argv, log in commands:
            print(f"{shlex.join(argv)} > {shlex.quote(str(log))} 2>&1")
        return 0
    manifest = base_manifest(plan, get_scheduler("local"))
    for entry in manifest["stages"].values():
        entry["attempts"].append({"attempt": 1, "job_id": "local", "tasks": entry["tasks_planned"],
                                  "task_list": None, "requested_bytes": entry["requested_bytes"],
                                  "request": entry["request"], "command": None, "reason": "initial"})
    keep_history(out)
    with locked_manifest(out) as current:
        current.clear()
        current.update(manifest)
    env = dict(os.environ, **settings)
    for s, task, argv, log in commands:
        n_tasks = plan.stages[s].n_tasks
        print(f"running stage {s}" + (f" task {task}/{n_tasks}" if task is not None else ""), flush=True)
        with open(log, "w") as handle:
            code = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            print(f"run_bootstrap_pipeline: stage {s} task {task or 1} failed (exit {code}): {tail[0]}; "
                  f"log {log}", file=sys.stderr)
            with locked_manifest(out) as m:
                m["status"] = "failed"
            return 1
    with locked_manifest(out) as m:
        m["status"] = "complete"
    print(f"pipeline complete: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    scheduler_name = "slurm"
    if argv[:1] == ["--scheduler"] and len(argv) > 1:
        scheduler_name, argv = argv[1], argv[2:]
    try:
        options = parse_args(argv, scheduler_name)
        if options is None:
            return 0
        if manifest_path(options.out_dir).exists():
            read_manifest(options.out_dir)  # a newer dcoex's run, or a corrupt manifest: not replaced
        scheduler = get_scheduler(options.scheduler, dry_run=options.dry_run)
        scheduler.require(hint="or use --local to run without a scheduler")
        plan = make_plan(options, scheduler)
    except InputError as exc:
        print(f"run_bootstrap_pipeline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SubmitError as exc:
        print(f"run_bootstrap_pipeline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_plan(plan, scheduler)
    if not plan.stages:
        print("nothing to do: every output exists and validates (use --force to recompute)")
        return 0
    if options.dry_run and options.local:
        return run_local(plan, dry_run=True)
    if options.dry_run:
        print("dry run: the commands below would be submitted (job ids are placeholders)")
        submit_all(plan, scheduler)
        return 0
    try:
        prepare_out_dir(plan)
    except OSError as exc:
        print(f"run_bootstrap_pipeline: error: {options.out_dir}: cannot write ({exc.strerror})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if options.local:
        return run_local(plan)
    try:
        manifest = submit_all(plan, scheduler)
    except SubmitError as exc:
        print(f"run_bootstrap_pipeline: error: {exc}; nothing was left submitted", file=sys.stderr)
        return EXIT_BAD_INPUT
    for s, entry in manifest["stages"].items():
        a = entry["attempts"][0]
        print(f"stage {s}: job {a['job_id']}" + (f" tasks {a['tasks']}" if a["tasks"] else "")
              + f", finaliser {a['finaliser_job_id']}")
    print(f"manifest: {manifest_path(options.out_dir)}; logs: {Path(options.out_dir) / 'logs'}")
    return 0
