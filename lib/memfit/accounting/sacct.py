"""Parse ``sacct -P`` output (SLURM) into one TaskAccounting per job or array task.

Handled forms (seen on SLURM 17.11 to 23.x): sizes with units K/M/G/T/P, with or
without decimals (``525.66M``, ``333572K``, ``0.59G``) or plain bytes; ReqMem in the
plain form (``4000M``) and the old per-node / per-CPU forms (``4000Mn``, ``4000Mc``);
job ids ``123``, array tasks ``123_4``, pending array ranges ``123_[5-9]`` /
``123_[1-6%1]``, heterogeneous components ``123+1``; steps ``.batch``, ``.extern``,
``.0``; states with details (``CANCELLED by 0``); empty MaxRSS for very short jobs.
The first line must be the header (field names), as ``sacct -P`` prints it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from memfit.accounting.records import AccountingError, TaskAccounting, classify_oom

#: Fields ``memfit review`` asks sacct for (``sacct -P --units=K --format=...``).
SACCT_FIELDS = (
    "JobID,JobIDRaw,JobName,State,ExitCode,ReqMem,ReqCPUS,AllocCPUS,NNodes,"
    "MaxRSS,MaxVMSize,Elapsed,ElapsedRaw,Timelimit"
)

_JOB_ID = re.compile(
    r"^(?P<job>\d+)"
    r"(?:_(?:(?P<task>\d+)|\[(?P<range>[^\]]*)\]))?"
    r"(?:\+(?P<het>\d+))?"
    r"(?:\.(?P<step>[\w+-]+))?$"
)
_SIZE = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>[KMGTPE]?)(?P<per>[nc]?)$", re.IGNORECASE)
_UNIT = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5, "E": 1024**6}
#: sacct prints an unset size (SLURM's NO_VAL64, e.g. ReqMem ``18889465931478580854784.00K``
#: for a few seconds after a job ended) as an absurd number: at least this many bytes.
UNSET_SIZE_BYTES = 1 << 60
_DURATION = re.compile(r"^(?:(?P<d>\d+)-)?(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)$")


def parse_sacct_size(text: str, default_unit: str = "") -> tuple[int | None, str]:
    """``'525.66M'`` -> (bytes, ''); ``'4000Mc'`` -> (bytes, 'c'); ``''`` -> (None, '').

    sacct sizes are binary multiples. A number without a unit is in ``default_unit``
    (bytes for MaxRSS; sacct prints ReqMem without a unit only as ``0``). An unset value
    (see ``UNSET_SIZE_BYTES``) is None.
    """
    value = text.strip()
    if value in ("", "0", "16?", "Unknown"):
        return None, ""
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a sacct size: {text!r}")
    unit = (match.group("unit") or default_unit).upper()
    value_bytes = int(round(float(match.group("num")) * _UNIT[unit]))
    if value_bytes >= UNSET_SIZE_BYTES:
        return None, ""
    return value_bytes, match.group("per").lower()


def _request_unset(row: dict[str, str]) -> bool:
    """Whether the row's ReqMem is SLURM's unset placeholder (the job's record is still being written)."""
    match = _SIZE.match(row.get("ReqMem", "").strip())
    return bool(match) and float(match.group("num")) * _UNIT[(match.group("unit") or "M").upper()] >= UNSET_SIZE_BYTES


def parse_duration(text: str) -> float | None:
    """``[D-]HH:MM:SS``, ``MM:SS.mmm`` or seconds -> seconds; None for empty/UNLIMITED."""
    value = text.strip()
    if not value or value.upper() in ("UNLIMITED", "PARTITION_LIMIT", "INVALID", "UNKNOWN"):
        return None
    if value.isdigit():
        return float(value)
    match = _DURATION.match(value)
    if not match:
        return None
    days, hours = int(match.group("d") or 0), int(match.group("h") or 0)
    return days * 86400 + hours * 3600 + int(match.group("m")) * 60 + float(match.group("s"))


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """``'0:9'`` -> (0, 9); ``''`` -> (None, None)."""
    value = text.strip()
    if not value:
        return None, None
    code, _, signal = value.partition(":")
    try:
        return int(code), (int(signal) if signal else 0)
    except ValueError:
        return None, None


def normalize_state(text: str) -> str:
    """``'CANCELLED by 0'`` -> ``'CANCELLED'``; ``'OUT_OF_ME+'`` -> ``'OUT_OF_ME'``."""
    words = text.strip().split()
    return words[0].rstrip("+").upper() if words else "UNKNOWN"


def parse_sacct_rows(text: str) -> list[dict[str, str]]:
    """Rows of ``sacct -P`` output as dicts keyed by the header's field names."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("|")
    if "JobID" not in header:
        raise AccountingError(
            f"sacct output has no header line with JobID (first line: {lines[0][:80]!r}); "
            "save it with 'sacct -P' and without --noheader"
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("|")
        if fields and fields[-1] == "" and len(fields) == len(header) + 1:
            fields = fields[:-1]  # sacct -p (lower case) ends every line with '|'
        if len(fields) != len(header):
            raise AccountingError(
                f"sacct output line {number} has {len(fields)} fields, the header has {len(header)}"
            )
        rows.append(dict(zip(header, fields)))
    return rows


def _requested_bytes(row: dict[str, str]) -> int | None:
    try:
        value, per = parse_sacct_size(row.get("ReqMem", ""), default_unit="M")
    except ValueError:
        return None
    if value is None:
        return None
    if per == "c":
        cpus = _int(row.get("AllocCPUS")) or _int(row.get("ReqCPUS")) or 1
        return value * cpus
    if per == "n":
        return value * (_int(row.get("NNodes")) or 1)
    return value


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _size(row: dict[str, str], field: str) -> int | None:
    try:
        return parse_sacct_size(row.get(field, ""))[0]
    except ValueError as exc:
        raise AccountingError(f"sacct row {row.get('JobID')!r}: {field}: {exc}") from None


def _elapsed(row: dict[str, str]) -> float | None:
    raw = row.get("ElapsedRaw", "").strip()
    if raw.isdigit():
        return float(raw)
    return parse_duration(row.get("Elapsed", ""))


def sacct_tasks(text: str, oom_exit_codes: Iterable[int] = ()) -> list[TaskAccounting]:
    """One TaskAccounting per job / array task in ``sacct -P`` output.

    The job row gives state, exit code, ReqMem, CPUs and elapsed time; the step rows
    (batch, extern, srun steps) give MaxRSS / MaxVMSize: used = the largest step MaxRSS.
    A pending array range row (``123_[5-9]``) becomes one record with ``pending_tasks``.
    """
    records: dict[tuple, TaskAccounting] = {}
    order: list[tuple] = []
    for number, row in enumerate(parse_sacct_rows(text), start=2):
        match = _JOB_ID.match(row["JobID"].strip())
        if not match:
            raise AccountingError(f"sacct output line {number}: job id {row['JobID']!r} not understood")
        task = int(match.group("task")) if match.group("task") else None
        het = match.group("het")
        job_id = match.group("job") + (f"+{het}" if het else "")
        key = (job_id, task, match.group("range"))
        record = records.get(key)
        if record is None:
            record = TaskAccounting(scheduler="slurm", job_id=job_id, task_id=task, pending_tasks=match.group("range"))
            records[key] = record
            order.append(key)
        max_rss = _size(row, "MaxRSS")
        max_vm = _size(row, "MaxVMSize")
        exit_code, signal = parse_exit_code(row.get("ExitCode", ""))
        state = normalize_state(row.get("State", ""))
        step = match.group("step")
        if step is None:
            record.name = row.get("JobName") or None
            record.state, record.state_raw = state, row.get("State", "").strip()
            record.exit_code, record.signal = exit_code, signal
            record.requested_bytes = _requested_bytes(row)
            record.incomplete = _request_unset(row)
            record.elapsed_s = _elapsed(row)
            record.time_limit_s = parse_duration(row.get("Timelimit", ""))
            record.cpus = _int(row.get("AllocCPUS")) or _int(row.get("ReqCPUS"))
        else:
            record.steps.append(
                {"step": step, "state": state, "exit_code": exit_code, "signal": signal,
                 "max_rss_bytes": max_rss, "max_vmem_bytes": max_vm, "elapsed_s": _elapsed(row)}
            )
        if max_rss is not None:
            record.max_rss_bytes = max(record.max_rss_bytes or 0, max_rss)
        if max_vm is not None:
            record.max_vmem_bytes = max(record.max_vmem_bytes or 0, max_vm)
    result = []
    codes = frozenset(oom_exit_codes)
    for key in order:
        record = records[key]
        record.used_bytes, record.used_metric = record.max_rss_bytes, "MaxRSS"
        classify_oom(record, codes)
        result.append(record)
    return result


def expand_task_range(text: str) -> list[int]:
    """Array task ids of ``'5-9'``, ``'1-6%1'``, ``'1,3,5-9:2'`` (throttle ignored)."""
    spec = text.split("%", 1)[0]
    tasks: list[int] = []
    for part in filter(None, spec.split(",")):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        try:
            tasks.extend(range(int(first), int(last or first) + 1, int(step or 1)))
        except ValueError:
            raise AccountingError(f"array task range {text!r} not understood") from None
    return tasks
