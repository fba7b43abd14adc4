"""One live chain per output folder: the driver lock ``OUT_DIR/.dcoex/driver.lock``.

The lock (JSON) names its owner: ``pid``, ``host``, ``started``, ``scheduler``, ``state``
("submitting" while the driver submits, "submitted" once the chain is released, "local" while a
``--local`` driver runs) and the ``job_ids`` submitted so far. A driver claims the folder before
it writes anything there:

* the owner's driver process still runs (same host; another host's fresh lock counts as alive) →
  refused (:class:`Busy`, one line, exit 2);
* the earlier chain still has jobs in the queue (the lock's and the manifest's job ids, and jobs
  found by name, ``leftovers.chain_jobs``) and can go on → refused;
* those jobs are **left over** — their driver died while submitting, the folder lost its lock or
  manifest (deleted while they were queued), the run already ended, or the chain can never finish
  (SLURM ``DependencyNeverSatisfied`` with nothing running or runnable; SGE ``Eqw``) → cancelled,
  one line per stage;
* a lock whose jobs have all left the queue is stale: taken over with a note.

The last finaliser of a chain removes the lock when it sets the run's status; a local driver at
its end.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from dcoex.pipeline.leftovers import QueuedJob, cancel_jobs, chain_jobs
from hpc.errors import InputError
from hpc.manifest import ManifestError, manifest_path, now_iso, read_manifest, state_dir, write_json_atomic
from hpc.schedulers import SubmitError

LOCK = "driver.lock"
#: A lock of a driver on another host (whose process cannot be checked) counts as alive this long (s).
FOREIGN_ALIVE_S = 600
#: Seconds between the two looks at a chain that seems unable to finish (a finaliser may be about
#: to re-point a DependencyNeverSatisfied job).
STUCK_RECHECK_S = 3.0


class Busy(InputError):
    """The output folder belongs to a live chain or driver."""


def lock_path(out: Path) -> Path:
    return state_dir(out) / LOCK


def read_lock(out: Path) -> dict | None:
    try:
        return json.loads(lock_path(out).read_text())
    except (OSError, ValueError):
        return None


def _read_manifest(out: Path) -> dict | None:
    """The run's manifest, or None if it is missing or unreadable (no chain to protect then)."""
    try:
        return read_manifest(out)
    except ManifestError:
        return None


@contextlib.contextmanager
def _guard(out: Path) -> Iterator[None]:
    """Serialises claims of one folder (two drivers started at once)."""
    state_dir(out).mkdir(parents=True, exist_ok=True)
    with open(state_dir(out) / "driver.lock.guard", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _driver_alive(lock: dict) -> bool:
    """Whether the lock's driver process still runs (a dcoex driver with that pid on this host)."""
    if lock.get("state") not in ("submitting", "local"):
        return False
    if lock.get("host") != socket.gethostname():
        started = lock.get("started_epoch", 0)
        return time.time() - started < FOREIGN_ALIVE_S or lock.get("state") == "local"
    pid = int(lock.get("pid", 0))
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"dcoex.pipeline" in cmdline


def manifest_job_ids(manifest: dict | None) -> set[str]:
    """Every job and finaliser id a run manifest records."""
    ids: set[str] = set()
    for entry in (manifest or {}).get("stages", {}).values():
        for attempt in entry.get("attempts", []):
            ids.update(str(j) for j in (attempt.get("job_id"), attempt.get("finaliser_job_id")) if j)
    return ids - {"local"}


def _finishing(job: QueuedJob, manifest: dict | None) -> bool:
    """A finaliser still running after it recorded its attempt (it is exiting)."""
    if not job.finaliser or manifest is None or job.stage not in manifest.get("stages", {}):
        return False
    return job.states <= {"RUNNING", "COMPLETING", "r", "t"} and bool(manifest["stages"][job.stage].get("finalised")) \
        and any(str(a.get("finaliser_job_id")) == job.job_id for a in manifest["stages"][job.stage]["attempts"])


def _earlier_jobs(out: Path, schedulers: set[str], lock: dict | None, manifest: dict | None) -> list[QueuedJob]:
    known = manifest_job_ids(manifest) | {str(j) for j in (lock or {}).get("job_ids", [])}
    jobs: list[QueuedJob] = []
    for name in sorted(schedulers & {"slurm", "sge"}):
        try:
            jobs += chain_jobs(out, name, known)
        except SubmitError:
            continue  # that scheduler does not answer here
    return [j for j in jobs if not _finishing(j, manifest)]


def _leftover_reason(out: Path, lock: dict | None, manifest: dict | None, jobs: list[QueuedJob]) -> str | None:
    """Why the earlier chain's queued ``jobs`` cannot go on, or None if it can."""
    if lock is not None and lock.get("state") == "submitting":
        return f"its driver (pid {lock.get('pid')} on {lock.get('host')}) ended while submitting"
    if manifest is None:
        return "the folder has no run manifest (deleted while its jobs were queued)"
    if manifest.get("status") in ("complete", "failed"):
        return f"its run already ended ({manifest['status']})"
    strangers = [j.job_id for j in jobs if j.job_id not in manifest_job_ids(manifest)]
    if strangers:
        return f"jobs {', '.join(strangers[:6])} are not part of the run in {manifest_path(out)}"
    if not any(j.progressing for j in jobs) and any(j.never_runs for j in jobs):
        stuck = [j for j in jobs if j.never_runs]
        return "it can never finish (" + ", ".join(f"job {j.job_id} {j.describe()}" for j in stuck[:4]) + ")"
    return None


def claim(out: Path, scheduler: str, *, local: bool = False) -> list[str]:
    """Take the folder for this driver; returns the lines to print (leftovers cancelled, a stale
    lock taken over). Raises :class:`Busy` while another driver or live chain owns it."""
    with _guard(out):
        lock, manifest = read_lock(out), _read_manifest(out)
        if lock is not None and _driver_alive(lock):
            raise Busy(f"{out} is in use by the driver pid {lock.get('pid')} on {lock.get('host')} "
                       f"(started {lock.get('started')}, {lock.get('state')}); wait for it to end "
                       f"(or remove {lock_path(out)} if that process is gone)")
        schedulers = {scheduler, (lock or {}).get("scheduler", ""), (manifest or {}).get("scheduler", "")}
        jobs = _earlier_jobs(out, schedulers, lock, manifest)
        lines: list[str] = []
        if jobs:
            reason = _leftover_reason(out, lock, manifest, jobs)
            if reason is None or (reason.startswith("it can never") and _recheck_live(out, schedulers, lock)):
                ids = " ".join(sorted((j.job_id for j in jobs), key=int))
                cancel = "scancel" if jobs[0].scheduler == "slurm" else "qdel"
                owner = f"driver pid {lock.get('pid')} on {lock.get('host')}, " if lock else ""
                raise Busy(f"{out} is in use by a live chain ({owner}submitted {(lock or {}).get('started')}): "
                           f"{len(jobs)} of its jobs are queued or running ({ids}); wait for it to finish "
                           f"(status in {manifest_path(out)}) or cancel it: {cancel} {ids}")
            t0 = time.monotonic()
            lines.append(f"leftover jobs of an earlier chain in {out}: {reason}; cancelling {len(jobs)} jobs")
            lines += ["  " + line for line in cancel_jobs(jobs)]
            lines.append(f"  ({len(jobs)} leftover jobs found and cancelled in {time.monotonic() - t0:.1f} s)")
        elif lock is not None:
            lines.append(f"note: taking over the stale lock of {out} (driver pid {lock.get('pid')} on "
                         f"{lock.get('host')}, {lock.get('state')} {lock.get('started')}): none of its jobs is queued")
        _write(out, {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(),
                     "started_epoch": time.time(), "scheduler": scheduler,
                     "state": "local" if local else "submitting", "job_ids": []})
        return lines


def _recheck_live(out: Path, schedulers: set[str], lock: dict | None) -> bool:
    """A chain that looked stuck, looked at again a moment later: live if it is no longer stuck."""
    time.sleep(STUCK_RECHECK_S)
    manifest = _read_manifest(out)
    jobs = _earlier_jobs(out, schedulers, lock, manifest)
    return bool(jobs) and _leftover_reason(out, lock, manifest, jobs) is None


def _write(out: Path, lock: dict) -> None:
    write_json_atomic(lock_path(out), lock)


def _update(out: Path, **changes) -> None:
    lock = read_lock(out)
    if lock is None or lock.get("pid") != os.getpid() or lock.get("host") != socket.gethostname():
        return  # not ours (taken over): leave it
    if "job_id" in changes:
        lock["job_ids"].append(str(changes.pop("job_id")))
    lock.update(changes)
    _write(out, lock)


def record_job(out: Path, job_id: str) -> None:
    """Add a submitted job to this driver's lock (a rerun finds it if this driver dies)."""
    _update(out, job_id=job_id)


def mark_submitted(out: Path) -> None:
    _update(out, state="submitted", submitted=now_iso())


def release(out: Path, *, job_ids: set[str] | None = None) -> None:
    """Remove the lock: this driver's own (``job_ids`` None), or a chain's when the lock lists
    one of ``job_ids`` (the finaliser that ends the run)."""
    lock = read_lock(out)
    if lock is None:
        return
    if job_ids is None:
        if lock.get("pid") != os.getpid() or lock.get("host") != socket.gethostname():
            return
    elif not job_ids & {str(j) for j in lock.get("job_ids", [])}:
        return
    with contextlib.suppress(OSError):
        lock_path(out).unlink()
