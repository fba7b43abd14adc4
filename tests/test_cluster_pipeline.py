"""The pipeline on the real SLURM and SGE test clusters (tests/cluster/clusters_up.sh).

One small synthetic dataset (40 genes × 60 samples, 10 genes per task: 4 array tasks per
per-gene stage) runs four ways at once: locally (the reference), and on each cluster
plainly and with stage 02b's first memory request scaled down (OOM recovery). Then a
resume run deletes one 02b output and reruns the same command.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest

from cluster_util import assert_same_outputs, cluster_status, require_cluster, run_driver, wait_for_run, write_dataset

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SCHEDULERS = ("slurm", "sge")
ARGS = ["--n-bootstrap", "40", "--genes-per-task", "10", "--seed", "7"]
OOM_STAGE = "02B"
SGE_ACCOUNTING = Path("/var/lib/gridengine/default/common/accounting")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every run at once (they mostly wait on the schedulers), then wait for all."""
    if not any(cluster_status(s)[0] for s in SCHEDULERS):
        require_cluster("slurm")  # skips with the reason (fails under CI=true)
    base = tmp_path_factory.mktemp("cluster_runs")
    tsv = write_dataset(base / "expr.tsv")
    started: dict[str, Path] = {}
    for sched in SCHEDULERS:
        if not cluster_status(sched)[0]:
            continue
        oom_env = {f"DCOEX_TEST_MEM_SCALE_{OOM_STAGE}": "0.2", "DCOEX_TEST_MEM_SCALE_01": "0.2"}
        for kind, env in (("plain", {}), ("oom", oom_env)):
            out = base / f"{sched}_{kind}"
            done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS], env=env)
            assert done.returncode == 0, done.stderr
            started[f"{sched}_{kind}"] = out
    local = base / "local"
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", local, *ARGS, "--local"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    manifests = {key: wait_for_run(out, timeout=400) for key, out in started.items()}
    return {"tsv": tsv, "local": local, "dirs": started, "manifests": manifests}


def _need(runs, key: str):
    sched = key.split("_")[0]
    require_cluster(sched)
    if key not in runs["dirs"]:
        pytest.fail(f"{key} was not started")
    return runs["dirs"][key], runs["manifests"][key]


# --- accounting ------------------------------------------------------------------------

def slurm_accounting(job_ids: list[str]) -> dict[str, dict]:
    """{"<job>_<task>" or "<job>": {start, end, req_mem (MiB), state}} from sacct."""
    text = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "--units=M",
                           "-o", "JobID,Start,End,ReqMem,State"], capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in text.splitlines():
        job, start, end, req, state = line.split("|")
        rows[job] = {"start": dt.datetime.fromisoformat(start).timestamp(),
                     "end": dt.datetime.fromisoformat(end).timestamp(),
                     "req_mib": float(re.match(r"([0-9.]+)", req).group(1)), "state": state}
    return rows


def sge_accounting(job_ids: list[str]) -> dict[str, dict]:
    """Same keys from SGE's accounting file (fields 6 job, 10 start, 11 end, 36 task, 40 requests)."""
    rows = {}
    for line in SGE_ACCOUNTING.read_text().splitlines():
        f = line.split(":")
        if len(f) < 40 or f[5] not in job_ids:
            continue
        task = f[35]
        key = f"{f[5]}_{task}" if task != "0" else f[5]
        vmem = re.search(r"h_vmem=(\d+)M", f[39])
        rows[key] = {"start": int(f[9]), "end": int(f[10]), "req_mib": float(vmem.group(1)) if vmem else None,
                     "failed": f[11], "exit": f[12]}
    return rows


def accounting(sched: str, job_ids: list[str]) -> dict[str, dict]:
    return slurm_accounting(job_ids) if sched == "slurm" else sge_accounting(job_ids)


def stage_rows(acct: dict, attempt: dict) -> dict[int | None, dict]:
    """Rows of one attempt by task (None for a single job)."""
    job = attempt["job_id"]
    if attempt["task_list"] is None:
        return {None: acct[job]}
    return {t: acct[f"{job}_{t}"] for t in attempt["task_list"]}


# --- tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("sched", SCHEDULERS)
def test_pipeline_completes_and_equals_local(runs, sched):
    out, manifest = _need(runs, f"{sched}_plain")
    assert manifest["status"] == "complete"
    assert manifest["scheduler"] == sched
    assert manifest["stage_order"] == ["00", "01", "02a", "02b", "03", "03b"]
    for stage in ("02a", "02b", "03"):
        assert manifest["stages"][stage]["n_tasks"] == 4
        assert len(list((out / "logs").glob(f"{stage}.*.*.log"))) == 4
    assert_same_outputs(runs["local"], out)


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_dependencies_hold_in_accounting(runs, sched):
    out, manifest = _need(runs, f"{sched}_plain")
    jobs = {s: e["attempts"][0] for s, e in manifest["stages"].items()}
    acct = accounting(sched, [a["job_id"] for a in jobs.values()])
    rows = {s: stage_rows(acct, a) for s, a in jobs.items()}
    # SLURM and SGE account in whole seconds: "after" means start >= end
    assert rows["01"][None]["start"] >= rows["00"][None]["end"]
    for t in range(1, 5):
        assert rows["02a"][t]["start"] >= rows["01"][None]["end"]
        assert rows["02b"][t]["start"] >= rows["02a"][t]["end"], f"02b task {t} started before its 02a task ended"
        assert rows["03"][t]["start"] >= rows["02b"][t]["end"], f"03 task {t} started before its 02b task ended"
    assert rows["03b"][None]["start"] >= max(r["end"] for r in rows["03"].values())


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_requested_memory_equals_plan(runs, sched):
    out, manifest = _need(runs, f"{sched}_plain")
    jobs = {s: e["attempts"][0] for s, e in manifest["stages"].items()}
    acct = accounting(sched, [a["job_id"] for a in jobs.values()])
    for stage, attempt in jobs.items():
        entry = manifest["stages"][stage]
        planned_mib = entry["requested_bytes"] / 2**20
        assert attempt["requested_bytes"] == entry["requested_bytes"]
        per_slot = planned_mib / entry["slots"] if sched == "sge" else planned_mib  # h_vmem is per slot
        for task, row in stage_rows(acct, attempt).items():
            assert row["req_mib"] == pytest.approx(per_slot), (stage, task)
        # the plan: estimate x calibration / safety (SGE: plus the virtual-memory overhead)
        from memfit.allocation import VIRTUAL_OVERHEAD_BYTES

        peak = entry["estimate"]["total_bytes"]
        extra = VIRTUAL_OVERHEAD_BYTES if sched == "sge" else 0
        assert entry["requested_bytes"] >= (peak + extra) / 0.7
        assert entry["requested_bytes"] < (peak + extra) / 0.7 + 2**20 * entry["slots"]


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_oom_task_is_retried_with_more_memory(runs, sched):
    out, manifest = _need(runs, f"{sched}_oom")
    assert manifest["status"] == "complete", json.dumps(manifest["stages"]["02b"], indent=1)[-3000:]
    attempts = manifest["stages"]["02b"]["attempts"]
    assert [a["reason"] for a in attempts] == ["initial", "oom-retry"]
    assert attempts[1]["task_list"] == [1, 2, 3, 4]
    assert attempts[1]["requested_bytes"] >= 1.5 * attempts[0]["requested_bytes"]
    assert attempts[0]["requested_bytes"] < manifest["stages"]["02b"]["requested_bytes"]
    first_logs = list((out / "logs").glob(f"02b.{attempts[0]['job_id']}.*.log"))
    assert len(first_logs) == 4
    for log in first_logs:
        # either the stage's own out-of-memory exit (3) or the scheduler's kill
        # (SLURM: "exceeded memory limit"; SGE: a MemoryError under h_vmem's RLIMIT_AS)
        text = log.read_text().lower()
        assert any(p in text for p in ("out of memory", "exceeded memory limit", "memoryerror")), text[-500:]
    # the scheduler really got the smaller request first, then the larger one
    acct = accounting(sched, [attempts[0]["job_id"], attempts[1]["job_id"]])
    slots = manifest["stages"]["02b"]["slots"]
    for attempt in attempts:
        for row in stage_rows(acct, attempt).values():
            assert row["req_mib"] == pytest.approx(attempt["requested_bytes"] / 2**20 / (slots if sched == "sge" else 1))
    assert_same_outputs(runs["local"], out)


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_oom_of_a_single_job_repoints_the_next_stage(runs, sched):
    """Stage 01 (one job) fails for memory: its retry's finaliser becomes what 02a waits for."""
    out, manifest = _need(runs, f"{sched}_oom")
    attempts = manifest["stages"]["01"]["attempts"]
    assert [a["reason"] for a in attempts] == ["initial", "oom-retry"]
    acct = accounting(sched, [attempts[1]["job_id"], manifest["stages"]["02a"]["attempts"][0]["job_id"]])
    retry_end = stage_rows(acct, attempts[1])[None]["end"]
    for t, row in stage_rows(acct, manifest["stages"]["02a"]["attempts"][0]).items():
        assert row["start"] >= retry_end, f"02a task {t} started before the retried 01 ended"


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_resume_submits_only_missing_tasks(runs, sched, tmp_path):
    out, manifest = _need(runs, f"{sched}_plain")
    gone = sorted((out / "bootstrap_significant").glob("001[2-3]_*.h5"))  # genes 12, 13: task 2
    assert len(gone) == 2
    for path in gone:
        path.unlink()
    done = run_driver(sched, ["--expr-tsv", runs["tsv"], "--out-dir", out, *ARGS])
    assert done.returncode == 0, done.stderr
    assert "00: skipped" in done.stdout and "02a: skipped" in done.stdout
    rerun = wait_for_run(out, timeout=300)
    assert rerun["status"] == "complete"
    assert list(rerun["stages"]) == ["02b", "03", "03b"]
    assert rerun["stages"]["02b"]["attempts"][0]["task_list"] == [2]
    assert rerun["stages"]["03"]["attempts"][0]["task_list"] == [2]
    assert (out / ".dcoex" / "history" / "run_manifest.1.json").is_file()
    assert_same_outputs(runs["local"], out)
