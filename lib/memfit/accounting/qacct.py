"""Parse ``qacct -j`` output (Son of Grid Engine 8.1.x) into TaskAccounting records.

Handled forms: several records (one per array task, ``taskid N``; ``undefined`` for
plain jobs) separated by ``====`` lines, and the output of several ``qacct -j`` calls
concatenated; ``failed`` codes with their text (``37  : qmaster enforced h_rt, h_cpu,
or h_vmem limit``); ``exit_status 137 (Killed)``; sizes with units (``424.621MB``,
``1.101GB``, ``0.000B``; binary multiples); ``ru_maxrss``, which SoGE 8.1.9 prints as
if it were bytes while the number is KiB (``326.844KB`` is 326.844 MiB); the requested
``h_vmem`` from the ``category`` line (per slot; times ``slots``); ``ru_wallclock``
as ``4s`` or ``4``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from memfit.accounting.records import AccountingError, TaskAccounting, classify_oom

_QACCT_SIZE = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[KMGTP]?)B?$", re.IGNORECASE)
_SGE_MEMORY = re.compile(r"^(?P<num>\d+(?:\.\d*)?)(?P<unit>[kKmMgGtT]?)$")
_BINARY = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SGE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
              "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SEPARATOR = re.compile(r"^={10,}\s*$")


def parse_qacct_size(text: str) -> int | None:
    """``'424.621MB'`` -> bytes (binary multiples); ``'0.000B'`` and ``''`` -> None."""
    value = text.strip()
    if not value or value.upper() in ("NONE", "UNDEFINED"):
        return None
    match = _QACCT_SIZE.match(value)
    if not match:
        raise ValueError(f"not a qacct size: {text!r}")
    result = int(round(float(match.group("num")) * _BINARY[match.group("unit").upper()]))
    return result or None


def parse_sge_memory(text: str) -> int | None:
    """An SGE memory request (``600M``, ``2G``, ``1.5g``, ``500000000``) in bytes.

    SGE: upper-case K/M/G/T are binary multiples, lower-case k/m/g/t decimal ones.
    """
    match = _SGE_MEMORY.match(text.strip())
    if not match:
        return None
    return int(round(float(match.group("num")) * _SGE_UNITS[match.group("unit")]))


def parse_seconds(text: str) -> float | None:
    """``'4s'``, ``'4.051s'``, ``'4'``, ``'1:00:00'`` -> seconds."""
    value = text.strip().rstrip("s")
    try:
        seconds = 0.0
        for part in value.split(":"):
            seconds = seconds * 60 + float(part or 0)
        return seconds
    except ValueError:
        return None


def parse_category(text: str) -> dict[str, str]:
    """``'-l h_rt=3,h_vmem=1G -pe smp 2'`` -> ``{'h_rt': '3', 'h_vmem': '1G', 'pe': 'smp 2'}``."""
    result: dict[str, str] = {}
    tokens = text.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-l" and i + 1 < len(tokens):
            for item in tokens[i + 1].split(","):
                key, _, value = item.partition("=")
                result[key] = value
            i += 2
        elif token == "-pe" and i + 2 < len(tokens):
            result["pe"] = f"{tokens[i + 1]} {tokens[i + 2]}"
            i += 3
        else:
            i += 1
    return result


def parse_qacct_records(text: str) -> list[dict[str, str]]:
    """Each ``qacct -j`` record as a dict of field -> raw value text."""
    records: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if _SEPARATOR.match(line):
            current = {}
            records.append(current)
            continue
        if not line.strip():
            continue
        if line.startswith(("error:", "Total System Usage")):
            current = None
            continue
        if current is None:
            raise AccountingError(
                f"qacct output line {number} comes before any '====' record separator: {line[:80]!r}"
            )
        key, _, value = line.partition(" ")
        current[key.strip()] = value.strip()
    for record in records:
        if "jobnumber" not in record:
            raise AccountingError("qacct output has a record without 'jobnumber'")
    return records


def _int_prefix(text: str) -> int | None:
    match = re.match(r"\s*(-?\d+)", text or "")
    return int(match.group(1)) if match else None


def qacct_tasks(text: str, oom_exit_codes: Iterable[int] = ()) -> list[TaskAccounting]:
    """One TaskAccounting per ``qacct -j`` record (per job, or per array task).

    used = ``maxvmem`` (what h_vmem limits); ``max_rss_bytes`` = ``ru_maxrss`` × 1024
    (the KiB figure SoGE prints as bytes); requested = ``h_vmem`` × ``slots``.
    """
    codes = frozenset(oom_exit_codes)
    result = []
    for raw in parse_qacct_records(text):
        job_id = raw["jobnumber"].strip()
        task_text = raw.get("taskid", "undefined").strip()
        record = TaskAccounting(scheduler="sge", job_id=job_id)
        record.task_id = int(task_text) if task_text.isdigit() else None
        record.name = raw.get("jobname") or None
        failed_text = raw.get("failed", "")
        record.failed_code = _int_prefix(failed_text)
        if ":" in failed_text:
            record.failed_text = failed_text.split(":", 1)[1].strip()
        record.exit_code = _int_prefix(raw.get("exit_status", ""))
        if record.exit_code is not None and record.exit_code > 128:
            record.signal = record.exit_code - 128
        try:
            record.max_vmem_bytes = parse_qacct_size(raw.get("maxvmem", ""))
            rss_kib = parse_qacct_size(raw.get("ru_maxrss", ""))
        except ValueError as exc:
            raise AccountingError(f"qacct record of job {record.label()}: {exc}") from None
        record.max_rss_bytes = rss_kib * 1024 if rss_kib else None
        record.used_bytes, record.used_metric = record.max_vmem_bytes, "maxvmem"
        record.elapsed_s = parse_seconds(raw.get("ru_wallclock", ""))
        record.cpus = _int_prefix(raw.get("slots", "")) or 1
        category = parse_category(raw.get("category", ""))
        per_slot = parse_sge_memory(category["h_vmem"]) if "h_vmem" in category else None
        record.requested_bytes = per_slot * record.cpus if per_slot else None
        record.time_limit_s = parse_seconds(category["h_rt"]) if "h_rt" in category else None
        record.state_raw = f"failed {failed_text or '?'}; exit_status {raw.get('exit_status', '?')}"
        classify_oom(record, codes)
        record.state = _state(record)
        result.append(record)
    return result


def _state(record: TaskAccounting) -> str:
    """SLURM-like state words from SGE's failed / exit_status codes (OOM is ``record.oom``)."""
    if record.failed_code == 37 and record.time_limit_s and (record.elapsed_s or 0) >= record.time_limit_s - 1:
        return "TIMEOUT"
    if record.failed_code == 100 and record.exit_code == 137:
        return "CANCELLED"
    if record.failed_code or record.exit_code:
        return "FAILED"
    return "COMPLETED"
