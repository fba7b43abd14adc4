"""The driver lock, the leftover finder's parsers, the reconciliation of a task's status with the
scheduler's record, and jobs that find their output folder gone — without a cluster (the same
behaviour on the real clusters: tests/test_cluster_faults.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from cluster_util import DRIVERS, write_dataset

from dcoex.pipeline.finalise import classify
from dcoex.pipeline.leftovers import parse_qstat_scripts, parse_qstat_xml, parse_squeue
from hpc.schedulers import format_time_limit, get_scheduler, time_limit_seconds
from memfit.accounting.fetch import read_accounting_file

ROOT = Path(__file__).resolve().parents[1]
SCHED_FIXTURES = Path(__file__).parent / "fixtures" / "scheduler"
ACCT_FIXTURES = Path(__file__).parent / "fixtures" / "accounting"
ARGS = ["--n-bootstrap", "20", "--genes-per-task", "10", "--seed", "3"]


def driver(args: list, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, DCOEX_PYTHON=sys.executable, PYTHONPATH=str(ROOT / "lib"))
    return subprocess.run(["bash", str(DRIVERS["slurm"]), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, **kw)


# --- parsers of the queue (real output: tests/fixtures/scheduler/README.md) ------------------

def test_squeue_jobs_group_array_tasks_with_states_reasons_and_scripts():
    jobs = {j.job_id: j for j in parse_squeue((SCHED_FIXTURES / "slurm_22.05_squeue_r.txt").read_text())}
    assert sorted(jobs) == ["270", "271", "272", "273"]
    held = jobs["270"]  # two lines (tasks 1 and 2), one job
    assert (held.name, held.stage, held.finaliser) == ("dcoex_00_fx", "00", False)
    assert held.states == {"PENDING"} and held.reasons == {"JobHeldUser"} and held.script == "/tmp/sf_exp/j.sh"
    assert not held.progressing and not held.never_runs
    assert jobs["271"].finaliser and jobs["271"].stage == "00" and not jobs["271"].progressing
    assert jobs["272"].stage == "01" and jobs["272"].progressing  # pending for resources only


def test_qstat_xml_jobs_and_error_state():
    jobs = {j.job_id: j for j in parse_qstat_xml((SCHED_FIXTURES / "sge_8.1.9_qstat_xml.txt").read_text())}
    assert jobs["165"].states == {"hqw"} and jobs["165"].stage == "00" and not jobs["165"].never_runs
    assert jobs["166"].states == {"Eqw"} and jobs["166"].never_runs and not jobs["166"].progressing
    assert jobs["140"].stage is None and jobs["140"].progressing  # not ours (another name), running
    assert parse_qstat_scripts((SCHED_FIXTURES / "sge_8.1.9_qstat_j.txt").read_text()) == {
        "165": "/tmp/sf_exp/j.sh", "166": "/tmp/sf_exp/j.sh"}


# --- a task's status reconciled with the scheduler's record ---------------------------------

def _status(out: Path, state: str | None) -> None:
    path = out / ".dcoex" / "status" / "02a" / "1.a1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if state:
        path.write_text(json.dumps({"state": state, "exit": 0 if state == "ok" else 1}))
    (out / "logs").mkdir(exist_ok=True)


def test_status_ok_with_a_timeout_record_is_a_timeout(tmp_path):
    records = {r.job_id: r for r in read_accounting_file("slurm", ACCT_FIXTURES / "slurm_22.05_jobs_unitsK.sacct.txt")}
    timeout, completed = records["9"], next(r for r in records.values() if r.ok)
    assert timeout.state == "TIMEOUT"
    slurm = get_scheduler("slurm")
    attempt = {"attempt": 1, "job_id": "9", "time_limit": "00:01:00"}
    _status(tmp_path, "ok")
    state, why = classify(tmp_path, slurm, "02a", attempt, task=1, record=timeout)
    assert state == "timeout" and "TIMEOUT" in why and "00:01:00" in why and "status ok" in why
    assert classify(tmp_path, slurm, "02a", attempt, task=1, record=completed) == ("ok", "")
    assert classify(tmp_path, slurm, "02a", attempt, task=1, record=None) == ("ok", "")  # no accounting: the status
    _status(tmp_path / "nostatus", None)
    state, why = classify(tmp_path / "nostatus", slurm, "02a", attempt, task=1, record=timeout)
    assert state == "timeout" and "status ok" not in why


def test_status_ok_with_a_failed_record_is_not_ok(tmp_path):
    records = read_accounting_file("slurm", ACCT_FIXTURES / "slurm_22.05_jobs_unitsK.sacct.txt")
    failed = next(r for r in records if r.finished and not r.ok and not r.oom and r.state != "TIMEOUT")
    _status(tmp_path, "ok")
    state, why = classify(tmp_path, get_scheduler("slurm"), "02a", {"attempt": 1, "job_id": failed.job_id}, task=1, record=failed)
    assert state == "failed" and "wrote status ok" in why and failed.state in why


def test_sge_h_rt_kill_is_a_timeout(tmp_path):
    record = {r.job_id: r for r in read_accounting_file("sge", ACCT_FIXTURES / "sge_8.1.9_jobs.qacct.txt")}["8"]
    _status(tmp_path, None)
    state, why = classify(tmp_path, get_scheduler("sge"), "02a", {"attempt": 1, "job_id": "8"}, task=1, record=record)
    assert state == "timeout" and "SGE reports" in why


def test_time_limits_double():
    assert [format_time_limit(2 * time_limit_seconds(t)) for t in ("00:01:00", "00:00:20", "23:30:00", "100:00:01")] \
        == ["00:02:00", "00:00:40", "47:00:00", "200:00:02"]


# --- jobs whose folder is gone --------------------------------------------------------------

def test_task_and_finaliser_without_their_manifest_fail_with_one_clear_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"))
    env.pop("SLURM_JOB_ID", None), env.pop("JOB_ID", None)
    task = subprocess.run([sys.executable, "-m", "dcoex.pipeline.task", "--out-dir", tmp_path / "gone", "--stage",
                           "00"], capture_output=True, text=True, env=env)
    assert task.returncode == 2 and "Traceback" not in task.stderr
    assert "deleted, replaced or made unreadable while this job was queued" in task.stderr
    fin = subprocess.run([sys.executable, "-m", "dcoex.pipeline.finalise", "--out-dir", tmp_path / "gone", "--stage",
                          "00"], capture_output=True, text=True, env=env)
    assert fin.returncode == 1 and "Traceback" not in fin.stderr + fin.stdout
    assert "run_manifest.json is missing" in fin.stdout and "cancelling the chain's remaining jobs" in fin.stdout


# --- the lock -------------------------------------------------------------------------------

def test_second_driver_is_refused_while_a_local_driver_runs(tmp_path):
    tsv = write_dataset(tmp_path / "expr.tsv")
    out = tmp_path / "run"
    env = dict(os.environ, DCOEX_PYTHON=sys.executable, PYTHONPATH=str(ROOT / "lib"))
    first = subprocess.Popen(["bash", str(DRIVERS["slurm"]), "--expr-tsv", str(tsv), "--out-dir", str(out), *ARGS,
                              "--local", "--fdr-alpha", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    lock = out / ".dcoex" / "driver.lock"
    deadline = time.time() + 120
    while not lock.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    owner = json.loads(lock.read_text())
    assert owner["state"] == "local" and owner["host"] == socket.gethostname()
    second = driver(["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local", "--fdr-alpha", "0.01"])
    still_running = first.poll() is None
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert still_running, "the first driver ended before the second one was tried: the test proves nothing"
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"in use by the driver pid {owner['pid']}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["parameters"]["fdr_alpha"] == 0.05
    assert not lock.exists(), "the local driver frees the folder at its end"


def test_stale_lock_is_taken_over_with_a_note(tmp_path):
    tsv = write_dataset(tmp_path / "expr.tsv", n_genes=12, n_samples=30)
    out = tmp_path / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".dcoex").mkdir(parents=True)
    (out / ".dcoex" / "driver.lock").write_text(json.dumps(
        {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z", "started_epoch": 0,
         "scheduler": "local", "state": "local", "job_ids": []}))
    done = driver(["--expr-tsv", tsv, "--out-dir", out, *ARGS, "--local"])
    assert done.returncode == 0, done.stderr
    assert f"taking over the stale lock of {out} (driver pid {int(dead.stdout)}" in done.stdout
    assert not (out / ".dcoex" / "driver.lock").exists()
