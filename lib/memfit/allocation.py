"""Find the binding memory limit of the running process and where it comes from.

Sources, in order of precedence for the *kind* of allocation (scheduler first); the
binding limit is the smallest of every limit found:

1. an explicit override (``MEMFIT_MEM_LIMIT`` env var or the ``limit_bytes`` argument);
2. SLURM: ``SLURM_MEM_PER_NODE`` (MiB); else ``SLURM_MEM_PER_CPU`` (MiB) times
   ``SLURM_CPUS_ON_NODE``, ``SLURM_CPUS_PER_TASK`` or ``SLURM_JOB_CPUS_PER_NODE``;
3. SGE (``JOB_ID`` plus ``SGE_TASK_ID``/``SGE_ROOT``): the ``RLIMIT_AS`` that h_vmem sets,
   else ``h_vmem`` × ``NSLOTS`` read from ``qstat -j $JOB_ID``;
4. cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes`` of this process's cgroup;
5. psutil's available memory (a shared node: nothing is reserved for us).

The safety factor is 0.7 under a scheduler or cgroup allocation and 0.35 on a shared
node; ``MEMFIT_SAFETY`` or the ``safety`` argument overrides it.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from memfit.units import MiB, format_bytes, parse_bytes

SAFETY_SCHEDULER = 0.7
SAFETY_SHARED = 0.35
#: Address space a Python + numpy + h5py process maps beyond its resident set (thread
#: stacks, malloc arenas, BLAS buffers, shared libraries). Subtracted from the budget
#: when the limit is on virtual memory (SGE h_vmem -> RLIMIT_AS).
VIRTUAL_OVERHEAD_BYTES = 768 * MiB
_UNLIMITED_CGROUP = 2**60


@dataclass(frozen=True)
class Allocation:
    """The binding memory limit in bytes, where it came from and the safety factor."""

    limit_bytes: int
    source: str
    safety: float
    under_scheduler: bool
    limits_virtual: bool = False

    @property
    def usable_bytes(self) -> int:
        """Bytes of peak RSS a stage may plan for: safety × limit (less mapping overhead)."""
        overhead = VIRTUAL_OVERHEAD_BYTES if self.limits_virtual else 0
        return max(int(self.limit_bytes * self.safety) - overhead, 0)

    def describe(self) -> str:
        kind = "virtual" if self.limits_virtual else "resident"
        return (
            f"limit {format_bytes(self.limit_bytes)} ({kind}) from {self.source}; "
            f"safety {self.safety:g} -> usable {format_bytes(self.usable_bytes)}"
        )

    def to_dict(self) -> dict:
        return {
            "limit_bytes": self.limit_bytes,
            "source": self.source,
            "safety": self.safety,
            "under_scheduler": self.under_scheduler,
            "limits_virtual": self.limits_virtual,
            "usable_bytes": self.usable_bytes,
        }


def _leading_int(text: str) -> int | None:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def slurm_limit(environ: Mapping[str, str]) -> tuple[int, str] | None:
    """SLURM's per-job limit in bytes and the variable(s) it came from, or None."""
    per_node = _leading_int(environ.get("SLURM_MEM_PER_NODE", ""))
    if per_node:
        return per_node * MiB, "slurm:SLURM_MEM_PER_NODE"
    per_cpu = _leading_int(environ.get("SLURM_MEM_PER_CPU", ""))
    if per_cpu:
        for name in ("SLURM_CPUS_ON_NODE", "SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
            cpus = _leading_int(environ.get(name, ""))
            if cpus:
                return per_cpu * cpus * MiB, f"slurm:SLURM_MEM_PER_CPU*{name}"
        return per_cpu * MiB, "slurm:SLURM_MEM_PER_CPU"
    return None


def _in_sge_job(environ: Mapping[str, str]) -> bool:
    return "JOB_ID" in environ and ("SGE_TASK_ID" in environ or "SGE_ROOT" in environ)


def sge_limit(environ: Mapping[str, str], rlimit_as: int | None = None) -> tuple[int, str] | None:
    """SGE's h_vmem as seen by the job: RLIMIT_AS, else qstat's h_vmem × NSLOTS."""
    if not _in_sge_job(environ):
        return None
    if rlimit_as is None:
        rlimit_as = resource.getrlimit(resource.RLIMIT_AS)[0]
    if rlimit_as not in (resource.RLIM_INFINITY, -1) and rlimit_as > 0:
        return int(rlimit_as), "sge:RLIMIT_AS"
    try:
        text = subprocess.run(
            ["qstat", "-j", environ["JOB_ID"]], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"h_vmem=([0-9.]+[KMGTkmgt]?)", text)
    if not match:
        return None
    slots = _leading_int(environ.get("NSLOTS", "1")) or 1
    return parse_bytes(match.group(1)) * slots, "sge:qstat h_vmem*NSLOTS"


def cgroup_limit(
    cgroup_root: str | os.PathLike = "/sys/fs/cgroup", proc_cgroup: str | None = None
) -> tuple[int, str] | None:
    """The smallest memory limit on this process's cgroup path (v2 then v1), or None."""
    root = Path(cgroup_root)
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    v2_path, v1_path = "/", None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "memory" in parts[1].split(","):
            v1_path = parts[2]
    candidates: list[tuple[Path, str]] = []
    for directory in _ancestors(root, v2_path):
        candidates.append((directory / "memory.max", "cgroup2"))
    if v1_path is not None:
        for directory in _ancestors(root / "memory", v1_path):
            candidates.append((directory / "memory.limit_in_bytes", "cgroup1"))
    best: tuple[int, str] | None = None
    for path, kind in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if not text.isdigit():
            continue
        value = int(text)
        if value >= _UNLIMITED_CGROUP:
            continue
        if best is None or value < best[0]:
            best = (value, f"{kind}:{path}")
    return best


def _ancestors(base: Path, cgroup_path: str) -> list[Path]:
    parts = [p for p in cgroup_path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def detect_allocation(
    *,
    environ: Mapping[str, str] | None = None,
    cgroup_root: str | os.PathLike = "/sys/fs/cgroup",
    proc_cgroup: str | None = None,
    rlimit_as: int | None = None,
    safety: float | None = None,
    limit_bytes: int | None = None,
) -> Allocation:
    """Detect the binding memory limit (bytes), its source and the safety factor."""
    env = os.environ if environ is None else environ
    found: list[tuple[int, str, bool, bool]] = []  # bytes, source, scheduler, virtual
    override = limit_bytes if limit_bytes is not None else env.get("MEMFIT_MEM_LIMIT")
    if override:
        found.append((parse_bytes(override), "override:MEMFIT_MEM_LIMIT", True, False))
    slurm = slurm_limit(env)
    if slurm:
        found.append((*slurm, True, False))
    sge = sge_limit(env, rlimit_as)
    if sge:
        found.append((*sge, True, True))
    cgroup = cgroup_limit(cgroup_root, proc_cgroup)
    if cgroup:
        found.append((*cgroup, True, False))
    if found:
        value, source, scheduler, virtual = min(found, key=lambda item: item[0])
    else:
        value, source, scheduler, virtual = (
            int(psutil.virtual_memory().available), "psutil:available", False, False
        )
    if safety is None:
        env_safety = env.get("MEMFIT_SAFETY")
        safety = float(env_safety) if env_safety else (
            SAFETY_SCHEDULER if scheduler else SAFETY_SHARED
        )
    if not 0 < safety <= 1:
        raise ValueError(f"safety factor must be in (0, 1], got {safety}")
    return Allocation(int(value), source, float(safety), scheduler, virtual)
