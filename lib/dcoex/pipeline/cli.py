"""The drivers' entry point: ``python -m dcoex.pipeline --scheduler slurm|sge [flags]``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dcoex.pipeline import runlock
from dcoex.pipeline.jobs import base_manifest, keep_history, prepare_out_dir, submit_all
from dcoex.pipeline.options import parse_args
from dcoex.pipeline.plan import RunPlan, make_plan, print_plan
from dcoex.pipeline.stages import PER_GENE_CHAIN
from hpc.atomic import remove_temporaries
from hpc.errors import EXIT_BAD_INPUT, FILESYSTEM_ERRNOS, InputError, write_refused_message
from hpc.manifest import locked_manifest, manifest_path, now_iso, read_manifest
from hpc.schedulers import SubmitError, get_scheduler, thread_env


class LocalRunStopped(Exception):
    """``--local`` cannot go on: the file system refuses writes (full, read-only). One line, exit 2."""


@dataclass
class LocalFailure:
    """A task that failed under ``--local``: stage, task (None: a single job), exit status
    (negative: killed by that signal), its log and the last line the stage wrote."""

    stage: str
    task: int | None
    code: int
    log: Path
    reason: str

    def line(self) -> str:
        return (f"stage {self.stage} task {self.task or 1}: exit {self.code}"
                + (f" ({self.reason})" if self.reason else "") + f"; log {self.log}")


def _error_line(log: Path) -> str:
    """The line of a task's log that says why it failed: the last ``...: error: ...`` line
    (the stage's own before the task runner's), else the last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace")[-200_000:].splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if re.search(r"^\S+: (internal )?error: ", line)]
    own = [line for line in errors if not line.startswith("dcoex task:")]
    chosen = (own or errors or lines or [""])[-1]
    return chosen[:300]


#: Free space (bytes) below which a task killed by a signal is taken to have filled the disk.
NEARLY_FULL_BYTES = 1 << 20


def _refused_write(log: Path, out: Path, code: int) -> str | None:
    """"no space left on device: PATH" (or quota exceeded, read-only file system) when a failed
    task ran into a file system that refuses every write: the stage's own error line, else the
    HDF5 error text in its log (HDF5 may crash on a full disk before the stage can report it),
    else, for a task killed by a signal, a nearly full output file system."""
    try:
        text = log.read_text(errors="replace")[-200_000:]
    except OSError:
        text = ""
    phrases = "|".join(re.escape(os.strerror(e).lower()) for e in FILESYSTEM_ERRNOS)
    said = re.findall(rf"^(\S+): error: ((?:{phrases})(?:: .*)?)$", text, re.M)
    if said:  # the stage's own line before the task runner's (its status file)
        return next((m for prog, m in reversed(said) if prog != "dcoex task"), said[-1][1])
    for match in reversed(list(re.finditer(r"filename = '([^']*)'[^\n]*?errno = (\d+)", text))):
        if int(match.group(2)) in FILESYSTEM_ERRNOS:
            errno_ = int(match.group(2))
            return write_refused_message(OSError(errno_, os.strerror(errno_), match.group(1)))
    if code < 0:
        try:
            stat = os.statvfs(out)
        except OSError:
            return None
        if stat.f_bavail * stat.f_frsize < NEARLY_FULL_BYTES:
            return f"no space left on device: {out} ({stat.f_bavail * stat.f_frsize} bytes free)"
    return None


def task_argv(out: Path, stage: str, task: int | None) -> list[str]:
    """The command that runs one task here (the same task runner as the jobs)."""
    argv = [sys.executable, "-m", "dcoex.pipeline.task", "--out-dir", str(out), "--stage", stage]
    return argv + (["--task", str(task)] if task is not None else [])


def local_settings(plan: RunPlan) -> dict[str, str]:
    """The environment ``--local`` sets for every task."""
    return {"HDF5_USE_FILE_LOCKING": "FALSE", "MEMFIT_SAFETY": f"{plan.options.mem_safety:g}",
            **thread_env(plan.options.slots)}


def print_local_commands(plan: RunPlan) -> None:
    """``--local --dry-run``: each command ``--local`` would run, in order, with its log; writes nothing."""
    out = Path(plan.options.out_dir)
    print("dry run: these commands would run here, in order, with "
          + " ".join(f"{k}={v}" for k, v in local_settings(plan).items()) + " (stdout and stderr to the log named)")
    for s, p in plan.stages.items():
        for task in (p.tasks if p.tasks is not None else [None]):
            log = out / "logs" / f"{s}.local.{task or 1}.log"
            print(f"{shlex.join(task_argv(out, s, task))} > {shlex.quote(str(log))} 2>&1")


def run_local(plan: RunPlan) -> int:
    """Run every planned task here, in order, through the same task runner as the jobs.

    Failures are handled like the schedulers' finalisers handle them: a failed task of a
    per-gene stage (02a, 02b, 03) skips the same task of the later per-gene stages and the
    other tasks go on; the collect stage (03b) still runs, on the genes that completed; a failed
    single job (00, 01, 03b) cancels the stages after it. Temporary files a failed task left
    are removed. Every failure is then listed on stderr, one line each, and the exit status is
    the first failure's (a signal: 1); 0 if every task succeeded.
    """
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
    env = dict(os.environ, **local_settings(plan))
    failures: list[LocalFailure] = []
    broken: set[int] = set()  # per-gene tasks that failed (or were skipped) in an earlier stage
    stopped_by: LocalFailure | None = None  # a failed single job: the stages after it are cancelled
    for s, p in plan.stages.items():
        if stopped_by is not None:
            print(f"skipping stage {s}: stage {stopped_by.stage} failed")
            with locked_manifest(out) as m:
                m["stages"][s]["cancelled"] = True
            continue
        for task in (p.tasks if p.tasks is not None else [None]):
            if task is not None and s in PER_GENE_CHAIN and task in broken:
                print(f"skipping stage {s} task {task}/{p.n_tasks}: an earlier stage of this task failed")
                with locked_manifest(out) as m:
                    m["stages"][s].setdefault("cancelled_tasks", []).append(task)
                continue
            log = out / "logs" / f"{s}.local.{task or 1}.log"
            argv = task_argv(out, s, task)
            print(f"running stage {s}" + (f" task {task}/{p.n_tasks}" if task is not None else ""), flush=True)
            with open(log, "w") as handle:
                process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
                code = process.wait()
            if code == 0:
                continue
            remove_temporaries(out, process.pid)
            failure = LocalFailure(s, task, code, log, _error_line(log))
            failures.append(failure)
            refused = _refused_write(log, out, code)
            print(f"stage {s} task {task or 1} failed (exit {code}); "
                  + ("carrying on with the other tasks" if task is not None and refused is None else "stopping"),
                  flush=True)
            try:
                with locked_manifest(out) as m:
                    m["stages"][s].setdefault("failures", []).append(
                        {"task": task, "attempt": 1, "job_id": "local", "reason": refused or f"exit status {code}",
                         "log": str(log), "time": now_iso()})
                    if refused:
                        m["status"] = "failed"
            except OSError as exc:  # e.g. the disk is full: the run cannot go on
                refused = refused or write_refused_message(exc)
                if refused is None:
                    raise
            if refused:  # every later task would fail the same way
                raise LocalRunStopped(f"{refused}; the run stopped at stage {s} task {task or 1} (exit {code}); "
                                      f"log {log}")
            if task is None:
                stopped_by = failure
            elif s in PER_GENE_CHAIN:
                broken.add(task)
    with locked_manifest(out) as m:
        m["status"] = "failed" if failures else "complete"
    if not failures:
        print(f"pipeline complete: {out}")
        return 0
    for failure in failures:
        print(f"run_bootstrap_pipeline: FAILED {failure.line()}", file=sys.stderr)
    first = failures[0].code
    return first if first > 0 else 1


def main(argv: list[str] | None = None) -> int:
    """The driver; a write the file system refuses (full disk, read-only, no permission) is one
    line on stderr and exit 2, not a traceback."""
    try:
        return _main(argv)
    except LocalRunStopped as exc:
        print(f"run_bootstrap_pipeline: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - only refused writes are turned into one line
        refused = write_refused_message(exc)
        if refused is None:
            raise
        print(f"run_bootstrap_pipeline: error: {refused}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _main(argv: list[str] | None) -> int:
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
        print("nothing to do: every output is current (use --force to recompute)")
        return 0
    if options.dry_run and options.local:
        print_local_commands(plan)
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
        refused = write_refused_message(exc)
        print(f"run_bootstrap_pipeline: error: {refused or f'{options.out_dir}: cannot write ({exc.strerror})'}",
              file=sys.stderr)
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
    print(f"manifest: {manifest_path(options.out_dir)}; logs: {Path(options.out_dir) / 'logs'}")
    return 0


