"""``python -m memfit review``: the memory review of a pipeline run (or of any jobs).

Exit status: 0 reviewed (unknown job ids and unavailable accounting are warnings);
2 bad input (missing or corrupt manifest, unreadable accounting file, mixed schedulers,
bad flags): one line on stderr, through the CLI error wrapper hpc.cli.run_command.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from hpc.calibration import (
    CALIBRATION_FILE,
    build_calibration,
    load_calibration,
    write_calibration,
)
from hpc.cli import run_command
from memfit.accounting import (
    AccountingUnavailable,
    TaskAccounting,
    fetch_accounting,
    read_accounting_file,
)
from memfit.accounting.fetch import poll_until
from memfit.review import (
    DEFAULT_MARGIN,
    DEFAULT_QUANTILE,
    ReviewError,
    StageReview,
    calibration_ratios,
    jobs_manifest,
    load_manifest,
    manifest_job_ids,
    oom_exit_codes,
    pipeline_margin,
    review_stages,
    unknown_job_ids,
    unsettled_tasks,
)
from memfit.review_report import JSON_FILE, PLOT_FILE, TSV_FILE, build_report, format_table, write_json, write_tsv

_ACCOUNTING_TOOL = {"slurm": "sacct", "sge": "qacct"}


def _warn(message: str) -> None:
    click.echo(f"memfit review: warning: {message}", err=True)


def _parse_bounds(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise ReviewError(f"--bounds {text!r}: expected LOW:HIGH, e.g. 0.5:4") from None
    if not 0 < low <= 1 <= high:
        raise ReviewError(f"--bounds {text!r}: need 0 < LOW <= 1 <= HIGH")
    return low, high


def _scheduler_for_jobs(scheduler: str | None, sacct_file: str | None, qacct_file: str | None) -> str:
    if sacct_file:
        return "slurm"
    if qacct_file:
        return "sge"
    if scheduler:
        return scheduler
    found = [name for name, tool in _ACCOUNTING_TOOL.items() if shutil.which(tool)]
    if len(found) != 1:
        raise ReviewError(
            "cannot tell the scheduler of --jobs: "
            + ("both sacct and qacct are installed" if found else "neither sacct nor qacct is installed")
            + "; give --scheduler slurm|sge (or --sacct-file / --qacct-file)"
        )
    return found[0]


def _accounting(
    scheduler: str,
    manifest: dict,
    *,
    sacct_file: str | None,
    qacct_file: str | None,
    skip: bool,
    codes: tuple[int, ...],
) -> tuple[list[TaskAccounting], dict]:
    """Records and a description of where they came from (or why there are none).

    Live accounting is read again (bounded) while tasks that the manifest says have ended
    lack their final record: a review run just as the pipeline ends would miss them."""
    if sacct_file or qacct_file:
        kind, path = ("slurm", sacct_file) if sacct_file else ("sge", qacct_file)
        if kind != scheduler:
            raise ReviewError(
                f"mixed schedulers: the run is a {scheduler!r} run but {path} is "
                f"{_ACCOUNTING_TOOL[kind]} output ({kind})"
            )
        return read_accounting_file(kind, path, codes), {"source": f"file:{path}", "available": True}
    if scheduler == "local":
        return [], {"source": "none", "available": False, "note": "local run: no scheduler accounting"}
    if skip:
        return [], {"source": "none", "available": False, "note": "--no-accounting given"}
    try:
        records = poll_until(lambda: fetch_accounting(scheduler, manifest_job_ids(manifest), codes),
                             lambda found: not unsettled_tasks(manifest, found))
    except AccountingUnavailable as exc:
        _warn(f"{exc}; reviewing from the sidecars only")
        return [], {"source": "none", "available": False, "note": str(exc)}
    waiting = unsettled_tasks(manifest, records)
    if waiting:
        _warn(f"accounting of {len(waiting)} ended task(s) is not final yet: {', '.join(waiting[:10])}")
    return records, {"source": _ACCOUNTING_TOOL[scheduler], "available": True}


def _calibrate(out_dir: Path, manifest: dict, reviews: list[StageReview], quantile: float,
               bounds: tuple[float, float]) -> Path:
    ratios = {r.stage: calibration_ratios(r) for r in reviews}
    document = build_calibration(ratios, quantile=quantile, bounds=bounds, source=str(out_dir.resolve()))
    previous = (manifest.get("calibration") or {}).get("factors") or {}
    for stage, factor in previous.items():
        if stage not in document["stages"] and isinstance(factor, (int, float)) and factor > 0:
            document["stages"][stage] = {"factor": float(factor), "n": 0, "carried_over": True}
    if not document["stages"]:
        raise ReviewError(
            "--calibrate: no stage has a finished task with both a measured peak RSS and an estimate; "
            "nothing to calibrate"
        )
    return write_calibration(out_dir / CALIBRATION_FILE, document)


@click.group(name="memfit")
def cli() -> None:
    """memfit: memory tools for pipeline stages."""


@cli.command("review")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Pipeline out dir holding run_manifest.json and the stages' sidecars.")
@click.option("--jobs", default=None, help="Review these job ids (ID[,ID...]) instead of a run manifest.")
@click.option("--scheduler", type=click.Choice(["slurm", "sge"]), default=None,
              help="Scheduler of --jobs (default: the one whose accounting tool is installed).")
@click.option("--sacct-file", type=click.Path(dir_okay=False), default=None,
              help="Saved 'sacct -P --units=K --format=...' output to use instead of running sacct.")
@click.option("--qacct-file", type=click.Path(dir_okay=False), default=None,
              help="Saved 'qacct -j ID' output (several concatenated) instead of running qacct.")
@click.option("--no-accounting", is_flag=True, help="Do not query the scheduler: sidecar-only review.")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where memory_review.{tsv,json,png} go (default: --out-dir, else the current dir).")
@click.option("--margin", type=float, default=None,
              help="Recommended request = quantile of used x margin (default: 1/mem_safety of the run, "
                   f"1/0.7 = 1.43, or {DEFAULT_MARGIN} for --jobs).")
@click.option("--quantile", type=float, default=DEFAULT_QUANTILE, show_default=True,
              help="Quantile of used (over tasks) the recommendation and calibration start from.")
@click.option("--calibrate", is_flag=True,
              help="Write OUT_DIR/memfit_calibration.json: per stage factor = quantile of peak RSS / raw estimate.")
@click.option("--bounds", default="0.5:4", show_default=True, help="Calibration factors are clipped to LOW:HIGH.")
@click.option("--no-plot", is_flag=True, help="Do not draw memory_review.png.")
def review_command(*, out_dir, jobs, scheduler, sacct_file, qacct_file, no_accounting, report_dir, margin,
                   quantile, calibrate, bounds, no_plot) -> None:
    """Per stage: tasks done/failed/OOM-killed/retried, requested, estimate, used, efficiency, recommendation."""
    if not out_dir and not jobs:
        raise ReviewError("give --out-dir (a pipeline run) or --jobs ID[,ID...]")
    if sacct_file and qacct_file:
        raise ReviewError("mixed schedulers: give --sacct-file or --qacct-file, not both")
    if margin is not None and not margin >= 1.0:
        raise ReviewError(f"--margin {margin}: must be at least 1")
    if not 0 < quantile <= 1:
        raise ReviewError(f"--quantile {quantile}: must be in (0, 1]")
    limits = _parse_bounds(bounds)
    if jobs:
        if calibrate:
            raise ReviewError("--calibrate needs a pipeline run (--out-dir without --jobs)")
        ids = [j.strip() for j in jobs.split(",") if j.strip()]
        if not ids:
            raise ReviewError(f"--jobs {jobs!r}: no job id")
        kind = _scheduler_for_jobs(scheduler, sacct_file, qacct_file)
        manifest, run_dir = jobs_manifest(ids, kind), None
    else:
        run_dir = Path(out_dir)
        manifest = load_manifest(run_dir)
        kind = manifest["scheduler"]
        if scheduler and scheduler != kind:
            raise ReviewError(f"mixed schedulers: --scheduler {scheduler} for a {kind} run ({run_dir})")
    if margin is None:
        margin = DEFAULT_MARGIN if jobs else pipeline_margin(manifest)
    codes = oom_exit_codes(with_manifest=not jobs)
    records, source = _accounting(kind, manifest, sacct_file=sacct_file, qacct_file=qacct_file, skip=no_accounting,
                                  codes=codes)
    notes = []
    if source.get("note"):
        notes.append(f"accounting not used: {source['note']}; figures come from the sidecars")
    if source["available"]:
        unknown = unknown_job_ids(manifest, records)
        source["unknown_job_ids"] = unknown
        if unknown:
            tool = _ACCOUNTING_TOOL.get(kind, "accounting")
            _warn(f"{len(unknown)} job id(s) unknown to {tool}: {', '.join(unknown)}")
            notes.append(f"job ids unknown to {tool}: {', '.join(unknown)}")
    reviews = review_stages(manifest, run_dir, records)
    report = build_report(reviews, scheduler=kind, out_dir=str(run_dir) if run_dir else None,
                          accounting=source, margin=margin, quantile=quantile, notes=notes)
    target = Path(report_dir or out_dir or ".")
    write_tsv(report, target / TSV_FILE)
    write_json(report, target / JSON_FILE)
    click.echo(format_table(report))
    for note in notes:
        click.echo(f"note: {note}")
    for row in report["stages"]:
        for note in row["notes"]:
            click.echo(f"note: stage {row['stage']}: {note}")
    if not no_plot:
        from memfit.review_plot import plot_review

        plot_review(report, target / PLOT_FILE)
    click.echo(f"wrote {target / TSV_FILE}, {target / JSON_FILE}" + ("" if no_plot else f", {target / PLOT_FILE}"))
    if calibrate:
        path = _calibrate(run_dir, manifest, reviews, quantile, limits)
        factors = load_calibration(path)
        for stage in manifest["stages"]:
            if stage not in factors:
                _warn(f"--calibrate: stage {stage} has no finished task with a peak RSS and an estimate: no factor")
        click.echo(f"wrote {path}: " + ", ".join(f"{s} x{f:g}" for s, f in factors.items()))


def run(args: Sequence[str] | None = None) -> NoReturn:
    """``python -m memfit ...``."""
    run_command(cli, args, prog="memfit")


def run_review(args: Sequence[str] | None = None) -> NoReturn:
    """The review command on its own (``src/scripts/memory_review.py``)."""
    run_command(review_command, args, prog="memory_review.py")


if __name__ == "__main__":
    run()
