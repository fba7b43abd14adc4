"""Scheduler adaptors: how a job is submitted, released, cancelled and re-pointed.

The co-expression planner and finaliser and the label-transfer submitter speak only to
:class:`Scheduler`: a :class:`JobSpec` (a job script, or a command line, as one job or an array)
becomes the sbatch / qsub command line here and nowhere else, and the scheduler's answer is
parsed and validated here (:func:`submitted_job_id`). SLURM and SGE differ in their commands
and in memory semantics (SLURM ``--mem``: resident memory per node; SGE ``h_vmem``: virtual
memory per slot).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpc.errors import InputError
from memfit.accounting.records import TaskAccounting
from memfit.allocation import VIRTUAL_OVERHEAD_BYTES
from memfit.units import MiB, format_bytes, parse_bytes

#: Phrases in a task's log that mean the scheduler killed it for memory.
MEMORY_KILL_PATTERNS = (
    "exceeded memory limit", "exceeded job memory limit", "out_of_memory", "oom-kill",
    "oom_kill", "out of memory", "memoryerror",
)
#: Smallest SLURM ``--mem`` the driver asks for (bytes): below it a request is within the
#: sampler's and the allocator's noise. ``DCOEX_MIN_REQUEST`` (e.g. "128M", "0") overrides it.
#: SGE needs none: every h_vmem request already includes VIRTUAL_OVERHEAD_BYTES.
SLURM_MIN_REQUEST_BYTES = 256 * MiB
MIN_REQUEST_ENV = "DCOEX_MIN_REQUEST"
#: Environment variables that set a job's thread count (numpy's BLAS, OpenMP, numexpr).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
#: SGE parallel environment for jobs of more than one slot unless the job names one.
SGE_PE_ENV = "DCOEX_SGE_PE"
#: Defaults when the scheduler does not print the setting (SLURM MaxArraySize, SGE max_aj_tasks).
#: One GPU per job, as the schedulers are asked for it by default: SLURM ``--gres`` and SGE
#: ``-l`` (sites name the SGE resource differently: gpu, gpus, cuda, ...; both are options).
DEFAULT_SLURM_GRES = "gpu:1"
DEFAULT_SGE_GPU_RESOURCE = "gpu=1"
SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
SGE_DEFAULT_MAX_AJ_TASKS = 75000


class SubmitError(RuntimeError):
    """A submission command failed; the message is one line with the scheduler's answer."""


def thread_env(threads: int) -> dict[str, str]:
    """The environment that limits a job's numeric libraries to ``threads`` threads."""
    return {var: str(threads) for var in THREAD_ENV_VARS}


def slurm_min_request() -> int:
    """The floor of SLURM requests (bytes): ``DCOEX_MIN_REQUEST`` or SLURM_MIN_REQUEST_BYTES."""
    value = os.environ.get(MIN_REQUEST_ENV)
    if not value:
        return SLURM_MIN_REQUEST_BYTES
    try:
        return parse_bytes(value)
    except ValueError:
        raise InputError(f"{MIN_REQUEST_ENV}={value!r}: not a size (e.g. 256M, 0)") from None


# --- parsing: the schedulers' text -> a decision (pure functions) -----------------------

def slurm_array_limit(scontrol_config: str) -> int:
    """Largest array task id from ``scontrol show config`` (ids must be < MaxArraySize)."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", scontrol_config, re.M)
    return (int(match.group(1)) if match else SLURM_DEFAULT_MAX_ARRAY_SIZE) - 1


def sge_array_limit(sconf: str) -> int:
    """Largest array task id from ``qconf -sconf`` (``max_aj_tasks``; 0 means unlimited)."""
    match = re.search(r"^max_aj_tasks\s+(\d+)", sconf, re.M)
    value = int(match.group(1)) if match else SGE_DEFAULT_MAX_AJ_TASKS
    return value if value > 0 else 10**9


def sinfo_max_memory(sinfo: str) -> int | None:
    """Largest node memory (bytes) from ``sinfo -h -N -o %m`` (MiB per line, maybe ``1000+``)."""
    values = [int(v) for v in re.findall(r"^\s*(\d+)", sinfo, re.M)]
    return max(values) * MiB if values else None


def qhost_max_memory(qhost: str) -> int | None:
    """Largest host MEMTOT (bytes) from ``qhost``; the ``global`` row and ``-`` values are skipped."""
    lines = qhost.splitlines()
    header = next((line.split() for line in lines if line.split()[:1] == ["HOSTNAME"]), None)
    if header is None or "MEMTOT" not in header:
        return None
    column = header.index("MEMTOT")
    values = []
    for line in lines:
        fields = line.split()
        if len(fields) > column and fields[0] not in ("HOSTNAME", "global") \
                and re.fullmatch(r"[0-9.]+[KMGT]", fields[column]):
            values.append(parse_bytes(fields[column]))
    return max(values) if values else None


#: What a submission command prints, whole: sbatch --parsable ("123", "123;cluster");
#: qsub -terse ("123", "123.1-4:1" for an array); qsub without -terse.
_JOB_ID_ANSWERS = {
    "sbatch": (re.compile(r"(\d+)(?:;[\w.-]+)?"),),
    "qsub": (re.compile(r"(\d+)(?:\.\d+-\d+:\d+)?"),
             re.compile(r"Your job(?:-array)? (\d+)(?:\.\d+-\d+:\d+)? \(.*\) has been submitted")),
}


def submitted_job_id(answer: str, command: str) -> str:
    """The job id in what ``command`` ("sbatch" or "qsub") printed on a submission.

    Accepted, one line (surrounding blank space ignored): ``sbatch --parsable``'s "123" or
    "123;cluster"; ``qsub -terse``'s "123" or "123.1-4:1" (an array); qsub's
    'Your job 123 ("name") has been submitted' / 'Your job-array 123.1-4:1 ("name") has been
    submitted'. Anything else is a SubmitError of one line quoting the answer.
    """
    text = answer.strip()
    for pattern in _JOB_ID_ANSWERS.get(command, ()):
        match = pattern.fullmatch(text)
        if match:
            return match.group(1)
    shown = " ".join(answer.split()) or "nothing"
    if len(shown) > 200:
        shown = shown[:200] + "..."
    raise SubmitError(f"{command}: unexpected answer {shown!r} (expected a job id)")


def log_shows_memory_kill(log_text: str) -> bool:
    """Whether a task's log says it was killed for (or ran out of) memory."""
    low = log_text.lower()
    return any(p in low for p in MEMORY_KILL_PATTERNS)


def accounting_shows_memory_kill(scheduler: str, text: str, job_id: str, task: int | None) -> bool:
    """Whether accounting text (``sacct -P`` as memfit fetches it, or ``qacct -j``) says the
    job (array task) was killed for memory: SLURM OUT_OF_MEMORY, or killed by signal 9 /
    SGE ``failed 37`` with its peak near the request (memfit.accounting's rules; a time-limit
    kill is not a memory kill)."""
    record = accounting_record(scheduler, text, job_id, task)
    return bool(record and record.oom)


def accounting_record(scheduler: str, text: str, job_id: str, task: int | None):
    """The job's (array task's) memfit TaskAccounting in accounting text, or None; an array
    task still inside a range row (``123_[5-9]``, SLURM) is that row's record."""
    from memfit.accounting.fetch import parse_accounting
    from memfit.accounting.sacct import expand_task_range

    for record in parse_accounting(scheduler, text):
        if record.job_id != str(job_id):
            continue
        if record.task_id == task or (task is not None and record.pending_tasks
                                      and task in expand_task_range(record.pending_tasks)):
            return record
    return None


def time_limit_seconds(text: str) -> int:
    """Seconds of a time limit ``H:MM:SS`` (hours may exceed 24)."""
    h, m, sec = (int(part) for part in text.split(":"))
    return 3600 * h + 60 * m + sec


def format_time_limit(seconds: int) -> str:
    """``H:MM:SS`` (at least two digits of hours) for both ``sbatch --time`` and ``qsub -l h_rt``."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class JobSpec:
    """One submission: a job script (``script``) or a command line (``command``: SLURM
    ``--wrap``, SGE ``-b y`` with the submitter's environment) run as a single job
    (``tasks`` None) or an array of tasks."""

    name: str
    script: Path | None
    log: Path  # folder of the logs; the file name pattern comes from the scheduler
    log_stem: str  # "<stage>" (tasks), "fin-<stage>" (finalisers), "label_transfer"
    mem_bytes: int  # total for the job (all slots), bytes of the scheduler's request
    slots: int = 1
    time_limit: str = "24:00:00"
    tasks: list[int] | None = None
    per_task_after: str | None = None  # job id: task i waits for its task i
    after_ok: list[str] = field(default_factory=list)  # whole jobs that must succeed
    after_any: list[str] = field(default_factory=list)  # whole jobs that must end
    hold: bool = False
    queue: str | None = None
    account: str | None = None
    command: list[str] | None = None  # argv run instead of a script
    env: dict[str, str] = field(default_factory=dict)  # exported to the job
    gpu: str | None = None  # SLURM --gres value (DEFAULT_SLURM_GRES) / SGE -l resource (DEFAULT_SGE_GPU_RESOURCE)
    parallel_env: str | None = None  # SGE PE for slots > 1 (default: $DCOEX_SGE_PE or smp)

    def __post_init__(self) -> None:
        if (self.script is None) == (self.command is None):
            raise ValueError(f"job {self.name}: give a script or a command, not both or neither")


def compress_tasks(tasks: list[int]) -> str:
    """[1,2,3,7,9,10] -> '1-3,7,9-10'."""
    parts, run = [], []
    for t in sorted(set(tasks)):
        if run and t == run[-1] + 1:
            run.append(t)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [t]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts)


def _run(argv: list[str], what: str, timeout: float = 120) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SubmitError(f"{argv[0]} not found on PATH") from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"{what}: {argv[0]} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        message = " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
        raise SubmitError(f"{what} failed: {message}")
    return done.stdout


class Scheduler:
    """Base class. ``dry_run`` prints each command instead of running it."""

    name = "none"
    submit_command = ""
    per_task_holds = False  # SGE: per-task successors are user-held and released by the task
    #: Array tasks that ``--genes-per-task auto`` aims at (within the array limit).
    auto_target_tasks = 500

    def __init__(self, dry_run: bool = False, out=sys.stdout):
        self.dry_run = dry_run
        self.out = out
        self._fake = 0

    def require(self, hint: str = "") -> None:
        """InputError if the submission command is missing (not checked for a dry run);
        ``hint`` ends the message (e.g. "or use --local to run without a scheduler")."""
        if not self.dry_run and shutil.which(self.submit_command) is None:
            raise InputError(
                f"{self.submit_command} not found on PATH: run this on a {self.name.upper()} submit host"
                + (f", {hint}" if hint else "")
            )

    # --- planning -------------------------------------------------------------------
    def _query(self, argv: list[str], optional: bool) -> str | None:
        """stdout of a cluster query tool; None if ``optional`` and it is missing or fails."""
        if optional and shutil.which(argv[0]) is None:
            return None
        try:
            return _run(argv, " ".join(argv[:2]))
        except SubmitError:
            if optional:
                return None
            raise

    def array_limit(self) -> int:
        """Largest array task id the scheduler accepts."""
        raise NotImplementedError

    def request_bytes(self, peak_bytes: int, safety: float, slots: int, *, extra_virtual_bytes: int = 0) -> int:
        """What the scheduler is asked for (bytes, whole job) for a predicted peak RSS (bytes).

        The stage itself plans for ``safety`` × its limit (memfit), so the limit is the
        peak divided by ``safety``. ``extra_virtual_bytes``: address space the job maps
        beyond its resident set (e.g. torch), counted only where the limit is virtual (SGE).
        """
        raise NotImplementedError

    def request_string(self, request_bytes: int, slots: int) -> str:
        raise NotImplementedError

    def max_request_bytes(self) -> int | None:
        """Largest request any node can offer (bytes, whole job), or None if unknown."""
        return None

    # --- submission -----------------------------------------------------------------
    def command(self, job: JobSpec) -> list[str]:
        raise NotImplementedError

    def parse_job_id(self, text: str) -> str:
        raise NotImplementedError

    def submit(self, job: JobSpec) -> tuple[str, list[str]]:
        """Submit one job or array (a dry run prints the command and returns a placeholder id
        "DRYRUN<n>"); returns (job id, the exact command)."""
        argv = self.command(job)
        if self.dry_run:
            self._fake += 1
            print(shlex.join(argv), file=self.out)
            return f"DRYRUN{self._fake}", argv
        return self.parse_job_id(_run(argv, f"{self.submit_command} of {job.name}")), argv

    # --- supervision (used by the finaliser and the tasks) --------------------------
    def release(self, job_id: str, task: int | None = None) -> None:
        raise NotImplementedError

    def cancel(self, job_id: str, task: int | None = None) -> None:
        raise NotImplementedError

    def repoint_task(self, job_id: str, task: int, after_job: str) -> None:
        """Make task ``task`` of ``job_id`` wait for task ``task`` of ``after_job``."""

    def repoint_job(self, job_id: str, after_jobs: Sequence[str]) -> None:
        """Make the whole job ``job_id`` wait for (the success of) ``after_jobs`` instead of what it
        waited for."""
        raise NotImplementedError

    def set_task_memory(self, job_id: str, task: int, request_bytes: int) -> None:
        """Change the memory request (bytes, whole job) of pending array task ``task`` of ``job_id``.
        Only SLURM can change one task of an array; SGE's qalter changes the whole array."""
        raise NotImplementedError(f"{self.name} cannot change the request of one array task")

    def set_task_time(self, job_id: str, task: int, time_limit: str) -> None:
        """Change the time limit (``H:MM:SS``) of pending array task ``task`` of ``job_id``.
        Only SLURM can change one task of an array; SGE's qalter changes the whole array."""
        raise NotImplementedError(f"{self.name} cannot change the time limit of one array task")

    def killed_for_memory(self, job_id: str, task: int | None, log_text: str) -> bool:
        """Whether a task that left no status was killed for memory (its log, then accounting)."""
        if log_shows_memory_kill(log_text):
            return True
        record = self.task_records(job_id, [task]).get(task)
        return bool(record and record.oom)

    def task_records(self, job_id: str, tasks: list[int | None]) -> dict[int | None, TaskAccounting | None]:
        """{task: memfit TaskAccounting or None} for tasks of a job that has ended (empty without
        accounting, e.g. locally).

        The tasks have just ended, and accounting records them in pieces (SLURM: the end, then
        the request; SGE: the qacct entry a moment later), so accounting is read again, once a
        second for at most ``memfit.accounting.records.ACCOUNTING_SETTLE_S``, until its record
        of every task is final."""
        from memfit.accounting.fetch import AccountingUnavailable, fetch_qacct_text, fetch_sacct_text, poll_until

        if self.name not in ("slurm", "sge"):
            return {}

        def read() -> dict:
            if self.name == "slurm":  # an array's job id lists every task
                text = fetch_sacct_text([f"{job_id}_{tasks[0]}" if tasks[0] is not None and len(tasks) == 1
                                         else job_id])
            else:
                text = fetch_qacct_text([job_id])[0]
            return {t: accounting_record(self.name, text, job_id, t) for t in tasks}

        try:
            return poll_until(read, lambda rs: all(r is not None and r.settled for r in rs.values()))
        except AccountingUnavailable:
            return {}

    def log_name(self, job: JobSpec) -> str:
        raise NotImplementedError

    @staticmethod
    def log_path(log_dir: Path, stem: str, job_id: str, task: int | None) -> Path:
        return log_dir / f"{stem}.{job_id}.{task if task is not None else 1}.log"


class Slurm(Scheduler):
    name = "slurm"
    submit_command = "sbatch"

    def array_limit(self) -> int:
        text = self._query(["scontrol", "show", "config"], optional=self.dry_run)
        return 1000 if text is None else slurm_array_limit(text)  # a dry run away from the cluster: the default

    def request_bytes(self, peak_bytes: int, safety: float, slots: int, *, extra_virtual_bytes: int = 0) -> int:
        return max(int(math.ceil(peak_bytes / safety / MiB)) * MiB, slurm_min_request())

    def request_string(self, request_bytes: int, slots: int) -> str:
        return f"--mem={math.ceil(request_bytes / MiB)}M"

    def max_request_bytes(self) -> int | None:
        text = self._query(["sinfo", "-h", "-N", "-o", "%m"], optional=True)
        return None if text is None else sinfo_max_memory(text)

    def log_name(self, job: JobSpec) -> str:
        return f"{job.log_stem}.%A.%a.log" if job.tasks is not None else f"{job.log_stem}.%j.1.log"

    def command(self, job: JobSpec) -> list[str]:
        argv = ["sbatch", "--parsable", f"--job-name={job.name}", f"--output={job.log / self.log_name(job)}",
                self.request_string(job.mem_bytes, job.slots), "--ntasks=1", f"--cpus-per-task={job.slots}",
                f"--time={job.time_limit}"]
        if job.tasks is not None:
            argv.append(f"--array={compress_tasks(job.tasks)}")
        deps = []
        if job.per_task_after:
            deps.append(f"aftercorr:{job.per_task_after}")
        if job.after_ok:
            deps.append("afterok:" + ":".join(job.after_ok))
        if job.after_any:
            deps.append("afterany:" + ":".join(job.after_any))
        if deps:
            argv.append("--dependency=" + ",".join(deps))
        if job.hold:
            argv.append("--hold")
        if job.queue:
            argv.append(f"--partition={job.queue}")
        if job.account:
            argv.append(f"--account={job.account}")
        if job.gpu:
            argv.append(f"--gres={job.gpu}")
        if job.env:
            argv.append("--export=" + ",".join(["ALL", *(f"{k}={v}" for k, v in job.env.items())]))
        if job.command is not None:
            return argv + ["--wrap", shlex.join(job.command)]
        argv.append(str(job.script))
        return argv

    def parse_job_id(self, text: str) -> str:
        return submitted_job_id(text, "sbatch")

    @staticmethod
    def _target(job_id: str, task: int | None) -> str:
        return f"{job_id}_{task}" if task is not None else job_id

    def release(self, job_id: str, task: int | None = None) -> None:
        _run(["scontrol", "release", self._target(job_id, task)], "scontrol release")

    def cancel(self, job_id: str, task: int | None = None) -> None:
        _run(["scancel", self._target(job_id, task)], "scancel")

    def repoint_task(self, job_id: str, task: int, after_job: str) -> None:
        _run(["scontrol", "update", f"JobId={job_id}_{task}", f"Dependency=aftercorr:{after_job}"],
             "scontrol update")

    def repoint_job(self, job_id: str, after_jobs: Sequence[str]) -> None:
        _run(["scontrol", "update", f"JobId={job_id}", "Dependency=afterok:" + ":".join(after_jobs)],
             "scontrol update")

    def set_task_memory(self, job_id: str, task: int, request_bytes: int) -> None:
        argv = ["scontrol", "update", f"JobId={job_id}_{task}", f"MinMemoryNode={math.ceil(request_bytes / MiB)}"]
        if self.dry_run:
            print(shlex.join(argv), file=self.out)
            return
        _run(argv, "scontrol update")

    def set_task_time(self, job_id: str, task: int, time_limit: str) -> None:
        argv = ["scontrol", "update", f"JobId={job_id}_{task}", f"TimeLimit={time_limit}"]
        if self.dry_run:
            print(shlex.join(argv), file=self.out)
            return
        _run(argv, "scontrol update")


class Sge(Scheduler):
    name = "sge"
    submit_command = "qsub"
    per_task_holds = True

    def array_limit(self) -> int:
        text = self._query(["qconf", "-sconf", "global"], optional=self.dry_run)
        return 75000 if text is None else sge_array_limit(text)  # a dry run away from the cluster: the default

    def request_bytes(self, peak_bytes: int, safety: float, slots: int, *, extra_virtual_bytes: int = 0) -> int:
        # h_vmem limits virtual memory (RLIMIT_AS) per slot: cover the process's mappings
        # too, as memfit.Allocation.usable_bytes subtracts them under SGE
        total = (peak_bytes + VIRTUAL_OVERHEAD_BYTES + extra_virtual_bytes) / safety
        return int(math.ceil(total / slots / MiB)) * MiB * slots

    def request_string(self, request_bytes: int, slots: int) -> str:
        return f"h_vmem={math.ceil(request_bytes / slots / MiB)}M"

    def max_request_bytes(self) -> int | None:
        """The largest host's total memory (qhost MEMTOT); ``qsub -w e`` checks the rest."""
        text = self._query(["qhost"], optional=True)
        return None if text is None else qhost_max_memory(text)

    def log_name(self, job: JobSpec) -> str:
        return f"{job.log_stem}.$JOB_ID.$TASK_ID.log" if job.tasks is not None else f"{job.log_stem}.$JOB_ID.1.log"

    def command(self, job: JobSpec) -> list[str]:
        argv = ["qsub", "-terse", "-w", "e", "-N", job.name, "-o", str(job.log / self.log_name(job)), "-j", "y",
                "-S", "/bin/bash", "-l", self.request_string(job.mem_bytes, job.slots), "-l", f"h_rt={job.time_limit}"]
        if job.slots > 1:  # the parallel environment's name is site-specific: DCOEX_SGE_PE
            argv += ["-pe", job.parallel_env or os.environ.get(SGE_PE_ENV, "smp"), str(job.slots)]
        if job.tasks is not None:
            argv += ["-t", f"{min(job.tasks)}-{max(job.tasks)}"]
        if job.per_task_after:
            argv += ["-hold_jid_ad", job.per_task_after]
        holds = job.after_ok + job.after_any
        if holds:
            argv += ["-hold_jid", ",".join(holds)]
        if job.hold:
            argv.append("-h")
        if job.queue:
            argv += ["-q", job.queue]
        if job.account:
            argv += ["-P", job.account]
        if job.gpu:
            argv += ["-l", job.gpu]
        if job.env:
            argv += ["-v", ",".join(f"{k}={v}" for k, v in job.env.items())]
        if job.command is not None:  # a command, run in the submitter's environment and folder
            return argv + ["-b", "y", "-V", "-cwd", *job.command]
        argv.append(str(job.script))
        return argv

    def parse_job_id(self, text: str) -> str:
        return submitted_job_id(text, "qsub")

    def release(self, job_id: str, task: int | None = None) -> None:
        _run(["qrls", "-h", "u", f"{job_id}.{task}" if task is not None else job_id], "qrls")

    def cancel(self, job_id: str, task: int | None = None) -> None:
        _run(["qdel", job_id] + (["-t", str(task)] if task is not None else []), "qdel")

    def repoint_job(self, job_id: str, after_jobs: Sequence[str]) -> None:
        _run(["qalter", "-hold_jid", ",".join(after_jobs), job_id], "qalter")


class Local(Scheduler):
    """No scheduler: the driver runs each task itself, in order."""

    name = "local"
    #: Tasks run one after another here, so "auto" cuts few of them: each task pays the
    #: interpreter start-up and the loading of the shared inputs once.
    auto_target_tasks = 4

    def require(self, hint: str = "") -> None:
        return None

    def array_limit(self) -> int:
        return 10**9

    def request_bytes(self, peak_bytes: int, safety: float, slots: int, *, extra_virtual_bytes: int = 0) -> int:
        return int(math.ceil(peak_bytes / safety))

    def request_string(self, request_bytes: int, slots: int) -> str:
        return f"(local; plan {format_bytes(request_bytes)})"


def get_scheduler(name: str, dry_run: bool = False, out=sys.stdout) -> Scheduler:
    """The adaptor of scheduler ``name`` (slurm, sge or local); InputError for any other name."""
    classes = {"slurm": Slurm, "sge": Sge, "local": Local}
    try:
        return classes[name](dry_run=dry_run, out=out)
    except KeyError:
        raise InputError(f"unknown scheduler {name!r}; expected slurm, sge or local") from None
