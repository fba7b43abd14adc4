"""The scheduler-neutral accounting record of one job or array task."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hpc.errors import InputError

#: A job killed by signal 9 whose peak reached this fraction of its request was killed
#: for memory (SLURM without cgroups: FAILED / CANCELLED with signal 9; SGE: failed 37).
OOM_FRACTION = 0.9
#: Seconds to wait at most for accounting to hold the final record of a job that has ended
#: (slurmdbd and qacct record a job's end, request and steps a few seconds late).
ACCOUNTING_SETTLE_S = 30.0
#: States of jobs that have not finished.
UNFINISHED_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD"})


class AccountingError(InputError, RuntimeError):
    """Accounting output that cannot be parsed (the message says which line): bad input."""


class AccountingUnavailable(RuntimeError):
    """The scheduler's accounting cannot be queried (no sacct/qacct, storage disabled)."""


@dataclass
class TaskAccounting:
    """What the scheduler recorded for one job or one array task. Memory in bytes.

    ``used_bytes`` is the figure the scheduler enforces and reports: SLURM MaxRSS (the
    largest over the job's steps: batch, extern, srun steps), SGE maxvmem. Zero or
    missing values (jobs too short to be sampled) are None.
    """

    scheduler: str
    job_id: str
    task_id: int | None = None
    pending_tasks: str | None = None
    name: str | None = None
    state: str = "UNKNOWN"
    state_raw: str = ""
    exit_code: int | None = None
    signal: int | None = None
    requested_bytes: int | None = None
    used_bytes: int | None = None
    used_metric: str = ""
    max_rss_bytes: int | None = None
    max_vmem_bytes: int | None = None
    elapsed_s: float | None = None
    time_limit_s: float | None = None
    cpus: int | None = None
    oom: bool = False
    oom_reason: str | None = None
    failed_code: int | None = None
    failed_text: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: Accounting is still being written: SLURM shows the request as unset for a few
    #: seconds after the job ended, before slurmdbd has recorded it.
    incomplete: bool = False

    @property
    def finished(self) -> bool:
        return self.state not in UNFINISHED_STATES

    @property
    def settled(self) -> bool:
        """Whether this is the final record: the job (and every step) finished and its
        request recorded. Until then the OOM classification may still change."""
        return (
            self.finished
            and self.state != "UNKNOWN"
            and not self.incomplete
            and all(s.get("state") not in UNFINISHED_STATES for s in self.steps)
        )

    @property
    def ok(self) -> bool:
        """Finished with state COMPLETED and exit code 0."""
        return self.state == "COMPLETED" and not self.exit_code and not self.signal

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.job_id, self.task_id)

    def label(self) -> str:
        """``123`` or ``123_4`` or ``123_[5-9]``."""
        if self.task_id is not None:
            return f"{self.job_id}_{self.task_id}"
        if self.pending_tasks:
            return f"{self.job_id}_[{self.pending_tasks}]"
        return self.job_id

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label()
        data["ok"] = self.ok
        return data


def classify_oom(record: TaskAccounting, oom_exit_codes: frozenset[int] = frozenset()) -> None:
    """Set ``record.oom`` / ``oom_reason`` from its state, signal, exit code and peak.

    Rules: state OUT_OF_MEMORY (cgroup-enforcing SLURM); killed by signal 9 / SGE
    ``failed 37`` with the peak at least ``OOM_FRACTION`` of the request (sampler-based
    enforcement: SLURM OverMemoryKill, SGE h_vmem); an exit code in ``oom_exit_codes``
    (memfit stages exit 3 when they run out of memory).
    """
    if record.state == "OUT_OF_MEMORY" or any(s.get("state") == "OUT_OF_MEMORY" for s in record.steps):
        record.oom, record.oom_reason = True, "state OUT_OF_MEMORY"
        return
    killed = (
        record.signal == 9
        or record.exit_code == 137
        or record.failed_code == 37
        or any(s.get("signal") == 9 for s in record.steps)
    )
    peak = record.used_bytes
    if killed and peak and record.requested_bytes and peak >= OOM_FRACTION * record.requested_bytes:
        how = f"failed {record.failed_code}" if record.failed_code == 37 else "killed by signal 9"
        record.oom = True
        record.oom_reason = f"{how} with {record.used_metric} at {peak / record.requested_bytes:.0%} of the request"
        return
    if record.exit_code is not None and record.exit_code in oom_exit_codes:
        record.oom, record.oom_reason = True, f"exit code {record.exit_code} (out of memory)"
