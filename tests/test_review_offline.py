"""Memory review and calibration from saved accounting (offline), a hand-made manifest and sidecars.

The manifests below describe pipeline runs whose jobs are the real jobs captured in
tests/fixtures/accounting (see its README): expected figures are read from those files
with a naive line split here, and the recommendation / calibration rules are applied
with numpy, independently of memfit's code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hpc.calibration import find_calibration, load_calibration
from memfit.record import task_sidecar_path
from memfit.units import MiB

FIXTURES = Path(__file__).parent / "fixtures" / "accounting"
SACCT = FIXTURES / "slurm_22.05_jobs_unitsK.sacct.txt"
QACCT = FIXTURES / "sge_8.1.9_jobs.qacct.txt"
PY = sys.executable
SAFETY = 0.7


def sacct_maxrss(job_label: str) -> int:
    """MaxRSS (bytes) of the steps of a job in the captured --units=K file, read naively."""
    lines = SACCT.read_text().splitlines()
    header = lines[0].split("|")
    values = []
    for line in lines[1:]:
        row = dict(zip(header, line.split("|")))
        if row["JobID"].startswith(job_label + ".") and row["MaxRSS"]:
            values.append(int(row["MaxRSS"].rstrip("K")) * 1024)
    return max(values)


def qacct_maxvmem(job: str, task: str = "undefined") -> int:
    text = QACCT.read_text()
    for block in text.split("=" * 62):
        fields = dict(line.split(None, 1) for line in block.strip().splitlines() if len(line.split(None, 1)) == 2)
        if fields.get("jobnumber", "").strip() == job and fields.get("taskid", "").strip() == task:
            assert fields["maxvmem"].strip().endswith("MB") or fields["maxvmem"].strip().endswith("GB")
            number = float(fields["maxvmem"].strip()[:-2])
            return round(number * (1024**2 if fields["maxvmem"].strip().endswith("MB") else 1024**3))
    raise KeyError(job)


def rounded_up(n_bytes: float, step: int = 64 * MiB) -> int:
    return max(step, math.ceil(n_bytes / step) * step)


def write_sidecar(path: Path, stage: str, job_id: str | None, task_id: str | None, peak: int,
                  *, estimate: int, wall: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": stage, "estimate_bytes": estimate, "peak_rss_bytes": peak,
                                "job_id": job_id, "task_id": task_id, "wall_s": wall}))


def stage_entry(n_tasks, attempts, raw_estimate, sidecars, *, factor=1.0, genes_per_task=None, slots=1):
    return {"genes_per_task": genes_per_task, "n_tasks": n_tasks, "slots": slots, "time_limit": "01:00:00",
            "raw_estimate_bytes": raw_estimate, "calibration_factor": factor,
            "estimate": {"stage": "x", "total_bytes": int(raw_estimate * factor), "components": {}, "params": {}},
            "requested_bytes": attempts[0]["requested_bytes"], "request": "", "sidecars": sidecars,
            "attempts": attempts}


def attempt(n, job_id, tasks, requested, reason="initial"):
    return {"attempt": n, "job_id": job_id, "tasks": tasks, "requested_bytes": requested, "reason": reason,
            "command": [], "submitted": "2026-11-25T07:30:00Z"}


@pytest.fixture
def slurm_run(tmp_path: Path) -> Path:
    """A run: 00 = job 3; 02a = array job 5 (3 tasks); 02b = job 4 OOM-killed at 200M, retried as job 10."""
    out = tmp_path / "run"
    raw_02a = 100 * MiB
    manifest = {
        "manifest_version": 1, "scheduler": "slurm", "dcoex_version": "0.1.0", "created": "", "out_dir": str(out),
        "parameters": {"mem_safety": SAFETY}, "data_shape": {"n_genes": 30, "n_samples": 10},
        "calibration": {"file": None, "factors": {"03": 1.5}},
        "stages": {
            "00": stage_entry(1, [attempt(1, "3", None, 600 * MiB)], 250 * MiB, "expression.h5.memory.json"),
            "02a": stage_entry(3, [attempt(1, "5", "1-3", 400 * MiB)], raw_02a,
                               "memory/02a.genes_*.memory.json", genes_per_task=10),
            "02b": stage_entry(1, [attempt(1, "4", None, 200 * MiB),
                                   attempt(2, "10", None, 300 * MiB, "oom-retry")],
                               120 * MiB, "bootstrap_significant.h5.memory.json"),
        },
    }
    out.mkdir()
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    write_sidecar(out / "expression.h5.memory.json", "00", "3", None, 300 * MiB, estimate=250 * MiB)
    for task, peak in ((1, 150 * MiB), (2, 190 * MiB), (3, 200 * MiB)):
        genes = list(range((task - 1) * 10, task * 10))
        write_sidecar(task_sidecar_path(out, "02a", genes), "02a", "5", str(task), peak, estimate=raw_02a)
    write_sidecar(out / "bootstrap_significant.h5.memory.json", "02b", "10", None, 120 * MiB, estimate=120 * MiB)
    return out


def review(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "memfit", "review", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=120)


def stages_of(out: Path) -> dict[str, dict]:
    report = json.loads((out / "memory_review.json").read_text())
    return {row["stage"]: row for row in report["stages"]}


def test_slurm_review_from_saved_sacct(slurm_run: Path):
    proc = review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT))
    assert proc.returncode == 0, proc.stderr
    rows = stages_of(slurm_run)
    margin = 1 / SAFETY
    # 02a: three array tasks; used = MaxRSS of each task's batch step
    used = [sacct_maxrss(f"5_{t}") for t in (1, 2, 3)]
    row = rows["02a"]
    assert (row["tasks"], row["done"], row["failed"], row["oom_killed"], row["retried"]) == (3, 3, 0, 0, 0)
    assert row["used_max_bytes"] == max(used)
    assert row["used_median_bytes"] == int(np.median(used))
    assert row["used_p95_bytes"] == int(np.quantile(used, 0.95))
    assert row["peak_rss_max_bytes"] == 200 * MiB and row["peak_rss_median_bytes"] == 190 * MiB
    assert row["recommended_bytes"] == rounded_up(np.quantile(used, 0.95) * margin)
    assert row["recommended_request"] == f"--mem={row['recommended_bytes'] // MiB}M"
    assert row["efficiency_median"] == pytest.approx(np.median([u / (400 * MiB) for u in used]), abs=1e-4)
    assert row["estimate_error_max"] == pytest.approx(2.0)
    # 00: one job, its sidecar joined by job id
    assert rows["00"]["used_max_bytes"] == sacct_maxrss("3") and rows["00"]["peak_rss_max_bytes"] == 300 * MiB
    # the TSV carries the same numbers
    tsv = (slurm_run / "memory_review.tsv").read_text().splitlines()
    header = tsv[0].split("\t")
    table = {line.split("\t")[0]: dict(zip(header, line.split("\t"))) for line in tsv[1:]}
    assert int(table["02a"]["used_max_bytes"]) == max(used)
    assert int(table["02b"]["oom_killed"]) == 1
    assert "02a" in proc.stdout and "--mem=" in proc.stdout


def test_oom_killed_and_retried_stage(slurm_run: Path):
    assert review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT), "--no-plot").returncode == 0
    row = stages_of(slurm_run)["02b"]
    assert (row["tasks"], row["done"], row["failed"], row["oom_killed"], row["retried"]) == (1, 1, 0, 1, 1)
    assert row["initial_requested_bytes"] == 200 * MiB and row["requested_bytes"] == 300 * MiB
    attempts = row["task_details"][0]["attempts"]
    assert [a["status"] for a in attempts] == ["oom", "done"]
    assert attempts[0]["reason"] == "initial" and attempts[1]["reason"] == "oom-retry"
    # a task was OOM-killed: max used (the killed attempt's 231300K or the retry's) x margin
    used = max(sacct_maxrss("4"), sacct_maxrss("10"))
    assert row["recommended_bytes"] == rounded_up(max(used / SAFETY, 200 * MiB * 1.05))
    assert row["recommended_bytes"] > 200 * MiB


def test_calibration_round_trip(slurm_run: Path):
    proc = review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT), "--no-plot", "--calibrate")
    assert proc.returncode == 0, proc.stderr
    path = find_calibration(slurm_run)
    assert path == slurm_run / "memfit_calibration.json"
    document = json.loads(path.read_text())
    ratios = [150 / 100, 190 / 100, 200 / 100]  # sidecar peak RSS / raw estimate of 02a
    assert document["stages"]["02a"]["n"] == 3
    assert document["stages"]["02a"]["factor"] == pytest.approx(np.quantile(ratios, 0.95), abs=1e-4)
    factors = load_calibration(path)
    assert factors["00"] == pytest.approx(300 / 250, abs=1e-4)
    assert factors["02b"] == pytest.approx(1.0, abs=1e-4)  # only the finished retry counts
    assert factors["03"] == 1.5 and document["stages"]["03"]["carried_over"]  # no data: previous factor kept
    assert document["memfit_version"]


def test_calibration_bounds(slurm_run: Path):
    assert review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT), "--no-plot", "--calibrate",
                  "--bounds", "0.5:1.6").returncode == 0
    document = json.loads((slurm_run / "memfit_calibration.json").read_text())
    assert document["stages"]["02a"]["factor"] == 1.6
    assert document["stages"]["02a"]["raw_quantile"] > 1.6


def test_plot_written(slurm_run: Path):
    import matplotlib.image

    assert review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT)).returncode == 0
    image = matplotlib.image.imread(slurm_run / "memory_review.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert not list(slurm_run.glob(".*tmp*"))


def test_sge_review_from_saved_qacct(tmp_path: Path):
    out = tmp_path / "sge"
    out.mkdir()
    manifest = {
        "manifest_version": 1, "scheduler": "sge", "parameters": {"mem_safety": SAFETY},
        "stages": {
            "02a": stage_entry(3, [attempt(1, "6", "1-3", 2048 * MiB)], 100 * MiB,
                               "memory/02a.genes_*.memory.json", genes_per_task=10),
            "03": stage_entry(1, [attempt(1, "11", None, 800 * MiB), attempt(2, "3", None, 2048 * MiB, "oom-retry")],
                              200 * MiB, "networks.memory.json"),
        },
    }
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    for task in (1, 2, 3):
        write_sidecar(task_sidecar_path(out, "02a", list(range((task - 1) * 10, task * 10))), "02a", "6",
                      str(task), 50 * MiB * task, estimate=100 * MiB)
    proc = review("--out-dir", str(out), "--qacct-file", str(QACCT), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    rows = stages_of(out)
    used = [qacct_maxvmem("6", str(t)) for t in (1, 2, 3)]
    row = rows["02a"]
    assert row["used_metric"] == "maxvmem"
    assert row["used_max_bytes"] == max(used) and row["used_p95_bytes"] == int(np.quantile(used, 0.95))
    # under h_vmem the stage also needs its peak RSS + the virtual overhead memfit budgets (768 MiB)
    need = [max(u, 50 * MiB * t + 768 * MiB) for t, u in zip((1, 2, 3), used)]
    assert row["recommended_bytes"] == rounded_up(np.quantile(need, 0.95) / SAFETY)
    assert row["recommended_request"] == f"-l h_vmem={row['recommended_bytes'] // MiB}M"
    oom = rows["03"]
    assert (oom["oom_killed"], oom["retried"], oom["done"]) == (1, 1, 1)
    assert oom["recommended_bytes"] > 800 * MiB
    assert oom["used_max_bytes"] == qacct_maxvmem("11")


def test_jobs_mode_without_manifest(tmp_path: Path):
    proc = review("--jobs", "5,4,424242", "--sacct-file", str(SACCT), "--report-dir", str(tmp_path), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    assert "424242" in proc.stderr and "unknown" in proc.stderr
    rows = stages_of(tmp_path)
    assert rows["5"]["tasks"] == 3 and rows["5"]["requested_bytes"] == 400 * MiB
    assert rows["5"]["used_max_bytes"] == sacct_maxrss("5_3")
    assert rows["5"]["recommended_bytes"] == rounded_up(np.quantile([sacct_maxrss(f"5_{t}") for t in (1, 2, 3)],
                                                                    0.95) * 1.2)
    assert rows["4"]["oom_killed"] == 1
    assert rows["424242"]["unknown"] == 1
    # one task of an array
    assert review("--jobs", "5_2", "--sacct-file", str(SACCT), "--report-dir", str(tmp_path),
                  "--no-plot").returncode == 0
    row = stages_of(tmp_path)["5_2"]
    assert row["tasks"] == 1 and row["used_max_bytes"] == sacct_maxrss("5_2")


def test_unknown_job_ids_are_reported_not_fatal(slurm_run: Path):
    manifest = json.loads((slurm_run / "run_manifest.json").read_text())
    manifest["stages"]["00"]["attempts"][0]["job_id"] = "777777"
    (slurm_run / "run_manifest.json").write_text(json.dumps(manifest))
    write_sidecar(slurm_run / "expression.h5.memory.json", "00", "777777", None, 300 * MiB, estimate=250 * MiB)
    proc = review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT), "--no-plot")
    assert proc.returncode == 0
    assert "777777" in proc.stderr
    report = json.loads((slurm_run / "memory_review.json").read_text())
    assert report["accounting"]["unknown_job_ids"] == ["777777"]
    assert stages_of(slurm_run)["00"]["unknown"] == 0  # its sidecar still says it finished
    assert stages_of(slurm_run)["00"]["peak_rss_max_bytes"] == 300 * MiB


def test_accounting_disabled_falls_back_to_sidecars(slurm_run: Path, tmp_path: Path):
    """A sacct that answers like SLURM without slurmdbd: warning, sidecar-only review."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    message = (FIXTURES / "slurm_accounting_disabled.stderr.txt").read_text().strip()
    (bin_dir / "sacct").write_text(f"#!/bin/sh\necho '{message}' >&2\nexit 1\n")
    (bin_dir / "sacct").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = review("--out-dir", str(slurm_run), "--no-plot", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "accounting storage is disabled" in proc.stderr and "sidecars only" in proc.stderr
    assert "Traceback" not in proc.stderr
    row = stages_of(slurm_run)["02a"]
    assert row["used_max_bytes"] is None and row["peak_rss_max_bytes"] == 200 * MiB
    assert row["done"] == 3 and row["recommendation_basis"] == "sidecar peak RSS"
    assert row["recommended_bytes"] == rounded_up(np.quantile([150, 190, 200], 0.95) * MiB / SAFETY)


@pytest.mark.parametrize("content,needle", [
    (None, "not found"),
    ("{not json", "corrupt"),
    ('{"manifest_version": 1, "scheduler": "slurm"}', "no 'stages'"),
    ('{"manifest_version": 7, "scheduler": "slurm", "stages": {}}', "manifest_version 7"),
    ('[1, 2]', "not a JSON object"),
])
def test_bad_manifest(tmp_path: Path, content, needle):
    if content is not None:
        (tmp_path / "run_manifest.json").write_text(content)
    proc = review("--out-dir", str(tmp_path), "--sacct-file", str(SACCT))
    assert proc.returncode == 2
    assert needle in proc.stderr and "run_manifest.json" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "memory_review.json").exists()


def test_mixed_schedulers_are_an_error(slurm_run: Path):
    proc = review("--out-dir", str(slurm_run), "--qacct-file", str(QACCT))
    assert proc.returncode == 2 and "mixed schedulers" in proc.stderr
    manifest = json.loads((slurm_run / "run_manifest.json").read_text())
    manifest["stages"]["02b"]["attempts"][1]["scheduler"] = "sge"
    (slurm_run / "run_manifest.json").write_text(json.dumps(manifest))
    proc = review("--out-dir", str(slurm_run), "--sacct-file", str(SACCT))
    assert proc.returncode == 2 and "mixes schedulers" in proc.stderr and "02b" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_accounting_file(slurm_run: Path, tmp_path: Path):
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is not sacct output\n")
    proc = review("--out-dir", str(slurm_run), "--sacct-file", str(garbage))
    assert proc.returncode == 2 and "garbage.txt" in proc.stderr and "header" in proc.stderr
    proc = review("--out-dir", str(slurm_run), "--sacct-file", str(tmp_path / "missing.txt"))
    assert proc.returncode == 2 and "missing.txt" in proc.stderr


def test_script_shim_runs_as_a_file(slurm_run: Path):
    script = Path(__file__).parents[1] / "src" / "scripts" / "memory_review.py"
    proc = subprocess.run([PY, str(script), "--out-dir", str(slurm_run), "--sacct-file", str(SACCT), "--no-plot"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (slurm_run / "memory_review.tsv").exists()
    proc = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--out-dir" in proc.stderr


def test_sidecar_matching_raw_ids_stale_and_local(tmp_path: Path):
    """SLURM array tasks' own job ids (JobIDRaw: 11, 12, 5 for 5_1..5_3), an earlier run's sidecar, a local run."""
    out = tmp_path / "run"
    manifest = {"manifest_version": 1, "scheduler": "slurm", "parameters": {"mem_safety": SAFETY},
                "stages": {"02a": stage_entry(3, [attempt(1, "5", "1-3", 400 * MiB)], 100 * MiB,
                                              "memory/02a.genes_*.memory.json", genes_per_task=10)}}
    out.mkdir()
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    for task, own_id in ((1, "11"), (2, "12")):
        write_sidecar(task_sidecar_path(out, "02a", [task * 10 - 10, task * 10 - 1]), "02a", own_id, str(task),
                      (100 + task) * MiB, estimate=100 * MiB)
    write_sidecar(task_sidecar_path(out, "02a", [20, 29]), "02a", "2", "3", 999 * MiB, estimate=100 * MiB)  # older job
    assert review("--out-dir", str(out), "--sacct-file", str(SACCT), "--no-plot").returncode == 0
    row = stages_of(out)["02a"]
    peaks = {t["task"]: t["attempts"][0]["peak_rss_bytes"] for t in row["task_details"]}
    assert peaks == {1: 101 * MiB, 2: 102 * MiB, 3: None}
    assert any("older" in note for note in row["notes"])
    # a local run: no job ids anywhere; sidecars found by their gene range
    local = tmp_path / "local"
    local.mkdir()
    manifest["scheduler"] = "local"
    manifest["stages"]["02a"]["attempts"][0]["job_id"] = None
    (local / "run_manifest.json").write_text(json.dumps(manifest))
    for task in (1, 2, 3):
        write_sidecar(task_sidecar_path(local, "02a", [task * 10 - 10, task * 10 - 1]), "02a", None, None,
                      (200 + task) * MiB, estimate=100 * MiB)
    proc = review("--out-dir", str(local), "--no-plot")
    assert proc.returncode == 0, proc.stderr
    row = stages_of(local)["02a"]
    assert row["done"] == 3 and row["peak_rss_max_bytes"] == 203 * MiB
    assert row["recommendation_basis"] == "sidecar peak RSS"


def test_pending_and_running_tasks(tmp_path: Path):
    """An array still in the queue: the range row 13_[1-9] (13_9 pending) beside finished tasks."""
    out = tmp_path / "run"
    out.mkdir()
    manifest = {"manifest_version": 1, "scheduler": "slurm",
                "stages": {"02a": stage_entry(9, [attempt(1, "13", "1-9", 50 * MiB)], 10 * MiB, None)}}
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    proc = review("--out-dir", str(out), "--sacct-file", str(FIXTURES / "slurm_22.05_pending_arrays.sacct.txt"),
                  "--no-plot")
    assert proc.returncode == 0, proc.stderr
    row = stages_of(out)["02a"]
    assert (row["tasks"], row["done"], row["pending"], row["failed"]) == (9, 8, 1, 0)


def test_tasks_whose_accounting_is_not_final_yet_are_listed():
    """A review right after the run ends waits for the tasks of finalised attempts that sacct
    does not show (yet) in their final form; cancelled tasks and long-ended runs are not waited for."""
    from memfit.accounting import parse_accounting
    from memfit.review import unsettled_tasks

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    array = stage_entry(3, [attempt(1, "5", "1-3", 400 * MiB)], 100 * MiB, "memory/*.json")
    single = stage_entry(1, [attempt(1, "1495", None, 100 * MiB)], 50 * MiB, "x.memory.json")
    for entry in (array, single):
        entry["finalised"] = [{"attempt": 1, "time": now}]
    manifest = {"stages": {"02a": array, "01": single}}
    complete = parse_accounting("slurm", SACCT.read_text())
    task3_missing = [r for r in complete if r.task_id != 3]
    settling = parse_accounting("slurm", (FIXTURES / "slurm_22.05_oom_settling.sacct.txt").read_text())
    settled = parse_accounting("slurm", (FIXTURES / "slurm_22.05_oom_settled.sacct.txt").read_text())
    assert unsettled_tasks(manifest, complete + settled) == []
    assert unsettled_tasks(manifest, task3_missing + settling) == ["5_3", "1495"]
    array["cancelled_tasks"] = [3]
    assert unsettled_tasks(manifest, task3_missing + settled) == []
    single["finalised"] = [{"attempt": 1, "time": "2026-11-25T07:30:00Z"}]
    assert unsettled_tasks(manifest, task3_missing + settling, within_s=60) == []


def test_tasks_sized_on_their_own_are_reviewed_with_their_own_request_and_estimate():
    """02b/03 tasks resized from 02a's counts: the review reads each task's own request
    (``task_requests`` of the attempt) and calibrates each on its own raw estimate."""
    from memfit.review import AttemptReview, TaskReview, calibration_ratios, review_stage

    stage = {"n_tasks": 2, "slots": 1, "requested_bytes": 400 * MiB, "raw_estimate_bytes": 280 * MiB,
             "task_raw_estimate_bytes": {"1": 50 * MiB, "2": 250 * MiB},
             "attempts": [{"attempt": 1, "job_id": "7", "tasks": "1-2", "task_list": [1, 2], "reason": "initial",
                           "requested_bytes": 400 * MiB, "task_requests": {"1": 72 * MiB}}]}
    review = review_stage("02b", stage, "slurm", None, {})
    assert [t.attempts[0].requested_bytes for t in review.tasks] == [72 * MiB, 400 * MiB]
    for task, peak in zip(review.tasks, (45 * MiB, 200 * MiB)):
        task.attempts[0] = AttemptReview(1, "7", "initial", task.attempts[0].requested_bytes,
                                         sidecar={"peak_rss_bytes": peak})
    assert calibration_ratios(review) == [0.9, 0.8]  # 45/50 and 200/250, not 45/280
    plain = dict(stage, task_raw_estimate_bytes={})
    other = review_stage("02b", plain, "slurm", None, {})
    other.tasks = [TaskReview(1, [AttemptReview(1, "7", "initial", None, sidecar={"peak_rss_bytes": 140 * MiB})])]
    assert calibration_ratios(other) == [0.5]
