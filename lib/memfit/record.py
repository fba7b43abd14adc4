"""Measure what a stage really used: peak RSS (bytes), wall and CPU time; write sidecars."""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from hpc.atomic import atomic_output
from memfit.allocation import Allocation
from memfit.estimate import MemoryEstimate
from memfit.units import format_bytes

#: HDF5 group on every output that holds the run's memory figures. Its attributes
#: differ between runs by nature (time, RSS), so determinism checks exclude it
#: (``h5diff --exclude-path /memfit``).
H5_GROUP = "memfit"
_MAX_TIMELINE = 2000


class PeakRecorder:
    """Context manager sampling the RSS (bytes) of this process plus its children.

    Peak = max(sampled sum of RSS, VmHWM of self, getrusage ru_maxrss of waited children).
    Warns once on stderr when the sampled RSS passes ``warn_fraction`` of the limit.
    """

    def __init__(
        self,
        limit_bytes: int | None = None,
        interval_s: float = 0.05,
        warn_fraction: float = 0.8,
    ) -> None:
        self.limit_bytes = limit_bytes
        self.interval_s = interval_s
        self.warn_fraction = warn_fraction
        self.sampled_peak_bytes = 0
        self.timeline: list[tuple[float, int]] = []
        self.warned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._t0 = 0.0
        self._cpu0 = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def _rss_now(self) -> int:
        total = 0
        try:
            total = self._process.memory_info().rss
            for child in self._process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def sample(self) -> int:
        """Take one sample now; returns the current RSS in bytes."""
        rss = self._rss_now()
        if rss > self.sampled_peak_bytes:
            self.sampled_peak_bytes = rss
        self.timeline.append((time.monotonic() - self._t0, rss))
        if len(self.timeline) > _MAX_TIMELINE:
            self.timeline = self.timeline[::2]
        if (
            not self.warned
            and self.limit_bytes
            and rss > self.warn_fraction * self.limit_bytes
        ):
            self.warned = True
            print(
                f"warning: RSS {format_bytes(rss)} passed {self.warn_fraction:.0%} of the "
                f"{format_bytes(self.limit_bytes)} limit",
                file=sys.stderr,
            )
        return rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRecorder:
        self._t0 = time.monotonic()
        self._cpu0 = _cpu_seconds()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="memfit-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample()
        self.wall_s = time.monotonic() - self._t0
        self.cpu_s = _cpu_seconds() - self._cpu0

    @property
    def peak_rss_bytes(self) -> int:
        """Peak RSS in bytes so far (process and children)."""
        self_max = _own_high_water_bytes()
        child_max = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        return int(max(self.sampled_peak_bytes, self_max, child_max))

    def elapsed(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds) since the recorder started."""
        if self._thread is None and self.wall_s:
            return self.wall_s, self.cpu_s
        return time.monotonic() - self._t0, _cpu_seconds() - self._cpu0

    def summary(self) -> dict[str, Any]:
        wall, cpu = self.elapsed()
        return {
            "peak_rss_bytes": self.peak_rss_bytes,
            "sampled_peak_rss_bytes": int(self.sampled_peak_bytes),
            "wall_s": round(wall, 4),
            "cpu_s": round(cpu, 4),
            "rss_warning_issued": self.warned,
        }


def _own_high_water_bytes() -> int:
    """This process's own peak RSS in bytes: VmHWM from /proc, else ru_maxrss.

    ru_maxrss is not used first because Linux carries the parent's high-water mark
    into a forked child across exec, which inflates the peak of a small stage launched
    from a large Python process.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        self_usage.ru_utime + self_usage.ru_stime + child_usage.ru_utime + child_usage.ru_stime
    )


def sidecar_path(output_path: str | os.PathLike) -> Path:
    """``<output>.memory.json`` beside the output."""
    path = Path(output_path)
    return path.with_name(path.name + ".memory.json")


def memory_record(
    stage: str,
    estimate: MemoryEstimate | None,
    allocation: Allocation | None,
    recorder: PeakRecorder,
    *,
    batch_size: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The figures written to a sidecar: estimate, limit, batch size, measured peak."""
    record: dict[str, Any] = {
        "stage": stage,
        "estimate_bytes": estimate.total_bytes if estimate else None,
        "estimate": estimate.to_dict() if estimate else None,
        "allocation": allocation.to_dict() if allocation else None,
        "limit_bytes": allocation.limit_bytes if allocation else None,
        "limit_source": allocation.source if allocation else None,
        "batch_size": batch_size,
        **recorder.summary(),
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("JOB_ID"),
        "task_id": os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SGE_TASK_ID"),
        # SLURM gives each array task its own SLURM_JOB_ID; the review joins on the array's id
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "timeline_s_bytes": recorder.timeline[:: max(1, len(recorder.timeline) // 500)],
    }
    if estimate and record["peak_rss_bytes"]:
        record["used_over_estimate"] = round(record["peak_rss_bytes"] / estimate.total_bytes, 4)
    if extra:
        record.update(extra)
    return record


def write_sidecar(
    output_path: str | os.PathLike,
    stage: str,
    estimate: MemoryEstimate | None,
    allocation: Allocation | None,
    recorder: PeakRecorder,
    *,
    batch_size: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<output>.memory.json`` (or ``output_path`` itself if it ends so) atomically."""
    record = memory_record(stage, estimate, allocation, recorder, batch_size=batch_size, extra=extra)
    path = Path(output_path)
    if not path.name.endswith(".memory.json"):
        path = sidecar_path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return path


def h5_attrs(
    stage: str,
    estimate: MemoryEstimate | None,
    allocation: Allocation | None,
    recorder: PeakRecorder,
    batch_size: int | None = None,
) -> dict[str, str | int | float]:
    """The key figures stored as attributes of the ``/memfit`` group (``H5_GROUP``) of an
    output: str, int and float values only (bytes, seconds; -1 / "" where unknown)."""
    summary = recorder.summary()
    return {
        "stage": stage,
        "peak_rss_bytes": int(summary["peak_rss_bytes"]),
        "wall_s": float(summary["wall_s"]),
        "cpu_s": float(summary["cpu_s"]),
        "estimate_bytes": int(estimate.total_bytes) if estimate else -1,
        "limit_bytes": int(allocation.limit_bytes) if allocation else -1,
        "limit_source": allocation.source if allocation else "",
        "batch_size": int(batch_size) if batch_size is not None else -1,
    }


def task_sidecar_path(out_dir: str | os.PathLike, stage: str, gene_indices: list[int], width: int = 4) -> Path:
    """Sidecar of one per-gene task: ``<out_dir>/memory/<stage>.genes_<first>-<last>.memory.json``."""
    first, last = min(gene_indices), max(gene_indices)
    return Path(out_dir) / "memory" / f"{stage}.genes_{first:0{width}d}-{last:0{width}d}.memory.json"
