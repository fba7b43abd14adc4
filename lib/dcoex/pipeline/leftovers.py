"""Jobs of an output folder's chain still in the scheduler's queue, and cancelling them.

A chain's jobs are found by the ids its driver lock and run manifest hold, and by name: every job
is named ``dcoex_<stage>[_r<n>]_<tag>`` or ``dcoex_fin<stage>_a<n>_<tag>`` (``jobs.job_tag``: the
output folder's name) and runs a script under ``OUT_DIR/.dcoex/jobs/`` — the name finds a chain
whose manifest was never written (a driver killed while submitting) or was deleted with its
folder, and the script path keeps it from another folder of the same name.
"""

from __future__ import annotations

import getpass
import re
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from dcoex.pipeline.jobs import job_tag
from dcoex.pipeline.stages import STAGES
from hpc.manifest import state_dir
from hpc.schedulers import SubmitError, _run, get_scheduler

#: SLURM pending reasons of a job that waits for other jobs or for a release, not for resources.
WAITING_REASONS = frozenset({"Dependency", "DependencyNeverSatisfied", "JobHeldUser", "JobHeldAdmin"})
_NAME = re.compile(r"^dcoex_(?P<fin>fin)?(?P<stage>" + "|".join(sorted(STAGES, key=len, reverse=True))
                   + r")(?:_r\d+|_a\d+)?_")
#: Seconds a rerun waits at most for cancelled jobs to leave the queue (SLURM KillWait is 30 s).
CANCEL_WAIT_S = 60.0


@dataclass
class QueuedJob:
    """One job (a whole array) in the queue: its tasks' states and SLURM pending reasons."""

    scheduler: str
    job_id: str
    name: str
    script: str = ""
    states: set[str] = field(default_factory=set)  # SLURM PENDING/RUNNING/...; SGE qw/hqw/Eqw/r/...
    reasons: set[str] = field(default_factory=set)  # SLURM only

    @property
    def stage(self) -> str | None:
        match = _NAME.match(self.name)
        return match.group("stage") if match else None

    @property
    def finaliser(self) -> bool:
        match = _NAME.match(self.name)
        return bool(match and match.group("fin"))

    @property
    def never_runs(self) -> bool:
        """It cannot run by itself: SLURM DependencyNeverSatisfied, SGE error state (Eqw)."""
        if self.scheduler == "slurm":
            return "DependencyNeverSatisfied" in self.reasons
        return any("E" in s for s in self.states)

    @property
    def progressing(self) -> bool:
        """Running, or pending only for resources (nothing else has to happen first)."""
        if self.scheduler == "slurm":
            return bool(self.states - {"PENDING"}) or bool(self.reasons - WAITING_REASONS)
        return any(s in ("r", "t", "R", "Rr", "Rt", "qw") for s in self.states)

    def describe(self) -> str:
        what = "/".join(sorted(self.states))
        why = "/".join(sorted(r for r in self.reasons if r != "None"))
        return f"{what}: {why}" if why else what


# --- parsing (pure functions) ----------------------------------------------------------

def parse_squeue(text: str) -> list[QueuedJob]:
    """Jobs from ``squeue -h -r -o '%F|%K|%j|%T|%r|%o'`` (one line per array task)."""
    jobs: dict[str, QueuedJob] = {}
    for line in text.splitlines():
        parts = line.split("|", 5)
        if len(parts) < 6:
            continue
        job_id, _task, name, state, reason, script = parts
        job = jobs.setdefault(job_id, QueuedJob("slurm", job_id, name, script))
        job.states.add(state)
        job.reasons.add(reason)
    return list(jobs.values())


def parse_qstat_xml(text: str) -> list[QueuedJob]:
    """Jobs from ``qstat -xml`` (pending and running)."""
    jobs: dict[str, QueuedJob] = {}
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return []
    for item in root.iter("job_list"):
        job_id = (item.findtext("JB_job_number") or "").strip()
        if not job_id:
            continue
        job = jobs.setdefault(job_id, QueuedJob("sge", job_id, (item.findtext("JB_name") or "").strip()))
        job.states.add((item.findtext("state") or "").strip())
    return list(jobs.values())


def parse_qstat_scripts(text: str) -> dict[str, str]:
    """{job id: script_file} from ``qstat -j id,id``."""
    scripts, current = {}, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "job_number":
            current = value.strip()
        elif key.strip() == "script_file" and current:
            scripts[current] = value.strip()
    return scripts


# --- the queue ---------------------------------------------------------------------------

def queued_jobs(scheduler: str) -> list[QueuedJob]:
    """This user's jobs in the queue of ``scheduler`` ("slurm" or "sge"); [] when its tools are absent."""
    user = getpass.getuser()
    if scheduler == "slurm" and shutil.which("squeue"):
        return parse_squeue(_run(["squeue", "-h", "-r", "-u", user, "-o", "%F|%K|%j|%T|%r|%o"], "squeue", 60))
    if scheduler == "sge" and shutil.which("qstat"):
        return parse_qstat_xml(_run(["qstat", "-xml", "-u", user], "qstat", 60))
    return []


def chain_jobs(out: Path, scheduler: str, known_ids: set[str]) -> list[QueuedJob]:
    """Jobs of the chain of ``out`` in the queue: ``known_ids``, and jobs named after the folder
    whose script lies in ``OUT_DIR/.dcoex/jobs``."""
    tag = job_tag(out)
    candidates = [j for j in queued_jobs(scheduler)
                  if j.job_id in known_ids or (j.stage is not None and j.name.endswith("_" + tag))]
    if scheduler == "sge":
        unknown = [j.job_id for j in candidates if j.job_id not in known_ids]
        if unknown:
            try:
                scripts = parse_qstat_scripts(_run(["qstat", "-j", ",".join(unknown)], "qstat -j", 60))
            except SubmitError:  # a job left the queue meanwhile
                scripts = {}
            for job in candidates:
                job.script = scripts.get(job.job_id, job.script)
    jobs_dir = str(state_dir(out) / "jobs")
    return [j for j in candidates if j.job_id in known_ids or str(Path(j.script).parent) == jobs_dir]


def cancel_jobs(jobs: list[QueuedJob], *, wait_s: float = CANCEL_WAIT_S) -> list[str]:
    """Cancel ``jobs`` (later stages first, each finaliser before its stage: a cancelled job
    satisfies ``afterany`` / ``-hold_jid``), wait until they left the queue; one line per stage."""
    order = {s: i for i, s in enumerate(STAGES)}
    jobs = sorted(jobs, key=lambda j: (-order.get(j.stage or "", -1), not j.finaliser, -int(j.job_id)))
    lines: dict[str, list[str]] = {}
    for job in jobs:
        try:
            get_scheduler(job.scheduler).cancel(job.job_id)
            done = "cancelled"
        except SubmitError as exc:
            done = f"could not cancel ({exc})"
        kind = "finaliser" if job.finaliser else "job"
        lines.setdefault(job.stage or "?", []).append(f"{kind} {job.job_id} ({job.describe()}) {done}")
    deadline = time.monotonic() + wait_s
    ids = {(j.scheduler, j.job_id) for j in jobs} if wait_s > 0 else set()
    while ids and time.monotonic() < deadline:
        queued = {(s, j.job_id) for s in {s for s, _ in ids} for j in queued_jobs(s)}
        ids &= queued
        if ids:
            time.sleep(1)
    result = [f"stage {stage}: " + "; ".join(parts) for stage, parts in
              sorted(lines.items(), key=lambda kv: order.get(kv[0], -1))]
    if ids:
        result.append("still in the queue after cancelling: " + ", ".join(sorted(j for _, j in ids)))
    return result
