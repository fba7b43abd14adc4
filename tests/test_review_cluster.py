"""Memory review on the real test clusters: small pipeline runs under SLURM and SGE.

- the review's used figures equal what ``sacct`` / ``qacct`` report when read here
  independently, and its peak RSS figures equal the sidecars';
- a stage under-requested with the drivers' knob (``DCOEX_TEST_MEM_SCALE_02A``) shows as
  OOM-killed and retried, with a recommended request above the failing one;
- calibration round trip: with the planned estimate of 02a halved
  (``DCOEX_TEST_ESTIMATE_SCALE_02A=0.5``) the factor is about 2 × the ratio of a normal
  run, and the next run's plan applies it (and needs no OOM retry).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cluster_util import run_driver, sge_cluster, slurm_cluster, wait_for_run  # noqa: F401 - fixtures

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MiB = 1024**2
STAGES = "00,01,02a"
DRIVER_ARGS = ["--n-bootstrap", "20", "--genes-per-task", "100", "--stages", STAGES]


def write_expression(path: Path) -> Path:
    from dcoex.synthetic import make_synthetic, write_tsv

    return write_tsv(path, make_synthetic(n_genes=300, n_samples=60, n_modulators=1, module_size=10, seed=5))


def run_pipeline(scheduler: str, out: Path, expr: Path, env: dict, extra: tuple = ()) -> dict:
    # no 256 MiB floor on SLURM requests: the calibration arithmetic below is checked exactly
    proc = run_driver(scheduler, ["--expr-tsv", expr, "--out-dir", out, *DRIVER_ARGS, *extra],
                      env=dict(env, DCOEX_MIN_REQUEST="0"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = wait_for_run(out, timeout=420)
    assert manifest["status"] == "complete", json.dumps(manifest.get("stages", {}).get("02a", {}), indent=1)[-3000:]
    return manifest


def memory_review(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "memfit", "review", *args], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    return proc


def review_rows(out: Path) -> dict[str, dict]:
    return {row["stage"]: row for row in json.loads((out / "memory_review.json").read_text())["stages"]}


def sacct_maxrss(job_ids: list[str]) -> dict[str, int]:
    """{'123' or '123_4': largest step MaxRSS in bytes}, from our own sacct call. A MaxRSS of 0
    is a step the accounting never sampled (e.g. killed within its first poll): no figure."""
    out = subprocess.run(["sacct", "-P", "-n", "--units=K", "-j", ",".join(job_ids), "--format=JobID,MaxRSS"],
                         capture_output=True, text=True, check=True).stdout
    result: dict[str, int] = {}
    for line in out.splitlines():
        job, _, rss = line.partition("|")
        value = int(float(rss.rstrip("K")) * 1024) if rss else 0
        if "." in job and value:
            key = job.split(".")[0]
            result[key] = max(result.get(key, 0), value)
    return result


def qacct_maxvmem(job_ids: list[str]) -> dict[str, int]:
    """{'123' or '123_4': maxvmem in bytes}, from our own qacct calls."""
    units = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
    result: dict[str, int] = {}
    for job in job_ids:
        text = subprocess.run(["qacct", "-j", job], capture_output=True, text=True, check=True).stdout
        for block in text.split("=" * 62)[1:]:
            fields = dict(line.split(None, 1) for line in block.strip().splitlines() if " " in line.strip())
            task = fields["taskid"].strip()
            value = fields["maxvmem"].strip()
            unit = next(u for u in ("KB", "MB", "GB", "B") if value.endswith(u))
            number = round(float(value[: -len(unit)]) * units[unit])
            if number:
                result[job if task == "undefined" else f"{job}_{task}"] = number
    return result


def sidecar_peaks(out: Path, manifest: dict, stage: str) -> dict[int, int]:
    """{task: peak_rss_bytes} from the stage's sidecar files, read directly."""
    entry = manifest["stages"][stage]
    base = out if not entry["sidecars"].startswith("memory/") else Path(entry["output"])
    peaks = {}
    for path in base.glob(entry["sidecars"]):
        data = json.loads(path.read_text())
        task = int(data["task_id"]) if str(data.get("task_id") or "").isdigit() else 1
        peaks[task] = data["peak_rss_bytes"]
    return peaks


@pytest.fixture(scope="module")
def oom_runs(tmp_path_factory) -> dict:
    """One run per scheduler (started lazily) with 02a's first request at 0.4 of the plan."""
    return {"dir": tmp_path_factory.mktemp("review_oom"), "runs": {}}


def oom_run(oom_runs: dict, scheduler: str) -> tuple[Path, dict]:
    if scheduler not in oom_runs["runs"]:
        base = oom_runs["dir"]
        expr = write_expression(base / f"expr_{scheduler}.tsv")
        out = base / f"run_{scheduler}"
        manifest = run_pipeline(scheduler, out, expr, {"DCOEX_TEST_MEM_SCALE_02A": "0.4"})
        oom_runs["runs"][scheduler] = (out, manifest)
    return oom_runs["runs"][scheduler]


def check_review_against_accounting(scheduler: str, out: Path, manifest: dict) -> None:
    memory_review("--out-dir", str(out))
    rows = review_rows(out)
    assert set(rows) == set(STAGES.split(","))
    job_ids = [a["job_id"] for s in manifest["stages"].values() for a in s["attempts"]]
    reference = sacct_maxrss(job_ids) if scheduler == "slurm" else qacct_maxvmem(job_ids)
    compared = 0
    for stage, row in rows.items():
        for task in row["task_details"]:
            for attempt in task["attempts"]:
                expected = reference.get(attempt["job"])
                assert attempt["used_bytes"] == expected, (stage, attempt)
                compared += expected is not None
        peaks = sidecar_peaks(out, manifest, stage)
        finals = {t["task"]: t["attempts"][-1]["peak_rss_bytes"] for t in row["task_details"]}
        assert finals == peaks, stage
        assert row["peak_rss_max_bytes"] == max(peaks.values())
    assert compared >= 3  # the 02a attempts at least (00 / 01 may be too short to be sampled)
    assert (out / "memory_review.png").stat().st_size > 10_000
    assert (out / "memory_review.tsv").read_text().startswith("stage\t")


def check_oom_stage(scheduler: str, out: Path, manifest: dict) -> None:
    if not (out / "memory_review.json").exists():
        memory_review("--out-dir", str(out), "--no-plot")
    row = review_rows(out)["02a"]
    attempts = manifest["stages"]["02a"]["attempts"]
    failing = attempts[0]["requested_bytes"]
    assert failing < manifest["stages"]["02a"]["requested_bytes"]  # the knob lowered the first request
    assert row["tasks"] == manifest["stages"]["02a"]["n_tasks"] == row["done"]
    assert row["oom_killed"] >= 1 and row["retried"] >= 1
    first = [t["attempts"][0] for t in row["task_details"]]
    assert any(a["status"] == "oom" for a in first)
    assert all(t["attempts"][-1]["status"] == "done" for t in row["task_details"])
    assert row["initial_requested_bytes"] == failing
    assert row["recommended_bytes"] > failing
    prefix = "--mem=" if scheduler == "slurm" else "-l h_vmem="
    assert row["recommended_request"].startswith(prefix)


@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_review_matches_sacct_and_sidecars(oom_runs):
    out, manifest = oom_run(oom_runs, "slurm")
    check_review_against_accounting("slurm", out, manifest)


@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_under_requested_stage_is_oom_killed_and_retried(oom_runs):
    out, manifest = oom_run(oom_runs, "slurm")
    check_oom_stage("slurm", out, manifest)


@pytest.mark.usefixtures("sge_cluster")
def test_sge_review_matches_qacct_and_sidecars(oom_runs):
    out, manifest = oom_run(oom_runs, "sge")
    check_review_against_accounting("sge", out, manifest)


@pytest.mark.usefixtures("sge_cluster")
def test_sge_under_requested_stage_is_oom_killed_and_retried(oom_runs):
    out, manifest = oom_run(oom_runs, "sge")
    check_oom_stage("sge", out, manifest)


@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_calibration_round_trip(oom_runs, tmp_path):
    baseline_out, baseline = oom_run(oom_runs, "slurm")
    expr = next(baseline_out.parent.glob("expr_slurm.tsv"))
    knob = {"DCOEX_TEST_ESTIMATE_SCALE_02A": "0.5"}
    first = run_pipeline("slurm", tmp_path / "first", expr, knob)
    raw = first["stages"]["02a"]["raw_estimate_bytes"]
    assert raw == pytest.approx(baseline["stages"]["02a"]["raw_estimate_bytes"] * 0.5, rel=1e-6)
    memory_review("--out-dir", str(tmp_path / "first"), "--calibrate", "--no-plot")
    document = json.loads((tmp_path / "first" / "memfit_calibration.json").read_text())
    factor = document["stages"]["02a"]["factor"]
    peaks = sidecar_peaks(tmp_path / "first", first, "02a")
    assert document["stages"]["02a"]["n"] == len(peaks) == first["stages"]["02a"]["n_tasks"]
    assert factor == pytest.approx(np.quantile([p / raw for p in peaks.values()], 0.95), abs=1e-3)
    # the same stage of the normal run: peak RSS / its (unhalved) estimate
    normal = np.quantile([p / baseline["stages"]["02a"]["raw_estimate_bytes"]
                          for p in sidecar_peaks(baseline_out, baseline, "02a").values()], 0.95)
    assert 1.7 < factor / normal < 2.3
    # the next run reads the calibration and plans with it
    second = run_pipeline("slurm", tmp_path / "second", expr, knob,
                          ("--calibration", str(tmp_path / "first" / "memfit_calibration.json")))
    stage = second["stages"]["02a"]
    assert stage["calibration_factor"] == pytest.approx(factor)
    assert stage["raw_estimate_bytes"] == raw
    safety = second["parameters"]["mem_safety"]
    assert stage["requested_bytes"] == math.ceil(int(raw * factor) / safety / MiB) * MiB
    assert stage["requested_bytes"] > first["stages"]["02a"]["requested_bytes"] * 1.6
    assert len(stage["attempts"]) == 1  # corrected: no OOM retry needed
    memory_review("--out-dir", str(tmp_path / "second"), "--no-plot")
    row = review_rows(tmp_path / "second")["02a"]
    assert row["oom_killed"] == 0 and row["done"] == row["tasks"]
    assert os.path.exists(tmp_path / "second" / "memory_review.json")


def copy_run(out: Path, target: Path, unknown_job: str | None = None) -> Path:
    """A copy of a run's manifest and sidecars (optionally with one attempt's job id replaced)."""
    import shutil

    shutil.copytree(out, target, ignore=shutil.ignore_patterns("*.h5", "logs", ".dcoex", "memory_review.*"))
    if unknown_job:
        manifest = json.loads((target / "run_manifest.json").read_text())
        manifest["stages"]["00"]["attempts"][0]["job_id"] = unknown_job
        for entry in manifest["stages"].values():
            if entry.get("output"):
                entry["output"] = str(target / Path(entry["output"]).name)
        (target / "run_manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_unknown_job_ids_live(scheduler, request, oom_runs, tmp_path):
    request.getfixturevalue(f"{scheduler}_cluster")
    out, _ = oom_run(oom_runs, scheduler)
    copy = copy_run(out, tmp_path / "copy", unknown_job="987654")
    proc = memory_review("--out-dir", str(copy), "--no-plot")
    assert "987654" in proc.stderr and "unknown" in proc.stderr
    report = json.loads((copy / "memory_review.json").read_text())
    assert report["accounting"]["unknown_job_ids"] == ["987654"]
    assert review_rows(copy)["02a"]["oom_killed"] >= 1  # the rest is still reviewed


@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_accounting_disabled_live(oom_runs, tmp_path):
    """The real sacct of a SLURM without slurmdbd ('Slurm accounting storage is disabled')."""
    out, manifest = oom_run(oom_runs, "slurm")
    copy = copy_run(out, tmp_path / "copy")
    conf = tmp_path / "slurm.conf"
    lines = Path("/etc/slurm/slurm.conf").read_text().splitlines()
    conf.write_text("\n".join(line for line in lines if not line.startswith("AccountingStorage"))
                    + "\nAccountingStorageType=accounting_storage/none\n")
    proc = subprocess.run([sys.executable, "-m", "memfit", "review", "--out-dir", str(copy), "--no-plot"],
                          capture_output=True, text=True, timeout=180, env=dict(os.environ, SLURM_CONF=str(conf)))
    assert proc.returncode == 0, proc.stderr
    assert "accounting storage is disabled" in proc.stderr and "Traceback" not in proc.stderr
    row = review_rows(copy)["02a"]
    assert row["used_max_bytes"] is None
    assert row["peak_rss_max_bytes"] == max(sidecar_peaks(out, manifest, "02a").values())
    assert row["done"] == row["tasks"]


@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_jobs_mode_live(oom_runs, tmp_path):
    out, manifest = oom_run(oom_runs, "slurm")
    job = manifest["stages"]["02a"]["attempts"][0]["job_id"]
    memory_review("--jobs", job, "--scheduler", "slurm", "--report-dir", str(tmp_path), "--no-plot")
    row = review_rows(tmp_path)[job]
    reference = sacct_maxrss([job])
    assert row["tasks"] == manifest["stages"]["02a"]["n_tasks"]
    # the first 02a attempt is under-requested and may exit before any sample: then both are None
    assert row["used_max_bytes"] == max((v for k, v in reference.items() if k.startswith(f"{job}_")), default=None)
    # every task of the under-requested attempt fails: killed by the memory enforcement (an OOM
    # when sampled) or stopped by memfit itself with exit 3, which --jobs mode does not call OOM
    assert row["done"] == 0 and row["failed"] == row["tasks"]
