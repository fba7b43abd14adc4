"""The pipeline on the real SLURM and SGE test clusters (tests/cluster/clusters_up.sh).

One small synthetic dataset (40 genes × 60 samples, 10 genes per task: 4 array tasks per
per-gene stage) runs four ways at once: locally (the reference), and on each cluster
plainly, with stage 01's and 02b's first memory requests scaled down (OOM recovery), and
with one of them scaled down and no retries allowed (failure handling). Then a resume run
deletes 02b outputs of tasks 1 and 3 and reruns the same command.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest
from cluster_util import assert_same_outputs, cluster_status, require_cluster, run_driver, wait_for_run, write_dataset

from hpc.manifest import attempt_request

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SCHEDULERS = ("slurm", "sge")
ARGS = ["--n-bootstrap", "40", "--genes-per-task", "10", "--seed", "7"]
OOM_STAGE = "02B"
NO_RETRY = ["--max-retries", "0"]
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
        for kind, env, extra in (("plain", {}, []), ("oom", oom_env, []),
                                 # no retries: the first out-of-memory failure is final
                                 ("fail02b", {f"DCOEX_TEST_MEM_SCALE_{OOM_STAGE}": "0.2"}, NO_RETRY),
                                 ("fail01", {"DCOEX_TEST_MEM_SCALE_01": "0.2"}, NO_RETRY)):
            out = base / f"{sched}_{kind}"
            done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS, *extra], env=env)
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

def _limit_s(text: str) -> int | None:
    """Seconds of a time limit as sacct (``[D-]HH:MM:SS``) or SGE (``h_rt`` seconds) write it."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", text)
    if match:
        d, h, m, sec = (int(x or 0) for x in match.groups())
        return ((d * 24 + h) * 60 + m) * 60 + sec
    return int(text) if text.isdigit() else None


def slurm_accounting(job_ids: list[str]) -> dict[str, dict]:
    """{"<job>_<task>" or "<job>": {start, end, req_mem (MiB), state, time_limit_s}} from sacct."""
    text = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "--units=M",
                           "-o", "JobID,Start,End,ReqMem,State,Timelimit"], capture_output=True, text=True,
                          check=True).stdout
    rows = {}
    for line in text.splitlines():
        job, start, end, req, state, limit = line.split("|")
        rows[job] = {"start": dt.datetime.fromisoformat(start).timestamp(),
                     "end": dt.datetime.fromisoformat(end).timestamp(),
                     "req_mib": float(re.match(r"([0-9.]+)", req).group(1)), "state": state,
                     "time_limit_s": _limit_s(limit)}
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
        h_rt = re.search(r"h_rt=([0-9:]+)", f[39])
        rows[key] = {"start": int(f[9]), "end": int(f[10]), "req_mib": float(vmem.group(1)) if vmem else None,
                     "failed": f[11], "exit": f[12], "time_limit_s": _limit_s(h_rt.group(1)) if h_rt else None}
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
    assert manifest["stage_order"] == ["00", "01", "02a", "02b", "03", "03b", "04", "05"]
    assert manifest["manifest_version"] == 1 and manifest["data_shape"] == {"n_genes": 40, "n_samples": 60}
    assert manifest["parameters"]["n_bootstrap"] == 40 and manifest["parameters"]["genes_per_task"] == 10
    for stage in ("02a", "02b", "03"):
        entry = manifest["stages"][stage]
        assert entry["n_tasks"] == 4
        assert len(list((out / "logs").glob(f"{stage}.*.*.log"))) == 4
        a = entry["attempts"][0]
        assert (a["attempt"], a["tasks"], a["task_list"], a["reason"]) == (1, "1-4", [1, 2, 3, 4], "initial")
        assert a["command"][0] == ("sbatch" if sched == "slurm" else "qsub")
        assert a["requested_bytes"] == entry["requested_bytes"] and a["finaliser_job_id"]
        assert len(list(out.glob(entry["sidecars"]))) == 4  # one memory sidecar per task
    assert manifest["stages"]["02a"]["sidecars"] == "base_correlations/memory/02a.genes_*.memory.json"
    assert manifest["stages"]["01"]["sidecars"] == "bootstrap_indices.h5.memory.json"
    assert (out / manifest["stages"]["01"]["sidecars"]).is_file()
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
    assert rows["04"][None]["start"] >= rows["03b"][None]["end"]
    assert rows["05"][None]["start"] >= rows["04"][None]["end"]


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_requested_memory_equals_plan(runs, sched):
    out, manifest = _need(runs, f"{sched}_plain")
    jobs = {s: e["attempts"][0] for s, e in manifest["stages"].items()}
    acct = accounting(sched, [a["job_id"] for a in jobs.values()])
    for stage, attempt in jobs.items():
        entry = manifest["stages"][stage]
        assert attempt["requested_bytes"] == entry["requested_bytes"]
        for task, row in stage_rows(acct, attempt).items():
            # h_vmem is per slot; a 02b/03 task resized from its gene's 02a edge count has its own request
            want = attempt_request(attempt, task) / 2**20 / (entry["slots"] if sched == "sge" else 1)
            assert row["req_mib"] == pytest.approx(want), (stage, task)
        # the plan: estimate x calibration / safety (SGE: plus the virtual-memory overhead)
        from memfit.allocation import VIRTUAL_OVERHEAD_BYTES

        peak = entry["planned_peak_bytes"]
        assert peak >= entry["estimate"]["total_bytes"] and peak >= entry["minimum_estimate_bytes"]
        extra = VIRTUAL_OVERHEAD_BYTES if sched == "sge" else 0
        floor = 256 * 2**20 if sched == "slurm" else 0  # SLURM requests are at least 256 MiB
        assert entry["requested_bytes"] >= max((peak + extra) / 0.7, floor)
        assert entry["requested_bytes"] < max((peak + extra) / 0.7, floor) + 2**20 * entry["slots"]


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
        for task, row in stage_rows(acct, attempt).items():
            asked = attempt_request(attempt, task)  # its own if resized from the gene's 02a edge count
            assert row["req_mib"] == pytest.approx(asked / 2**20 / (slots if sched == "sge" else 1))
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
    # genes 1 (task 1) and 23 (task 3) lose their 02b and 03 files: a resume of the per-task
    # chain 02b -> 03 with a gap (SGE arrays are ranges: -t 1-3). The files come back with the
    # provenance they had, so 02a and the summary (made from the same digests) stay current.
    gone = [p for stage in ("bootstrap_significant", "networks") for gene in ("0001", "0023")
            for p in sorted((out / stage).glob(f"{gene}_*.h5"))]
    assert len(gone) == 4
    for path in gone:
        path.unlink()
    done = run_driver(sched, ["--expr-tsv", runs["tsv"], "--out-dir", out, *ARGS])
    assert done.returncode == 0, done.stderr
    assert "00: skipped" in done.stdout and "02a: skipped" in done.stdout
    assert "03b: skipped (current" in done.stdout, done.stdout
    rerun = wait_for_run(out, timeout=300)
    assert rerun["status"] == "complete"
    assert list(rerun["stages"]) == ["02b", "03"]
    for stage in ("02b", "03"):
        attempt = rerun["stages"][stage]["attempts"][0]
        assert attempt["task_list"] == [1, 3]
        command = attempt["command"]
        if sched == "slurm":
            assert "--array=1,3" in command
        else:
            assert command[command.index("-t") + 1] == "1-3"
            assert "--only-tasks 1,3" in Path(command[-1]).read_text()
        # task 2 did not run again: no status of a successful run of it in this attempt
        statuses = sorted(p.name for p in (out / ".dcoex" / "status" / stage).glob("*.a1.json")
                          if json.loads(p.read_text()).get("state") == "ok")
        assert statuses == ["1.a1.json", "3.a1.json"]
    assert (out / ".dcoex" / "history" / "run_manifest.1.json").is_file()
    assert_same_outputs(runs["local"], out)


def _queued_jobs_of(sched: str, out: Path) -> list[str]:
    """Names of this run's jobs still in the queue (job names end with the run folder's name)."""
    if sched == "slurm":
        text = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout
        return [n for n in text.split() if n.endswith(out.name)]
    text = subprocess.run(["qstat", "-u", "*", "-r"], capture_output=True, text=True).stdout
    return [line.split()[-1] for line in text.splitlines() if "Full jobname:" in line and line.endswith(out.name)]


def _wait_queue_empty(sched: str, out: Path) -> list[str]:
    import time

    for _ in range(20):
        left = _queued_jobs_of(sched, out)
        if not left:
            return []
        time.sleep(1)
    return left


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_given_up_tasks_cancel_their_downstream(runs, sched):
    """02b runs out of memory with no retries left: each failure is reported with its log, the
    same tasks of 03 are cancelled (never run), 03b finds nothing to collect, the run is failed."""
    out, manifest = _need(runs, f"{sched}_fail02b")
    assert manifest["status"] == "failed"
    entry = manifest["stages"]["02b"]
    assert len(entry["attempts"]) == 1
    assert sorted(f["task"] for f in entry["failures"]) == [1, 2, 3, 4]
    for failure in entry["failures"]:
        assert "memory" in failure["reason"], failure
        assert Path(failure["log"]).is_file()
    assert sorted(manifest["stages"]["03"]["cancelled_tasks"]) == [1, 2, 3, 4]
    assert not list((out / "logs").glob("03.*.log")), "cancelled 03 tasks must not run"
    assert not list((out / "networks").glob("*.h5"))
    assert manifest["stages"]["03b"]["failures"], "03b ran and had nothing to collect"
    assert all(manifest["stages"][s].get("failures") == [] for s in ("00", "01", "02a"))
    assert _wait_queue_empty(sched, out) == []


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_failed_single_job_cancels_every_later_stage(runs, sched):
    """Stage 01 (one job) runs out of memory with no retries: every later stage and its
    finaliser is cancelled in the scheduler, nothing of them runs, the run is failed."""
    out, manifest = _need(runs, f"{sched}_fail01")
    assert manifest["status"] == "failed"
    assert [f["task"] for f in manifest["stages"]["01"]["failures"]] == [None]
    for stage in ("02a", "02b", "03", "03b", "04", "05"):
        assert manifest["stages"][stage].get("cancelled") is True, stage
        assert not list((out / "logs").glob(f"{stage}.*.log")), f"{stage} must not run"
        assert not list((out / "logs").glob(f"fin-{stage}.*.log")), f"the finaliser of {stage} must not run"
    assert _wait_queue_empty(sched, out) == []
