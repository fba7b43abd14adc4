"""The drivers' entry point: ``python -m dcoex.pipeline --scheduler slurm|sge [flags]``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dcoex.errors import EXIT_BAD_INPUT, InputError
from dcoex.pipeline import runlock
from dcoex.pipeline.jobs import base_manifest, keep_history, prepare_out_dir, submit_all
from dcoex.pipeline.manifest import locked_manifest
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import RunPlan, make_plan, print_plan
from dcoex.pipeline.schedulers import SubmitError, get_scheduler


def run_local(plan: RunPlan) -> int:
    """Run every planned task here, in order, through the same task runner as the jobs."""
    out = Path(plan.options.out_dir)
    manifest = base_manifest(plan, get_scheduler("local"))
    for entry in manifest["stages"].values():
        entry["attempts"].append({"attempt": 1, "job_id": "local", "tasks": entry["tasks_planned"],
                                  "task_list": None, "requested_bytes": entry["requested_bytes"],
                                  "request": entry["request"], "command": None, "reason": "initial"})
    keep_history(out)
    with locked_manifest(out) as current:
        current.clear()
        current.update(manifest)
    env = dict(os.environ, HDF5_USE_FILE_LOCKING="FALSE", MEMFIT_SAFETY=f"{plan.options.mem_safety:g}")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(plan.options.slots)
    for s, p in plan.stages.items():
        for task in (p.tasks if p.tasks is not None else [None]):
            log = out / "logs" / f"{s}.local.{task or 1}.log"
            argv = [sys.executable, "-m", "dcoex.pipeline.task", "--out-dir", str(out), "--stage", s]
            if task is not None:
                argv += ["--task", str(task)]
            print(f"running stage {s}" + (f" task {task}/{p.n_tasks}" if task is not None else ""), flush=True)
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
        scheduler = get_scheduler(options.scheduler, dry_run=options.dry_run)
        scheduler.require()
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
    if options.dry_run:
        print("dry run: the commands below would be submitted (job ids are placeholders)")
        submit_all(plan, scheduler)
        return 0
    out = Path(options.out_dir)
    try:  # one live chain per folder; an earlier chain's leftovers are cancelled first
        for line in runlock.claim(out, options.scheduler, local=options.local):
            print(line, flush=True)
    except runlock.Busy as exc:
        print(f"run_bootstrap_pipeline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"run_bootstrap_pipeline: error: {options.out_dir}: cannot write ({exc.strerror})", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        prepare_out_dir(plan)
    except OSError as exc:
        runlock.release(out)
        print(f"run_bootstrap_pipeline: error: {options.out_dir}: cannot write ({exc.strerror})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if options.local:
        try:
            return run_local(plan)
        finally:
            runlock.release(out)
    try:
        manifest = submit_all(plan, scheduler, on_submit=lambda job_id: runlock.record_job(out, job_id))
    except SubmitError as exc:
        runlock.release(out)
        print(f"run_bootstrap_pipeline: error: {exc}; nothing was left submitted", file=sys.stderr)
        return EXIT_BAD_INPUT
    runlock.mark_submitted(out)
    for s, entry in manifest["stages"].items():
        a = entry["attempts"][0]
        print(f"stage {s}: job {a['job_id']}" + (f" tasks {a['tasks']}" if a["tasks"] else "")
              + f", finaliser {a['finaliser_job_id']}")
    print(f"manifest: {Path(options.out_dir) / 'run_manifest.json'}; logs: {Path(options.out_dir) / 'logs'}")
    return 0


