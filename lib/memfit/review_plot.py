"""memory_review.png: per stage, requested vs estimated vs the distribution of used (log scale)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hpc.atomic import atomic_output
from memfit.units import MiB

_LEGEND_ORDER = ("requested", "initial request", "estimate", "used (accounting)", "peak RSS (sidecar)",
                 "OOM-killed at request", "recommended")


def _mib_label(value: float, _pos: object = None) -> str:
    if value >= 1024:
        return f"{value / 1024:g}G"
    return f"{value:g}M"


def plot_review(report: Mapping[str, Any], path: str | Path) -> Path:
    """Draw the review (MiB, log scale) and save it as a PNG, atomically.

    Per stage: requested (black bar; the initial request dashed when retries raised
    it), estimate (blue diamond), used per task (grey dots: SLURM MaxRSS / SGE maxvmem),
    measured peak RSS per task (green circles), recommended request (orange bar) and
    OOM kills (red crosses at the request they were killed under).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    stages = report["stages"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(stages) + 2.5), 4.8))
    rng = np.random.default_rng(0)
    labels = []
    for x, row in enumerate(stages):
        labels.append(f"{row['stage']}\n{row['tasks']} task{'s' if row['tasks'] != 1 else ''}")
        attempts = [a for task in row.get("task_details", []) for a in task["attempts"]]
        used = [a["used_bytes"] for a in attempts if a.get("used_bytes") and not a.get("oom")]
        rss = [a["peak_rss_bytes"] for a in attempts if a.get("peak_rss_bytes")]
        ooms = [a.get("requested_bytes") or a.get("used_bytes") for a in attempts if a.get("oom")]
        if used:
            ax.scatter(x - 0.12 + rng.uniform(-0.06, 0.06, len(used)), np.array(used) / MiB, s=14,
                       color="0.45", alpha=0.8, label="used (accounting)", zorder=3)
        if rss:
            ax.scatter(x + 0.12 + rng.uniform(-0.06, 0.06, len(rss)), np.array(rss) / MiB, s=18,
                       facecolors="none", edgecolors="tab:green", label="peak RSS (sidecar)", zorder=3)
        ooms = [o for o in ooms if o]
        if ooms:
            ax.scatter([x] * len(ooms), np.array(ooms) / MiB, marker="x", s=80, color="tab:red",
                       linewidths=2, label="OOM-killed at request", zorder=4)
            for value in sorted(set(ooms)):
                count = ooms.count(value)
                if count > 1:
                    ax.annotate(f"x{count}", (x, value / MiB), xytext=(7, -3), textcoords="offset points",
                                color="tab:red", fontsize=8)
        if row.get("requested_bytes"):
            ax.hlines(row["requested_bytes"] / MiB, x - 0.32, x + 0.32, color="black", lw=2.5,
                      label="requested", zorder=2)
        initial = row.get("initial_requested_bytes")
        if initial and initial != row.get("requested_bytes"):
            ax.hlines(initial / MiB, x - 0.32, x + 0.32, color="black", lw=1.2, linestyles="dashed",
                      label="initial request", zorder=2)
        if row.get("recommended_bytes"):
            ax.hlines(row["recommended_bytes"] / MiB, x - 0.28, x + 0.28, color="tab:orange", lw=2,
                      label="recommended", zorder=2)
        if row.get("estimate_bytes"):
            ax.scatter([x], [row["estimate_bytes"] / MiB], marker="D", s=40, color="tab:blue",
                       label="estimate", zorder=5)
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_mib_label))
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(labels)
    ax.set_xlim(-0.6, len(stages) - 0.4)
    ax.set_ylabel("memory (log scale)")
    title = f"memory review ({report.get('scheduler')})"
    ax.set_title(title)
    ax.grid(axis="y", which="both", alpha=0.25)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    order = [n for n in _LEGEND_ORDER if n in unique]
    if order:
        ax.legend([unique[n] for n in order], order, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
