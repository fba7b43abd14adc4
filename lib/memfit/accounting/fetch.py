"""Query the scheduler's accounting for job ids: ``sacct -P --units=K`` or ``qacct -j``."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from memfit.accounting.qacct import qacct_tasks
from memfit.accounting.records import ACCOUNTING_SETTLE_S, AccountingError, AccountingUnavailable, TaskAccounting
from memfit.accounting.sacct import SACCT_FIELDS, sacct_tasks

SCHEDULERS = ("slurm", "sge")
_TIMEOUT_S = 120
T = TypeVar("T")


def poll_until(read: Callable[[], T], final: Callable[[T], bool], timeout_s: float = ACCOUNTING_SETTLE_S,
               interval_s: float = 1.0) -> T:
    """``read()`` again every ``interval_s`` until ``final(result)``, for at most ``timeout_s``
    seconds; the last result either way (accounting of ended jobs settles within seconds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = read()
        if final(result) or time.monotonic() >= deadline:
            return result
        time.sleep(interval_s)


def sacct_command(job_ids: Sequence[str]) -> list[str]:
    """The sacct call memfit uses (sizes in KiB, parsable, every step)."""
    return ["sacct", "-P", "--units=K", f"--format={SACCT_FIELDS}", "-j", ",".join(job_ids)]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None:
        raise AccountingUnavailable(f"{argv[0]} not found on PATH: no {argv[0]} accounting")
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AccountingUnavailable(f"{argv[0]} did not answer within {_TIMEOUT_S} s") from None


def fetch_sacct_text(job_ids: Sequence[str]) -> str:
    """Raw ``sacct -P`` output for the job ids; AccountingUnavailable with sacct's reason."""
    if not job_ids:
        return ""
    proc = _run(sacct_command(job_ids))
    message = (proc.stderr or "").strip()
    if "accounting storage is disabled" in message.lower():
        raise AccountingUnavailable("Slurm accounting storage is disabled (no slurmdbd): sacct has no records")
    if proc.returncode != 0:
        first = message.splitlines()[0] if message else f"exit status {proc.returncode}"
        raise AccountingUnavailable(f"sacct failed: {first}")
    return proc.stdout


def fetch_qacct_text(job_ids: Sequence[str]) -> tuple[str, list[str]]:
    """Concatenated ``qacct -j ID`` output, and the ids qacct does not know."""
    chunks, unknown = [], []
    for job_id in job_ids:
        proc = _run(["qacct", "-j", str(job_id)])
        message = (proc.stderr or "").strip()
        if proc.returncode == 0:
            chunks.append(proc.stdout)
        elif "not found" in message:
            unknown.append(str(job_id))
        else:
            first = message.splitlines()[0] if message else f"exit status {proc.returncode}"
            raise AccountingUnavailable(f"qacct -j {job_id} failed: {first}")
    return "".join(chunks), unknown


def parse_accounting(scheduler: str, text: str, oom_exit_codes: Iterable[int] = ()) -> list[TaskAccounting]:
    """Parse saved sacct (``slurm``) or qacct (``sge``) output."""
    if scheduler == "slurm":
        return sacct_tasks(text, oom_exit_codes)
    if scheduler == "sge":
        return qacct_tasks(text, oom_exit_codes)
    raise ValueError(f"no accounting parser for scheduler {scheduler!r}")


def read_accounting_file(scheduler: str, path: str | Path, oom_exit_codes: Iterable[int] = ()) -> list[TaskAccounting]:
    """Parse a file of saved ``sacct -P`` / ``qacct -j`` output."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AccountingError(f"cannot read accounting file {path}: {exc.strerror or exc}") from None
    try:
        return parse_accounting(scheduler, text, oom_exit_codes)
    except AccountingError as exc:
        raise AccountingError(f"{path}: {exc}") from None


def fetch_accounting(scheduler: str, job_ids: Sequence[str], oom_exit_codes: Iterable[int] = ()) -> list[TaskAccounting]:
    """Accounting records of the job ids from the live scheduler."""
    ids = [str(j) for j in dict.fromkeys(job_ids)]
    if scheduler == "slurm":
        return sacct_tasks(fetch_sacct_text(ids), oom_exit_codes)
    if scheduler == "sge":
        text, _ = fetch_qacct_text(ids)
        return qacct_tasks(text, oom_exit_codes)
    raise AccountingUnavailable(f"no accounting for scheduler {scheduler!r}")


def detect_scheduler() -> str | None:
    """``slurm`` if sacct is on PATH, else ``sge`` if qacct is, else None."""
    if shutil.which("sacct"):
        return "slurm"
    if shutil.which("qacct"):
        return "sge"
    return None
