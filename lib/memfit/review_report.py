"""Outputs of the memory review: the printed table, memory_review.tsv and .json."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hpc.atomic import atomic_output
from hpc.calibration import package_version
from memfit.review import REVIEW_VERSION, StageReview, summarize_stage
from memfit.units import format_bytes

TSV_FILE = "memory_review.tsv"
JSON_FILE = "memory_review.json"
PLOT_FILE = "memory_review.png"

#: memory_review.tsv columns (sizes in bytes, times in seconds, ratios plain).
TSV_COLUMNS = (
    "stage", "tasks", "done", "failed", "oom_killed", "retried", "pending", "unknown",
    "requested_bytes", "initial_requested_bytes", "estimate_bytes", "raw_estimate_bytes",
    "calibration_factor", "used_metric", "used_max_bytes", "used_median_bytes", "used_p95_bytes",
    "peak_rss_max_bytes", "peak_rss_median_bytes", "peak_rss_p95_bytes", "efficiency_median",
    "efficiency_max", "estimate_error_median", "estimate_error_max", "wall_max_s", "wall_median_s",
    "time_limit_min_s", "time_limit_max_s", "wall_over_time_limit_max",
    "recommended_bytes", "recommended_request", "recommendation_basis",
)


def build_report(
    stages: Iterable[StageReview],
    *,
    scheduler: str,
    out_dir: str | None,
    accounting: Mapping[str, Any],
    margin: float,
    quantile: float,
    notes: Iterable[str] = (),
) -> dict[str, Any]:
    """The whole review as one JSON-friendly document (memory_review.json)."""
    rows = []
    for review in stages:
        row = summarize_stage(review, margin, quantile)
        row["task_details"] = [
            {"task": task.task, "attempts": [a.to_dict() for a in task.attempts]} for task in review.tasks
        ]
        rows.append(row)
    return {
        "review_version": REVIEW_VERSION,
        "memfit_version": package_version(),
        "scheduler": scheduler,
        "out_dir": out_dir,
        "accounting": dict(accounting),
        "margin": margin,
        "quantile": quantile,
        "stages": rows,
        "notes": list(notes),
    }


def _size(value: Any) -> str:
    return format_bytes(value) if isinstance(value, (int, float)) and value else "-"


def _ratio(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _seconds(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    value = int(round(value))
    return f"{value // 3600}:{value // 60 % 60:02d}:{value % 60:02d}"


def format_table(report: Mapping[str, Any]) -> str:
    """The per-stage table printed on stdout (human units)."""
    headers = ["stage", "tasks", "done", "fail", "pend", "oom", "retry", "requested", "estimate",
               "used max", "used med", "used p95", "rss p95", "eff", "used/est", "wall max", "recommended"]
    lines = [headers]
    for row in report["stages"]:
        lines.append([
            str(row["stage"]), str(row["tasks"]), str(row["done"]), str(row["failed"]),
            str(row["pending"]), str(row["oom_killed"]), str(row["retried"]), _size(row["requested_bytes"]),
            _size(row["estimate_bytes"]), _size(row["used_max_bytes"]), _size(row["used_median_bytes"]),
            _size(row["used_p95_bytes"]), _size(row["peak_rss_p95_bytes"]), _ratio(row["efficiency_median"]),
            _ratio(row["estimate_error_max"]), _seconds(row["wall_max_s"]),
            row["recommended_request"] or "-",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    text = ["  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(line))
            for line in lines]
    metric = next((r["used_metric"] for r in report["stages"] if r.get("used_metric")), None)
    footer = [f"used = {metric or 'sidecar peak RSS'} (scheduler accounting); rss = the stage's measured peak RSS; "
              f"eff = median used/requested; used/est = max peak RSS / estimate; "
              f"recommended = {report['quantile']:.0%} quantile of used x {report['margin']:g}, "
              "rounded (see memory_review.json for why)"]
    return "\n".join(text + footer)


def _tsv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _atomic_write(path: Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return path


def write_tsv(report: Mapping[str, Any], path: str | Path) -> Path:
    lines = ["\t".join(TSV_COLUMNS)]
    for row in report["stages"]:
        lines.append("\t".join(_tsv_value(row.get(c)) for c in TSV_COLUMNS))
    return _atomic_write(Path(path), "\n".join(lines) + "\n")


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    return _atomic_write(Path(path), json.dumps(report, indent=1, default=str) + "\n")
