"""Scheduler faults on the real SLURM and SGE test clusters (tests/cluster/clusters_up.sh).

* a task that finishes past its time limit: its status says ok, the scheduler says TIMEOUT;
  the finaliser reconciles the two and retries it with twice the limit;
* leftovers of an earlier chain (a driver killed mid-submission, an output folder deleted while
  its jobs were queued) are found by the next driver on that folder, cancelled and reported;
* one output folder, one live chain: a second driver is refused while the first one's jobs are
  queued or running (or the first local driver is alive); a stale lock is taken over.

Tiny data (40 genes × 60 samples, 20 genes per task: 2 array tasks, B = 40).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cluster_util import (  # noqa: F401 (fixture)
    DRIVERS,
    cluster_status,
    require_cluster,
    run_driver,
    slurm_cluster,
    wait_for_run,
    write_dataset,
)
from test_cluster_pipeline import accounting, stage_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
SCHEDULERS = ("slurm", "sge")
ARGS = ["--n-bootstrap", "40", "--genes-per-task", "20", "--seed", "7"]
#: SLURM limits are whole minutes (checked about every 30 s); SGE enforces h_rt in seconds.
#: SGE's 45 s leave a first-attempt task time to finish and write its status before the limit
#: also while the other test worker keeps both CPUs busy (at 20 s, one was killed still running).
TIME_LIMIT = {"slurm": "00:01:00", "sge": "00:00:45"}
DOUBLED = {"slurm": "00:02:00", "sge": "00:01:30"}
LIMIT_S = {"slurm": 60, "sge": 45}
LINGER_S = {"slurm": "200", "sge": "120"}


@pytest.fixture(scope="module")
def timeout_runs(tmp_path_factory):
    """Stage 02a's first attempt stays alive past its (short) time limit after writing status ok."""
    if not any(cluster_status(s)[0] for s in SCHEDULERS):
        require_cluster("slurm")
    base = tmp_path_factory.mktemp("timeout_runs")
    tsv = write_dataset(base / "expr.tsv")
    started = {}
    for sched in SCHEDULERS:
        if not cluster_status(sched)[0]:
            continue
        out = base / f"{sched}_timeout"
        done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--time-02a", TIME_LIMIT[sched]],
                          env={"DCOEX_TEST_LINGER_02A": LINGER_S[sched]})
        assert done.returncode == 0, done.stderr
        started[sched] = (out, time.time())
    return {s: (out, wait_for_run(out, timeout=600), t0) for s, (out, t0) in started.items()}


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_task_ending_past_its_time_limit_is_retried_with_twice_the_limit(timeout_runs, sched):
    require_cluster(sched)
    out, manifest, t0 = timeout_runs[sched]
    entry = manifest["stages"]["02a"]
    assert manifest["status"] == "complete", json.dumps(entry, indent=1)[-3000:]
    first, retry = entry["attempts"][0], entry["attempts"][-1]
    assert [a["reason"] for a in entry["attempts"]] == ["initial", "timeout-retry"]
    assert first["time_limit"] == TIME_LIMIT[sched] and retry["time_limit"] == DOUBLED[sched]
    assert retry["task_list"] == [1, 2] and retry["requested_bytes"] == first["requested_bytes"]
    # the fault: each first-attempt task wrote status ok, and the scheduler recorded a time-limit kill
    for t in (1, 2):
        status = json.loads((out / ".dcoex" / "status" / "02a" / f"{t}.a1.json").read_text())
        assert status["state"] == "ok"
    acct = accounting(sched, [first["job_id"], retry["job_id"], manifest["stages"]["02b"]["attempts"][0]["job_id"]])
    if sched == "slurm":
        assert {r["state"] for r in stage_rows(acct, first).values()} == {"TIMEOUT"}
        assert {r["state"] for r in stage_rows(acct, retry).values()} == {"COMPLETED"}
    else:  # SGE: failed 37 (h_rt) after the limit
        for row in stage_rows(acct, first).values():
            assert row["failed"].startswith("37") and row["end"] - row["start"] >= LIMIT_S[sched]
    # the finaliser said so, and the retry ran with the doubled limit in the scheduler
    fin_log = (out / "logs" / f"fin-02a.{first['finaliser_job_id']}.1.log").read_text()
    assert "TIMEOUT" in fin_log and "status ok" in fin_log and DOUBLED[sched] in fin_log
    assert (f"--time={DOUBLED[sched]}" in retry["command"]) if sched == "slurm" \
        else (f"h_rt={DOUBLED[sched]}" in retry["command"])
    # 02b task i waited for the retried 02a task i (SLURM: re-pointed from the TIMEOUT task)
    retry_rows = stage_rows(acct, retry)
    if sched == "slurm":
        for t, row in stage_rows(acct, manifest["stages"]["02b"]["attempts"][0]).items():
            assert row["start"] >= retry_rows[t]["end"], f"02b task {t} did not wait for the retried 02a task"
    assert all(not e.get("failures") for e in manifest["stages"].values())


# --- leftovers of an earlier chain ------------------------------------------------------------

def unique(name: str) -> str:
    """A folder name no earlier test run used (jobs are found by the name: leftovers of a failed
    run of the same test must not count)."""
    return f"{name}_{uuid.uuid4().hex[:6]}"


def queue_ids(sched: str, out: Path) -> dict[str, str]:
    """{job id: state} of the jobs in the queue named after ``out`` (job names end with its name)."""
    if sched == "slurm":
        text = subprocess.run(["squeue", "-h", "-o", "%F|%j|%T|%r"], capture_output=True, text=True).stdout
        return {f[0]: f"{f[2]} {f[3]}" for f in (line.split("|") for line in text.splitlines())
                if f[1].startswith("dcoex_") and f[1].endswith(out.name)}
    text = subprocess.run(["qstat", "-u", "*", "-r"], capture_output=True, text=True).stdout
    ids, current = {}, None
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit():
            current = (fields[0], fields[4])
        elif "Full jobname:" in line and current and line.split()[-1].endswith(out.name):
            ids[current[0]] = current[1]
    return ids


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def rerun_cleans_up(sched: str, tsv: Path, out: Path, earlier: set[str], first_stage: str = "00"
                    ) -> subprocess.CompletedProcess:
    """The rerun finds and cancels the earlier chain's jobs, says so per stage, and its own chain completes."""
    t0 = time.time()
    done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS], timeout=180)
    took = time.time() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"{sched}: rerun found and cancelled {len(earlier)} leftover jobs; the driver took {took:.1f} s\n{done.stdout}")
    assert "leftover jobs of an earlier chain" in done.stdout, done.stdout
    assert f"  stage {first_stage}: " in done.stdout and "cancelled" in done.stdout
    assert not earlier & set(queue_ids(sched, out)), "the earlier chain's jobs are still queued"
    manifest = wait_for_run(out, timeout=400)
    assert manifest["status"] == "complete"
    assert not earlier & runlock_ids(manifest)
    assert wait_until(lambda: not queue_ids(sched, out), 30, "the queue emptying") is True
    return done


def runlock_ids(manifest: dict) -> set[str]:
    from dcoex.pipeline.runlock import manifest_job_ids

    return manifest_job_ids(manifest)


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_rerun_cancels_held_jobs_of_a_driver_killed_while_submitting(sched, tmp_path):
    require_cluster(sched)
    tsv = write_dataset(tmp_path / "expr.tsv")
    out = tmp_path / unique(f"{sched}_killed")
    driver = subprocess.Popen(["bash", str(DRIVERS[sched]), "--expr-tsv", str(tsv), "--out-dir", str(out), *ARGS],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ, DCOEX_PYTHON=sys.executable))
    # kill it (SIGKILL: no clean-up) once it has submitted a few jobs, before it releases the first
    # (its lock lists each job as it is submitted: polled every few ms)
    lock = out / ".dcoex" / "driver.lock"

    def submitted() -> int:
        try:
            return len(json.loads(lock.read_text())["job_ids"])
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.time() + 90
    while submitted() < 3 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.005)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(3)
    earlier = queue_ids(sched, out)
    assert len(earlier) >= 3 and not (out / "run_manifest.json").exists()
    held = [state for state in earlier.values() if "JobHeldUser" in state or "h" in state.split()[0]]
    assert held, f"the first job is held for ever: {earlier}"
    rerun_cleans_up(sched, tsv, out, set(earlier))


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_rerun_cancels_jobs_whose_out_dir_was_deleted(sched, tmp_path):
    """The folder is deleted while the chain is queued: SLURM jobs fail to open their logs and the
    rest pend for ever (DependencyNeverSatisfied), SGE's first job sits in Eqw; a rerun on the
    folder finds them by name, cancels them and completes."""
    require_cluster(sched)
    tsv = write_dataset(tmp_path / "expr.tsv")
    out = tmp_path / unique(f"{sched}_deleted")
    done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS])
    assert done.returncode == 0, done.stderr
    import shutil

    shutil.rmtree(out)
    stuck = "DependencyNeverSatisfied" if sched == "slurm" else "E"
    earlier = wait_until(lambda: (lambda q: q if any(stuck in s for s in q.values()) else None)(queue_ids(sched, out)),
                         90, f"a job of the chain stuck ({stuck})")
    # SLURM: stage 00 and its finaliser failed at once (no log folder) and left the queue
    rerun_cleans_up(sched, tsv, out, set(queue_ids(sched, out)) | set(earlier),
                    first_stage="01" if sched == "slurm" else "00")


# --- one live chain per folder -----------------------------------------------------------------

@pytest.mark.parametrize("sched", SCHEDULERS)
def test_second_driver_is_refused_while_the_first_chain_is_live(sched, tmp_path):
    require_cluster(sched)
    tsv = write_dataset(tmp_path / "expr.tsv")
    out = tmp_path / unique(f"{sched}_shared")
    first = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--fdr-alpha", "0.05"])
    assert first.returncode == 0, first.stderr
    lock = json.loads((out / ".dcoex" / "driver.lock").read_text())
    assert lock["state"] == "submitted" and len(lock["job_ids"]) == 16  # 8 stages + finalisers
    second = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--fdr-alpha", "0.01"])
    assert second.returncode == 2, second.stdout + second.stderr
    assert "is in use by a live chain" in second.stderr and lock["job_ids"][-1] in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    manifest = wait_for_run(out, timeout=400)
    assert manifest["status"] == "complete" and manifest["parameters"]["fdr_alpha"] == 0.05
    assert set(lock["job_ids"]) <= runlock_ids(manifest)  # one chain wrote this manifest
    assert not (out / ".dcoex" / "driver.lock").exists(), "the last finaliser frees the folder"
    # once the first chain is over, the second driver runs (no note: the lock was released)
    again = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--fdr-alpha", "0.01"])
    assert again.returncode == 0, again.stderr
    assert "stale lock" not in again.stdout and "leftover" not in again.stdout
    if "nothing to do" not in again.stdout:
        assert wait_for_run(out, timeout=400)["status"] == "complete"


@pytest.mark.usefixtures("slurm_cluster")
def test_rerun_cancels_a_chain_that_can_never_finish(tmp_path):
    """SLURM: stage 00's finaliser is cancelled while queued, so stage 01 (afterok) pends with
    DependencyNeverSatisfied for ever although the lock and manifest are intact: the rerun sees
    that nothing of the chain runs or can run, cancels it and completes."""
    tsv = write_dataset(tmp_path / "expr.tsv")
    out = tmp_path / unique("slurm_stuck")
    done = run_driver("slurm", ["--expr-tsv", tsv, "--out-dir", out, *ARGS])
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "run_manifest.json").read_text())
    subprocess.run(["scancel", manifest["stages"]["00"]["attempts"][0]["finaliser_job_id"]], check=True)
    job00 = manifest["stages"]["00"]["attempts"][0]["job_id"]
    earlier = wait_until(lambda: (lambda q: q if any("DependencyNeverSatisfied" in s for s in q.values())
                                  and job00 not in q else None)(queue_ids("slurm", out)),
                         120, "stage 00 ended and stage 01 waiting for ever")
    done = rerun_cleans_up("slurm", tsv, out, set(earlier), first_stage="01")
    assert "it can never finish" in done.stdout


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_jobs_that_lose_their_manifest_end_the_chain_with_a_clear_line(sched, tmp_path):
    """The run manifest is deleted while the chain is queued (the folder and its logs stay): the
    tasks say so and run nothing, the first finaliser cancels the rest of the chain, and the queue
    empties by itself (no rerun needed; before: SLURM 01 pended with DependencyNeverSatisfied and
    SGE's user-held 02b tasks for ever)."""
    require_cluster(sched)
    tsv = write_dataset(tmp_path / "expr.tsv")
    out = tmp_path / unique(f"{sched}_nomanifest")
    done = run_driver(sched, ["--expr-tsv", tsv, "--out-dir", out, *ARGS])
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "run_manifest.json").read_text())
    (out / "run_manifest.json").unlink()
    assert wait_until(lambda: not queue_ids(sched, out), 120, "the chain leaving the queue") is True
    fin = manifest["stages"]["00"]["attempts"][0]["finaliser_job_id"]
    text = (out / "logs" / f"fin-00.{fin}.1.log").read_text()
    assert "run_manifest.json is missing" in text and "cancelling the chain's remaining jobs" in text, text
    assert "stage 01: " in text and "cancelled" in text
    assert "Traceback" not in text
